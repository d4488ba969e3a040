"""Host selection for ``--host`` and the data behind the ``inv validate`` summary table."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from runbook.inventory.models import HostSpec, Inventory, InventoryError, Problem, check_roles

_ROLE_NOUN = {"control-plane": "a control plane", "lb": "a load balancer", "worker": "a worker"}


def select_hosts(
    inv: Inventory, names: Sequence[str], *, roles: Collection[str] | None, task: str
) -> list[HostSpec]:
    """Hosts a task runs on: all with ``roles`` when ``names`` is empty, else exactly ``names``.

    Every unknown name and every wrong role is reported at once (file ``--host``, key = name).
    The result keeps inventory order and lists each host once.
    """
    if roles is not None:
        check_roles(roles)
    eligible = inv.hosts_with_role(*roles) if roles else inv.hosts_with_role()
    if not names:
        return eligible
    problems: list[Problem] = []
    for name in dict.fromkeys(names):
        host = inv.hosts.get(name)
        if host is None:
            known = ", ".join(inv.hosts)
            key = name or "''"  # --host= (an empty name)
            problems.append(Problem("--host", key, f"not in the inventory (known: {known})"))
        elif host not in eligible:
            where = " or ".join(sorted(roles or ()))
            allowed = ", ".join(h.name for h in eligible) or "none"
            reason = f"is {_ROLE_NOUN[host.role]}; task {task} runs on {where} hosts: {allowed}"
            problems.append(Problem("--host", name, reason))
    if problems:
        raise InventoryError(problems)
    wanted = set(names)
    return [h for h in eligible if h.name in wanted]


FROM_CLOUD = "the NIC the cloud names (found at run time)"

SUMMARY_COLUMNS: tuple[str, ...] = ("host", "role", "private IP", "public IP", "address", "via")


def summary_rows(inv: Inventory) -> list[tuple[str, ...]]:
    """One row per host, columns as in ``SUMMARY_COLUMNS`` (the primary LB is marked)."""
    rows: list[tuple[str, ...]] = []
    for h in inv.hosts.values():
        role = f"{h.role} (primary)" if h.name == inv.load_balancer.primary else h.role
        public = str(h.public_ip) if h.public_ip else ("from the API" if h.role == "lb" else "")
        rows.append((h.name, role, str(h.private_ip), public, h.address, h.gateway or ""))
    return rows


def summary_facts(inv: Inventory) -> list[tuple[str, str]]:
    """The cluster-wide values an operator checks before a run, as (label, value) pairs."""
    lb, k8s, net, hb = (
        inv.load_balancer,
        inv.kubernetes,
        inv.hcloud.network,
        inv.load_balancer.heartbeat,
    )
    fip = lb.floating_ip
    ptr = f", PTR {fip.dns_ptr}" if fip.dns_ptr else ""
    allow = ", ".join(str(n) for n in lb.public_allow) or "empty: loopback only"
    insecure = (
        f"ON: http on VIP:{lb.insecure_api.port} as role {lb.insecure_api.role}"
        if lb.insecure_api.enabled
        else "off"
    )
    fw = inv.firewall
    firewall = (
        "none: every port of every server is open to the internet"
        if fw is None
        else f"SSH from {', '.join(str(n) for n in fw.admin_networks)}"
        + (", ICMP" if fw.icmp else "")
        + (f", {len(fw.rules)} extra rule(s)" if fw.rules else "")
    )
    return [
        ("cluster", inv.cluster.name),
        (
            "VIP",
            f"{lb.vip} on {lb.interface or FROM_CLOUD} "
            f"(controlPlaneEndpoint {inv.control_plane_endpoint})",
        ),
        ("floating IP", f"{fip.address} ({fip.name}{ptr}) on {lb.public_interface or FROM_CLOUD}"),
        ("primary LB", lb.primary),
        ("network", f"{net.name} {net.ip_range}, subnet {net.subnet}, zone {net.zone}"),
        ("pod subnet", str(k8s.pod_subnet)),
        ("service subnet", str(k8s.service_subnet)),
        ("kubernetes", f"{k8s.version}, CNI {k8s.cni}, dns_domain {k8s.dns_domain}"),
        ("cert SANs", ", ".join(k8s.cert_sans) or "none"),
        (
            "heartbeat",
            f"keepalive {hb.keepalive:g}s, warntime {hb.effective_warntime}s, "
            f"deadtime {hb.deadtime}s, initdead {hb.effective_initdead}s, "
            f"udp {hb.udpport}, {hb.auth}, auto_failback {'on' if hb.auto_failback else 'off'}",
        ),
        ("public allow-list", allow),
        ("insecure API", insecure),
        ("cloud firewall", firewall),
        ("hcloud API", f"{inv.hcloud.endpoint} (token from ${inv.hcloud.token_env})"),
        ("ssh", f"{inv.ssh.user}, port {inv.ssh.port}, known_hosts {inv.known_hosts_path}"),
        ("ssh_config", _ssh_config_summary(inv)),
    ]


def _ssh_config_summary(inv: Inventory) -> str:
    """Which ssh_config files apply (those that exist, when the key is left out)."""
    if inv.ssh.config_file is False:
        return "none (ssh.config_file: none)"
    if inv.ssh.config_file is not None:
        return str(inv.ssh_config_files[0])
    found = [str(p) for p in inv.ssh_config_files if p.is_file()]
    return ", ".join(found) + " (default)" if found else "none found (default)"
