"""Step 1 — prepare: hostname, /etc/hosts, upgrade, reboot if required; LB packages.

LBs get `haproxy heartbeat` with --no-install-recommends (without it Heartbeat drags in
pacemaker/corosync, ~115 packages). The Kubernetes part (repo, containerd, kubelet/kubeadm/
kubectl, swap, sysctls) comes from `k8s_prepare` for control planes and workers.
"""

from __future__ import annotations

import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass

from ..engine import Step, StepContext
from ..plan import Change, TargetPlan
from ..remote import Fact, Host, HostUnreachable
from ..resources import GuardedCommand, LineInFile, Packages, Resource
from ._select import hosts_with
from .k8s_prepare import kubernetes_resources, verify_kubernetes_host

LB_PACKAGES = ("haproxy", "heartbeat", "python3")
REBOOT_MARKER = "/run/runbook-reboot-pending"


@dataclass
class Upgraded(Resource):
    """No pending package upgrades (`apt-get -s upgrade` simulates: read-only)."""

    @property
    def key(self) -> str:
        return "upgrade"

    def probe(self) -> str:
        return "apt-get -s -o Debug::NoLocking=1 upgrade 2>/dev/null | grep -c '^Inst '"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        n = int((fact.stdout.strip() if fact else "0") or "0")
        return Change(self.key, "upgrade", f"{n} package(s) upgradable") if n else None

    def apply(self, host: Host) -> None:
        host.run(
            "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get -y -q "
            "-o Dpkg::Options::=--force-confold upgrade",
            timeout=3600,
        )


@dataclass
class Rebooted(Resource):
    """Reboot when /var/run/reboot-required exists; wait until SSH is back (fresh /run)."""

    wait_seconds: float = 600

    @property
    def key(self) -> str:
        return "reboot"

    def probe(self) -> str:
        return "test -e /var/run/reboot-required && cat /var/run/reboot-required.pkgs"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        if fact is None or fact.rc != 0:
            return None
        pkgs = " ".join(fact.stdout.split()[:6])
        return Change(self.key, "reboot", f"required by {pkgs or 'an upgrade'}")

    def apply(self, host: Host) -> None:
        host.run(
            f"touch {REBOOT_MARKER}; (sleep 1; systemctl reboot || reboot) "
            ">/dev/null 2>&1 </dev/null &"
        )
        host.close()
        deadline = time.monotonic() + self.wait_seconds
        time.sleep(3)
        while time.monotonic() < deadline:
            try:
                if host.query(f"test -e {REBOOT_MARKER}", ok_codes=None).exited != 0:
                    return  # /run is fresh: the host rebooted
            except HostUnreachable:
                host.close()
            time.sleep(2)
        raise HostUnreachable(f"{host.name}: not back {self.wait_seconds:.0f}s after reboot")


def hosts_lines(ctx: StepContext) -> list[LineInFile]:
    """One /etc/hosts line per cluster host (FQDN address first), matched by its private IP;
    and the API DNS name on the VIP when the inventory has one."""

    def line(ip: str, names: Sequence[str]) -> LineInFile:
        text = f"{ip}\t{' '.join(dict.fromkeys(names))}"
        return LineInFile("/etc/hosts", text, rf"^{re.escape(ip)}[[:space:]]")

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
        "hostname, /etc/hosts, upgrade (+ reboot checkpoint); LB packages; Kubernetes repo, "
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
            Upgraded(),
        ]
        if host.role == "lb":
            res.append(Packages(LB_PACKAGES))
        else:
            res += kubernetes_resources(ctx.inventory, target)
        res.append(Rebooted())
        return res

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        reboots = [p.target for p in plans if any(c.resource == "reboot" for c in p.changes)]
        if not reboots:
            return None
        return f"Reboot {', '.join(reboots)} now (a reboot is required after the upgrade)?"

    def verify(self, ctx: StepContext, target: str) -> None:
        if ctx.inventory.hosts[target].role != "lb":
            verify_kubernetes_host(ctx, target)
