"""Step 6 — init: `kubeadm init --config … --upload-certs` on the first control plane.

Never on an initialised host (guard: /etc/kubernetes/admin.conf; docs/procedure.md). The config is
kubeadm v1beta4 rendered from the inventory for the kubeadm version installed on the host, so a
package of another minor is refused before anything runs. Verify: the API answers /readyz through
the VIP (admin.conf points there) and the apiserver manifest advertises the host's own IP.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from ..core.engine import Step, StepContext, StepFailed
from ..core.remote import Result
from ..core.resources import File, GuardedCommand, Resource
from ..core.waiting import poll
from ..render.k8sfiles import (
    ADMIN_CONF,
    APISERVER_MANIFEST,
    APISERVER_PATCH,
    KUBEADM_CONFIG_PATH,
    apiserver_patch,
    kubeadm_init_config,
)
from ._k8s import KUBECTL
from ._select import hosts_with

API_WAIT_S = 180


@dataclass
class InitRun:
    """Per run: `kubeadm version -o short` by host, asked once."""

    kubeadm: dict[str, str] = field(default_factory=dict)


def installed_kubeadm(ctx: StepContext, target: str) -> str:
    """`kubeadm version -o short` on the host (cached per run); "" when rendering offline."""
    if ctx.run.render:
        return ""
    versions = ctx.run.of(InitRun).kubeadm
    if target not in versions:
        res = ctx.targets[target].query("kubeadm version -o short", ok_codes=None)
        if res.exited != 0:
            raise StepFailed(f"{target}: kubeadm is not installed: run `inv prepare` first")
        versions[target] = res.stdout.strip()
    return versions[target]


class InitStep(Step):
    name = "init"
    title = "kubeadm init on the first control plane (v1beta4 config, --upload-certs)"

    def target_names(self, ctx: StepContext) -> list[str]:
        first = ctx.inventory.first_control_plane.name
        return [first] if first in hosts_with(ctx, "control-plane") else []

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        version = installed_kubeadm(ctx, target)
        config = kubeadm_init_config(ctx.inventory, target, kubernetes_version=version)
        cfg = shlex.quote(KUBEADM_CONFIG_PATH)
        return [
            File(KUBEADM_CONFIG_PATH, config, mode=0o600),
            File(APISERVER_PATCH, apiserver_patch(ctx.inventory, target)),
            GuardedCommand(
                "kubeadm-init",
                f"kubeadm init --config {cfg} --upload-certs",
                guard=f"test -f {ADMIN_CONF}",
                summary=(
                    f"kubeadm init --config {KUBEADM_CONFIG_PATH} --upload-certs "
                    f"(endpoint {ctx.inventory.control_plane_endpoint})"
                ),
                timeout=900,
            ),
            GuardedCommand(
                "root-kubeconfig",
                "install -d -m 0700 /root/.kube && "
                f"install -m 0600 {ADMIN_CONF} /root/.kube/config",
                guard=f"cmp -s {ADMIN_CONF} /root/.kube/config",
                summary="/root/.kube/config from admin.conf (mode 0600)",
            ),
        ]

    def verify(self, ctx: StepContext, target: str) -> None:
        host = ctx.targets[target]
        ip = str(ctx.inventory.hosts[target].private_ip)
        if host.query(
            f"grep -q -- --advertise-address={ip} {APISERVER_MANIFEST}", ok_codes=None
        ).exited:
            raise StepFailed(f"{target}: {APISERVER_MANIFEST} does not advertise {ip}")
        endpoint = ctx.inventory.control_plane_endpoint

        def ready(r: Result) -> bool:
            return r.exited == 0 and r.stdout.strip() == "ok"

        res = poll(
            lambda: host.query(f"{KUBECTL} get --raw=/readyz", ok_codes=None, timeout=30),
            seconds=API_WAIT_S,
            interval=2,
            done=ready,
            ui=ctx.ui,
            what=f"the API to answer /readyz through {endpoint}",
        )
        if not ready(res):
            raise StepFailed(
                f"the API does not answer /readyz through {endpoint} after {API_WAIT_S} s: "
                f"{(res.stderr or res.stdout).strip()[-200:]}"
            )
