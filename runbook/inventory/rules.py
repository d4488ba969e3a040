"""The inventory's semantic rules (docs/inventory.md): what per-field types cannot see.

Each rule reads what validated (see ``Parts``), so one run reports type errors and semantic
problems together. Rules
that count hosts (roles, capacity) run only when every host validated; otherwise a host with a
typo would also show up as "fewer than 2 lb hosts".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from runbook.inventory import netcheck
from runbook.inventory.models import (
    API_PORT,
    FirewallSpec,
    HcloudSpec,
    HostSpec,
    KubernetesSpec,
    LoadBalancerSpec,
)

_ROLE_NOUN = {"control-plane": "a control-plane host", "lb": "an lb host", "worker": "a worker"}
ETCD_MAX_ELECTION_MS = 50_000


@dataclass(frozen=True)
class Finding:
    """A problem (or, with ``warning``, an advice that does not fail) at a dotted key path."""

    key: str
    reason: str
    warning: bool = False


@dataclass(frozen=True)
class Parts:
    """The sections as far as they validated, for the rules.

    A section with type errors is either ``None`` or, when ``partial``, a ``model_construct``-ed
    object holding only the fields that are valid on their own: a rule that reaches for a missing
    field raises AttributeError and is skipped (only then: otherwise it is a bug and propagates).
    Hosts are salvaged the same way; ``hosts_complete`` says whether every host validated.
    """

    hcloud: HcloudSpec | None
    hosts: Mapping[str, HostSpec]
    hosts_complete: bool
    load_balancer: LoadBalancerSpec | None
    kubernetes: KubernetesSpec | None
    partial: bool = False
    firewall: FirewallSpec | None = None
    firewall_given: bool = True  # the section is optional; absent is a warning, not an error


def findings(p: Parts) -> list[Finding]:
    """Every semantic problem and warning, in file order of the sections."""
    out: list[Finding] = []
    host_rules = (lambda p, h=h: _host(p, h) for h in p.hosts.values())  # one try per host
    for rule in (_network, *host_rules, *_RULES):
        try:
            for finding in rule(p):
                out.append(finding)
        except AttributeError:
            if not p.partial:
                raise
    return out


def _attr(obj: object, path: str) -> Any:
    """``obj.a.b`` or None when a part is missing (a section that did not fully validate)."""
    for name in path.split("."):
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


def _ranges(p: Parts) -> tuple[IPv4Network, IPv4Network] | None:
    """The network ip_range and cloud subnet, when both are known."""
    ip_range, subnet = _attr(p.hcloud, "network.ip_range"), _attr(p.hcloud, "network.subnet")
    return (ip_range, subnet) if ip_range is not None and subnet is not None else None


def _network(p: Parts) -> Iterator[Finding]:
    if p.hcloud is None:
        return
    net = p.hcloud.network
    if reason := netcheck.private_range_problem(net.ip_range):
        yield Finding("hcloud.network.ip_range", reason)
    if reason := netcheck.subnet_problem(net.subnet, net.ip_range):
        yield Finding("hcloud.network.subnet", reason)


def _host(p: Parts, h: HostSpec) -> Iterator[Finding]:
    key = f"hosts.{h.name}"
    if ranges := _ranges(p):
        reserved = netcheck.reserved_in(ranges[1])
        if reason := netcheck.address_problem(h.private_ip, subnet=ranges[1], reserved=reserved):
            yield Finding(f"{key}.private_ip", reason)
    network = _attr(p.hcloud, "network.ip_range")
    if h.public_ip is not None and (
        reason := netcheck.public_problem(h.public_ip, network=network)
    ):
        yield Finding(f"{key}.public_ip", reason)


def _host_duplicates(p: Parts) -> Iterator[Finding]:
    first: dict[str, dict[object, str]] = {"private_ip": {}, "public_ip": {}, "address": {}}
    for h in p.hosts.values():
        for what, value in (
            ("private_ip", _attr(h, "private_ip")),
            ("public_ip", _attr(h, "public_ip")),
            ("address", (_attr(h, "address") or "").lower() or None),
        ):
            seen = first[what]
            if value is None:
                continue
            if value in seen:
                yield Finding(
                    f"hosts.{h.name}.{what}", f"{value} is also the {what} of {seen[value]}"
                )
            else:
                seen[value] = h.name


def _gateways(p: Parts) -> Iterator[Finding]:
    for h in p.hosts.values():
        gateway = _attr(h, "gateway")
        if gateway is None:
            continue
        key = f"hosts.{h.name}.gateway"
        if gateway == h.name:
            yield Finding(key, "a host cannot be its own jump host")
            continue
        chain = [h.name]
        current: str | None = gateway
        while current is not None and current in p.hosts:
            if current in chain:
                yield Finding(key, "jump hosts form a loop: " + " → ".join([*chain, current]))
                break
            chain.append(current)
            current = _attr(p.hosts[current], "gateway")


def _roles(p: Parts) -> Iterator[Finding]:
    if not p.hosts_complete:
        return
    cps = [h.name for h in p.hosts.values() if h.role == "control-plane"]
    lbs = [h.name for h in p.hosts.values() if h.role == "lb"]
    if not cps:
        yield Finding("hosts", "no host has role control-plane: kubeadm init needs one")
    elif len(cps) % 2 == 0:
        yield Finding(
            "hosts",
            f"{len(cps)} control-plane hosts: etcd needs a majority, so an even number survives "
            f"no more failures than {len(cps) - 1}; use an odd number",
            warning=True,
        )
    if len(lbs) < 2:
        named = f" ({', '.join(lbs)})" if lbs else ""
        yield Finding(
            "hosts",
            f"{len(lbs)} lb host{'' if len(lbs) == 1 else 's'}{named}: the VIP and floating IP "
            "fail over between two load balancers; add a second host with role lb",
        )
    elif len(lbs) > 2:
        yield Finding(
            "hosts",
            f"{len(lbs)} lb hosts ({', '.join(lbs)}): Heartbeat's haresources mode manages "
            "exactly two nodes",
        )


def _primary(p: Parts) -> Iterator[Finding]:
    if p.load_balancer is None:
        return
    name = p.load_balancer.primary
    lbs = ", ".join(h.name for h in p.hosts.values() if _attr(h, "role") == "lb") or "none"
    primary = p.hosts.get(name)
    if primary is None and p.hosts_complete:
        yield Finding(
            "load_balancer.primary", f"{name} is not a host of the inventory (lb hosts: {lbs})"
        )
    elif primary is not None and primary.role != "lb":
        yield Finding(
            "load_balancer.primary",
            f"{name} is {_ROLE_NOUN[primary.role]}, not an lb host (lb hosts: {lbs})",
        )


def _vip(p: Parts) -> Iterator[Finding]:
    if p.load_balancer is None:
        return
    vip = p.load_balancer.vip
    if ranges := _ranges(p):
        reserved = netcheck.reserved_in(ranges[1])
        if reason := netcheck.address_problem(vip, subnet=ranges[1], reserved=reserved):
            yield Finding("load_balancer.vip", reason)
    for h in p.hosts.values():
        if _attr(h, "private_ip") == vip:
            yield Finding(
                "load_balancer.vip",
                f"{vip} is the private_ip of {h.name}: the VIP must be an extra address that "
                "moves between the LBs",
            )


def _floating_ip(p: Parts) -> Iterator[Finding]:
    if p.load_balancer is None:
        return
    fip = p.load_balancer.floating_ip.address
    network = _attr(p.hcloud, "network.ip_range")
    if reason := netcheck.public_problem(fip, network=network):
        yield Finding("load_balancer.floating_ip.address", reason)
    for h in p.hosts.values():
        if _attr(h, "public_ip") == fip:
            yield Finding(
                "load_balancer.floating_ip.address",
                f"{fip} is the public_ip of {h.name}: the floating IP must be an extra address "
                "that moves between the LBs",
            )


def _interfaces(p: Parts) -> Iterator[Finding]:
    if p.load_balancer is None:
        return
    lb = p.load_balancer
    if lb.interface and lb.interface == lb.public_interface:
        yield Finding(
            "load_balancer.public_interface",
            f"{lb.public_interface} is also the private interface: the floating IP and "
            "Heartbeat's second path need the public one",
        )


def _exposure(p: Parts) -> Iterator[Finding]:
    if p.load_balancer is None:
        return
    lb = p.load_balancer
    for i, allowed in enumerate(lb.public_allow):
        if allowed.prefixlen == 0:
            yield Finding(
                f"load_balancer.public_allow[{i}]",
                "0.0.0.0/0 opens the API on the floating IP (HAProxy's allow-list and the "
                "LBs' cloud firewall) to the whole internet",
                warning=True,
            )
    api = lb.insecure_api
    if api.port == API_PORT:
        yield Finding("load_balancer.insecure_api.port", f"{API_PORT} is the API server's port")
    if api.enabled:
        yield Finding(
            "load_balancer.insecure_api.enabled",
            f"plain unauthenticated HTTP on VIP:{api.port} with the rights of ClusterRole "
            f"{api.role} for everyone on the private network (emulates the post's removed "
            "insecure port)",
            warning=True,
        )


def _firewall(p: Parts) -> Iterator[Finding]:
    if not p.firewall_given:
        yield Finding(
            "firewall",
            "no firewall section: every port of every server (SSH, kubelet 10250, NodePorts, "
            "the API on each control plane) stays reachable from the internet; list your "
            "admin_networks there and run `inv firewall`",
            warning=True,
        )
        return
    fw = p.firewall
    if fw is None:
        return
    anywhere = [i for i, n in enumerate(fw.admin_networks) if n.prefixlen == 0]
    for i in anywhere:
        net = fw.admin_networks[i]
        key = f"firewall.admin_networks[{i}]"
        if fw.ssh_from_anywhere:
            yield Finding(key, f"{net}: SSH is open to the whole internet (confirmed)", True)
        else:
            yield Finding(
                key,
                f"{net} opens SSH on every server to the whole internet; list your admin "
                "networks instead, or confirm with firewall.ssh_from_anywhere: true",
            )
    if fw.ssh_from_anywhere and not anywhere:
        yield Finding(
            "firewall.ssh_from_anywhere",
            "confirms 0.0.0.0/0 or ::/0 in admin_networks, but none is listed: remove it",
        )


def _heartbeat(p: Parts) -> Iterator[Finding]:
    if p.load_balancer is None:
        return
    hb = p.load_balancer.heartbeat
    key = "load_balancer.heartbeat"
    if hb.deadtime <= 2 * hb.keepalive:
        yield Finding(
            f"{key}.deadtime",
            f"deadtime {hb.deadtime} must be more than 2 × keepalive "
            f"({hb.keepalive:g}), at least {math.floor(2 * hb.keepalive) + 1}: Heartbeat "
            "refuses to start otherwise",
        )
    if hb.warntime is not None and not hb.keepalive < hb.warntime < hb.deadtime:
        yield Finding(
            f"{key}.warntime",
            f"warntime {hb.warntime} must lie between keepalive "
            f"{hb.keepalive:g} and deadtime {hb.deadtime}",
        )
    if hb.initdead is not None:
        if hb.initdead < hb.deadtime:
            yield Finding(
                f"{key}.initdead",
                f"initdead {hb.initdead} must be at least deadtime "
                f"{hb.deadtime}: the peer gets this long to appear after boot",
            )
        elif hb.initdead < 10:
            yield Finding(
                f"{key}.initdead",
                f"initdead {hb.initdead} is short: at least 10 s is "
                "advised, networks come up late at boot",
                warning=True,
            )


def _overlaps(p: Parts) -> Iterator[Finding]:
    """The post's hardest lesson: the network range, pod and service subnets must be disjoint."""
    k8s = p.kubernetes
    if k8s is None:
        return
    pod, svc = _attr(k8s, "pod_subnet"), _attr(k8s, "service_subnet")
    net = _attr(p.hcloud, "network.ip_range")
    checks = (
        ("network ip_range", net, "pod_subnet", pod, [svc], "kubernetes.pod_subnet"),
        ("network ip_range", net, "service_subnet", svc, [pod], "kubernetes.service_subnet"),
        ("pod_subnet", pod, "service_subnet", svc, [net], "kubernetes.service_subnet"),
    )
    for a_name, a, b_name, b, others, key in checks:
        if a is None or b is None:
            continue
        taken = [o for o in others if o is not None]
        if reason := netcheck.overlap_problem(a_name, a, b_name, b, taken=taken):
            yield Finding(key, reason)


