"""Load-balancer tier tasks: lb.setup, lb.heartbeat, lb.haproxy, lb.status, lb.failover-drill."""

from __future__ import annotations

from invoke import task
from invoke.context import Context

from . import _common as common
from ._common import STEP_HELP, not_built


@task(help=STEP_HELP, iterable=["host"])
def setup(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Steps 3-5: VIP + floating IP on the primary, Heartbeat, HAProxy — idempotent, verified."""
    from ..steps.lb import LbStep

    common.execute(
        c,
        [LbStep()],
        task="lb.setup",
        host=host,
        roles=["lb"],
        dry_run=dry_run,
        yes=yes,
        verbose=verbose,
        accept_new_host_keys=accept_new_host_keys,
        needs_cloud=True,
    )


@task(help=STEP_HELP, iterable=["host"])
def heartbeat(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Step 4 only: Heartbeat config, authkeys, failover resource script, restart, verify."""
    not_built("lb.heartbeat", "issue 4")()


@task(help=STEP_HELP, iterable=["host"])
def haproxy(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Step 5 only: haproxy.cfg validated before install, reloaded, backends verified."""
    not_built("lb.haproxy", "issue 4")()


@task(help={"verbose": "Show the commands run (secrets masked)."})
def status(c: Context, verbose: bool = False) -> None:
    """Heartbeat state per node, VIP holder locally and per API, HAProxy backend states."""
    not_built("lb.status", "issue 4")()


@task(
    name="failover-drill",
    help={
        "mode": "How to fail the holder: stop (heartbeat stop), kill, linkdown (lab only).",
        "yes": "Confirm the drill's checkpoints automatically.",
        "seconds": "How long to probe after the failure (seconds).",
    },
)
def failover_drill(c: Context, mode: str = "stop", yes: bool = False, seconds: int = 15) -> None:
    """Guided drill: fail the VIP holder, measure the outage on VIP:6443 and the floating IP."""
    not_built("lb.failover-drill", "issue 4")()
