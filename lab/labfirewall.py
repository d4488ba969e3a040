"""The lab enforces the simulated Hetzner Cloud Firewalls: nftables in the internet namespace.

Why here: a Hetzner firewall filters a server's public traffic in the cloud, before it reaches
the server, and never the private network. In the lab every public packet to a server crosses
`rbl-inet` (forwarded to the server's `eth0` link), so one nftables table there does what the
cloud does: per server, the inbound rules of every firewall applied to it (`lab.fakecloud.
firewalls.server_rules`), then drop; a server with no firewall gets no filtering at all (as on
Hetzner). Traffic to a floating IP is filtered by the firewalls of the server it is assigned to.
Stateful like Hetzner's: answers to connections a server opened come back (conntrack).

The table is replaced atomically (one `nft -f` transaction) on every API change; the lab is
IPv4-only, so IPv6 sources in rules are ignored here.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from typing import Any

from lab.fakecloud.firewalls import server_rules

TABLE = "rblab_fw"


def _chain(name: str) -> str:
    return "srv_" + "".join(c if c.isalnum() else "_" for c in name)


def _match(rule: dict[str, Any]) -> str | None:
    """The nft match of one inbound rule, or None when it has no IPv4 source."""
    v4 = [s for s in rule["source_ips"] if ipaddress.ip_network(s).version == 4]
    if not v4:
        return None
    src = "" if "0.0.0.0/0" in v4 else f"ip saddr {{ {', '.join(v4)} }} "
    proto = rule["protocol"]
    if proto in ("tcp", "udp"):
        return f"{src}{proto} dport {rule['port']} accept"
    return f"{src}ip protocol {proto} accept"


def ruleset(state: dict[str, Any], lab_hosts: set[str]) -> str:
    """The whole table for `state` (pure; unit-tested): what `nft -f` gets."""
    per_server = server_rules(state)
    servers = {s["id"]: s for s in state.get("servers", [])}
    jumps: list[str] = []
    chains: list[str] = []
    for sid, rules in sorted(per_server.items()):
        srv = servers[sid]
        if rules is None or srv["name"] not in lab_hosts:
            continue
        chain = _chain(srv["name"])
        addresses = [srv["public_net"]["ipv4"]["ip"]]
        addresses += [
            f["ip"] for f in state.get("floating_ips", []) if f.get("server") == sid
        ]  # the floating IP follows its server's firewall
        jumps += [f"    ip daddr {a} jump {chain}" for a in addresses]
        body = [m for r in rules if (m := _match(r)) is not None]
        chains.append(
            f"  chain {chain} {{\n"
            + "".join(f"    {m}\n" for m in body)
            + "    counter drop\n  }\n"
        )
    return (
        f"table ip {TABLE} {{}}\n"
        f"delete table ip {TABLE}\n"
        f"table ip {TABLE} {{\n"
        "  chain forward {\n"
        "    type filter hook forward priority filter; policy accept;\n"
        "    ct state established,related accept\n"
        + "".join(j + "\n" for j in jumps)
        + "  }\n"
        + "".join(chains)
        + "}\n"
    )


def apply(netns: str, text: str) -> None:
    """Replace the table in `netns` (atomic). Without `nft` only an empty table is acceptable."""
    if shutil.which("nft") is None:
        if " jump " in text:
            raise RuntimeError(
                "lab firewall: `nft` is missing; install nftables (bash lab/install-machine.sh)"
            )
        return
    r = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", "-f", "-"],
        input=text,
        text=True,
        capture_output=True,
    )
    if r.returncode != 0:
        raise RuntimeError(f"lab firewall: nft -f in {netns}: {r.stderr.strip()}")
