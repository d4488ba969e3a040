"""The lab's "software-defined network": routes follow the simulated Hetzner API's state.

Why: on Hetzner, an alias IP or floating IP reaches a server only after the API assigned it there;
moving the address on the host alone loses the traffic. `apply_state` is the fakecloud `on_change`
hook (called after every completed mutation) and makes the lab route exactly what the state says:
- router `rbl-router`: one /32 per attached server private IP and per alias IP → that server's link;
  the subnet gateways (.1) on its `lo` (so hosts' onlink gateway answers ARP);
- each attached host: `ens10` holds its private /32 and routes the network's ip_range via the
  gateway (onlink), as Hetzner's DHCP configures it — a server not attached gets neither and is not
  routed;
- `rbl-inet`: a floating IP /32 → the link of the server it is assigned to; and the cloud
  firewalls applied to each server, enforced with nftables (lab.labfirewall).

Idempotent and fast: an alias or floating IP move is a read and an `ip -batch` in the router
and in `rbl-inet` (both at once); the hosts are synced only when their part changes (see
`apply_state`). Every route move is logged with a timestamp.
"""

from __future__ import annotations

import concurrent.futures
import fcntl
import ipaddress
import json
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import labfirewall, labstate, topology
from lab.topology import INET_NS, ROUTER_NS, host_ns, inet_link, router_link

NETNS_DIR = Path("/run/netns")


@dataclass(frozen=True)
class HostNet:
    """Private-side config of one attached host."""

    ip: str
    ip_range: str
    gateway: str
    mac: str = ""  # the API's mac_address of the server's private NIC; ens10 gets it


@dataclass
class Desired:
    router: dict[str, str] = field(default_factory=dict)  # dst /32 → router link
    gateways: set[str] = field(default_factory=set)
    inet: dict[str, str] = field(default_factory=dict)  # floating IP /32 → inet link
    hosts: dict[str, HostNet] = field(default_factory=dict)


def desired(state: dict[str, Any], lab_hosts: set[str]) -> Desired:
    """What the API state means for the lab's routing (pure; unit-tested)."""
    d = Desired()
    nets = {n["id"]: n for n in state.get("networks", [])}
    by_id = {s["id"]: s for s in state.get("servers", [])}
    for srv in state.get("servers", []):
        name = srv["name"]
        if name not in lab_hosts:
            continue
        for pn in srv.get("private_net", []):
            net = nets.get(pn["network"])
            if net is None or not pn.get("ip"):
                continue
            for a in [pn["ip"], *pn.get("alias_ips", [])]:
                d.router[a] = router_link(name)
            gw = _gateway(net, pn["ip"])
            d.gateways.add(gw)
            # one interface (ens10) per host in the lab: the first attached network wins
            d.hosts.setdefault(
                name, HostNet(pn["ip"], net["ip_range"], gw, pn.get("mac_address", ""))
            )
    for fip in state.get("floating_ips", []):
        srv = by_id.get(fip.get("server"))
        if srv is not None and srv["name"] in lab_hosts:
            d.inet[fip["ip"]] = inet_link(srv["name"])
    return d


def _gateway(net: dict[str, Any], ip: str) -> str:
    addr = ipaddress.ip_address(ip)
    for sub in net.get("subnets", []):
        if addr in ipaddress.ip_network(sub["ip_range"]):
            return str(sub.get("gateway") or next(ipaddress.ip_network(sub["ip_range"]).hosts()))
    return str(next(ipaddress.ip_network(net["ip_range"]).hosts()))


def _ns_ok(ns: str) -> bool:
    return (NETNS_DIR / ns).exists()


def _ip_json(ns: str, *args: str) -> list[dict[str, Any]]:
    r = subprocess.run(["ip", "-n", ns, "-j", *args], text=True, capture_output=True, check=True)
    return json.loads(r.stdout or "[]")


def _batch(ns: str, cmds: list[str]) -> None:
    """Run `ip` commands, deletions first; deleting what is already gone (e.g. a route the kernel
    flushed with the last address of its link) is not an error."""
    dels = [c for c in cmds if c.split()[1:2] == ["del"]]
    if dels:
        subprocess.run(
            ["ip", "-n", ns, "-force", "-batch", "-"],
            input="\n".join(dels) + "\n",
            text=True,
            capture_output=True,
        )
    cmds = [c for c in cmds if c not in dels]
    if not cmds:
        return
    r = subprocess.run(
        ["ip", "-n", ns, "-force", "-batch", "-"],
        input="\n".join(cmds) + "\n",
        text=True,
        capture_output=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"sdn: ip -n {ns}: {r.stderr.strip()}")


def _ens10(ns: str) -> dict[str, Any]:
    """`ip -j link show dev ens10` in `ns` ({} when there is none)."""
    links = _ip_json(ns, "link", "show", "dev", "ens10")
    return links[0] if links else {}


