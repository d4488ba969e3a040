"""Step 2b — firewall: one Hetzner Cloud Firewall per role, applied by label selector.

Runs right after `network` and before anything listens (lb, heartbeat, haproxy, the cluster). The
operator's own source address (what sshd on a host sees in `$SSH_CONNECTION`) is checked against
the admin networks first: a firewall that leaves it outside would lock the runbook out of every
host, so the step refuses. When no host can be reached over SSH (e.g. the operator's address
changed and an earlier firewall drops it) the step warns and lets the operator fix the rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..cloud.api import CloudError
from ..cloud.firewall import (
    FirewallApplied,
    FirewallRules,
    ServerLabels,
    covering,
    firewall_name,
    roles,
    selector,
    server_labels,
    source_allowed,
    wanted_rules,
)
from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import CLOUD, TargetPlan
from ..core.remote import Host
from ..core.resources import Resource


@dataclass
class FirewallRun:
    """Per run: the operator's source address, once asked (None: no host showed it)."""

    asked: bool = False
    source: str | None = None


def operator_source(ctx: StepContext) -> str | None:
    """The operator's address as a directly reached host sees it; None when none answers."""
    state = ctx.run.of(FirewallRun)
    if state.asked:
        return state.source
    source = None
    for spec in ctx.inventory.hosts.values():
        target = ctx.targets.get(spec.name)
        if spec.gateway is not None or not isinstance(target, Host):
            continue
        try:
            out = target.query('printf "%s" "${SSH_CONNECTION%% *}"', timeout=15).stdout.strip()
        except Exception as exc:  # unreachable: perhaps an earlier firewall already drops us
            ctx.ui.warn(f"firewall: {spec.name} not reachable to learn your source address: {exc}")
            continue
        if out:
            source = out
            break
        ctx.ui.warn(  # e.g. a non-root ssh.user: sudo resets the environment
            f"firewall: {spec.name} did not show your source address ($SSH_CONNECTION is empty)"
        )
        break
    state.asked, state.source = True, source
    return source


class FirewallStep(Step):
    name = "firewall"
    title = "Hetzner Cloud Firewalls per role: SSH from admin networks, API and Heartbeat on LBs"

    def target_names(self, ctx: StepContext) -> list[str]:
        if ctx.inventory.firewall is None:
            ctx.ui.warn(
                "firewall: no firewall section in the inventory: nothing is managed, every "
                "server stays open to the internet"
            )
            return []
        return [CLOUD]

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        inv = ctx.inventory
        source = operator_source(ctx)
        if source is not None and not source_allowed(source, inv):
            nets = ", ".join(str(n) for n in inv.firewall.admin_networks) if inv.firewall else ""
            raise CloudError(
                f"your source address {source} is outside firewall.admin_networks ({nets}): "
                "these rules would lock the runbook out of every host; add your network there"
            )
        res: list[Resource] = [
            ServerLabels(h.name, server_labels(inv, h.role)) for h in inv.hosts.values()
        ]
        for role in roles(inv):
            name = firewall_name(inv, role)
            res.append(FirewallRules(name, server_labels(inv, role), wanted_rules(inv, role)))
            res.append(FirewallApplied(name, selector(inv, role)))
        return res

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        cloud = next((p for p in plans if p.target == CLOUD), None)
        if cloud is None or not any(
            c.action in ("create", "apply") or c.resource.startswith("firewall:")
            for c in cloud.changes
        ):
            return None
        inv = ctx.inventory
        nets = ", ".join(str(n) for n in inv.firewall.admin_networks) if inv.firewall else ""
        source = ctx.run.of(FirewallRun).source
        seen = (
            f"your source {source} is inside"
            if source
            else "your source address could not be checked"
        )
        return (
            f"Apply the cloud firewalls? From then on the internet reaches the servers only as "
            f"planned: SSH only from {nets} ({seen}). Continue?"
        )

    def verify(self, ctx: StepContext, target: str) -> None:
        """Every server is covered by its role's firewall (the label selector matched it)."""
        inv = ctx.inventory
        cloud = ctx.targets[CLOUD]
        ids = {}
        for role in roles(inv):
            fw = cloud.client.firewalls.get_by_name(firewall_name(inv, role))
            if fw is None:
                raise StepFailed(f"firewall {firewall_name(inv, role)} is missing")
            ids[role] = fw.id
        missing = [
            f"{h.name} ({firewall_name(inv, h.role)})"
            for h in inv.hosts.values()
            if ids[h.role] not in covering(cloud.server(h.name))
        ]
        if missing:
            raise StepFailed("firewall not applied to " + ", ".join(missing))
