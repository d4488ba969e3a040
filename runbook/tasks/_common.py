"""Shared task plumbing: load the inventory, build the console, run steps, map exit codes.

Exit codes (docs/architecture.md, "The flow"): 0 done; 1 a step failed on some host; 2 bad
input; 3 a checkpoint was declined or needs a person.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar, cast

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task

from ..cloud.discover import LB_FACT_STEPS, PENDING_NIC, PUBLIC_IP_STEPS
from ..core.console import CheckpointDeclined, Masker, NeedsPerson, OutputLost, Ui, make_console
from ..core.engine import RunOptions, RunState, Step, StepContext, StepQuit, run_step
from ..core.interrupt import Interrupted, handle_signals, wait_for_workers
from ..core.plan import CLOUD, StepResult
from ..inventory import Inventory, InventoryError, Problem, load_inventory, select_hosts
from ..steps.registry import StepEntry, scope

EXIT_FAILED, EXIT_INPUT, EXIT_CHECKPOINT = 1, 2, 3

STEP_HELP = {
    "host": "Limit to this host (repeatable; an inventory name, e.g. k8slb01).",
    "dry_run": "Show the plan (diffs, secrets masked) and stop: nothing is changed anywhere.",
    "yes": "Confirm every checkpoint automatically (needed without a TTY).",
    "verbose": "Show every remote command (secrets masked).",
    "accept_new_host_keys": "Record unknown SSH host keys in known_hosts instead of refusing.",
}


def step_help(**extra: str) -> dict[str, str]:
    """The standard step options' help plus a task's own options."""
    return {**STEP_HELP, **extra}


def step_task(
    task: str,
    doc: str,
    entries: Sequence[StepEntry],
    *,
    aliases: Sequence[str] = (),
) -> Task[Callable[..., None]]:
    """An Invoke task that only runs the registry's `entries`, with the standard step options and
    their help; the hosts it may run on and what it connects to come from the entries.

    `task` is the full name (e.g. "lb.setup"); its last part is the task's name in its
    collection, `aliases` other names for it there. Invoke reads the options from the function's
    signature, hence a real function.
    """
    name = task.rpartition(".")[2]
    needs = scope(entries)

    def run(
        c: Context,
        host: list[str] | None = None,
        dry_run: bool = False,
        yes: bool = False,
        verbose: bool = False,
        accept_new_host_keys: bool = False,
    ) -> None:
        execute(
            c,
            [e.make() for e in entries],
            task=task,
            host=host,
            roles=needs.roles,
            dry_run=dry_run,
            yes=yes,
            verbose=verbose,
            accept_new_host_keys=accept_new_host_keys,
            needs_cloud=needs.cloud,
            token_writes=needs.token_writes,
            connect_hosts=needs.hosts,
            also_connect=needs.also_connect if needs.first_cp else None,
        )

    run.__name__ = run.__qualname__ = name.replace("-", "_")
    run.__doc__ = doc
    return Task(run, name=name, aliases=tuple(aliases), help=STEP_HELP, iterable=["host"])


# Invoke's config levels that come from a file, highest precedence first, with the attribute
# holding that file's path; `env` (INVOKE_RUNBOOK_INVENTORY) sits between project and runtime.
_CONFIG_LEVELS = (
    ("_runtime", "_runtime_path"),
    ("_env", None),
    ("_project", "_project_path"),
    ("_user", "_user_path"),
    ("_system", "_system_path"),
)


def inventory_path(c: Context) -> Path:
    """`runbook.inventory` from Invoke config (invoke.yaml, -f, INVOKE_RUNBOOK_INVENTORY).

    A relative path from a config file is relative to that file's directory (as `ssh.identity`
    is to the inventory's); from the environment or the default, to the current directory.
    """
    config = c.config
    try:
        value = config.runbook.inventory
    except AttributeError:
        value = "hosts.yaml"
    path = Path(os.path.expanduser(str(value)))
    if path.is_absolute():
        return path
    for level, file_attr in _CONFIG_LEVELS:
        data = getattr(config, level, None) or {}
        section = data.get("runbook")
        if isinstance(section, dict) and "inventory" in section:
            file = getattr(config, file_attr, None) if file_attr else None
            return Path(os.path.expanduser(file)).parent / path if file else path
    return path


def new_ui(*, yes: bool = False, verbose: bool = False) -> Ui:
    masker = Masker()
    return Ui(make_console(masker), masker, assume_yes=yes, verbose=verbose)


def fail_input(ui: Ui, problems: Sequence[object], *, header: str = "") -> Exit:
    """Print every problem (file: key: reason) and return the Exit(2) to raise."""
    if header:
        ui.error(header)
    for p in problems:
        ui.print(f"  {p}", style="red")
    return Exit(code=EXIT_INPUT)


def load(c: Context, ui: Ui) -> Inventory:
    """Load and validate the inventory, or exit 2 with every problem listed."""
    path = inventory_path(c)
    try:
        inv = load_inventory(path)
    except InventoryError as exc:
        raise fail_input(ui, exc.problems, header=f"invalid inventory {path}:") from None
    for w in inv.warnings:
        ui.warn(str(w))
    return inv


def check_local_files(inv: Inventory, ui: Ui) -> None:
    """`ssh.identity`, `known_hosts` and the ssh_config usable on this machine (each host
    reachable as the ssh_config says), or exit 2 before connecting."""
    from ..inventory.localfiles import local_file_findings

    problems, warnings = local_file_findings(inv, os.environ)
    if not problems:  # the ssh_config files read: can each host be reached as they say?
        from ..core.remote import ssh_config_problems

        problems += [
            Problem(str(inv.path), f"hosts.{name}.address", reason)
            for name, reason in ssh_config_problems(inv)
        ]
    for w in warnings:
        ui.warn(str(w))
    if problems:
        raise fail_input(ui, problems, header=f"invalid inventory {inv.path}:")


def hosts_for(
    inv: Inventory, ui: Ui, names: Sequence[str], *, roles: Sequence[str] | None, task: str
) -> list[str]:
    """Validate --host names against the inventory and the task's roles (exit 2 if wrong)."""
    try:
        specs = select_hosts(inv, list(names), roles=roles, task=task)
    except InventoryError as exc:
        raise fail_input(ui, exc.problems, header=f"bad --host for {task}:") from None
    return [s.name for s in specs]