def _link_up(ns: str) -> bool:
    flags = _ens10(ns).get("flags", [])
    return "UP" in flags and "NO-CARRIER" not in flags


def _mac(ns: str) -> str:
    return str(_ens10(ns).get("address", "")).lower()


def _host_routes(ns: str, prefix: str) -> dict[str, str]:
    """Current /32 routes in `ns` whose device starts with `prefix` (the ones sdn manages)."""
    out = {}
    for r in _ip_json(ns, "route", "show"):
        dst, dev = r.get("dst", ""), r.get("dev", "")
        if dev.startswith(prefix) and "/" not in dst and dst != "default":
            out[dst] = dev
    return out


def _sync_routes(
    ns: str, prefix: str, want: dict[str, str], keep: set[str], log: list[str]
) -> None:
    have = _host_routes(ns, prefix)
    cmds = []
    for dst, dev in sorted(want.items()):
        if have.get(dst) != dev:
            cmds.append(f"route replace {dst}/32 dev {dev}")
            log.append(f"{ns} {dst}/32: {have.get(dst, '-')} -> {dev}")
    for dst, dev in sorted(have.items()):
        if dst not in want and dst not in keep:
            cmds.append(f"route del {dst}/32 dev {dev}")
            log.append(f"{ns} {dst}/32: {dev} -> -")
    _batch(ns, cmds)


