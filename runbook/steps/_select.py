"""Target selection shared by the steps: the run's --host selection filtered by role."""

from __future__ import annotations

from ..core.engine import StepContext


def hosts_with(ctx: StepContext, *roles: str) -> list[str]:
    """Selected hosts (inventory order) having one of `roles`."""
    selected = set(ctx.options.hosts) if ctx.options.hosts else None
    return [
        h.name
        for h in ctx.inventory.hosts_with_role(*roles)
        if selected is None or h.name in selected
    ]