def register_secrets(inv: Inventory, ui: Ui) -> None:
    """Every secret known at start is masked from here on."""
    token = os.environ.get(inv.hcloud.token_env)
    ui.masker.register(token)


def cloud_facts(
    inv: Inventory, ui: Ui, hosts: Any, *, dry_run: bool, cloud: Any = None
) -> Inventory:
    """The inventory with the LBs' public IPs and interfaces from the cloud
    (runbook.cloud.discover); a disagreement or a fact not found is bad input (exit 2, every
    problem listed)."""
    from ..cloud.discover import DiscoveryFailed, discover

    try:
        return discover(inv, ui, hosts, cloud=cloud, pending_ok=dry_run)
    except DiscoveryFailed as exc:
        raise fail_input(
            ui, exc.problems, header="the inventory, the cloud and the hosts disagree:"
        ) from None


F = TypeVar("F", bound=Callable[..., Any])


def guard_output(fn: F) -> F:
    """A task body whose console cannot write (stdout on /dev/full, a closed pipe) ends in one
    line on stderr and exit 1, not an OSError traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OutputLost as exc:
            _output_lost(exc)
            raise Exit(code=EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]


@guard_output
def execute(
    c: Context,
    steps: Sequence[Step],
    *,
    task: str,
    host: Sequence[str] | None = None,
    roles: Sequence[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
    needs_cloud: bool = False,
    token_writes: bool = False,
    connect_hosts: bool = True,
    run: RunState | None = None,
    ui: Ui | None = None,
    also_connect: Callable[[Inventory], Sequence[str]] | None = None,
    guided: bool = False,
    start: int = 0,
    before: Callable[[int, Step], None] | None = None,
    after: Callable[[int, Step, StepContext], None] | None = None,
    done: Callable[[StepContext], None] | None = None,
) -> list[StepResult]:
    """The run driver of every task and the walkthrough: load the inventory, check `--host`,
    connect, then run the steps in order (plan, checkpoint, apply, verify), stop after the first
    failed step, close every target and show the recap.

    `token_writes`: a step writes through the API or deploys the token: a Read token is bad
    input, found before anything changes (not in dry-run: the probe is a write).
    `run`: the run's state with what the task hands its steps (e.g. the snapshot to restore).
    `also_connect`: hosts the steps talk to without being targets (e.g. the first control
    plane, which issues join credentials for `cluster.join --host k8snode01`). The walkthrough
    adds `guided` (apply / skip / quit at each plan), `start` (steps before it are only
    checked: planned, their pending changes reported as skipped), `before`/`after` each step
    and `done` at a successful end.
    """
    ui = ui or new_ui(yes=yes, verbose=verbose)
    inv = load(c, ui)
    register_secrets(inv, ui)
    selected = hosts_for(inv, ui, host or [], roles=roles, task=task)
    if connect_hosts:
        check_local_files(inv, ui)
    options = RunOptions(
        dry_run=dry_run, yes=yes, verbose=verbose, hosts=tuple(selected), guided=guided
    )
    ctx = StepContext(inventory=inv, ui=ui, options=options, run=run or RunState())
    from ..core.remote import connect_all

    if connect_hosts:
        ctx.targets.update(
            connect_all(
                inv,
                list(dict.fromkeys([*selected, *(also_connect(inv) if also_connect else ())])),
                dry_run=dry_run,
                accept_new_host_keys=accept_new_host_keys,
                log=ui.command,
            )
        )
    if needs_cloud:
        from ..cloud.api import CloudTarget, CloudTokenMissing

        try:
            ctx.targets[CLOUD] = CloudTarget.from_inventory(
                inv, dry_run=dry_run, ui=ui, stop=ctx.stop
            )
        except CloudTokenMissing as exc:
            raise fail_input(ui, [exc]) from None
    if token_writes and dry_run:
        ui.print(
            "the API token's write permission is checked when the run applies (the check is "
            "a write that changes nothing; none is made in --dry-run)",
            style="dim",
        )

    def body(results: list[StepResult]) -> int:
        if token_writes and not dry_run:  # inside the run: interrupts, targets closed
            require_write_token(inv, ui, ctx)
        facts_known = False
        for i, step in enumerate(steps):
            needs_nic = step.name in LB_FACT_STEPS
            if (needs_nic or step.name in PUBLIC_IP_STEPS) and (
                not facts_known
                or (
                    needs_nic
                    and ctx.inventory.load_balancer.interface == PENDING_NIC
                    and any(s.name == "network" for s in steps[:i])
                )
            ):
                # read before the first step that needs them, and again once `network` may
                # have attached the private NIC
                ctx.inventory = cloud_facts(
                    inv,
                    ui,
                    ctx.targets,
                    dry_run=dry_run or i < start or not needs_nic,
                    cloud=ctx.targets.get(CLOUD),
                )
                facts_known = True
            if before is not None:
                before(i, step)
            if i < start:
                checked = replace(ctx, options=replace(options, dry_run=True))
                res = as_checked(run_step(step, checked))
            else:
                res = run_step(step, ctx)
            results.append(res)
            if res.failed:
                return EXIT_FAILED
            if after is not None and i >= start:
                after(i, step, ctx)
        return 0

    return run_steps(ctx, body, done=None if done is None else lambda: done(ctx))


def require_write_token(inv: Inventory, ui: Ui, ctx: StepContext) -> None:
    """Exit 2, before anything changes, when the API token may only read: the cloud's steps
    would fail at their first write, and the heartbeat step would deploy a token the failover
    cannot move the addresses with (found at the first failover, by an outage). Hetzner's
    console makes Read and Read & Write tokens."""
    from ..cloud.api import CloudTarget, CloudTokenMissing, CloudUnavailable

    cloud = ctx.targets.get(CLOUD)
    try:
        probe = (
            cast("CloudTarget", cloud)
            if cloud is not None
            else CloudTarget.from_inventory(inv, dry_run=False, ui=ui, stop=ctx.stop)
        )
    except CloudTokenMissing as exc:
        raise fail_input(ui, [exc]) from None
    lbs = [h.name for h in inv.hosts_with_role("lb")]
    server = (lbs or list(inv.hosts))[0]
    try:
        with ui.status("asking the API whether the token may write"):
            writes = probe.token_may_write(server)
    except CloudUnavailable as exc:
        # the API down or refusing otherwise: the steps' own calls meet it and say so
        ui.warn(f"could not ask the API whether the token may write ({exc}); going on")
        return
    if writes is False:
        raise fail_input(
            ui,
            [
                f"{inv.hcloud.token_env}: the API token may only read (Hetzner answered 403 "
                "forbidden to a write that changes nothing). The cloud's steps and the "
                "failover need a Read & Write token: make one in the Hetzner console "
                "(Security, API tokens) and run again. Nothing was changed."
            ],
            header="the API token cannot write:",
        )


def as_checked(res: StepResult) -> StepResult:
    """A step before --from was only planned: pending changes are reported as skipped."""
    from ..core.plan import Status, TargetResult

    rows = tuple(
        TargetResult(r.target, Status.SKIPPED, r.changes, "pending: before --from, not applied")
        if r.status is Status.CHANGED
        else r
        for r in res.results
    )
    return replace(res, results=rows, dry_run=False)


def close_targets(ctx: StepContext) -> None:
    for t in ctx.targets.values():
        close = getattr(t, "close", None)
        if close:
            with contextlib.suppress(Exception):  # an abandoned command may still use it
                close()


def run_steps(
    ctx: StepContext,
    body: Callable[[list[StepResult]], int],
    *,
    done: Callable[[], None] | None = None,
) -> list[StepResult]:
    """Run `body` (it appends each StepResult and returns an exit code), close every target,
    print the recap and map the outcome to an exit code (Exit raised unless 0; `done` runs on 0).

    Interrupts (SIGINT/SIGTERM on `ctx.stop`) end in the recap with "interrupted" and exit 130/143
    within ~5 s of the first signal; a console that cannot write (stdout on a full disk) ends in
    one line on stderr, exit 1 — never a traceback.
    """
    from ..core.sshconn import library_logging

    ui, stop = ctx.ui, ctx.stop
    library_logging(verbose=ui.verbose)
    results: list[StepResult] = []
    code = 0
    try:
        with handle_signals(stop):
            try:
                code = body(results)
            except (CheckpointDeclined, NeedsPerson, StepQuit) as exc:
                ui.error(str(exc))
                code = EXIT_CHECKPOINT
            except Interrupted as exc:
                if exc.partial is not None:
                    results.append(exc.partial)
            finally:
                close_targets(ctx)
            note = ""
            if stop.requested:
                code = 128 + stop.signum
                note = (
                    f"interrupted by {signal.Signals(stop.signum).name}: stopped early; "
                    "a re-run resumes"
                )
            ui.recap(results, note=note)
            if stop.requested and not wait_for_workers(stop):
                # an abandoned remote command still blocks a worker thread: do not join it
                _flush_quietly()
                os._exit(code)
            if not code and done is not None:
                done()
    except OutputLost as exc:
        _output_lost(exc)
        code = code or EXIT_FAILED
    if code:
        raise Exit(code=code)
    return results


def _flush_quietly() -> None:
    for f in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            f.flush()


def _output_lost(exc: OSError) -> None:
    """One line on stderr; stdout pointed at /dev/null so the interpreter's final flush is quiet."""
    msg = f"error: cannot write to standard output ({exc.strerror or exc}); stopped\n"
    with contextlib.suppress(OSError):
        os.write(2, msg.encode())
    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
