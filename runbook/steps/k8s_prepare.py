"""Step 1, Kubernetes hosts: the keyring tools, pkgs.k8s.io repo, containerd.io from Docker's
repository, kubelet/kubeadm/kubectl held, swap off, kernel modules and sysctls (docs/procedure.md,
step 1 and the departures: keyring + signed-by instead of apt-key, containerd instead of
docker.io).

containerd: `ContainerRuntime` installs `containerd.io` unless a containerd that suffices is
already there (see `runbook.render.containerd`); the verify reads what containerd really runs with
(`containerd --config F config dump`), so a containerd that ignores the config is caught.

`PrepareStep` calls `kubernetes_resources` for control planes and workers and
`verify_kubernetes_host` after apply; this module holds no Step of its own.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from ..core.engine import StepContext, StepFailed
from ..core.plan import Change
from ..core.remote import Fact, Host
from ..core.resources import (
    AptRepo,
    File,
    GuardedCommand,
    Packages,
    Resource,
    Service,
    Sysctl,
    apt_install,
)
from ..inventory import Inventory
from ..render import containerd as ctd
from ..render.k8sfiles import (
    CONTAINERD_CONFIG_PATH,
    K8S_MODULES,
    K8S_PACKAGES,
    K8S_SYSCTLS,
    MODULE_PRESENT,
    MODULES_PATH,
    PREREQUISITES,
    SYSCTL_FILE,
    AptSource,
    apt_source,
    containerd_config,
    docker_apt_source,
    modules_load,
    pause_image,
)

# an active /etc/fstab swap line: device, mount point, type "swap"
_FSTAB_SWAP = r"^[^#[:space:]]+[[:space:]]+[^[:space:]]+[[:space:]]+swap[[:space:]]"
_SED_COMMENT = "\\@" + _FSTAB_SWAP + "@s@^@#runbook: @"  # sed: \@re@ addresses lines by re


@dataclass
class SwapOff(Resource[Host]):
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


@dataclass
class ContainerRuntime(Resource[Host]):
    """containerd for Kubernetes 1.<minor>: `containerd.io` from Docker's repository, or an
    installed containerd that suffices. Never swaps one package for the other (see
    `runbook.render.containerd`): `dpkg-query` answers per package name, and containerd.io only
    *provides* `containerd`, so both names are asked."""

    minor: int

    @property
    def key(self) -> str:
        return "containerd:runtime"

    def probe(self) -> str:
        pkgs = f"{ctd.DISTRO_PACKAGE} {ctd.DOCKER_PACKAGE}"
        return (
            '. /etc/os-release; echo "$ID|$VERSION_ID|$VERSION_CODENAME|$PRETTY_NAME"; '
            f"dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\\n' {pkgs}"
        )

    def _state(self, fact: Fact | None) -> tuple[ctd.OsRelease, dict[str, str]]:
        lines = (fact.stdout if fact else "").splitlines()
        os = ctd.OsRelease.parse(lines[0] if lines else "")
        installed = {
            parts[0]: parts[1]
            for parts in (ln.split() for ln in lines[1:])
            if len(parts) >= 3 and parts[2][1:2] == "i"
        }
        return os, installed

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        os, installed = self._state(fact)
        if os.docker_suite is None:
            raise StepFailed(f"{host.name}: {ctd.unsupported_os(os)}")
        have = installed.get(ctd.DOCKER_PACKAGE)
        if have is not None:
            if ctd.suffices(have, self.minor):
                return None
            want = ".".join(map(str, ctd.minimum(self.minor)))
            return Change(self.key, "upgrade", f"{ctd.DOCKER_PACKAGE} {have} -> {want} or newer")
        distro = installed.get(ctd.DISTRO_PACKAGE)
        if distro is not None:
            if ctd.suffices(distro, self.minor):
                return None  # the distribution's own, new enough: kept
            raise StepFailed(f"{host.name}: {ctd.distro_too_old(distro, self.minor, os)}")
        return Change(
            self.key,
            "install",
            f"{ctd.DOCKER_PACKAGE} from Docker's repository ({os.docker_suite})",
        )

    def apply(self, host: Host) -> None:
        # lists: refreshed by the upgrade check, and by the AptRepo that added Docker's repository
        apt_install(host, [ctd.DOCKER_PACKAGE], update_first=False)


def _repo(src: AptSource) -> AptRepo:
    return AptRepo(src.name, src.line, keyring=src.keyring, key_url=src.key_url)


def kubernetes_resources(inv: Inventory, host_name: str) -> list[Resource]:
    """The Kubernetes part of prepare for one control plane or worker, in apply order."""
    config = File(CONTAINERD_CONFIG_PATH, containerd_config(inv))
    modules = File(MODULES_PATH, modules_load())
    mods = " && ".join(MODULE_PRESENT[m] for m in K8S_MODULES)
    return [
        # the keyring fetch below runs `curl … | gpg --dearmor`: a minimal image has neither
        Packages(PREREQUISITES, update_first=False),  # lists: refreshed by the upgrade check
        _repo(apt_source(inv)),
        _repo(docker_apt_source(inv)),
        SwapOff(),
        modules,
        GuardedCommand(
            "modules",
            " && ".join(f"{{ {MODULE_PRESENT[m]} || modprobe {m}; }}" for m in K8S_MODULES),
            guard=mods,
            summary=f"load {', '.join(K8S_MODULES)}",
        ),
        *(Sysctl(name, value, file=SYSCTL_FILE) for name, value in K8S_SYSCTLS),
        ContainerRuntime(inv.kubernetes.minor),
        config,
        Service("containerd", watch=[config.key], on_change="restart"),
        Packages(K8S_PACKAGES, hold=True, update_first=False),
        GuardedCommand(
            "enable-kubelet",
            "systemctl enable kubelet",
            guard="systemctl is-enabled kubelet",
            summary="enable kubelet (kubeadm starts it)",
        ),
    ]


CONFIG_DUMP = f"containerd --config {CONTAINERD_CONFIG_PATH} config dump"


def verify_kubernetes_host(ctx: StepContext, target: str) -> None:
    """containerd is new enough for the Kubernetes minor AND runs with the runbook's config as
    written: `config dump` shows what it really read (1.6 reads a `version = 3` file without
    a word and keeps SystemdCgroup = false and its own pause image)."""
    minor = ctx.inventory.kubernetes.minor
    host = ctx.targets[target]
    res = host.query("containerd --version", ok_codes=None)
    version = ctd.parse_version(res.stdout)
    if res.exited != 0 or version is None:
        raise StepFailed(f"{target}: `containerd --version` failed: {res.stderr.strip()[:200]}")
    shown = ".".join(map(str, version))
    if version < ctd.minimum(minor):
        want = ".".join(map(str, ctd.minimum(minor)))
        raise StepFailed(
            f"{target}: containerd {shown} is installed, Kubernetes "
            f"{ctx.inventory.kubernetes.version} needs containerd {want} or newer"
        )
    dump = host.query(CONFIG_DUMP, ok_codes=None)
    if dump.exited != 0:
        raise StepFailed(f"{target}: `{CONFIG_DUMP}` failed: {dump.stderr.strip()[-300:]}")
    problems = ctd.config_problems(dump.stdout, pause_image(minor))
    if problems:
        raise StepFailed(
            f"{target}: containerd {shown} does not run with {CONTAINERD_CONFIG_PATH} as "
            f"written (`{CONFIG_DUMP}`): {'; '.join(problems)}"
        )
