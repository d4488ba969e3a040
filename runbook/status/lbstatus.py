"""`inv lb.status`: the LB pair as Heartbeat, the kernel, the cloud API and HAProxy see it.

Read-only: one round trip per LB (all facts in one probe batch) plus a few API reads.
"""

from __future__ import annotations

import csv
import io
import shlex
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..core.remote import Host, HostUnreachable
from ..inventory import Inventory
from ..tools.haproxyctl import runtime_command

SHOW_STAT = runtime_command("show stat")


@dataclass(frozen=True)
class LbNode:
    name: str
    reachable: bool
    heartbeat: str = "?"
    holds_vip: bool = False
    holds_fip: bool = False
    haproxy: str = "?"
    backends: tuple[tuple[str, str], ...] = ()
    error: str = ""
    rscstatus: str = "?"  # Heartbeat's resource status here (`cl_status rscstatus`)
    masters: int = 1  # Heartbeat master processes here (`HEARTBEAT_MASTERS`; one is the rule)


def addr_probe(interface: str) -> str:
    """The IPv4 addresses on `interface`, one line each (read-only)."""
    return f"ip -o -4 addr show dev {shlex.quote(interface)}"


RSCSTATUS = "cl_status rscstatus"
# Every Heartbeat master process on the node, one PID per line: its process title, and a session
# leader (systemd starts each service in a session of its own, and so does Heartbeat's own
# restart). The children the master forks for its resource work carry the same title until
# they exec, some for as long as a takeover runs, but stay in the master's session.
HEARTBEAT_MASTERS = (
    "ps -eo pid=,sid=,args= | "
    'awk \'$1 == $2 && $3 == "heartbeat:" && $4 == "master" && $5 == "control" {print $1}\''
)


def owns_group(inv: Inventory, name: str, rscstatus: str) -> bool:
    """Whether `cl_status rscstatus` on LB `name` means it holds the resource group. Heartbeat
    counts a node's own resources ("local": haresources names the node) and its peer's
    ("foreign") apart: the one group is local on the primary and foreign on the other LB, which
    holds all of its (zero) local resources, so "local" there means nothing."""
    home = name.lower() == inv.load_balancer.primary.lower()
    return rscstatus.strip() in ("all", "local" if home else "foreign")


def has_vip(inv: Inventory, private_addrs: str) -> bool:
    """Whether this LB holds the VIP locally, from `addr_probe(lb.interface)`'s output."""
    return f" {inv.load_balancer.vip}/" in private_addrs


def has_fip(inv: Inventory, public_addrs: str) -> bool:
    """Whether this LB holds the floating IP, from `addr_probe(lb.public_interface)`'s output."""
    return f" {inv.load_balancer.floating_ip.address}/" in public_addrs


def _probes(inv: Inventory) -> list[str]:
    lb = inv.load_balancer
    return [
        "systemctl is-active heartbeat; cl_status hbstatus >/dev/null 2>&1 && echo hb-running"
        f' && echo "rsc=$({RSCSTATUS} 2>/dev/null)"; echo "masters=$({HEARTBEAT_MASTERS} | wc -l)"',
        addr_probe(lb.interface),
        addr_probe(lb.public_interface),
        "systemctl is-active haproxy",
        SHOW_STAT,
    ]


def node_status(inv: Inventory, host: Host) -> LbNode:
    """Facts of one LB in one round trip."""
    try:
        facts = host.gather(_probes(inv))
    except HostUnreachable as exc:
        return LbNode(host.name, False, error=str(exc))
    hb, priv, pub, hap, stat = (f.stdout if f else "" for f in facts)
    backends = parse_stat(stat)
    hb_state = "running" if "hb-running" in hb else (hb.split() or ["?"])[0]
    rsc = next((ln[4:].strip() for ln in hb.splitlines() if ln.startswith("rsc=")), "") or "?"
    counted = next((ln[8:].strip() for ln in hb.splitlines() if ln.startswith("masters=")), "")
    return LbNode(
        host.name,
        True,
        hb_state,
        has_vip(inv, priv),
        has_fip(inv, pub),
        (hap.split() or ["?"])[0],
        tuple(backends),
        rscstatus=rsc,
        masters=int(counted) if counted.isdigit() else 1,
    )


