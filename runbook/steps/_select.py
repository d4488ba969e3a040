"""Target selection shared by the steps: the run's --host selection filtered by role, and which
load balancer holds the VIP now."""

from __future__ import annotations

from ..core.engine import StepContext
from ..core.remote import NO_ANSWER
from ..status.lbstatus import addr_probe, has_vip


def hosts_with(ctx: StepContext, *roles: str) -> list[str]:
    """Selected hosts (inventory order) having one of `roles`."""
    selected = set(ctx.options.hosts) if ctx.options.hosts else None
    return [
        h.name
        for h in ctx.inventory.hosts_with_role(*roles)
        if selected is None or h.name in selected
    ]


def holds_vip(ctx: StepContext, name: str) -> bool:
    """Whether `name` carries the VIP on its private interface now (False when not connected
    or unreachable)."""
    host = ctx.targets.get(name)
    if host is None:
        return False
    try:
        out = host.query(addr_probe(ctx.inventory.load_balancer.interface), ok_codes=None)
    except NO_ANSWER:
        return False
    return has_vip(ctx.inventory, out.stdout)
