"""`inv status` as one value: hosts, the LB pair, the API through the VIP, the nodes.

`ClusterStatus` is what `clusterfacts.collect_status` found (what could not be known is
recorded with the reason, never raised); `problems()` says what makes the cluster unhealthy
(exit 1), `warnings()` what is worth a look. `clusterview` renders it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..render.k8sfiles import ADMIN_CONF
from .certexpiry import WARN_DAYS, CertExpiry, soonest
from .lbstatus import LbNode, pair_problems

K8S_ROLES = ("control-plane", "worker")


@dataclass(frozen=True)
class HostState:
    """One inventory host as SSH sees it."""

    name: str
    role: str
    private_ip: str
    reachable: bool
    error: str = ""
    os: str = ""
    kernel: str = ""
    uptime_s: float | None = None
    kubelet: str = ""  # `systemctl is-active kubelet` on Kubernetes hosts
    admin_conf: bool = False  # control planes: kubeadm init/join left /etc/kubernetes/admin.conf
    certs: tuple[CertExpiry, ...] = ()  # control planes: `kubeadm certs check-expiration`


@dataclass(frozen=True)
class ApiCheck:
    """One GET against the API server's health endpoint; `ok` None: not checked (`detail` why)."""

    via: str  # what was asked, e.g. "VIP 10.143.0.50:6443"
    url: str
    probe_host: str
    ok: bool | None
    code: int = 0
    seconds: float | None = None
    tls: str = ""  # "verified (cluster CA)" or "not verified"
    detail: str = ""
    server_version: str = ""


@dataclass(frozen=True)
class NodeState:
    """A node as `kubectl get nodes -o json` reports it, matched against the inventory."""

    name: str
    ready: str  # "True", "False", "Unknown" (the Ready condition's status)
    reason: str = ""
    roles: tuple[str, ...] = ()
    version: str = ""
    internal_ip: str = ""
    inventory_role: str = ""  # "" = not in the inventory


@dataclass(frozen=True)
class NodesView:
    """The cluster's nodes, or why they are unknown."""

    source: str = ""  # the control plane kubectl ran on
    nodes: tuple[NodeState, ...] = ()
    missing: tuple[str, ...] = ()  # inventory Kubernetes hosts that are not nodes
    error: str = ""
    not_initialised: bool = False


@dataclass(frozen=True)
class FirewallRow:
    """One cloud firewall covering inventory servers: inbound rule count, servers covered."""

    name: str
    rules: int
    servers: tuple[str, ...]


@dataclass(frozen=True)
class FirewallView:
    """The cloud firewalls of the inventory's servers, or why they are unknown."""

    firewalls: tuple[FirewallRow, ...] = ()
    uncovered: tuple[str, ...] = ()  # inventory servers no firewall applies to
    managed: bool = True  # the inventory has a firewall section
    error: str = ""


