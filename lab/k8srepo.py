"""Per-minor Kubernetes package repositories in the lab, as pkgs.k8s.io has them
(`core:/stable:/v1.NN/deb/`): `<repo>/k8s/v1.NN/` with its own index, served to the hosts as
`file:/run/labrepo/k8s/v1.NN` (the lab repository's read-only bind). The flat lab repository
leaves them out of its own index (lab.aptrepo.index)."""

from __future__ import annotations

import re
from pathlib import Path

from lab import aptrepo

HOST_ROOT = "file:/run/labrepo"


def minor_of(version: str) -> str:
    m = re.fullmatch(r"1\.(\d{2})(?:\.\d+)?", version)
    if not m:
        raise ValueError(f"version {version!r} is not 1.NN or 1.NN.P")
    return f"1.{m.group(1)}"


def build_minor(repo: Path, version: str) -> Path:
    """(Re)build the stand-in debs of `version` into `<repo>/k8s/v1.NN/` and index it."""
    from lab.standins import build_debs

    d = repo / "k8s" / f"v{minor_of(version)}"
    d.mkdir(parents=True, exist_ok=True)
    for old in d.glob("*.deb"):
        old.unlink()
    build_debs(d, version)
    aptrepo.index(d)
    return d


def host_url(version: str) -> str:
    """The repository's URL as the lab hosts see it (for `kubernetes.package_repo.url`)."""
    return f"{HOST_ROOT}/k8s/v{minor_of(version)}"