@contextmanager
def _locked(p: labstate.LabPaths) -> Iterator[None]:
    p.run.mkdir(parents=True, exist_ok=True)
    with open(p.run / "sdn.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def apply_state(state: dict[str, Any], *, only_host: str | None = None, full: bool = False) -> None:
    """Make the lab's routes match `state` (the fakecloud on_change hook). Idempotent.

    The routes that carry the traffic come first: the router's and `rbl-inet`'s /32s (alias,
    private and floating IPs), read and synced in both namespaces at once, with the firewall
    first when its rules change (a floating IP moves with its server's chain). The hosts'
    own part (ens10's address, MAC and network route) and the subnet gateways follow only
    when they change, or with `full` (`apply_from_file`: `lab.up`, a host's reboot, the
    supervisor's repair of a link that came back without its route).

    Why: the fakecloud calls this after each action, one at a time, before the action reports
    success. Re-asserting every host each time took 18 `ip` spawns, 0.14-0.36 s on an idle
    2-core machine and more in a failover, when three actions (the alias off the old holder,
    the floating IP, the alias on the new one) complete within 0.3 s of each other: each
    re-route waited for the one before, and the data path followed the API's state by up to
    ~0.5 s more than the API's own action time. That was lab time counted as outage.
    `only_host` is accepted for callers that name the host they just rebooted; it changes
    nothing."""
    p = labstate.paths()
    topo = topology.load()
    lab_hosts = set(topo.names)
    d = desired(state, lab_hosts)
    moves: list[str] = []
    with _locked(p):
        applied = _load_applied(p)
        hosts_change = full or _hosts_differ(d, applied, topo.names)
        gateways_change = full or _LAST_GATEWAYS.get("router") != d.gateways
        if gateways_change and _ns_ok(ROUTER_NS):
            _sync_gateways(d)
        _sync_firewall(state, lab_hosts, p, moves, force=full)
        _sync_traffic_routes(topo, d, moves)
        if hosts_change:
            _sync_hosts(topo, d, applied, moves)
            _save_applied(p, applied)
        if moves:
            p.logs.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S") + f".{int(time.time() * 1000) % 1000:03d}"
            with open(p.sdn_log, "a") as fh:
                fh.writelines(f"{stamp} {m}\n" for m in moves)


#: the subnet gateways this process last put on the router's `lo` (a fakecloud's hook calls
#: come from one long-lived process; another process starts with a full pass)
_LAST_GATEWAYS: dict[str, set[str]] = {}


def _hosts_differ(d: Desired, applied: dict[str, dict[str, str]], names: Sequence[str]) -> bool:
    """Whether a host's private part differs from what was last applied (the record the
    supervisor's repair reads too)."""
    for name in names:
        if not _ns_ok(host_ns(name)):
            continue
        old = applied.get(name)
        if (HostNet(**old) if old else None) != d.hosts.get(name):
            return True
    return False


def _sync_gateways(d: Desired) -> None:
    have_gw = {
        a["local"]
        for i in _ip_json(ROUTER_NS, "-4", "addr", "show", "dev", "lo")
        for a in i.get("addr_info", [])
        if not a["local"].startswith("127.")
    }
    _batch(
        ROUTER_NS,
        [f"address add {g}/32 dev lo" for g in sorted(d.gateways - have_gw)]
        + [f"address del {g}/32 dev lo" for g in sorted(have_gw - d.gateways)],
    )
    _LAST_GATEWAYS["router"] = set(d.gateways)


def _sync_firewall(
    state: dict[str, Any], lab_hosts: set[str], p: labstate.LabPaths, moves: list[str], force: bool
) -> None:
    """The cloud firewalls in `rbl-inet`, when their rules changed since the last apply (or with
    `force`): before the routes, so a floating IP never reaches its new server unfiltered."""
    if not _ns_ok(INET_NS):
        return
    rules = labfirewall.ruleset(state, lab_hosts)
    last = p.run / "firewall.nft"
    changed = not last.exists() or last.read_text() != rules
    if changed or force:
        labfirewall.apply(INET_NS, rules)
    if changed:
        moves.append(f"{INET_NS} firewall: {rules.count(' jump ')} filtered address(es)")
        last.write_text(rules)


def _sync_traffic_routes(topo: topology.Topology, d: Desired, moves: list[str]) -> None:
    """The /32s that steer traffic: the router's (private and alias IPs) and `rbl-inet`'s
    (floating IPs), both namespaces at once (each a read and a batch of `ip`)."""
    jobs: list[tuple[str, str, dict[str, str], set[str]]] = []
    if _ns_ok(ROUTER_NS):
        jobs.append((ROUTER_NS, "r-", d.router, set()))
    if _ns_ok(INET_NS):
        static = {h.public_ip for h in topo.hosts} | set(topology.OUTSIDE.values())
        jobs.append((INET_NS, "i-", d.inet, static))
    logs: list[list[str]] = [[] for _ in jobs]
    if jobs:
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            done = [
                pool.submit(_sync_routes, *job, log) for job, log in zip(jobs, logs, strict=True)
            ]
            for future in done:
                future.result()  # a failure is raised here, in the caller's thread
    for entries in logs:
        moves.extend(entries)


def _sync_hosts(
    topo: topology.Topology, d: Desired, applied: dict[str, dict[str, str]], moves: list[str]
) -> None:
    """Each attached host's ens10: address, MAC, the network's route (as Hetzner's DHCP
    configures them); `applied` is updated with what each host got."""
    for name in topo.names:
        ns = host_ns(name)
        if not _ns_ok(ns):
            continue
        want = d.hosts.get(name)
        old = applied.get(name)
        old_net = HostNet(**old) if old else None
        if want is None and old_net is None:
            continue
        # an attached host always gets its address and route again (`replace` is a no-op when
        # present): a link set down and up, or a test, may have removed them behind our back
        cmds = []
        if old_net and (want is None or old_net.ip != want.ip):
            cmds.append(f"address del {old_net.ip}/32 dev ens10")
        if old_net and (
            want is None or old_net.ip_range != want.ip_range or old_net.gateway != want.gateway
        ):
            cmds.append(f"route del {old_net.ip_range} dev ens10")
        new_mac = bool(want and want.mac and _mac(ns) != want.mac.lower())
        if want and new_mac:
            # the NIC Hetzner hot-plugs on attach carries the API's MAC: so does ens10
            cmds.append(f"link set dev ens10 address {want.mac}")
        if want:
            cmds += [
                f"address replace {want.ip}/32 dev ens10",
                f"route replace {want.ip_range} via {want.gateway} dev ens10 onlink",
            ]
        try:
            _batch(ns, cmds)
        except RuntimeError:
            if _link_up(ns):
                raise
            # the server's NIC is down (a fault, a reboot): the cloud's change stands all the
            # same, as on Hetzner; the host gets its part when the link is back
            moves.append(f"{ns} ens10: down, {old_net} -> {want} when it is up")
            continue
        if want:
            applied[name] = want.__dict__
        else:
            applied.pop(name, None)
        if new_mac:  # the router must not keep sending to the old MAC
            subprocess.run(
                ["ip", "-n", ROUTER_NS, "neigh", "flush", "dev", router_link(name)],
                capture_output=True,
            )
        if want != old_net:
            moves.append(f"{ns} ens10: {old_net} -> {want}")


def _load_applied(p: labstate.LabPaths) -> dict[str, dict[str, str]]:
    try:
        data: dict[str, dict[str, str]] = json.loads(p.sdn_applied.read_text())
        return data
    except (OSError, ValueError):
        return {}


def _save_applied(p: labstate.LabPaths, applied: dict[str, dict[str, str]]) -> None:
    tmp = p.sdn_applied.with_suffix(".tmp")
    tmp.write_text(json.dumps(applied, indent=1, sort_keys=True))
    tmp.replace(p.sdn_applied)


def apply_from_file(*, only_host: str | None = None) -> None:
    """Re-apply the persisted API state (after `up` or a host reboot)."""
    p = labstate.paths()
    state = json.loads(p.cloud_state.read_text()) if p.cloud_state.exists() else {}
    apply_state(state, only_host=only_host, full=True)


def forget_host(name: str) -> None:
    """A rebooted host lost its runtime addresses: drop its entry so the next apply re-adds them."""
    p = labstate.paths()
    with _locked(p):
        applied = _load_applied(p)
        applied.pop(name, None)
        _save_applied(p, applied)
