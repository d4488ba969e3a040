"""Day 2 — patch: rolling OS updates, the API kept serving; never two control planes or both
load balancers down at once.

One host at a time, in step 1's reboot order (`reboot.RebootStep`: the standby load balancer,
the VIP holder, the control planes, the workers), each host only when it has upgrades pending or
a reboot pending. The VIP holder first hands the VIP to its peer (`hb_standby`: a planned
hand-over, waited for); a control plane leaves HAProxy's rotation; a Kubernetes node is drained
(`kubectl drain --ignore-daemonsets`, from another control plane); then step 1's `Upgraded`
(`apt-get upgrade`: held packages — kubelet, kubeadm, kubectl — stay held) and, when
/var/run/reboot-required says so, `Rebooted` (back over SSH and ready by role); the
node Ready, back in rotation, `kubectl uncordon`. A re-run finds nothing pending and changes
nothing.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.engine import Step, StepContext
from ..core.plan import Change, TargetPlan
from ..core.remote import Fact, Host
from ..core.resources import Resource
from ..core.waiting import wait_until
from ._day2 import door, set_rotation
from ._k8s import KUBECTL, parse_nodes
from ._select import holds_vip
from .reboot import Rebooted, RebootStep, Upgraded, ready_check, run_id

HB_STANDBY = "/usr/share/heartbeat/hb_standby"
NODE_WAIT_S = 300
AROUND = {
    "lb": "the VIP handed to the peer first when held here",
    "control-plane": "out of HAProxy's rotation and drained meanwhile, uncordoned when Ready",
    "worker": "drained meanwhile, uncordoned when Ready",
}


@dataclass
class Patched(Resource[Host]):
    """No package upgrade and no reboot pending on this host."""

    ctx: StepContext
    name: str
    upgraded: Upgraded
    rebooted: Rebooted

    @property
    def key(self) -> str:
        return f"patched:{self.name}"

    @property
    def role(self) -> str:
        return self.ctx.inventory.hosts[self.name].role

    def _pending(self, host: Host) -> tuple[Change | None, Change | None]:
        up, rb = host.gather([self.upgraded.probe(), self.rebooted.probe()])
        return self.upgraded.check(host, up), self.rebooted.check(host, rb)

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        pending = [c for c in self._pending(host) if c is not None]
        if not pending:
            return None
        what = "; ".join(f"{c.action}: {c.summary}" for c in pending)
        return Change(self.key, "patch", f"{what} ({AROUND[self.role]}); held packages stay held")

    def apply(self, host: Host) -> None:
        k8s = self.role != "lb"
        d = self.ctx.targets[door(self.ctx, self.name)] if k8s else None
        q = shlex.quote(self.name)
        if not k8s and holds_vip(self.ctx, self.name):
            self._hand_over(host)
        if self.role == "control-plane":
            set_rotation(self.ctx, self.name, "drain")
        if d is not None:
            d.run(f"{KUBECTL} drain {q} --ignore-daemonsets", timeout=600)
        if self._pending(host)[0] is not None:
            self.upgraded.apply(host)
        if self._pending(host)[1] is not None:  # the upgrade may just have asked for it
            self.rebooted.apply(host)
        if d is None:
            return
        wait_until(
            lambda: self._ready(d),
            seconds=NODE_WAIT_S,
            interval=2,
            failure=f"{self.name}: not Ready {NODE_WAIT_S} s after the patch",
            ui=self.ctx.ui,
            what=f"{self.name} to be Ready after the patch",
        )
        if self.role == "control-plane":
            set_rotation(self.ctx, self.name, "ready")
        d.run(f"{KUBECTL} uncordon {q}", timeout=120)

    def _ready(self, door_host: Host) -> bool:
        nodes = parse_nodes(door_host.query(f"{KUBECTL} get nodes -o json").stdout)
        return self.name in nodes and nodes[self.name].ready

    def _hand_over(self, host: Host) -> None:
        """A planned hand-over: Heartbeat on this node gives its resources to the peer."""
        peers = [h.name for h in self.ctx.inventory.hosts_with_role("lb") if h.name != self.name]
        host.run(HB_STANDBY, timeout=60)
        wait_until(
            lambda: (
                not holds_vip(self.ctx, self.name) and any(holds_vip(self.ctx, p) for p in peers)
            ),
            seconds=60,
            interval=0.5,
            failure=f"{self.name}: the VIP did not move to {', '.join(peers)}",
            ui=self.ctx.ui,
            what=f"the VIP to move from {self.name} to {', '.join(peers)}",
        )


class PatchStep(Step):
    name = "patch"
    title = "rolling OS updates: one host at a time (hand-over/drain, upgrade, reboot, Ready)"
    serial = True

    def __init__(self, *, wait_seconds: float = 600) -> None:
        self.wait_seconds = wait_seconds

    def target_names(self, ctx: StepContext) -> list[str]:
        return RebootStep().target_names(ctx)

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        up = Upgraded(run_id=run_id(ctx, target))
        rb = Rebooted(wait_seconds=self.wait_seconds, ready=ready_check(ctx, target))
        return [Patched(ctx, target, up, rb)]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        todo = [p.target for p in plans if p.changes]
        return f"Patch {', '.join(todo)} now, in this order, one host at a time?"
