"""Stand-ins for what the lab cannot run (no containers here): kubeadm, kubelet, kubectl,
containerd, etcd-client (etcdctl, etcdutl) — built as real Debian packages for the lab's apt
repository.

`build_debs(dest, version)` is called by the lab's repo build; the packages carry the stand-in
code (``rbk8s``, Python stdlib + python3-yaml + openssl) and thin wrappers in /usr/bin. Why a
containerd stand-in too: Debian 12 ships containerd 1.6, and SPEC §3.1 wants containerd 2.x for
Kubernetes >= 1.36 (the runbook verifies the major version), so the lab offers a "2.1.4".
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
    "containerd": "LAB STAND-IN for containerd 2: strict TOML config, CRI socket, runs nothing",
    "etcd-client": "LAB STAND-IN for etcdctl/etcdutl 3.6: snapshots, members, restore",
}
# packages whose programs are not named like the package
PROGRAMS = {"etcd-client": ("etcdctl", "etcdutl")}
ETCD_CLIENT_VERSION = "3.6.4"


def _package(dest: Path, name: str, version: str, kube_version: str, epoch: str = "") -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / name
        lib = root / LIB.lstrip("/") / name / "rbk8s"
        lib.mkdir(parents=True)
        for f in SRC.glob("*.py"):
            shutil.copy2(f, lib / f.name)
        (lib / "_version.py").write_text(f'VERSION = "{kube_version}"\n')
        (root / "usr/bin").mkdir(parents=True)
        for prog in PROGRAMS.get(name, (name,)):
            wrapper = root / "usr/bin" / prog
            wrapper.write_text(
                f'#!/bin/sh\nPYTHONPATH={LIB}/{name} exec /usr/bin/python3 -m rbk8s {prog} "$@"\n'
            )
            wrapper.chmod(0o755)
        unit = {"kubelet": KUBELET_UNIT, "containerd": CONTAINERD_UNIT}.get(name)
        if unit:
            u = root / "lib/systemd/system" / f"{name}.service"
            u.parent.mkdir(parents=True)
            u.write_text(unit)
        control = root / "DEBIAN" / "control"
        control.parent.mkdir()
        control.write_text(
            f"Package: {name}\nVersion: {epoch}{version}\nArchitecture: all\n"
            "Maintainer: rblab <lab@invalid>\nDepends: python3 (>= 3.11), python3-yaml, openssl\n"
            f"Section: admin\nPriority: optional\nDescription: {DESCRIPTION[name]}\n"
            " Built by lab/standins for the runbook's namespace lab; not the real program.\n"
        )
        out = dest / f"{name}_{version}_all.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
            check=True,
            capture_output=True,
        )
        return out


def build_debs(dest: Path, version: str) -> list[Path]:
    """Stand-in debs into `dest`: kubeadm/kubelet/kubectl `VERSION-1.1`, containerd 2.1.4 and
    etcd-client 3.6.4.

    `version` is a Kubernetes version "1.NN" (the inventory's) or "1.NN.P"; "1.NN" becomes
    "1.NN.0". Returns the paths written (existing ones are replaced).
    """
    m = re.fullmatch(r"1\.(\d{2})(?:\.(\d+))?", version)
    if not m:
        raise ValueError(f"version {version!r} is not 1.NN or 1.NN.P")
    kube = f"1.{m.group(1)}.{m.group(2) or 0}"
    dest.mkdir(parents=True, exist_ok=True)
    debs = [_package(dest, n, f"{kube}-1.1", kube) for n in ("kubeadm", "kubelet")]
    # epoch 2: supersede a kubectl the machine may already have (google-cloud-cli ships
    # kubectl 1:528.x), which the lab hosts inherit through their overlay
    debs.append(_package(dest, "kubectl", f"{kube}-1.1", kube, epoch="2:"))
    debs.append(_package(dest, "containerd", f"{CONTAINERD_VERSION}-0rblab1", kube))
    debs.append(_package(dest, "etcd-client", f"{ETCD_CLIENT_VERSION}-0rblab1", kube))
    return debs
