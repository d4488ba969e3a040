"""Shared task plumbing: load the inventory, build the console, run steps, map exit codes.

Exit codes (DESIGN §3): 0 done; 1 a step failed on some host; 2 bad input; 3 a checkpoint was
declined or needs a person.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import Task

from ..console import CheckpointDeclined, Masker, NeedsPerson, Ui, make_console
from ..discover import LB_FACT_STEPS
from ..engine import RunOptions, Step, StepContext, run_step
from ..inventory import Inventory, InventoryError, load_inventory, select_hosts
from ..plan import CLOUD, StepResult

EXIT_FAILED, EXIT_INPUT, EXIT_CHECKPOINT = 1, 2, 3

STEP_HELP = {
    "host": "Limit to this host (repeatable; an inventory name, e.g. k8slb01).",
    "dry_run": "Show the plan (diffs, secrets masked) and stop: nothing is changed anywhere.",
    "yes": "Confirm every checkpoint automatically (needed without a TTY).",
    "verbose": "Show every remote command (secrets masked).",
    "accept_new_host_keys": "Record unknown SSH host keys in known_hosts instead of refusing.",
}

# "module:Class" in runbook.steps, optionally followed by constructor args
StepRef = str | tuple[str, ...]


def step_help(**extra: str) -> dict[str, str]:
    """The standard step options' help plus a task's own options."""
    return {**STEP_HELP, **extra}


def load_step(ref: StepRef) -> Step:
    """Import a step only when its task runs (`inv --list` stays fast); ImportError if absent."""
    import importlib

    target, *args = (ref,) if isinstance(ref, str) else ref
    module, _, cls = target.partition(":")
    step_cls = getattr(importlib.import_module(f"runbook.steps.{module}"), cls)
    return step_cls(*args)


def step_task(
    task: str,
    doc: str,
    steps: Sequence[StepRef],
    *,
    roles: Sequence[str] | None = None,
    needs_cloud: bool = False,
    connect_hosts: bool = True,
    also_connect: Callable[[Inventory], Sequence[str]] | None = None,
) -> Task[Callable[..., None]]:
    """An Invoke task that only runs `steps`, with the standard step options and their help.

    `task` is the full name (e.g. "lb.setup"); its last part is the task's name in its
    collection. Invoke reads the options from the function's signature, hence a real function.
    """
    name = task.rpartition(".")[2]

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
            [load_step(ref) for ref in steps],
            task=task,
            host=host,
            roles=roles,
            dry_run=dry_run,
            yes=yes,
            verbose=verbose,
            accept_new_host_keys=accept_new_host_keys,
            needs_cloud=needs_cloud,
            connect_hosts=connect_hosts,
            also_connect=also_connect,
        )

    run.__name__ = run.__qualname__ = name.replace("-", "_")
    run.__doc__ = doc
    return Task(run, name=name, help=STEP_HELP, iterable=["host"])


def inventory_path(c: Context) -> Path:
    """`runbook.inventory` from Invoke config (invoke.yaml, -f, INVOKE_RUNBOOK_INVENTORY)."""
    try:
        value = c.config.runbook.inventory
    except AttributeError:
        value = "hosts.yaml"
    return Path(os.path.expanduser(str(value)))


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
    """The inventory with the LBs' public IPs and interfaces from the cloud (runbook.discover);
    a disagreement or a fact not found is bad input (exit 2, every problem listed)."""
    from ..discover import DiscoveryFailed, discover

    try:
        return discover(inv, ui, hosts, cloud=cloud, pending_ok=dry_run)
    except DiscoveryFailed as exc:
        raise fail_input(
            ui, exc.problems, header="the inventory, the cloud and the hosts disagree:"
        ) from None


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
    connect_hosts: bool = True,
    extra: dict[str, Any] | None = None,
    ui: Ui | None = None,
    also_connect: Callable[[Inventory], Sequence[str]] | None = None,
) -> list[StepResult]:
    """Run steps in order over the selected hosts; stop after the first failed step.

    `also_connect`: hosts the steps talk to without being targets (e.g. the first control
    plane, which issues join credentials for `cluster.join --host k8snode01`).
    """
    ui = ui or new_ui(yes=yes, verbose=verbose)
    inv = load(c, ui)
    register_secrets(inv, ui)
    selected = hosts_for(inv, ui, host or [], roles=roles, task=task)
    options = RunOptions(dry_run=dry_run, yes=yes, verbose=verbose, hosts=tuple(selected))
    ctx = StepContext(inventory=inv, ui=ui, options=options, extra=dict(extra or {}))
    from ..remote import connect_all

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
        from ..cloud import CloudTarget, CloudTokenMissing

        try:
            ctx.targets[CLOUD] = CloudTarget.from_inventory(inv, dry_run=dry_run, ui=ui)
        except CloudTokenMissing as exc:
            raise fail_input(ui, [exc]) from None
    if any(s.name in LB_FACT_STEPS for s in steps):
        ctx.inventory = cloud_facts(ctx.inventory, ui, ctx.targets, dry_run=dry_run)
    results: list[StepResult] = []
    code = 0
    try:
        for step in steps:
            res = run_step(step, ctx)
            results.append(res)
            if res.failed:
                code = EXIT_FAILED
                break
    except (CheckpointDeclined, NeedsPerson) as exc:
        ui.error(str(exc))
        code = EXIT_CHECKPOINT
    finally:
        for t in ctx.targets.values():
            close = getattr(t, "close", None)
            if close:
                close()
    ui.recap(results)
    if code:
        raise Exit(code=code)
    return results
