"""The lab's containerd.io stand-in reads a config as containerd 2 does and says what it read
(`config dump`), so the runbook's verify works the same against it as against the real one;
and its deb carries Docker's control fields."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lab.standins import CONTAINERD_IO_CONFIG, build_containerd_io
from runbook.inventory import load_inventory
from runbook.render import containerd as ctd
from runbook.render import k8sfiles

ROOT = Path(__file__).resolve().parents[2]
PAUSE = k8sfiles.pause_image(36)


def standin(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "lab" / "standins")}
    return subprocess.run(
        [sys.executable, "-m", "rbk8s", "containerd", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def dump_of(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    f = tmp_path / "config.toml"
    f.write_text(text)
    return standin("--config", str(f), "config", "dump")


def test_the_runbooks_v3_config_is_read(tmp_path: Path) -> None:
    inv = load_inventory(ROOT / "hosts.yaml")
    conf = k8sfiles.containerd_config(inv)
    r = dump_of(tmp_path, conf)
    assert r.returncode == 0, r.stderr
    assert ctd.config_problems(r.stdout, PAUSE) == []
    assert ctd.effective(r.stdout).version == 3


def test_a_v2_config_is_migrated(tmp_path: Path) -> None:
    v2 = (
        "version = 2\n"
        '[plugins."io.containerd.grpc.v1.cri"]\n'
        f'  sandbox_image = "{PAUSE}"\n'
        '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]\n'
        "  SystemdCgroup = true\n"
    )
    r = dump_of(tmp_path, v2)
    assert r.returncode == 0 and ctd.config_problems(r.stdout, PAUSE) == []


def test_the_packages_own_config_disables_cri_and_the_verify_sees_it(tmp_path: Path) -> None:
    r = dump_of(tmp_path, CONTAINERD_IO_CONFIG)
    assert r.returncode == 0
    assert ctd.config_problems(r.stdout, PAUSE) == [
        "SystemdCgroup = false (kubelet uses the systemd cgroup driver)",
        f"sandbox image registry.k8s.io/pause:3.10 (kubeadm expects {PAUSE})",
        "the CRI plugin is disabled (disabled_plugins)",
    ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("version = 4\n", "unsupported config version `4`"),
        ("version = 0\n", "unsupported config version `0`"),
        ("version = 3\n[plugins\n", "failed to load TOML"),
    ],
)
def test_what_containerd_2_refuses(tmp_path: Path, text: str, error: str) -> None:
    r = dump_of(tmp_path, text)
    assert r.returncode == 1 and error in r.stderr


def test_an_explicit_missing_config_is_an_error(tmp_path: Path) -> None:
    r = standin("--config", str(tmp_path / "nope.toml"), "config", "dump")
    assert r.returncode == 1 and "no such file or directory" in r.stderr


def test_version_like_the_real_package() -> None:
    r = standin("--version")
    assert r.stdout.startswith("containerd containerd.io v2.1.4 ")
    assert ctd.parse_version(r.stdout) == (2, 1, 4)


def test_unknown_commands_are_refused() -> None:
    assert standin("config", "migrate").returncode == 1


def test_deb_has_dockers_control_fields_and_conffile(tmp_path: Path) -> None:
    deb = build_containerd_io(tmp_path, "bookworm", "12", "1.36")
    assert deb.name == "containerd.io_2.1.4-1~debian.12~bookworm_all.deb"

    def field(name: str) -> str:
        r = subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True)
        return r.stdout.strip()

    assert field("Package") == "containerd.io"
    for name in ("Provides", "Conflicts", "Replaces"):
        assert field(name) == "containerd, runc"
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True).stdout
    assert "./usr/bin/containerd" in listing
    assert "./lib/systemd/system/containerd.service" in listing
    assert "./etc/containerd/config.toml" in listing
    conffiles = subprocess.run(
        ["dpkg-deb", "-I", str(deb), "conffiles"], capture_output=True, text=True
    ).stdout
    assert conffiles.strip() == "/etc/containerd/config.toml"
