"""Top-level tasks: validate, render, prepare, network, firewall, walkthrough, status."""

from __future__ import annotations

import time

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

from ..core.console import Ui
from ..core.engine import Step, StepContext
from ..core.plan import StepResult
from ..inventory import SUMMARY_COLUMNS, Inventory, summary_facts, summary_rows
from ..steps import registry
from . import _common as common
from ._common import STEP_HELP


@task(
    help={
        "verbose": "Also list every warning's explanation.",
        "online": "Also check the inventory against the Hetzner API (servers, private IPs, "
        "floating IP, network) and the hosts (SSH, OS release, the LBs' interfaces); read-only. "
        "Exit 2 when the cloud disagrees, 1 when a host cannot be reached or is unsupported.",
        "accept_new_host_keys": STEP_HELP["accept_new_host_keys"],
    }
)
def validate(
    c: Context, verbose: bool = False, online: bool = False, accept_new_host_keys: bool = False
) -> None:
    """Check the inventory (hosts.yaml) against every rule; exit 2 listing all problems."""
    ui = common.new_ui(verbose=verbose)
    inv = common.load(c, ui)
    common.check_local_files(inv, ui)
    rows = summary_rows(inv)
    ui.table(f"inventory {common.inventory_path(c)}", SUMMARY_COLUMNS, rows)
    ui.table("cluster", ["what", "value"], summary_facts(inv))
    ui.print(f"valid: {len(rows)} hosts, {len(inv.warnings)} warning(s)", style="green")
    if online:
        validate_online(inv, ui, accept_new_host_keys=accept_new_host_keys)


def validate_online(inv: Inventory, ui: Ui, *, accept_new_host_keys: bool) -> None:
    """`validate --online`: one table of cloud and host checks (runbook.status.onlinecheck)."""
    from rich.text import Text

    from ..cloud.api import CloudTarget, CloudTokenMissing
    from ..core.remote import connect_all
    from ..core.screen import fitted_table
    from ..status.onlinecheck import cloud_checks, exit_code, host_checks

    common.register_secrets(inv, ui)
    try:
        cloud = CloudTarget.from_inventory(inv, dry_run=True, ui=ui)
    except CloudTokenMissing as exc:
        raise common.fail_input(ui, [exc]) from None
    hosts = connect_all(
        inv,
        list(inv.hosts),
        dry_run=True,
        accept_new_host_keys=accept_new_host_keys,
        log=ui.command,
    )
    try:
        with ui.status("asking the Hetzner API and every host (read-only) …"):
            checks = cloud_checks(inv, cloud) + host_checks(inv, hosts, cloud)
    finally:
        for h in hosts.values():
            h.close()
    marks: dict[bool | None, Text] = {
        True: Text("ok", style="green"),
        False: Text("FAIL", style="bold red"),
        None: Text("note", style="cyan"),
    }
    rows = [(c.what, c.target, marks[c.ok], c.detail) for c in checks]
    ui.console.print(
        fitted_table(
            ui.console,
            "online: the inventory against the cloud and the hosts",
            ("check", "target", "result", "detail"),
            rows,
            whole=("check", "target", "result"),
            cell=lambda v: Text(ui.masker.mask(v)),
        )
    )
    code = exit_code(checks)
    failed = sum(c.ok is False for c in checks)
    ui.print(
        f"online: {len(checks)} checks, {failed} failed", style="bold red" if failed else "green"
    )
    if code:
        raise Exit(code=code)


@task(
    help={
        "host": "Host to render files for (an inventory name).",
        "out": "Directory to write the rendered files into (created; mirrors the host's paths; "
        "must be empty, never a system or home directory itself).",
        "force": "Write into a non-empty --out (files of the same name are replaced).",
    },
    auto_shortflags=False,  # -f is Invoke's --config, -h its --help
)
def render(c: Context, host: str, out: str, force: bool = False) -> None:
    """Write every file the built steps would put on HOST, secrets replaced by a marker."""
    from ..render.outdir import OutDirError
    from ._render import render_host

    ui = common.new_ui()
    inv = common.load(c, ui)
    common.hosts_for(inv, ui, [host], roles=None, task="render")
    inv = lb_facts_for_render(c, inv, ui)
    try:
        written = render_host(inv, host, out, force=force)
    except OutDirError as exc:
        raise common.fail_input(ui, [], header=f"--out: {exc}") from None
    if not written:
        ui.warn(f"no built step writes files to {host} yet")
    ui.table(f"rendered for {host}", ["file", "mode", "bytes"], written)


def lb_facts_for_render(c: Context, inv: Inventory, ui: Ui) -> Inventory:
    """An inventory leaving the LBs' public IPs or interfaces to the cloud: read them (API and a
    read-only look at the LBs), since the rendered files contain them."""
    from ..cloud.discover import needs_discovery
    from ..core.remote import connect_all

    if not needs_discovery(inv):
        return inv
    names = [h.name for h in inv.hosts_with_role("lb")]
    hosts = connect_all(inv, names, dry_run=True, log=ui.command)
    try:
        return common.cloud_facts(inv, ui, hosts, dry_run=True)
    finally:
        for h in hosts.values():
            h.close()


prepare = common.step_task(
    "prepare",
    "Step 1: hostname, /etc/hosts, upgrade (reboot checkpoint), LB packages on every host.",
    [registry.PREPARE, registry.REBOOT],
)

network = common.step_task(
    "network",
    "Step 2: Hetzner network + subnet, every server attached with its fixed private IP.",
    [registry.NETWORK],
)

firewall = common.step_task(
    "firewall",
    "Step 2b: Hetzner Cloud Firewalls per role (SSH from admin networks; on the LBs the API "
    "from public_allow and Heartbeat from the peer), applied by label selector; refuses when "
    "your own source address is outside the admin networks.",
    [registry.FIREWALL],
)