@dataclass(frozen=True)
class ClusterStatus:
    hosts: tuple[HostState, ...]
    lbs: tuple[LbNode, ...]
    api_vip: str  # who the cloud API routes the VIP to ("?" not asked, "-" nobody)
    api_fip: str
    cloud_note: str
    checks: tuple[ApiCheck, ...]
    nodes: NodesView
    expected_minor: int = 0
    inventory_ips: Mapping[str, str] = field(default_factory=dict)
    inventory_roles: Mapping[str, str] = field(default_factory=dict)
    firewalls: FirewallView | None = None  # None: the cloud API was not asked

    def problems(self) -> list[str]:
        """What makes the cluster unhealthy (exit 1); empty when all is well."""
        out = [
            f"{h.name}: unreachable over SSH: {short(h.error, host=h.name)}"
            for h in self.hosts
            if not h.reachable
        ]
        ssh_ok = {h.name for h in self.hosts if h.reachable}
        for n in self.lbs:
            if not n.reachable:
                if n.name in ssh_ok:  # reachable, but lbstatus's probes failed
                    out.append(f"{n.name}: load-balancer state unknown: {short(n.error)}")
                continue
            if n.heartbeat != "running":
                out.append(f"{n.name}: heartbeat not running (systemctl: {n.heartbeat})")
            if n.haproxy != "active":
                out.append(f"{n.name}: haproxy is {n.haproxy}")
            down = [s for s, st in n.backends if not st.startswith("UP")]
            if down:
                out.append(f"{n.name}: backends not UP: {', '.join(down)}")
            elif not n.backends and n.haproxy == "active":
                out.append(f"{n.name}: haproxy reports no backend servers")
        if any(n.reachable for n in self.lbs):  # else the unreachable LBs say it all
            out += pair_problems(list(self.lbs), self.api_vip, self.api_fip)
        for c in self.checks:
            if c.ok is False:
                out.append(f"API through the {c.via} (from {c.probe_host}): {c.detail}")
        nv = self.nodes
        if nv.not_initialised:
            out.append("cluster not initialised: no control plane has " + ADMIN_CONF)
        elif nv.error:
            out.append(f"nodes unknown: {nv.error}")
        for node in nv.nodes:
            if node.ready != "True":
                state = "NotReady" if node.ready == "False" else f"Ready={node.ready}"
                why = f" ({node.reason})" if node.reason else ""
                out.append(f"node {node.name}: {state}{why}")
        out += [f"{m}: in the inventory but not a node of the cluster" for m in nv.missing]
        out += [
            f"{h.name}: certificate {c.name} expired ({c.expires}): `inv cluster.renew-certs`"
            for h in self.hosts
            for c in h.certs
            if c.days < 0
        ]
        fw = self.firewalls
        if fw is not None and fw.managed and not fw.error:
            out += [
                f"{n}: no cloud firewall applied: every port is open to the internet "
                "(run `inv firewall`)"
                for n in fw.uncovered
            ]
        return out

    def warnings(self) -> list[str]:
        """Worth a look, but not unhealthy (exit code unchanged)."""
        out = [self.cloud_note] if self.cloud_note else []
        for h in self.hosts:
            first = soonest(list(h.certs))
            if first is not None and 0 <= first.days < WARN_DAYS:
                out.append(
                    f"{h.name}: certificate {first.name} expires in {first.residual} "
                    f"({first.expires}), under {WARN_DAYS} days: `inv cluster.renew-certs`"
                )
        fw = self.firewalls
        if fw is not None and fw.error:
            out.append(f"cloud firewalls unknown: {fw.error}")
        elif fw is not None and not fw.managed and fw.uncovered:
            out.append(
                f"no cloud firewall on {', '.join(fw.uncovered)} (the inventory has no firewall "
                "section): every port is open to the internet"
            )
        for node in self.nodes.nodes:
            if not node.inventory_role:
                out.append(f"node {node.name}: in the cluster but not in the inventory")
                continue
            want = self.inventory_ips.get(node.name, "")
            if node.internal_ip and want and node.internal_ip != want:
                out.append(
                    f"node {node.name}: InternalIP {node.internal_ip}, inventory private_ip {want}"
                )
            minor = version_minor(node.version)
            if self.expected_minor and minor is not None and minor != self.expected_minor:
                out.append(
                    f"node {node.name}: kubelet {node.version}, inventory kubernetes.version "
                    f"1.{self.expected_minor}"
                )
        return out


# -- helpers ------------------------------------------------------------------------------------
def short(error: str, limit: int = 80, *, host: str = "") -> str:
    """A one-line reason, cut at `limit`; without the `host: unreachable:` prefix of
    `HostUnreachable` messages when `host` is given."""
    text = " ".join(error.split())
    if host:
        text = text.removeprefix(f"{host}: ").removeprefix("unreachable: ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def version_minor(version: str) -> int | None:
    m = re.match(r"v?1\.(\d+)", version)
    return int(m.group(1)) if m else None


def uptime_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m"
