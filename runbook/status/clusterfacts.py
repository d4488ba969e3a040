"""Facts for `inv status`, read-only: every remote call is a `gather` on hosts connected with
`dry_run=True` (a mutating call would raise), and nothing here raises for a host, the API or the
cluster being down.

Round trips: one per host for its facts (LBs: a second one, `lbstatus`'s own batch), then one
on the probing host (API through the VIP + `kubectl get nodes`) and one on the floating-IP
holder, each round in parallel over the hosts.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ..core.remote import Fact, Host
from ..inventory import API_PORT, Inventory
from ..render.k8sfiles import ADMIN_CONF
from . import certexpiry
from .clusterstatus import (
    K8S_ROLES,
    ApiCheck,
    ClusterStatus,
    FirewallRow,
    FirewallView,
    HostState,
    NodeState,
    NodesView,
    short,
)
from .lbstatus import LbNode, cloud_holders, node_status

CA_CERT = "/etc/kubernetes/pki/ca.crt"
# stderr joins stdout so a failure says why; warnings before the JSON are skipped when parsing
KUBECTL_NODES = f"timeout 20 kubectl --kubeconfig {ADMIN_CONF} get nodes -o json 2>&1"
HTTP_MARK = "@@rb-http@@"
CERTS_CHECK = "timeout 20 kubeadm certs check-expiration"

CloudLookup = Callable[[], tuple[str, str]]


def _out(fact: Fact | None) -> str:
    return fact.stdout.strip() if fact else ""


# -- hosts ----------------------------------------------------------------------------------------
def host_probes(role: str) -> list[str | None]:
    k8s = role in K8S_ROLES
    return [
        '. /etc/os-release && echo "$PRETTY_NAME"',
        "uname -r",
        "cut -d' ' -f1 /proc/uptime",
        "systemctl is-active kubelet" if k8s else None,
        f"test -f {ADMIN_CONF}" if role == "control-plane" else None,
        # kubeadm's certificates (one year): only where kubeadm made a control plane
        f"test -f {ADMIN_CONF} || exit 0; {CERTS_CHECK}" if role == "control-plane" else None,
    ]


def host_state(inv: Inventory, host: Host) -> HostState:
    spec = inv.hosts[host.name]
    name, role, ip = spec.name, spec.role, str(spec.private_ip)
    try:
        facts = host.gather(host_probes(spec.role))
    except Exception as exc:  # unreachable, auth, host key, timeout: a state, not a crash
        return HostState(name, role, ip, reachable=False, error=str(exc) or type(exc).__name__)
    os_name, kernel, up, kubelet, admin, certs = facts
    try:
        uptime: float | None = float(_out(up))
    except ValueError:
        uptime = None
    return HostState(
        name,
        role,
        ip,
        reachable=True,
        os=_out(os_name),
        kernel=_out(kernel),
        uptime_s=uptime,
        kubelet=(_out(kubelet).split() or ["?"])[0] if kubelet else "",
        admin_conf=admin is not None and admin.rc == 0,
        certs=tuple(certexpiry.parse(certs.stdout)) if certs and certs.rc == 0 else (),
    )


def lb_state(inv: Inventory, host: Host, state: HostState) -> LbNode:
    """`lbstatus`'s view of a reachable LB (an unreachable one is not asked again)."""
    if not state.reachable:
        return LbNode(host.name, False, error=state.error)
    try:
        return node_status(inv, host)
    except Exception as exc:
        return LbNode(host.name, False, error=str(exc))


# -- API through the VIP / floating IP ----------------------------------------------------------
def http_probe(url: str, *, verify: bool, source: str = "") -> str:
    """GET `url` with curl: a TLS line, the body (or curl's error), then code and time."""
    bind = f"--interface {shlex.quote(source)} " if source else ""
    tls = (
        f"if [ -r {CA_CERT} ]; then set -- --cacert {CA_CERT}; echo tls=verified; "
        "else set -- -k; echo tls=unverified; fi; "
        if verify
        else "set -- -k; echo tls=unverified; "
    )
    return (
        f'{tls}curl -sS "$@" {bind}--max-time 5 '
        f"-w '\\n{HTTP_MARK} %{{http_code}} %{{time_total}}\\n' {shlex.quote(url)} 2>&1"
    )


def parse_http(fact: Fact | None) -> tuple[int, float | None, str, str]:
    """(HTTP code, seconds, body or error, tls) of an `http_probe` fact; code 0: no answer."""
    text = fact.stdout if fact else ""
    lines = text.splitlines()
    tls = lines.pop(0).removeprefix("tls=") if lines and lines[0].startswith("tls=") else ""
    code, seconds = 0, None
    for i in range(len(lines) - 1, -1, -1):
        m = re.match(rf"{HTTP_MARK} (\d+) ([0-9.]+)", lines[i])
        if m:
            code, seconds = int(m.group(1)), float(m.group(2))
            lines = lines[:i]
            break
    body = "\n".join(lines).strip()
    if not body and fact is not None and fact.rc == 127:
        body = "curl is not installed on the probing host"
    return code, seconds, body, tls


