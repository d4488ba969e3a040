"""Facts the cloud already knows: the LBs' public IPv4 and their interface names.

`hosts.<lb>.public_ip`, `load_balancer.interface` and `load_balancer.public_interface` may be
left out of the inventory. The API gives each server's public IPv4 and the MAC address of its
NIC in the private network; the host's `ip link` names the interface with that MAC (`ens10` on
some server types, `enp7s0` on others) and `ip addr` the one holding the public IPv4. A value
the inventory does give is verified the same way: a mismatch is an error naming both values.

`facts_for` reads (API + one read-only command per LB); `resolve` is pure (unit-tested) and
returns the inventory with the found values filled in, or the problems.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Any

from ..inventory import Inventory

#: one read-only round trip: every link with its MAC, then every IPv4 address
HOST_PROBE = "ip -o link show; echo ---; ip -o -4 addr show"

#: what the plan shows when the private NIC cannot be found yet (dry-run before `network`)
PENDING_NIC = "<private-nic>"

_LINK = re.compile(r"^\d+:\s+([^:@\s]+)(?:@\S+)?:.*?link/\w+\s+([0-9a-fA-F:]{17})")
_ADDR = re.compile(r"^\d+:\s+(\S+)\s+inet\s+([0-9.]+)/")


@dataclass(frozen=True)
class ServerFacts:
    """What the API says about one server (None: not known / not attached)."""

    name: str
    exists: bool = True
    public_ip: str | None = None
    private_ip: str | None = None
    mac: str | None = None  # of the NIC in the inventory's network


@dataclass(frozen=True)
class LinkFacts:
    """What `HOST_PROBE` says about one host: MAC and IPv4 addresses per interface."""

    macs: dict[str, str] = field(default_factory=dict)
    addrs: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""

    def with_mac(self, mac: str) -> str | None:
        return next((n for n, m in self.macs.items() if m == mac.lower()), None)

    def with_addr(self, ip: str) -> str | None:
        return next((n for n, a in self.addrs.items() if ip in a), None)

    def describe(self) -> str:
        return ", ".join(f"{n} {m}" for n, m in self.macs.items() if n != "lo") or "none"


def parse_links(text: str) -> LinkFacts:
    """`HOST_PROBE`'s output → LinkFacts."""
    links, _, addrs = text.partition("\n---")
    macs = {m.group(1): m.group(2).lower() for ln in links.splitlines() if (m := _LINK.match(ln))}
    by_dev: dict[str, list[str]] = {}
    for ln in addrs.splitlines():
        if m := _ADDR.match(ln.strip()):
            by_dev.setdefault(m.group(1), []).append(m.group(2))
    return LinkFacts(macs, by_dev)


def server_facts(cloud: Any, name: str, network_id: int | None) -> ServerFacts:
    """Read one server through a CloudTarget-like object (`client.servers.get_by_name`)."""
    # through the target's retrier: `locked`/`unavailable`/a refused connection are retried to
    # the inventory's retry deadline with a progress line, as every other API read
    srv = cloud.retrier.call(lambda: cloud.client.servers.get_by_name(name))
    if srv is None:
        return ServerFacts(name, exists=False)
    ipv4 = getattr(getattr(srv, "public_net", None), "ipv4", None)
    pn = next(
        (
            p
            for p in (srv.private_net or [])
            if network_id is not None and p.network.id == network_id
        ),
        None,
    )
    return ServerFacts(
        name,
        public_ip=getattr(ipv4, "ip", None) or None,
        private_ip=pn.ip if pn is not None else None,
        mac=(pn.mac_address or "").lower() or None if pn is not None else None,
    )


def needs_discovery(inv: Inventory) -> bool:
    """Whether the inventory leaves something to the cloud (then a token is required)."""
    lb = inv.load_balancer
    return (
        not lb.interface
        or not lb.public_interface
        or any(h.public_ip is None for h in inv.hosts_with_role("lb"))
    )


def facts_for(
    inv: Inventory, cloud: Any, hosts: Mapping[str, Any]
) -> tuple[dict[str, ServerFacts], dict[str, LinkFacts]]:
    """The API's facts of every LB and each connected LB's links (read-only)."""
    net = cloud.retrier.call(lambda: cloud.client.networks.get_by_name(inv.hcloud.network.name))
    net_id = net.id if net is not None else None
    servers: dict[str, ServerFacts] = {}
    links: dict[str, LinkFacts] = {}
    for h in inv.hosts_with_role("lb"):
        servers[h.name] = server_facts(cloud, h.name, net_id)
        host = hosts.get(h.name)
        if host is None:
            continue
        try:
            links[h.name] = parse_links(host.query(HOST_PROBE, ok_codes=None).stdout)
        except Exception as exc:  # unreachable: the step itself reports it
            links[h.name] = LinkFacts(error=str(exc) or type(exc).__name__)
    return servers, links


