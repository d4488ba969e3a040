"""Top-level tasks: validate, render, prepare, network, walkthrough, status."""

from __future__ import annotations

from pathlib import Path

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

from ..inventory import SUMMARY_COLUMNS, summary_facts, summary_rows
from . import _common as common
from ._common import STEP_HELP, not_built


@task(help={"verbose": "Also list every warning's explanation."})
def validate(c: Context, verbose: bool = False) -> None:
    """Check the inventory (hosts.yaml) against every rule; exit 2 listing all problems."""
    ui = common.new_ui(verbose=verbose)
    inv = common.load(c, ui)
    rows = summary_rows(inv)
    ui.table(f"inventory {common.inventory_path(c)}", SUMMARY_COLUMNS, rows)
    ui.table("cluster", ["what", "value"], summary_facts(inv))
    ui.print(f"valid: {len(rows)} hosts, {len(inv.warnings)} warning(s)", style="green")


@task(
    help={
        "host": "Host to render files for (an inventory name).",
        "out": "Directory to write the rendered files into (created; mirrors the host's paths).",
    }
)
def render(c: Context, host: str, out: str) -> None:
    """Write every file the built steps would put on HOST, secrets replaced by a marker."""
    from ..render import render_host

    ui = common.new_ui()
    inv = common.load(c, ui)
    common.hosts_for(inv, ui, [host], roles=None, task="render")
    written = render_host(inv, host, Path(out))
    if not written:
        ui.warn(f"no built step writes files to {host} yet")
    ui.table(f"rendered for {host}", ["file", "mode", "bytes"], written)


def _step_opts(extra: dict[str, str] | None = None) -> dict[str, str]:
    return {**STEP_HELP, **(extra or {})}


@task(help=_step_opts(), iterable=["host"])
def prepare(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Step 1: hostname, /etc/hosts, upgrade (reboot checkpoint), LB packages on every host."""
    from ..steps.prepare import PrepareStep

    common.execute(
        c,
        [PrepareStep()],
        task="prepare",
        host=host,
        roles=None,
        dry_run=dry_run,
        yes=yes,
        verbose=verbose,
        accept_new_host_keys=accept_new_host_keys,
    )


@task(help=_step_opts(), iterable=["host"])
def network(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Step 2: Hetzner network + subnet, every server attached with its fixed private IP."""
    from ..steps.network import NetworkStep

    common.execute(
        c,
        [NetworkStep()],
        task="network",
        host=host,
        roles=None,
        dry_run=dry_run,
        yes=yes,
        verbose=verbose,
        accept_new_host_keys=accept_new_host_keys,
        needs_cloud=True,
        connect_hosts=False,
    )


@task(
    help=_step_opts(
        {"from_step": "Start at this step (e.g. heartbeat); earlier ones are checked."}
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
    from_step: str = "",
) -> None:
    """The whole procedure, steps 1-10 in order, guided, with checkpoints; re-running resumes."""
    not_built("walkthrough", "issue 5")()


@task(help={"verbose": "Show the commands run (secrets masked)."})
def status(c: Context, verbose: bool = False) -> None:
    """Cluster overview: hosts reachable, LB pair state, API endpoint, nodes."""
    raise Exit("status: not built yet (arrives with issue 4/5).", code=1)
