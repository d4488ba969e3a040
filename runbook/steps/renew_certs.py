"""Day 2 — renew-certs: kubeadm's certificates renewed one control plane at a time.

A control plane whose soonest certificate expires within `--min-days` (default 30) leaves
HAProxy's rotation (`drain`), runs `kubeadm certs renew all`, restarts its static pods (manifests
out and back in, as kubeadm's docs say), answers `/readyz` again and goes back to `ready`; its
/root/.kube/config is refreshed from the renewed admin.conf. The task then refreshes the runbook's
kubecfg.crt/.key/.p12 (step 10). A control plane with fresh certificates is left alone, so a
re-run changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change, TargetPlan
from ..core.remote import Fact, Host
from ..core.resources import Resource
from ..render.k8sfiles import ADMIN_CONF
from ..status import certexpiry
from ..tools import staticpods
from ._day2 import set_rotation, wait_apiserver_ready
from ._select import hosts_with


@dataclass
class CertsFresh(Resource[Host]):
    """No kubeadm certificate of this control plane expires within `min_days`."""

    ctx: StepContext
    name: str
    min_days: float

    @property
    def key(self) -> str:
        return f"kubeadm-certs:{self.name}"

    def probe(self) -> str:
        return "kubeadm certs check-expiration"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        certs = certexpiry.parse(fact.stdout if fact else "")
        first = certexpiry.soonest(certs)
        if first is None:
            raise StepFailed(f"{self.name}: `kubeadm certs check-expiration` listed nothing")
        if first.days >= self.min_days:
            return None
        return Change(
            self.key,
            "renew",
            f"kubeadm certs renew all ({first.name} expires {first.expires}, {first.residual} "
            f"left); static pods restarted while out of HAProxy's rotation",
        )

    def apply(self, host: Host) -> None:
        set_rotation(self.ctx, self.name, "drain")
        host.run("kubeadm certs renew all", timeout=300)
        host.run(staticpods.park(), timeout=120)
        host.run(staticpods.unpark(), timeout=60)
        wait_apiserver_ready(self.ctx, self.name)
        set_rotation(self.ctx, self.name, "ready")
        host.run(
            f"install -d -m 0700 /root/.kube && install -m 0600 {ADMIN_CONF} /root/.kube/config"
        )


class RenewCertsStep(Step):
    name = "renew-certs"
    title = "kubeadm certs renew, one control plane at a time (drained in HAProxy meanwhile)"
    serial = True

    def __init__(self, min_days: float = certexpiry.WARN_DAYS) -> None:
        self.min_days = min_days

    def target_names(self, ctx: StepContext) -> list[str]:
        return hosts_with(ctx, "control-plane")

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        return [CertsFresh(ctx, target, self.min_days)]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        n = sum(1 for p in plans if p.changes)
        return f"Renew the certificates of {n} control plane(s), one at a time?"