@task(
    help=common.step_help(
        from_="Start at this step (e.g. heartbeat); earlier ones are only checked.",
        only="Run this one step only (e.g. to repeat it); the others are not looked at.",
    ),
    iterable=["host"],
)
def walkthrough(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
    from_: str = "",
    only: str = "",
) -> None:
    """The whole procedure, steps 1-10 in order, with checkpoints; re-running resumes.

    On a TTY without --yes each step shows its plan and asks apply / skip / quit (quit: exit 3,
    a re-run resumes there; a step with nothing to change does not ask).
    """
    run_walkthrough(
        c,
        host=host or [],
        dry_run=dry_run,
        yes=yes,
        verbose=verbose,
        accept_new_host_keys=accept_new_host_keys,
        from_step=from_,
        only=only,
    )


@common.guard_output
def run_walkthrough(
    c: Context,
    *,
    host: list[str],
    dry_run: bool,
    yes: bool,
    verbose: bool,
    accept_new_host_keys: bool,
    from_step: str,
    only: str = "",
) -> list[StepResult]:
    """Steps 1-10 with checkpoints; steps before --from are only checked (planned)."""
    ui = common.new_ui(yes=yes, verbose=verbose)
    if not (yes or dry_run or ui.interactive):
        ui.error("the walkthrough stops at checkpoints: run it on a TTY, or confirm with --yes")
        raise Exit(code=common.EXIT_CHECKPOINT)
    entries = list(registry.PROCEDURE)
    labels = [e.name for e in entries]
    for flag, value in (("--from", from_step), ("--only", only)):
        if value and value not in labels:
            raise common.fail_input(ui, [f"{flag}: {value!r} is not one of {', '.join(labels)}"])
    if from_step and only:
        raise common.fail_input(ui, ["--from and --only: give one of them"])
    if only:
        entries = [e for e in entries if e.name == only]
        labels = [only]
    start = labels.index(from_step) if from_step else 0
    needs = registry.scope(registry.PROCEDURE)  # every host, the cloud, the first control plane
    t0 = time.monotonic()

    def progress(i: int, _step: Step) -> None:
        e = entries[i]
        # one line per step: the progress heads the step's title rule
        ui.title_prefix = (
            f"walkthrough {i + 1}/{len(entries)}: step {e.number} ({e.name}), "
            f"{time.monotonic() - t0:.0f} s elapsed"
        )

    def after(i: int, _step: Step, ctx: StepContext) -> None:
        if entries[i] is registry.HAPROXY and not dry_run:
            offer_drill(ctx)

    def done(ctx: StepContext) -> None:
        ui.print(
            f"walkthrough done in {time.monotonic() - t0:.0f} s: the cluster answers on "
            f"{ctx.inventory.control_plane_endpoint}",
            style="bold green",
        )

    return common.execute(
        c,
        [e.make() for e in entries],
        task="walkthrough",
        host=host,
        roles=needs.roles,
        dry_run=dry_run,
        yes=yes,
        verbose=verbose,
        accept_new_host_keys=accept_new_host_keys,
        needs_cloud=needs.cloud,
        token_writes=needs.token_writes,
        connect_hosts=needs.hosts,
        also_connect=needs.also_connect,
        ui=ui,
        guided=ui.interactive and not (yes or dry_run),
        start=start,
        before=progress,
        after=after,
        done=done,
    )


def offer_drill(ctx: StepContext) -> None:
    """The post's failover test as an offer: asked on a TTY, skipped (with a hint) under --yes."""
    from ..core.console import CheckpointDeclined
    from ..status.drill import DrillError, run_drill

    ui = ctx.ui
    hint = "run `inv lb.failover-drill` any time to measure a failover"
    if ui.assume_yes or not ui.interactive:
        ui.print(f"failover drill: not run unattended; {hint}", style="cyan")
        return
    try:
        ui.checkpoint(
            "Run the failover drill now? It stops Heartbeat on the VIP holder and measures "
            "the outage on the VIP (the post saw ~5 lost pings)."
        )
    except CheckpointDeclined:
        ui.print(f"failover drill skipped; {hint}", style="cyan")
        return
    inv = ctx.inventory
    lbs = {h.name: ctx.targets[h.name] for h in inv.hosts_with_role("lb") if h.name in ctx.targets}
    prober = ctx.targets.get(inv.first_control_plane.name)
    if prober is None or len(lbs) < 2:
        ui.warn(f"failover drill needs both LBs and {inv.first_control_plane.name}; {hint}")
        return
    try:
        run_drill(inv, lbs, prober, ui, mode="stop", seconds=15.0)
    except DrillError as exc:
        ui.warn(f"failover drill: {exc}")


@task(
    help={
        "verbose": "Show the commands run (secrets masked), full errors and every HAProxy backend.",
        "accept_new_host_keys": STEP_HELP["accept_new_host_keys"],
        "cloud": "Ask the Hetzner API who the VIP and floating IP are routed to (--no-cloud: "
        "do not; no token needed then).",
    }
)
def status(
    c: Context, verbose: bool = False, accept_new_host_keys: bool = False, cloud: bool = True
) -> None:
    """Cluster overview, read-only: hosts, LB pair, API through the VIP, nodes.

    Exit 0 healthy, 1 degraded (every problem listed), 2 bad inventory.
    """
    from ..status.clusterview import run_status

    ui = common.new_ui(verbose=verbose)
    inv = common.load(c, ui)
    common.register_secrets(inv, ui)
    code = run_status(inv, ui, accept_new_host_keys=accept_new_host_keys, ask_cloud=cloud)
    if code:
        raise Exit(code=code)
