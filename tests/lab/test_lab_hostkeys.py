"""Host-key policy against real sshd: unknown refused, --accept-new-host-keys records, changed
keys always refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lab import labstate

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
INV = str(Path(sys.executable).parent / "inv")


def inventory(tmp_path: Path, known_hosts: Path) -> Path:
    src = labstate.paths().root / "hosts.yaml"
    data = yaml.safe_load((src if src.exists() else REPO / "lab" / "hosts.yaml").read_text())
    data["ssh"]["known_hosts"] = str(known_hosts)
    data["ssh"]["identity"] = str(labstate.paths().key)
    out = tmp_path / "hosts.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def prepare_dry(inv: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ, INVOKE_RUNBOOK_INVENTORY=str(inv), COLUMNS="200", HOME=str(inv.parent)
    )  # no ~/.ssh/known_hosts of the machine
    return subprocess.run(
        [INV, "-r", str(REPO), "prepare", "--host", "k8slb01", "--dry-run", *extra],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_unknown_refused_accept_records_changed_refused(
    lab_up: dict[str, float], tmp_path: Path
) -> None:
    kh = tmp_path / "known_hosts"
    inv = inventory(tmp_path, kh)
    r = prepare_dry(inv)
    assert "unknown host key" in r.stdout and "--accept-new-host-keys" in r.stdout, r.stdout
    assert "unreachable=1" in r.stdout and r.returncode == 1
    assert not kh.exists()

    r = prepare_dry(inv, "--accept-new-host-keys")
    assert r.returncode == 0, r.stdout + r.stderr
    lines = kh.read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("203.0.113.14 ssh-ed25519 ")

    r = prepare_dry(inv)  # recorded: accepted without the flag now
    assert r.returncode == 0, r.stdout

    host, kind, _key = lines[0].split()
    other = labstate.paths().known_hosts.read_text().split("\n")
    forged = next(ln.split()[2] for ln in other if ln and not ln.startswith(host + " "))
    kh.write_text(f"{host} {kind} {forged}\n")
    r = prepare_dry(inv, "--accept-new-host-keys")
    assert r.returncode == 1 and "host key CHANGED" in r.stdout, r.stdout
    assert kh.read_text() == f"{host} {kind} {forged}\n"  # never overwritten
