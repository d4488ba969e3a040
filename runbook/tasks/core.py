"""Top-level tasks: validate, render, prepare, network, firewall, walkthrough, status."""

from __future__ import annotations

import time

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

from ..core.console import Ui
from ..core.engine import RunOptions, Step, StepContext, run_step
from ..core.plan import StepResult
from ..inventory import SUMMARY_COLUMNS, Inventory, summary_facts, summary_rows
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
    ["prepare:PrepareStep", "reboot:RebootStep"],
)

network = common.step_task(
    "network",
    "Step 2: Hetzner network + subnet, every server attached with its fixed private IP.",
    ["network:NetworkStep"],
    needs_cloud=True,
    connect_hosts=False,
)

firewall = common.step_task(
    "firewall",
    "Step 2b: Hetzner Cloud Firewalls per role (SSH from admin networks; on the LBs the API "
    "from public_allow and Heartbeat from the peer), applied by label selector; refuses when "
    "your own source address is outside the admin networks.",
    ["firewall:FirewallStep"],
    needs_cloud=True,
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


# (walkthrough name, procedure step number, "module:Class", constructor args) in document order,
# but haproxy (5) before heartbeat (4): HAProxy is configured before anything (the watchdog on the
# VIP holder) starts it
WALK: tuple[tuple[str, int, str, tuple[str, ...]], ...] = (
    ("prepare", 1, "prepare:PrepareStep", ()),
    ("reboot", 1, "reboot:RebootStep", ()),
    ("network", 2, "network:NetworkStep", ()),
    ("firewall", 2, "firewall:FirewallStep", ()),  # before anything listens (lb, heartbeat …)
    ("lb", 3, "lb:LbStep", ()),
    ("haproxy", 5, "haproxy:HaproxyStep", ()),
    ("heartbeat", 4, "heartbeat:HeartbeatStep", ()),
    ("init", 6, "init:InitStep", ()),
    ("join", 7, "join:JoinStep", ("control-plane",)),
    ("join-workers", 7, "join:JoinStep", ("worker",)),
    ("cni", 8, "cni:CniStep", ()),
    ("admin-user", 9, "admin_user:AdminUserStep", ()),
    ("insecure-api", 9, "insecure_api:InsecureApiStep", ()),  # optional: off unless enabled
    ("certs", 10, "certs:CertsStep", ()),
)


def walk_steps() -> list[tuple[str, int, Step]]:
    """Instances of the walkthrough's steps; a step not built yet stops with its name."""
    out: list[tuple[str, int, Step]] = []
    for label, number, ref, args in WALK:
        try:
            step = common.load_step((ref, *args))
        except (ImportError, AttributeError):
            module, _, cls = ref.partition(":")
            raise Exit(
                f"walkthrough: step {number} ({label}) is not built yet "
                f"(runbook.steps.{module}.{cls} is missing)",
                code=common.EXIT_FAILED,
            ) from None
        out.append((label, number, step))
    return out


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
    from dataclasses import replace

    from ..cloud.api import CloudTarget, CloudTokenMissing
    from ..cloud.discover import LB_FACT_STEPS, PENDING_NIC, PUBLIC_IP_STEPS
    from ..core.plan import CLOUD
    from ..core.remote import connect_all

    ui = common.new_ui(yes=yes, verbose=verbose)
    if not (yes or dry_run or ui.interactive):
        ui.error("the walkthrough stops at checkpoints: run it on a TTY, or confirm with --yes")
        raise Exit(code=common.EXIT_CHECKPOINT)
    steps = walk_steps()
    labels = [label for label, _, _ in steps]
    for flag, value in (("--from", from_step), ("--only", only)):
        if value and value not in labels:
            raise common.fail_input(ui, [f"{flag}: {value!r} is not one of {', '.join(labels)}"])
    if from_step and only:
        raise common.fail_input(ui, ["--from and --only: give one of them"])
    if only:
        steps = [s for s in steps if s[0] == only]
        labels = [only]
    start = labels.index(from_step) if from_step else 0
    inv = common.load(c, ui)
    common.register_secrets(inv, ui)
    selected = common.hosts_for(inv, ui, host, roles=None, task="walkthrough")
    common.check_local_files(inv, ui)
    guided = ui.interactive and not (yes or dry_run)
    options = RunOptions(
        dry_run=dry_run, yes=yes, verbose=verbose, hosts=tuple(selected), guided=guided
    )
    ctx = StepContext(inventory=inv, ui=ui, options=options)
    first_cp = inv.first_control_plane.name
    ctx.targets.update(
        connect_all(
            inv,
            list(dict.fromkeys([*selected, first_cp])),
            dry_run=dry_run,
            accept_new_host_keys=accept_new_host_keys,
            log=ui.command,
        )
    )
    try:
        ctx.targets[CLOUD] = CloudTarget.from_inventory(inv, dry_run=dry_run, ui=ui, stop=ctx.stop)
    except CloudTokenMissing as exc:
        raise common.fail_input(ui, [exc]) from None
    t0 = time.monotonic()

    def lb_nic() -> str:
        return ctx.inventory.load_balancer.interface

    def body(results: list[StepResult]) -> int:
        facts_known = False
        for i, (label, number, step) in enumerate(steps):
            needs_nic = step.name in LB_FACT_STEPS
            if (needs_nic or step.name in PUBLIC_IP_STEPS) and (
                not facts_known or (needs_nic and lb_nic() == PENDING_NIC)
            ):
                # read now, not at the start: the private NIC exists once `network` attached it
                ctx.inventory = common.cloud_facts(
                    inv,
                    ui,
                    ctx.targets,
                    dry_run=dry_run or i < start or not needs_nic,
                    cloud=ctx.targets[CLOUD],
                )
                facts_known = True
            ui.print(
                f"walkthrough {i + 1}/{len(steps)}: step {number} ({label}), "
                f"{time.monotonic() - t0:.0f} s elapsed",
                style="bold cyan",
            )
            if i < start:
                checked = replace(ctx, options=replace(options, dry_run=True))
                res = as_checked(run_step(step, checked))
            else:
                res = run_step(step, ctx)
            results.append(res)
            if res.failed:
                return common.EXIT_FAILED
            if label == "haproxy" and i >= start and not dry_run:
                offer_drill(ctx)
        return 0

    return common.run_steps(
        ctx,
        body,
        done=lambda: ui.print(
            f"walkthrough done in {time.monotonic() - t0:.0f} s: the cluster answers on "
            f"{inv.control_plane_endpoint}",
            style="bold green",
        ),
    )


def as_checked(res: StepResult) -> StepResult:
    """A step before --from was only planned: pending changes are reported as skipped."""
    from dataclasses import replace

    from ..core.plan import Status, TargetResult

    rows = tuple(
        TargetResult(r.target, Status.SKIPPED, r.changes, "pending: before --from, not applied")
        if r.status is Status.CHANGED
        else r
        for r in res.results
    )
    return replace(res, results=rows, dry_run=False)


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
