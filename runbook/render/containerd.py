"""Which containerd a Kubernetes host runs, where it comes from, and what it really reads.

Pure functions (no host access): `k8s_prepare` probes the host and asks these.

The source: Docker's apt repository (`containerd.io`), for every OS the runbook supports, in the
suite of the host's own release (`VERSION_CODENAME`). Debian 12's own `containerd` is 1.6.20,
which reads a `version = 3` config without a word and ignores it (SystemdCgroup = false, the
pause image 3.6: `containerd --config F config dump`); Debian 13 and Ubuntu 24.04 ship 1.7,
which does not suffice from Kubernetes 1.36 on. A distribution's own containerd that is already
installed is kept where its version suffices for the configured minor, and refused with the
reason where it does not: the runbook never swaps one runtime package for the other (that
would kill the node's containers; `containerd.io` Conflicts/Replaces `containerd`).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

DOCKER_PACKAGE = "containerd.io"
DISTRO_PACKAGE = "containerd"
DOCKER_KEYRING = "/etc/apt/keyrings/docker.gpg"
DOCKER_URL = "https://download.docker.com/linux/{id}"
# (os-release ID, VERSION_ID) -> the suite of Docker's repository that serves it
SUPPORTED_OS = {
    ("debian", "12"): "bookworm",
    ("debian", "13"): "trixie",
    ("ubuntu", "24.04"): "noble",
}
# The oldest containerd per Kubernetes minor: containerd's RELEASES.md "Kubernetes Support"
# (1.31: 1.7.20+, 1.32/1.33: 1.7.24+; the 1.6 line reached end of life on 2025-07-23), and
# Kubernetes 1.35's release notes: 1.35 is the last minor that supports 1.x (docs/procedure.md,
# step 1).
MIN_CONTAINERD = {31: (1, 7, 20), 32: (1, 7, 24), 33: (1, 7, 24), 34: (1, 7, 24), 35: (1, 7, 24)}
CONTAINERD_2_FROM_MINOR = 36

_VERSION = re.compile(r"(?:\d+:)?v?(\d+)\.(\d+)(?:\.(\d+))?")


@dataclass(frozen=True)
class OsRelease:
    id: str
    version_id: str
    codename: str
    pretty: str

    @classmethod
    def parse(cls, text: str) -> OsRelease:
        """The four fields from `ID|VERSION_ID|VERSION_CODENAME|PRETTY_NAME`."""
        parts = [*text.strip().split("|", 3), "", "", ""][:4]
        return cls(*(p.strip() for p in parts))

    @property
    def docker_suite(self) -> str | None:
        return SUPPORTED_OS.get((self.id, self.version_id))


def minimum(minor: int) -> tuple[int, int, int]:
    """The oldest containerd the runbook accepts for Kubernetes 1.<minor>."""
    if minor >= CONTAINERD_2_FROM_MINOR:
        return (2, 0, 0)
    return MIN_CONTAINERD.get(minor, MIN_CONTAINERD[min(MIN_CONTAINERD)])


def parse_version(text: str) -> tuple[int, int, int] | None:
    """`1.6.20~ds1-1+deb12u3`, `2.1.4-1~debian.12~bookworm`, `v2.1.4` → (major, minor, patch)."""
    m = _VERSION.search(text)
    if not m:
        return None
    return int(m[1]), int(m[2]), int(m[3] or 0)


def suffices(version: str, minor: int) -> bool:
    v = parse_version(version)
    return v is not None and v >= minimum(minor)


def unsupported_os(os: OsRelease) -> str:
    known = ", ".join(f"{i} {v}" for i, v in SUPPORTED_OS)
    return (
        f"{os.pretty or (os.id + ' ' + os.version_id).strip() or 'unknown OS'} is not supported: "
        f"containerd comes from Docker's apt repository, which the runbook uses for {known}"
    )


def distro_too_old(version: str, minor: int, os: OsRelease) -> str:
    want = ".".join(map(str, minimum(minor)))
    return (
        f"the distribution's containerd {version} is installed; Kubernetes 1.{minor} needs "
        f"containerd {want} or newer (Debian 12's 1.6 also ignores a `version = 3` config: "
        "SystemdCgroup and the pause image). The runbook does not replace a container runtime "
        "under running containers: drain the node, `apt-get purge containerd`, and re-run; it "
        f"then installs {DOCKER_PACKAGE} from Docker's repository ({os.docker_suite or '?'})"
    )


# ----- what containerd really reads -----------------------------------------------------------
@dataclass(frozen=True)
class Effective:
    """What `containerd --config F config dump` says containerd runs with."""

    version: int
    systemd_cgroup: bool
    sandbox: str
    cri_disabled: bool


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def effective(dump: str) -> Effective:
    """Parse a config dump (containerd 1.6/1.7: version 2 keys; 2.x: version 3 keys)."""
    conf = tomllib.loads(dump)
    version = int(conf.get("version") or 1)
    plugins = conf.get("plugins") or {}
    if version >= 3:
        runc = ("io.containerd.cri.v1.runtime", "containerd", "runtimes", "runc", "options")
        cgroup = _dig(plugins, *runc, "SystemdCgroup")
        sandbox = _dig(plugins, "io.containerd.cri.v1.images", "pinned_images", "sandbox")
    else:
        cri = ("io.containerd.grpc.v1.cri",)
        cgroup = _dig(plugins, *cri, "containerd", "runtimes", "runc", "options", "SystemdCgroup")
        sandbox = _dig(plugins, *cri, "sandbox_image")
    disabled = {str(p) for p in conf.get("disabled_plugins") or []}
    cri_off = bool(disabled & {"cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"})
    return Effective(version, cgroup is True, str(sandbox or ""), cri_off)


def config_problems(dump: str, pause_image: str) -> list[str]:
    """Why the effective config is not the runbook's (empty: it is)."""
    try:
        eff = effective(dump)
    except (tomllib.TOMLDecodeError, ValueError, TypeError) as exc:
        return [f"unreadable `config dump` output ({exc})"]
    problems = []
    if not eff.systemd_cgroup:
        problems.append("SystemdCgroup = false (kubelet uses the systemd cgroup driver)")
    if eff.sandbox != pause_image:
        problems.append(f"sandbox image {eff.sandbox or '?'} (kubeadm expects {pause_image})")
    if eff.cri_disabled:
        problems.append("the CRI plugin is disabled (disabled_plugins)")
    return problems
