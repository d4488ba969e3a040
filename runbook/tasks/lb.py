"""Load-balancer tier tasks: lb.setup, lb.heartbeat, lb.haproxy, lb.status, lb.failover-drill."""

from __future__ import annotations

from invoke import task
from invoke.context import Context

from ..steps import registry
from . import _common as common
from ._common import STEP_HELP

setup = common.step_task(
    "lb.setup",
    "Steps 3-5: VIP + floating IP on the primary, HAProxy, then Heartbeat (HAProxy is configured "
    "before Heartbeat's watchdog may start it) — idempotent, verified.",
    [registry.LB, registry.HAPROXY, registry.HEARTBEAT],
)

heartbeat = common.step_task(
    "lb.heartbeat",
    "Step 4 only: Heartbeat config, authkeys, failover resource script, restart, verify.",
    [registry.HEARTBEAT],
)

haproxy = common.step_task(
    "lb.haproxy",
    "Step 5 only: haproxy.cfg validated before install, reloaded, backends verified.",
    [registry.HAPROXY],
)


@task(
    help={
        "verbose": "Show the commands run (secrets masked).",
        "accept_new_host_keys": STEP_HELP["accept_new_host_keys"],
    }
)
def status(c: Context, verbose: bool = False, accept_new_host_keys: bool = False) -> None:
    """Heartbeat state per node (running, and whether it gives the node the resource group or
    is in a transition), VIP holder locally and per API, HAProxy backend states.

    Exit 1 when the pair is not healthy: an LB unreachable, no or two local VIP holders, or the
    API routing the VIP/floating IP to another node than the one holding them.
    """
    from invoke.exceptions import Exit

    from ..cloud.api import CloudTarget, CloudTokenMissing
    from ..core.remote import connect_all
    from ..status.lbstatus import cloud_holders, collect, group_word, heartbeat_warnings

    ui = common.new_ui(verbose=verbose)
    inv = common.load(c, ui)
    common.register_secrets(inv, ui)
    names = [h.name for h in inv.hosts_with_role("lb")]
    hosts = connect_all(
        inv, names, dry_run=True, accept_new_host_keys=accept_new_host_keys, log=ui.command
    )
    try:
        inv = common.cloud_facts(inv, ui, hosts, dry_run=True)
        nodes = collect(inv, hosts)
    finally:
        for h in hosts.values():
            h.close()
    try:
        client = CloudTarget.from_inventory(inv, dry_run=True, ui=ui).client
        api_vip, api_fip = cloud_holders(inv, client)
    except CloudTokenMissing as exc:
        ui.warn(f"API not asked: {exc}")
        api_vip = api_fip = "?"
    except Exception as exc:  # the API being down is a status, not a crash
        ui.warn(f"API not reachable: {exc}")
        api_vip = api_fip = "?"
    rows = []
    for n in nodes:
        if not n.reachable:
            rows.append((n.name, "UNREACHABLE", "", "", "", "", n.error))
            continue
        up = sum(1 for _, st in n.backends if st.startswith("UP"))
        rows.append(
            (
                n.name,
                n.heartbeat,
                group_word(inv, n),
                "yes" if n.holds_vip else "no",
                "yes" if n.holds_fip else "no",
                n.haproxy,
                f"{up}/{len(n.backends)} UP",
            )
        )
    ui.table(
        "load balancers",
        ["node", "heartbeat", "group", "VIP here", "floating IP here", "haproxy", "backends"],
        rows,
    )
    for warning in heartbeat_warnings(inv, nodes):
        ui.warn(warning)
    for n in nodes:
        if n.backends:
            ui.table(f"{n.name} backends", ["server", "status"], n.backends)
    ui.table(
        "cloud API",
        ["what", "routed to"],
        [
            (f"VIP {inv.load_balancer.vip}", api_vip),
            (f"floating IP {inv.load_balancer.floating_ip.address}", api_fip),
        ],
    )
    local_vip = [n.name for n in nodes if n.holds_vip]
    problems = [f"{n.name} unreachable" for n in nodes if not n.reachable]
    if len(local_vip) != 1:
        problems.append(f"VIP held locally by {len(local_vip)} nodes ({', '.join(local_vip)})")
    elif api_vip not in ("?", local_vip[0]):
        problems.append(f"API routes the VIP to {api_vip}, but {local_vip[0]} holds it")
    local_fip = [n.name for n in nodes if n.holds_fip]
    if len(local_fip) == 1 and api_fip not in ("?", local_fip[0]):
        problems.append(f"API routes the floating IP to {api_fip}, but {local_fip[0]} holds it")
    if problems:
        for p in problems:
            ui.error(p)
        raise Exit(code=common.EXIT_FAILED)
    ui.print(f"healthy: {local_vip[0]} holds the VIP, the API agrees", style="green")


@task(
    name="failover-drill",
    help={
        "mode": "How to fail the VIP holder: stop (graceful heartbeat stop), kill (SIGKILL "
        "heartbeat), linkdown (both interfaces down for half the probe time; restores itself).",
        "yes": "Confirm the drill's checkpoint automatically.",
        "seconds": "How long to probe after the failure (seconds, default 15).",
        "probe_host": "Host that runs the probe (default: the first control plane).",
        "verbose": "Show the commands run (secrets masked).",
        "accept_new_host_keys": STEP_HELP["accept_new_host_keys"],
    },
)
def failover_drill(
    c: Context,
    mode: str = "stop",
    yes: bool = False,
    seconds: int = 15,
    probe_host: str = "",
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Guided drill: fail the VIP holder, measure the outage on VIP:6443 and the floating IP."""
    from invoke.exceptions import Exit

    from ..core.console import CheckpointDeclined, NeedsPerson
    from ..core.remote import connect_all
    from ..status.drill import MODES, DrillError, run_drill

    ui = common.new_ui(yes=yes, verbose=verbose)
    inv = common.load(c, ui)
    common.register_secrets(inv, ui)
    if mode not in MODES:
        raise common.fail_input(ui, [f"--mode: {mode!r} is not one of {', '.join(MODES)}"])
    if not 3 <= seconds <= 600:
        raise common.fail_input(ui, [f"--seconds: {seconds} is outside 3..600"])
    prober = probe_host or inv.first_control_plane.name
    common.hosts_for(inv, ui, [prober], roles=["control-plane", "worker"], task="failover-drill")
    common.check_local_files(inv, ui)
    names = [h.name for h in inv.hosts_with_role("lb")]
    hosts = connect_all(
        inv,
        [*names, prober],
        dry_run=False,
        accept_new_host_keys=accept_new_host_keys,
        log=ui.command,
    )
    try:
        inv = common.cloud_facts(inv, ui, hosts, dry_run=False)
        res = run_drill(
            inv, {n: hosts[n] for n in names}, hosts[prober], ui, mode=mode, seconds=float(seconds)
        )
        if res.takeover_s is None:  # the drill's point: the peer must take the addresses over
            raise Exit(code=common.EXIT_FAILED)
    except (CheckpointDeclined, NeedsPerson) as exc:
        ui.error(str(exc))
        raise Exit(code=common.EXIT_CHECKPOINT) from None
    except DrillError as exc:
        ui.error(str(exc))
        raise Exit(code=common.EXIT_FAILED) from None
    finally:
        for h in hosts.values():
            h.close()