def resolve(
    inv: Inventory,
    servers: Mapping[str, ServerFacts],
    links: Mapping[str, LinkFacts],
    *,
    pending_ok: bool = False,
) -> tuple[Inventory, list[str], list[str]]:
    """(inventory with the found values, problems, notes). See the module docstring.

    `pending_ok`: a server not attached to the network yet leaves the private interface as
    `PENDING_NIC` with a note instead of a problem (a dry-run plans before `network` ran).
    """
    problems: list[str] = []
    notes: list[str] = []
    lb = inv.load_balancer
    hosts = dict(inv.hosts)
    found_priv: dict[str, str] = {}
    found_pub: dict[str, str] = {}
    for h in inv.hosts_with_role("lb"):
        srv = servers.get(h.name)
        key = f"hosts.{h.name}.public_ip"
        if srv is None or not srv.exists:
            problems.append(f"{h.name}: no server of that name in the Hetzner project")
            continue
        public = str(h.public_ip) if h.public_ip is not None else srv.public_ip
        if h.public_ip is None:
            if srv.public_ip is None:
                problems.append(f"{key}: not given and the API has no public IPv4 for {h.name}")
            else:
                hosts[h.name] = h.model_copy(update={"public_ip": IPv4Address(srv.public_ip)})
                notes.append(f"{key}: {srv.public_ip} (from the API)")
        elif srv.public_ip is not None and str(h.public_ip) != srv.public_ip:
            problems.append(
                f"{key}: the inventory says {h.public_ip}, the API says {srv.public_ip}"
            )
        lf = links.get(h.name)
        if lf is None or lf.error:
            if lf is not None:
                problems.append(f"{h.name}: cannot read its interfaces: {lf.error}")
            continue
        # the private NIC: the API's MAC of the server's NIC in our network
        if srv.mac is None:
            if lb.interface and lb.interface not in lf.macs:
                problems.append(
                    f"load_balancer.interface: {lb.interface} does not exist on {h.name} "
                    f"(interfaces: {lf.describe()})"
                )
            elif not lb.interface and pending_ok:
                notes.append(
                    f"load_balancer.interface: {h.name} is not attached to network "
                    f"{inv.hcloud.network.name} yet; found after `network` ({PENDING_NIC} here)"
                )
            elif not lb.interface:
                problems.append(
                    f"load_balancer.interface: {h.name} is not attached to network "
                    f"{inv.hcloud.network.name}: run `inv network` first, or give the name"
                )
        else:
            name = lf.with_mac(srv.mac)
            if name is None:
                problems.append(
                    f"load_balancer.interface: no interface on {h.name} has the MAC the API "
                    f"gives for its private NIC ({srv.mac}); interfaces: {lf.describe()}"
                )
            elif lb.interface and lb.interface != name:
                have = lf.macs.get(lb.interface, "not present")
                problems.append(
                    f"load_balancer.interface: the inventory says {lb.interface} "
                    f"(MAC {have} on {h.name}), the API's private NIC is {name} ({srv.mac})"
                )
            else:
                found_priv[h.name] = name
        # the public NIC: the one holding the server's public IPv4
        if public is not None:
            name = lf.with_addr(public)
            if name is None:
                problems.append(
                    f"load_balancer.public_interface: no interface on {h.name} holds its "
                    f"public IPv4 {public}"
                )
            elif lb.public_interface and lb.public_interface != name:
                problems.append(
                    f"load_balancer.public_interface: the inventory says "
                    f"{lb.public_interface}, {h.name} has its public IPv4 {public} on {name}"
                )
            else:
                found_pub[h.name] = name
    update: dict[str, str] = {}
    for field_name, found, given in (
        ("interface", found_priv, lb.interface),
        ("public_interface", found_pub, lb.public_interface),
    ):
        names = sorted(set(found.values()))
        if len(names) > 1:
            problems.append(
                f"load_balancer.{field_name}: the LBs differ ("
                + ", ".join(f"{h}: {n}" for h, n in found.items())
                + "); the configuration uses one name for both"
            )
        elif not given and names:
            update[field_name] = names[0]
            notes.append(f"load_balancer.{field_name}: {names[0]} (found from the API)")
        elif not given and field_name == "interface" and pending_ok:
            update[field_name] = PENDING_NIC
        elif not given and not any(field_name in p for p in problems):
            problems.append(f"load_balancer.{field_name}: not given and not found (no LB read)")
    if problems:
        return inv, problems, notes
    new_lb = lb.model_copy(update=update) if update else lb
    return inv.model_copy(update={"hosts": hosts, "load_balancer": new_lb}), [], notes


#: steps whose files or checks use the LBs' public IPs and interface names
LB_FACT_STEPS = frozenset({"lb", "heartbeat", "haproxy", "insecure-api"})
#: steps that use the LBs' public IPs only (the firewall lets Heartbeat's UDP in from them):
#: the private NIC may still be unattached then (it stays `PENDING_NIC`, read again later)
PUBLIC_IP_STEPS = frozenset({"firewall"})


class DiscoveryFailed(Exception):
    """The inventory and the cloud or the hosts disagree, or a fact cannot be found (exit 2)."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def discover(
    inv: Inventory,
    ui: Any,
    hosts: Mapping[str, Any],
    *,
    cloud: Any = None,
    pending_ok: bool = False,
) -> Inventory:
    """Fill in and verify the cloud's facts for the LBs among `hosts` (read-only).

    Without an API token, an inventory that gives every fact is used as it is (nothing to verify
    against); one that leaves a fact out is refused naming the token variable.
    """
    if not any(h.name in hosts for h in inv.hosts_with_role("lb")) and not needs_discovery(inv):
        return inv
    if cloud is None:
        from .api import CloudTarget, CloudTokenMissing

        try:
            cloud = CloudTarget.from_inventory(inv, dry_run=True, ui=ui)
        except CloudTokenMissing as exc:
            if not needs_discovery(inv):
                return inv
            raise DiscoveryFailed(
                [f"{exc}: the LBs' public_ip and interface names are read from the API"]
            ) from None
    with ui.status("reading the LBs' public IPs and interfaces from the API and the hosts"):
        servers, links = facts_for(inv, cloud, hosts)
    new, problems, notes = resolve(inv, servers, links, pending_ok=pending_ok)
    if problems:
        raise DiscoveryFailed(problems)
    for note in notes:
        ui.print(f"from the cloud: {note}", style="cyan")
    return new
