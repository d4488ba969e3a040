"""containerd on a lab host as on a real Debian 12 server: the lab's Debian repository has the
REAL containerd 1.6.20 (with runc), the simulated Docker repository (own URL, signed InRelease,
its key fetched with curl into /etc/apt/keyrings/docker.gpg) has the containerd.io stand-in
(2.x, Provides/Conflicts/Replaces: containerd, runc).

1. An operator installs plain `containerd`: `inv prepare` refuses that host with the reason and
   the way out, and changes nothing on it. The real 1.6 binary, given the runbook's version 3
   config, reads none of it (`config dump`) — the runbook's verify would catch it too.
2. After the purge the message asks for, the runbook's own source converges: containerd.io from
   the Docker repository, replacing runc; the config as containerd reads it is the runbook's.
3. A second run changes nothing (no swap back to `containerd`).
"""

from __future__ import annotations

import pytest

from lab import netns
from runbook.inventory import load_inventory
from runbook.render import containerd as ctd
from runbook.render import k8sfiles

from .helpers import recap
from .test_k8s_walkthrough import cli, ensure_standin_debs, inventory

pytestmark = pytest.mark.lab
HOST = "k8node02"


def sh(cmd: str, check: bool = True) -> str:
    r = netns.host_exec(HOST, ["bash", "-c", cmd], check=False, timeout=300)
    assert not check or r.returncode == 0, f"{cmd}: {r.stdout}{r.stderr}"
    return r.stdout + r.stderr


def dpkg(pkg: str) -> str:
    """`ii VERSION` or '' (not installed)."""
    out = sh(f"dpkg-query -W -f='${{db:Status-Abbrev}}${{Version}}' {pkg} 2>/dev/null", False)
    return out if out.startswith("ii") else ""


@pytest.fixture(scope="module")
def debian_containerd(lab_up: dict[str, float]) -> str:
    ensure_standin_debs(load_inventory(inventory()).kubernetes.version)
    sh("apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q containerd")
    return dpkg("containerd")


def test_plain_containerd_fails_the_check_with_the_reason(debian_containerd: str) -> None:
    assert debian_containerd.startswith("ii 1.6.20"), debian_containerd
    assert "1.6.20" in sh("containerd --version")  # the real binary, not a stand-in
    before = sh("ls -l --time-style=+%s /etc/apt/sources.list.d /etc/hosts /etc/hostname")
    r = cli("prepare", "--host", HOST, "--yes", check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 1 and recap(r.stdout)["failed"] == 1, out
    flat = " ".join(out.split())
    assert (
        "containerd 1.6.20~ds1-1+deb12u3 is installed; Kubernetes 1.36 needs containerd 2.0.0"
        in flat
    ), out
    assert "apt-get purge containerd" in flat
    # refused in the plan: nothing on the host changed
    assert sh("ls -l --time-style=+%s /etc/apt/sources.list.d /etc/hosts /etc/hostname") == before
    assert dpkg("containerd").startswith("ii 1.6.20") and not dpkg("containerd.io")


def test_the_real_1_6_ignores_the_runbooks_v3_config(debian_containerd: str) -> None:
    inv = load_inventory(inventory())
    conf = k8sfiles.containerd_config(inv)
    netns.host_exec(HOST, ["tee", "/tmp/rb-v3.toml"], input=conf)
    dump = sh("containerd --config /tmp/rb-v3.toml config dump 2>/dev/null")
    problems = ctd.config_problems(dump, k8sfiles.pause_image(inv.kubernetes.minor))
    assert problems[:2] == [
        "SystemdCgroup = false (kubelet uses the systemd cgroup driver)",
        "sandbox image registry.k8s.io/pause:3.6 (kubeadm expects "
        f"{k8sfiles.pause_image(inv.kubernetes.minor)})",
    ]


def test_the_runbooks_source_converges_then_changes_nothing(debian_containerd: str) -> None:
    sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y -q containerd")  # what the message says
    first = cli("prepare", "--host", HOST, "--yes", check=False)
    assert recap(first.stdout)["failed"] == 0 and recap(first.stdout)["changed"] == 1, first.stdout
    assert dpkg("containerd.io").startswith("ii 2.1.4-1~debian.12~bookworm")
    assert not dpkg("containerd") and not dpkg("runc")  # Conflicts/Replaces did their work
    assert sh("cat /etc/apt/sources.list.d/docker.list").strip() == (
        "deb [signed-by=/etc/apt/keyrings/docker.gpg] file:/run/labdocker/linux/debian "
        "bookworm stable"
    )
    assert "rblab Docker repository stand-in" in sh("gpg --show-keys /etc/apt/keyrings/docker.gpg")
    dump = sh(f"containerd --config {k8sfiles.CONTAINERD_CONFIG_PATH} config dump")
    assert "SystemdCgroup = true" in dump
    second = cli("prepare", "--host", HOST, "--yes")
    counts = recap(second.stdout)
    assert counts["changed"] == 0 and counts["failed"] == 0, second.stdout
    assert dpkg("containerd.io") and not dpkg("containerd")
