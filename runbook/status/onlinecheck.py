"""`inv validate --online`: the inventory against the cloud and the hosts, read-only, one table.

Cloud: every server exists by name; its private IP (once attached) and public IPv4 agree with
the inventory; the floating IP exists with the inventory's address; the network, if it exists,
has the inventory's range and no other subnet overlaps ours. Hosts: SSH works, the OS release is
supported, the LBs' interfaces are found (runbook.cloud.discover). A disagreement with the cloud is
bad input (exit 2); a host that cannot be reached or runs an unsupported OS is exit 1.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..cloud.discover import facts_for, resolve, server_facts
from ..inventory import Inventory

#: (ID, VERSION_ID) from /etc/os-release the runbook is built for (SPEC: Heartbeat 3.0.6 is in
#: Debian 12 and 13 and Ubuntu 24.04)
SUPPORTED_OS = frozenset({("debian", "12"), ("debian", "13"), ("ubuntu", "24.04")})
OS_PROBE = '. /etc/os-release && echo "$ID|$VERSION_ID|$PRETTY_NAME"'


@dataclass(frozen=True)
class Check:
    what: str
    target: str
    ok: bool | None  # None: nothing wrong, nothing to compare yet
    detail: str
    bad_input: bool = True  # a failure means the inventory disagrees (exit 2), else exit 1


def cloud_checks(inv: Inventory, cloud: Any) -> list[Check]:
    """The inventory against the API (GETs only)."""
    out: list[Check] = []
    cl = cloud.client
    want_net = inv.hcloud.network
    net = cl.networks.get_by_name(want_net.name)
    if net is None:
        out.append(Check("network", want_net.name, None, "absent: `inv network` creates it"))
    else:
        rng = ipaddress.ip_network(net.ip_range)
        if rng != want_net.ip_range:
            out.append(
                Check("network", net.name, False, f"ip_range {rng}, inventory {want_net.ip_range}")
            )
        else:
            subs = [ipaddress.ip_network(s.ip_range) for s in net.subnets or []]
            if want_net.subnet in subs:
                detail, ok = f"{rng}, subnet {want_net.subnet} present", True
            elif clash := [s for s in subs if s.overlaps(want_net.subnet)]:
                detail, ok = f"subnet {clash[0]} overlaps {want_net.subnet}", False
            else:
                detail, ok = f"{rng}, subnet {want_net.subnet} absent: `inv network` adds it", None
            out.append(Check("network", net.name, ok, detail))
    for other in cl.networks.get_all():
        if other.name != want_net.name and ipaddress.ip_network(other.ip_range).overlaps(
            want_net.ip_range
        ):
            out.append(
                Check(
                    "network",
                    other.name,
                    None,
                    f"{other.ip_range} overlaps {want_net.ip_range}: "
                    "do not attach a server to both",
                )
            )
    fip_spec = inv.load_balancer.floating_ip
    fip = cl.floating_ips.get_by_name(fip_spec.name)
    if fip is None:
        out.append(Check("floating IP", fip_spec.name, False, "not found: order it first"))
    elif fip.ip != str(fip_spec.address):
        out.append(
            Check(
                "floating IP", fip_spec.name, False, f"API {fip.ip}, inventory {fip_spec.address}"
            )
        )
    else:
        out.append(Check("floating IP", fip_spec.name, True, f"{fip.ip} exists"))
    net_id = net.id if net is not None else None
    for h in inv.hosts.values():
        sf = server_facts(cloud, h.name, net_id)
        if not sf.exists:
            out.append(Check("server", h.name, False, "no server of that name in the project"))
            continue
        problems = []
        if sf.private_ip is not None and sf.private_ip != str(h.private_ip):
            problems.append(f"private IP: API {sf.private_ip}, inventory {h.private_ip}")
        if h.public_ip is not None and sf.public_ip and sf.public_ip != str(h.public_ip):
            problems.append(f"public IP: API {sf.public_ip}, inventory {h.public_ip}")
        if problems:
            out.append(Check("server", h.name, False, "; ".join(problems)))
            continue
        where = f"private {sf.private_ip}" if sf.private_ip else "not attached yet"
        out.append(Check("server", h.name, True, f"public {sf.public_ip or '-'}, {where}"))
    return out


def host_checks(inv: Inventory, hosts: Mapping[str, Any], cloud: Any) -> list[Check]:
    """SSH and OS release of every host; the LBs' interfaces (read-only commands only)."""
    out: list[Check] = []
    for name, host in hosts.items():
        try:
            line = host.query(OS_PROBE, ok_codes=None).stdout.strip()
        except Exception as exc:
            out.append(Check("ssh", name, False, str(exc) or type(exc).__name__, bad_input=False))
            continue
        out.append(Check("ssh", name, True, "works"))
        os_id, _, rest = line.partition("|")
        version, _, pretty = rest.partition("|")
        supported = (os_id, version) in SUPPORTED_OS
        detail = pretty or line or "no /etc/os-release"
        if not supported:
            detail += " (supported: Debian 12/13, Ubuntu 24.04)"
        out.append(Check("OS release", name, supported, detail, bad_input=False))
    servers, links = facts_for(inv, cloud, hosts)
    new, problems, _ = resolve(inv, servers, links, pending_ok=True)
    if problems:
        out += [Check("interfaces", "LBs", False, p) for p in problems]
    else:
        lb = new.load_balancer
        out.append(
            Check(
                "interfaces", "LBs", True, f"private {lb.interface}, public {lb.public_interface}"
            )
        )
    return out


def exit_code(checks: Sequence[Check]) -> int:
    failed = [c for c in checks if c.ok is False]
    if any(c.bad_input for c in failed):
        return 2
    return 1 if failed else 0
