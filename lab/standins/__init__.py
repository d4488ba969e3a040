"""Stand-ins for what the lab cannot run (no containers here): kubeadm, kubelet, kubectl,
containerd, etcd-client (etcdctl 3.4 only, as Debian 12's) — built as real Debian packages for the
lab's apt repositories.

`build_debs(dest, version)` builds kubeadm/kubelet/kubectl for the lab's pkgs.k8s.io;
`build_containerd_io(dest, suite)` the `containerd.io` of the lab's simulated Docker repository
(lab.aptrepo.build_docker). The packages carry the stand-in code (``rbk8s``, Python stdlib +
python3-yaml + openssl) and thin wrappers in /usr/bin. Debian 12's own `containerd` (1.6.20) is
the REAL package in the lab's Debian repository, as on a real server; the stand-in is Docker's
containerd.io 2.x with its control fields (Provides/Conflicts/Replaces: containerd, runc) and
its default /etc/containerd/config.toml (the CRI plugin disabled, as Docker ships it).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

SRC = Path(__file__).resolve().parent / "rbk8s"
LIB = "/usr/lib/rblab-k8s"
CONTAINERD_VERSION = "2.1.4"
# Docker's containerd.io: its control fields and the config file it ships (a conffile: dpkg
# keeps the runbook's version of it on upgrades)
CONTAINERD_IO_FIELDS = (
    "Provides: containerd, runc\nConflicts: containerd, runc\nReplaces: containerd, runc\n"
)
CONTAINERD_IO_CONFIG = """#   Copyright 2018-2022 Docker Inc.
# (the containerd.io package's default: only the parts of containerd Docker itself uses)
disabled_plugins = ["cri"]
"""

KUBELET_UNIT = """[Unit]
Description=kubelet (rblab stand-in)
After=containerd.service

[Service]
ExecStart=/usr/bin/kubelet
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""
CONTAINERD_UNIT = """[Unit]
Description=containerd (rblab stand-in)

[Service]
ExecStart=/usr/bin/containerd
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
"""
DESCRIPTION = {
    "kubeadm": "LAB STAND-IN for kubeadm: strict v1beta4 config, real CA/certs, tokens",
    "kubelet": "LAB STAND-IN for kubelet: runs the apiserver static pod, reports node status",
    "kubectl": "LAB STAND-IN for kubectl: the calls the runbook makes, against the stand-in API",
    "containerd.io": "LAB STAND-IN for Docker's containerd.io 2.x: strict TOML config, config "
    "dump, CRI socket, runs nothing",
    "etcd-client": "LAB STAND-IN for Debian 12's etcdctl 3.4: snapshots, members, restore",
}
# packages whose programs are not named as the package (the first names the library directory);
# etcd-client as Debian 12 ships it (3.4.23): /usr/bin/etcdctl only, no etcdutl
PROGRAMS = {"etcd-client": ("etcdctl",)}
ETCD_CLIENT_VERSION = "3.4.23"


def _package(
    dest: Path,
    name: str,
    version: str,
    kube_version: str,
    epoch: str = "",
    *,
    prog: str | None = None,
    fields: str = "",
    conffiles: dict[str, str] | None = None,
) -> Path:
    progs = PROGRAMS.get(name, (prog or name,))
    prog = progs[0]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        lib = root / LIB.lstrip("/") / prog / "rbk8s"
        lib.mkdir(parents=True)
        for f in SRC.glob("*.py"):
            shutil.copy2(f, lib / f.name)
        (lib / "_version.py").write_text(f'VERSION = "{kube_version}"\n')
        (root / "usr/bin").mkdir(parents=True)
        for p in progs:
            wrapper = root / "usr/bin" / p
            wrapper.write_text(
                f'#!/bin/sh\nPYTHONPATH={LIB}/{prog} exec /usr/bin/python3 -m rbk8s {p} "$@"\n'
            )
            wrapper.chmod(0o755)
        unit = {"kubelet": KUBELET_UNIT, "containerd": CONTAINERD_UNIT}.get(prog)
        if unit:
            u = root / "lib/systemd/system" / f"{prog}.service"
            u.parent.mkdir(parents=True)
            u.write_text(unit)
        control = root / "DEBIAN" / "control"
        control.parent.mkdir()
        control.write_text(
            f"Package: {name}\nVersion: {epoch}{version}\nArchitecture: all\n"
            "Maintainer: rblab <lab@invalid>\nDepends: python3 (>= 3.11), python3-yaml, openssl\n"
            f"{fields}Section: admin\nPriority: optional\nDescription: {DESCRIPTION[name]}\n"
            " Built by lab/standins for the runbook's namespace lab; not the real program.\n"
        )
        for path, text in (conffiles or {}).items():
            f = root / path.lstrip("/")
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(text)
        if conffiles:
            (root / "DEBIAN" / "conffiles").write_text("".join(f"{p}\n" for p in conffiles))
        out = dest / f"{name}_{version}_all.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
            check=True,
            capture_output=True,
        )
        return out


def _kube(version: str) -> str:
    m = re.fullmatch(r"1\.(\d{2})(?:\.(\d+))?", version)
    if not m:
        raise ValueError(f"version {version!r} is not 1.NN or 1.NN.P")
    return f"1.{m.group(1)}.{m.group(2) or 0}"


def build_debs(dest: Path, version: str) -> list[Path]:
    """kubeadm/kubelet/kubectl `VERSION-1.1` and etcd-client 3.4.23 (Debian 12's) stand-in debs
    into `dest`.

    `version` is a Kubernetes version "1.NN" (the inventory's) or "1.NN.P"; "1.NN" becomes
    "1.NN.0". Returns the paths written (existing ones are replaced).
    """
    kube = _kube(version)
    dest.mkdir(parents=True, exist_ok=True)
    debs = [_package(dest, n, f"{kube}-1.1", kube) for n in ("kubeadm", "kubelet")]
    # epoch 2: supersede a kubectl the machine may already have (google-cloud-cli ships
    # kubectl 1:528.x), which the lab hosts inherit through their overlay
    debs.append(_package(dest, "kubectl", f"{kube}-1.1", kube, epoch="2:"))
    debs.append(_package(dest, "etcd-client", f"{ETCD_CLIENT_VERSION}-0rblab1", kube))
    return debs


def containerd_io_version(suite: str, version_id: str) -> str:
    """Docker's naming: `2.1.4-1~debian.12~bookworm`."""
    return f"{CONTAINERD_VERSION}-1~debian.{version_id}~{suite}"


def build_containerd_io(dest: Path, suite: str, version_id: str, kube_version: str) -> Path:
    """The containerd.io stand-in deb for Docker's `suite` into `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    return _package(
        dest,
        "containerd.io",
        containerd_io_version(suite, version_id),
        _kube(kube_version),
        prog="containerd",
        fields=CONTAINERD_IO_FIELDS,
        conffiles={"/etc/containerd/config.toml": CONTAINERD_IO_CONFIG},
    )
