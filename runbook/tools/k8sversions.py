"""Kubernetes versions for upgrades: one minor at a time, never down, the exact package
version of the newest patch the repository of the minor offers."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SEMVER = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")
_DEB = re.compile(r"^(?:\d+:)?(\d+)\.(\d+)\.(\d+)-(\S+)$")


class SkewError(ValueError):
    """An upgrade Kubernetes does not support (a skipped minor, a downgrade)."""


@dataclass(frozen=True, order=True)
class Version:
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _SEMVER.match(text.strip())
        if not m:
            raise ValueError(f"not a Kubernetes version: {text!r}")
        return cls(int(m.group(1)), int(m.group(2)), int(m.group(3)))

    def __str__(self) -> str:
        return f"v{self.major}.{self.minor}.{self.patch}"


def check_step(cluster: Version, wanted_minor: int) -> None:
    """The inventory's minor against the cluster's: the same (a patch or nothing), or one up."""
    if wanted_minor < cluster.minor:
        raise SkewError(
            f"kubernetes.version 1.{wanted_minor} is older than the cluster ({cluster}): "
            "kubeadm does not downgrade"
        )
    if wanted_minor > cluster.minor + 1:
        raise SkewError(
            f"kubernetes.version 1.{wanted_minor} skips a minor (the cluster runs {cluster}): "
            f"kubeadm upgrades one minor at a time; set 1.{cluster.minor + 1} first"
        )


def newest_package(madison: str, minor: int) -> tuple[Version, str] | None:
    """From `apt-cache madison PKG`: (version, exact deb version) of the newest 1.MINOR.x."""
    found: list[tuple[Version, str]] = []
    for line in madison.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) < 2:
            continue
        m = _DEB.match(parts[1])
        if m and int(m.group(1)) == 1 and int(m.group(2)) == minor:
            found.append((Version(1, minor, int(m.group(3))), parts[1]))
    return max(found) if found else None


def deb_upstream(deb_version: str) -> Version | None:
    """`[epoch:]1.37.0-1.1` → v1.37.0 (None for anything else)."""
    m = _DEB.match(deb_version.strip())
    return Version(int(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def exact_package(madison: str, version: Version) -> str | None:
    """From `apt-cache madison PKG`: the package version that is `version` (newest revision)."""
    found = [
        parts[1]
        for line in madison.splitlines()
        if len(parts := [p.strip() for p in line.split("|")]) >= 2
        and deb_upstream(parts[1]) == version
    ]
    return found[0] if found else None  # madison lists the newest first
