"""Step 1 — prepare: hostname, /etc/hosts, upgrade, LB packages (the reboots the upgrade requires
are `reboot.RebootStep`, step 1's second half).

LBs get `haproxy heartbeat` with --no-install-recommends (without it Heartbeat drags in
pacemaker/corosync, ~115 packages). The Kubernetes part (repo, containerd, kubelet/kubeadm/
kubectl, swap, sysctls) comes from `k8s_prepare` for control planes and workers.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from ..core.engine import Step, StepContext
from ..core.resources import GuardedCommand, LineInFile, Packages, Resource
from ._select import hosts_with
from .k8s_prepare import kubernetes_resources, verify_kubernetes_host
from .reboot import Upgraded, run_id

LB_PACKAGES = ("haproxy", "heartbeat", "python3")


def hosts_lines(ctx: StepContext) -> list[LineInFile]:
    """One /etc/hosts line per cluster host (FQDN address first), matched by its private IP;
    and the API DNS name on the VIP when the inventory has one."""

    def line(ip: str, names: Sequence[str]) -> LineInFile:
        text = f"{ip}\t{' '.join(dict.fromkeys(names))}"
        return LineInFile("/etc/hosts", text, rf"^{re.escape(ip)}[[:space:]]", fields=True)

    inv = ctx.inventory
    lines = []
    for h in inv.hosts.values():
        names = [h.address, h.name] if "." in h.address and not h.address[0].isdigit() else [h.name]
        lines.append(line(str(h.private_ip), names))
    if inv.kubernetes.api_dns_name:
        lines.append(
            line(str(inv.load_balancer.vip), [inv.kubernetes.api_dns_name.lower().rstrip(".")])
        )
    return lines


class PrepareStep(Step):
    name = "prepare"
    title = (
        "hostname, /etc/hosts, upgrade; LB packages; Kubernetes repo, "
        "containerd, kubelet/kubeadm/kubectl, swap off, modules, sysctls"
    )

    def target_names(self, ctx: StepContext) -> list[str]:
        return hosts_with(ctx)

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        host = ctx.inventory.hosts[target]
        q = shlex.quote(target)
        res: list[Resource] = [
            GuardedCommand(
                "hostname",
                f"hostname {q} && echo {q} > /etc/hostname",
                guard=f'[ "$(hostname)" = {q} ] && grep -qx {q} /etc/hostname',
                summary=f"set hostname {target}",
            ),
            *hosts_lines(ctx),
            Upgraded(run_id=run_id(ctx, target)),
        ]
        if host.role == "lb":
            # the lists were refreshed by the upgrade check of this run
            res.append(Packages(LB_PACKAGES, update_first=False))
        else:
            res += kubernetes_resources(ctx.inventory, target)
        return res

    def verify(self, ctx: StepContext, target: str) -> None:
        if ctx.inventory.hosts[target].role != "lb":
            verify_kubernetes_host(ctx, target)
