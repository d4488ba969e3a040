"""Step 3 — lb: VIP (alias IP) and floating IP on the primary LB, reverse DNS, nonlocal bind.

Any LB holding the VIP counts as converged: after a failover the VIP legitimately lives on the
peer, and re-running must not fail it back (auto_failback off).
"""

from __future__ import annotations

from collections.abc import Sequence

from ..cloud.api import AliasIPHeld, FloatingDnsPtr, FloatingIPHeld
from ..core.engine import Step, StepContext
from ..core.plan import CLOUD, TargetPlan
from ..core.resources import Resource, Sysctl
from ._select import hosts_with

SYSCTL_FILE = "/etc/sysctl.d/60-runbook-lb.conf"


class LbStep(Step):
    name = "lb"
    title = "VIP and floating IP on the primary load balancer, reverse DNS, ip_nonlocal_bind"

    def target_names(self, ctx: StepContext) -> list[str]:
        return [CLOUD, *hosts_with(ctx, "lb")]

    def _holders(self, ctx: StepContext) -> list[str]:
        inv = ctx.inventory
        lbs = [h.name for h in inv.hosts_with_role("lb")]
        return [inv.load_balancer.primary, *[n for n in lbs if n != inv.load_balancer.primary]]

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        lb = ctx.inventory.load_balancer
        if target == CLOUD:
            holders = self._holders(ctx)
            res: list[Resource] = [
                AliasIPHeld(str(lb.vip), ctx.inventory.hcloud.network.name, holders),
                FloatingIPHeld(lb.floating_ip.name, str(lb.floating_ip.address), holders),
            ]
            if lb.floating_ip.dns_ptr:
                res.append(
                    FloatingDnsPtr(
                        lb.floating_ip.name, str(lb.floating_ip.address), lb.floating_ip.dns_ptr
                    )
                )
            return res
        return [Sysctl("net.ipv4.ip_nonlocal_bind", "1", file=SYSCTL_FILE)]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        fip = ctx.inventory.load_balancer.floating_ip
        cloud = next((p for p in plans if p.target == CLOUD), None)
        if not fip.dns_ptr or cloud is None:
            return None
        if not any(c.resource.startswith("dns-ptr:") for c in cloud.changes):
            return None
        return (
            f"The forward DNS record is yours to create: {fip.dns_ptr} A {fip.address} at your "
            "DNS provider (the runbook sets only the reverse record). Continue?"
        )