def group_word(inv: Inventory, node: LbNode) -> str:
    """What Heartbeat on `node` says of the resource group, for a table: held, not held,
    transition (a hand-over or takeover under way; one that lasts is a wedged Heartbeat), or ?
    (Heartbeat not running or not asked)."""
    if node.rscstatus in ("?", "transition"):
        return node.rscstatus
    return "held" if owns_group(inv, node.name, node.rscstatus) else "not held"


def heartbeat_warnings(inv: Inventory, nodes: list[LbNode]) -> list[str]:
    """What an operator should look at in Heartbeat's view, beyond the addresses: a node in
    transition (normal for a few seconds during a hand-over; the watchdog restarts a Heartbeat
    that stays there: after 50 s when nothing is at work, else after 120 s), more than one
    Heartbeat on a node, and the group held
    by a node that does not hold the VIP, or by both (a deferred hand-over to the node that
    serves, or a split brain)."""
    out = [
        f"{n.name}: {n.masters} Heartbeats run there; each drops the other's messages as replays "
        "and the pair cannot settle (the watchdog ends them all and starts one within about a "
        "second; `inv lb.heartbeat` does the same)"
        for n in nodes
        if n.reachable and n.masters > 1
    ]
    out += [
        f"{n.name}: Heartbeat's resource status is 'transition' (a hand-over under way; if it "
        "stays, Heartbeat is wedged: the watchdog restarts it, after 50 s (by default) when "
        "nothing is at work, else after 120 s)"
        for n in nodes
        if n.reachable and n.rscstatus == "transition"
    ]
    owners = [n for n in nodes if n.reachable and group_word(inv, n) == "held"]
    if len(owners) > 1:
        out.append(
            f"Heartbeat gives the group to {len(owners)} LBs ({', '.join(n.name for n in owners)})"
        )
    out += [
        f"Heartbeat gives {n.name} the group, but {n.name} does not hold the VIP (a hand-over to "
        "the node that serves is due; run again in a few seconds)"
        for n in owners
        if not n.holds_vip
    ]
    return out


def parse_stat(text: str) -> list[tuple[str, str]]:
    """(proxy/server, status) of every backend server in `show stat` CSV output."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("# "):
        return []
    rows = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    out = []
    for row in rows:
        if row.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        out.append((f"{row.get('pxname')}/{row.get('svname')}", row.get("status", "?")))
    return out


def cloud_holders(inv: Inventory, client: Any) -> tuple[str, str]:
    """Who holds the VIP and the floating IP according to the API."""
    net = client.networks.get_by_name(inv.hcloud.network.name)
    vip_holder = "-"
    for lb in inv.hosts_with_role("lb"):
        srv = client.servers.get_by_name(lb.name)
        for pn in (srv.private_net if srv else []) or []:
            if (
                net is not None
                and pn.network.id == net.id
                and str(inv.load_balancer.vip) in (pn.alias_ips or [])
            ):
                vip_holder = lb.name
    fip = client.floating_ips.get_by_name(inv.load_balancer.floating_ip.name)
    fip_holder = "-"
    if fip is not None and fip.server is not None:
        ids = {client.servers.get_by_name(h.name).id: h.name for h in inv.hosts_with_role("lb")}
        fip_holder = ids.get(fip.server.id, f"server id {fip.server.id}")
    return vip_holder, fip_holder


def collect(inv: Inventory, hosts: Mapping[str, Host]) -> list[LbNode]:
    with ThreadPoolExecutor(max_workers=max(1, len(hosts))) as pool:
        return list(pool.map(lambda h: node_status(inv, h), hosts.values()))


def pair_problems(nodes: list[LbNode], api_vip: str, api_fip: str) -> list[str]:
    """Who holds the VIP and the floating IP: exactly one reachable node each, and the API
    routing them to that node (`api_*` "?" when the API was not asked). Unreachable nodes are
    the caller's to report."""
    problems: list[str] = []
    for what, api, local in (
        ("VIP", api_vip, [n.name for n in nodes if n.reachable and n.holds_vip]),
        ("floating IP", api_fip, [n.name for n in nodes if n.reachable and n.holds_fip]),
    ):
        if len(local) != 1:
            holders = f" ({', '.join(local)})" if local else ""
            problems.append(f"{what} held locally by {len(local)} reachable LBs{holders}")
        elif api not in ("?", local[0]):
            problems.append(f"API routes the {what} to {api}, but {local[0]} holds it")
    return problems