def api_check(via: str, url: str, probe_host: str, fact: Fact | None) -> ApiCheck:
    code, seconds, body, tls = parse_http(fact)
    ok = code == 200 and body.strip() == "ok"
    if ok:
        detail = "ok"
    elif code:
        failed = [ln.strip() for ln in body.splitlines() if ln.strip().startswith("[-]")]
        detail = f"HTTP {code}: " + ("; ".join(failed) or short(body, 120) or "no body")
    else:
        detail = short(body, 120) or "no answer"
    tls_text = {"verified": "verified (cluster CA)", "unverified": "not verified"}.get(tls, "")
    return ApiCheck(via, url, probe_host, ok, code, seconds, tls_text, detail)


def server_version(fact: Fact | None) -> str:
    code, _, body, _ = parse_http(fact)
    if code != 200:
        return ""
    try:
        return str(json.loads(body).get("gitVersion", ""))
    except (ValueError, AttributeError):
        return ""


def pick_prober(inv: Inventory, states: Mapping[str, HostState]) -> str | None:
    """Who asks the API: a control plane with admin.conf, another control plane, a worker, an LB."""
    order = [
        *(h.name for h in inv.hosts_with_role("control-plane") if states[h.name].admin_conf),
        *(h.name for h in inv.hosts_with_role("control-plane", "worker", "lb")),
    ]
    return next((n for n in order if states[n].reachable), None)