def _k8s_sizes(p: Parts) -> Iterator[Finding]:
    if p.kubernetes is None:
        return
    if reason := netcheck.service_size_problem(p.kubernetes.service_subnet):
        yield Finding("kubernetes.service_subnet", reason)
    if p.hosts_complete:
        nodes = sum(1 for h in p.hosts.values() if h.role != "lb")
        if reason := netcheck.pod_capacity_problem(p.kubernetes.pod_subnet, nodes):
            yield Finding("kubernetes.pod_subnet", reason)


def _etcd(p: Parts) -> Iterator[Finding]:
    if p.kubernetes is None:
        return
    etcd = p.kubernetes.etcd
    key = "kubernetes.etcd.election_timeout_ms"
    election, heartbeat = etcd.election_timeout_ms, etcd.heartbeat_interval_ms
    if election < 5 * heartbeat:
        yield Finding(
            key,
            f"{election} ms is less than 5 × heartbeat_interval_ms ({heartbeat}): "
            "etcd refuses to start",
        )
    elif election > ETCD_MAX_ELECTION_MS:
        yield Finding(
            key, f"{election} ms is more than {ETCD_MAX_ELECTION_MS}: etcd refuses to start"
        )


def _api_name_in_cluster_domain(p: Parts) -> Iterator[Finding]:
    if p.kubernetes is None:
        return
    name = _attr(p.kubernetes, "api_dns_name")
    domain = _attr(p.kubernetes, "dns_domain").lower().rstrip(".")
    fqdn = None if name is None else name.lower().rstrip(".")
    if fqdn is not None and (fqdn == domain or fqdn.endswith("." + domain)):
        yield Finding(
            "kubernetes.api_dns_name",
            f"{name} lies inside dns_domain {domain}, for which the cluster's CoreDNS is "
            "authoritative: pods would get NXDOMAIN for it. The runbook adds a CoreDNS hosts "
            f"entry {name} -> the VIP (inv cluster.cni); other names under {domain} do not "
            "resolve in pods, and a dns_domain outside your public zone avoids this",
            warning=True,
        )


_RULES: tuple[Callable[[Parts], Iterator[Finding]], ...] = (
    _host_duplicates,
    _gateways,
    _roles,
    _primary,
    _vip,
    _floating_ip,
    _interfaces,
    _exposure,
    _firewall,
    _heartbeat,
    _overlaps,
    _k8s_sizes,
    _etcd,
    _api_name_in_cluster_domain,
)
