"""Step 1, Kubernetes hosts: pkgs.k8s.io repo, containerd, kubelet/kubeadm/kubectl held, swap off,
kernel modules and sysctls (docs/procedure.md, step 1 and the departures: keyring + signed-by
instead of apt-key, containerd instead of docker.io).

`PrepareStep` calls `kubernetes_resources` for control planes and workers and
`verify_kubernetes_host` after apply; this module holds no Step of its own.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..engine import StepContext, StepFailed
from ..inventory import Inventory
from ..k8sfiles import (
    CONTAINERD_CONFIG_PATH,
    K8S_MODULES,
    K8S_PACKAGES,
    K8S_SYSCTLS,
    MODULE_PRESENT,
    MODULES_PATH,
    SYSCTL_FILE,
    apt_source,
    containerd_config,
    containerd_major,
    modules_load,
)
from ..plan import Change
from ..remote import Fact, Host
from ..resources import AptRepo, File, GuardedCommand, Packages, Resource, Service, Sysctl

# an active /etc/fstab swap line: device, mount point, type "swap"
_FSTAB_SWAP = r"^[^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]"
_SED_COMMENT = "\\@" + _FSTAB_SWAP + "@s@^@#runbook: @"  # sed: \@re@ addresses lines by re


@dataclass
class SwapOff(Resource):
    """No active swap and no swap line in /etc/fstab (kubelet refuses to run with swap)."""

    fstab: str = "/etc/fstab"

    @property
    def key(self) -> str:
        return "swap:off"

    def probe(self) -> str:
        f = shlex.quote(self.fstab)
        return f"swapon --noheadings --show=NAME; echo '|'; grep -E {shlex.quote(_FSTAB_SWAP)} {f}"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        active, _, persisted = (fact.stdout if fact else "").partition("|")
        todo = []
        if active.split():
            todo.append(f"swapoff {' '.join(active.split())}")
        if persisted.strip():
            n = len(persisted.strip().splitlines())
            todo.append(f"comment out {n} line(s) in {self.fstab}")
        return Change(self.key, "disable", "; ".join(todo)) if todo else None

    def apply(self, host: Host) -> None:
        f = shlex.quote(self.fstab)
        host.run(f"swapoff -a && if [ -f {f} ]; then sed -ri {shlex.quote(_SED_COMMENT)} {f}; fi")


def kubernetes_resources(inv: Inventory, host_name: str) -> list[Resource]:
    """The Kubernetes part of prepare for one control plane or worker, in apply order."""
    src = apt_source(inv)
    config = File(CONTAINERD_CONFIG_PATH, containerd_config(inv))
    modules = File(MODULES_PATH, modules_load())
    mods = " && ".join(MODULE_PRESENT[m] for m in K8S_MODULES)
    return [
        AptRepo(src.name, src.line, keyring=src.keyring, key_url=src.key_url),
        SwapOff(),
        modules,
        GuardedCommand(
            "modules",
            " && ".join(f"{{ {MODULE_PRESENT[m]} || modprobe {m}; }}" for m in K8S_MODULES),
            guard=mods,
            summary=f"load {', '.join(K8S_MODULES)}",
        ),
        *(Sysctl(name, value, file=SYSCTL_FILE) for name, value in K8S_SYSCTLS),
        Packages(("containerd",)),
        config,
        Service("containerd", watch=[config.key], on_change="restart"),
        Packages(K8S_PACKAGES, hold=True),
        GuardedCommand(
            "enable-kubelet",
            "systemctl enable kubelet",
            guard="systemctl is-enabled kubelet",
            summary="enable kubelet (kubeadm starts it)",
        ),
    ]


_VERSION = re.compile(r"\bv?(\d+)\.(\d+)\.(\d+)")


def verify_kubernetes_host(ctx: StepContext, target: str) -> None:
    """containerd's major version fits the Kubernetes minor (2.x from 1.36 on)."""
    want = containerd_major(ctx.inventory)
    res = ctx.targets[target].query("containerd --version", ok_codes=None)
    m = _VERSION.search(res.stdout)
    if res.exited != 0 or not m:
        raise StepFailed(f"{target}: `containerd --version` failed: {res.stderr.strip()[:200]}")
    if int(m.group(1)) < want:
        raise StepFailed(
            f"{target}: containerd {m.group(0)} is installed, Kubernetes "
            f"{ctx.inventory.kubernetes.version} needs containerd {want}.x: install a "
            "containerd 2 package (e.g. containerd.io from Docker's repository) and re-run"
        )