# -- nodes ----------------------------------------------------------------------------------------
def parse_nodes(inv: Inventory, text: str) -> tuple[NodeState, ...]:
    """`kubectl get nodes -o json` → NodeState per node (raises ValueError on garbage)."""
    data = json.loads(text or "{}")
    out = []
    for item in data.get("items") or []:
        meta, st = item.get("metadata") or {}, item.get("status") or {}
        name = str(meta.get("name", "?"))
        cond: dict[str, str] = next(
            (c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {}
        )
        labels = meta.get("labels") or {}
        roles = tuple(
            sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
        )
        ip = next(
            (
                a.get("address", "")
                for a in st.get("addresses") or []
                if a.get("type") == "InternalIP"
            ),
            "",
        )
        spec = inv.hosts.get(name)
        out.append(
            NodeState(
                name=name,
                ready=str(cond.get("status", "Unknown")),
                reason=str(cond.get("reason", "")) if cond.get("status") != "True" else "",
                roles=roles,
                version=str((st.get("nodeInfo") or {}).get("kubeletVersion", "")),
                internal_ip=ip,
                inventory_role=spec.role if spec else "",
            )
        )
    return tuple(out)


def nodes_view(
    inv: Inventory, states: Mapping[str, HostState], prober: str | None, fact: Fact | None
) -> NodesView:
    cps = [states[h.name] for h in inv.hosts_with_role("control-plane")]
    if prober is None or not states[prober].admin_conf:
        down = [s.name for s in cps if not s.reachable]
        if not down:
            return NodesView(
                error=f"no control plane has {ADMIN_CONF}: run `inv cluster.init`",
                not_initialised=True,
            )
        return NodesView(
            error=f"no reachable control plane has {ADMIN_CONF} (unreachable: {', '.join(down)})"
        )
    if fact is None or fact.rc != 0:
        rc = fact.rc if fact else -1
        why = "timed out after 20 s" if rc == 124 else f"exit {rc}"
        said = short(fact.stdout, 160) if fact else ""
        return NodesView(
            source=prober,
            error=f"kubectl get nodes on {prober}: {why}" + (f": {said}" if said else ""),
        )
    text = fact.stdout
    start = re.search(r"^\{", text, re.M)
    try:
        nodes = parse_nodes(inv, text[start.start() :] if start else text)
    except (ValueError, AttributeError, TypeError) as exc:
        return NodesView(source=prober, error=f"kubectl get nodes: unreadable output ({exc})")
    names = {n.name for n in nodes}
    missing = tuple(h.name for h in inv.hosts_with_role(*K8S_ROLES) if h.name not in names)
    return NodesView(source=prober, nodes=nodes, missing=missing)


# -- all of it ------------------------------------------------------------------------------------
def collect_status(
    inv: Inventory,
    hosts: Mapping[str, Host],
    *,
    cloud: CloudLookup | None,
    firewalls: Callable[[], FirewallView] | None = None,
) -> ClusterStatus:
    """Every fact in parallel (one thread per host), then the API probes; never raises."""
    lb_names = [h.name for h in inv.hosts_with_role("lb")]
    lb = inv.load_balancer
    with ThreadPoolExecutor(max_workers=len(hosts) + 1) as pool:
        cloud_job = pool.submit(cloud) if cloud is not None else None
        fw_job = pool.submit(firewalls) if firewalls is not None else None
        state_jobs = {n: pool.submit(host_state, inv, h) for n, h in hosts.items()}
        states = {n: j.result() for n, j in state_jobs.items()}
        for name, spec in inv.hosts.items():  # every inventory host has a state
            states.setdefault(
                name,
                HostState(name, spec.role, str(spec.private_ip), False, error="not connected"),
            )
        lb_jobs = [
            pool.submit(lb_state, inv, hosts[n], states[n])
            if n in hosts
            else pool.submit(LbNode, n, False, error="not connected")
            for n in lb_names
        ]
        lbs = tuple(j.result() for j in lb_jobs)

        prober = pick_prober(inv, states)
        vip_url = f"https://{lb.vip}:{API_PORT}"
        fip_url = f"https://{lb.floating_ip.address}:{API_PORT}/readyz"
        probes: list[str | None] = [
            http_probe(f"{vip_url}/readyz", verify=True),
            http_probe(f"{vip_url}/version", verify=True),
            KUBECTL_NODES if prober and states[prober].admin_conf else None,
        ]
        prober_job = pool.submit(hosts[prober].gather, probes) if prober else None
        fip_holders = [n.name for n in lbs if n.reachable and n.holds_fip]
        # HAProxy admits only public_allow and loopback on the floating IP: ask from the holder
        # itself with a loopback source (what this proves: HAProxy answers on it there)
        fip_job = (
            pool.submit(
                hosts[fip_holders[0]].probe, http_probe(fip_url, verify=False, source="127.0.0.1")
            )
            if len(fip_holders) == 1
            else None
        )

        vip_via = f"VIP {lb.vip}:{API_PORT}"
        fip_via = f"floating IP {lb.floating_ip.address}:{API_PORT}"
        facts: list[Fact | None] = [None, None, None]
        checks: list[ApiCheck] = []
        if prober_job is None:
            checks.append(
                ApiCheck(vip_via, f"{vip_url}/readyz", "-", None, detail="no host reachable")
            )
        else:
            try:
                facts = prober_job.result()
                vip = api_check(vip_via, f"{vip_url}/readyz", str(prober), facts[0])
                checks.append(replace(vip, server_version=server_version(facts[1])))
            except Exception as exc:
                checks.append(
                    ApiCheck(
                        vip_via, f"{vip_url}/readyz", str(prober), False, detail=short(str(exc))
                    )
                )
        if fip_job is None:
            why = "no reachable LB holds it" if not fip_holders else "held by several LBs"
            checks.append(ApiCheck(fip_via, fip_url, "-", None, detail=f"not checked: {why}"))
        else:
            try:
                checks.append(api_check(fip_via, fip_url, fip_holders[0], fip_job.result()))
            except Exception as exc:
                checks.append(
                    ApiCheck(fip_via, fip_url, fip_holders[0], False, detail=short(str(exc)))
                )

        api_vip = api_fip = "?"
        note = "cloud API not asked (--no-cloud)" if cloud is None else ""
        if cloud_job is not None:
            try:
                api_vip, api_fip = cloud_job.result()
            except Exception as exc:  # the API being down is a status, not a crash
                note = f"cloud API not asked or not reachable: {short(str(exc), 160)}"

    return ClusterStatus(
        hosts=tuple(states[h] for h in inv.hosts),
        lbs=lbs,
        api_vip=api_vip,
        api_fip=api_fip,
        cloud_note=note,
        checks=tuple(checks),
        nodes=nodes_view(inv, states, prober, facts[2]),
        expected_minor=inv.kubernetes.minor,
        inventory_ips={h.name: str(h.private_ip) for h in inv.hosts.values()},
        inventory_roles={h.name: h.role for h in inv.hosts.values()},
        firewalls=fw_job.result() if fw_job is not None else None,
    )


def cloud_lookup(inv: Inventory, client_factory: Callable[[], object]) -> CloudLookup:
    """Who the API routes the VIP / floating IP to, asked lazily (in the worker thread)."""
    return lambda: cloud_holders(inv, client_factory())


def firewall_view(inv: Inventory, client_factory: Callable[[], Any]) -> FirewallView:
    """`inv status`: the firewalls applied to the inventory's servers (read-only; never raises)."""
    from ..cloud.firewall import covering, rules_of

    try:
        client = client_factory()
        ids: dict[int, list[str]] = {}
        uncovered = []
        for name in inv.hosts:
            srv = client.servers.get_by_name(name)
            fws = covering(srv) if srv is not None else []
            if not fws:
                uncovered.append(name)
            for fid in fws:
                ids.setdefault(fid, []).append(name)
        rows = []
        for fid, servers in sorted(ids.items()):
            fw = client.firewalls.get_by_id(fid)
            rows.append(FirewallRow(fw.name, len(rules_of(fw)), tuple(servers)))
    except Exception as exc:  # the API being down is a status, not a crash
        return FirewallView(managed=inv.firewall is not None, error=short(str(exc), 160))
    return FirewallView(tuple(rows), tuple(uncovered), managed=inv.firewall is not None)
