"""Runs last: `lab.down` removes every namespace, mount and process `lab.up` created (and is
idempotent)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from lab import control, labstate, netns

pytestmark = pytest.mark.lab


def test_up_again_changes_nothing(lab_up: dict[str, float]) -> None:
    before = labstate.Record.load(labstate.paths().record)
    res = control.up()
    assert res.changed is False
    assert labstate.Record.load(labstate.paths().record) == before


def test_a_second_lab_never_touches_the_running_one(
    lab_up: dict[str, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = netns.lab_netns()
    monkeypatch.setenv("RBLAB_STATE", str(tmp_path / "other"))
    assert control.down() == []
    with pytest.raises(control.LabError, match="only one lab"):
        control.up()
    assert netns.lab_netns() == before


def test_down_leaves_nothing(lab_up: dict[str, float]) -> None:
    p = labstate.paths()
    rec = labstate.Record.load(p.record)
    inits = [
        labstate.ProcRef(f"init-{f.stem}", *map(int, f.read_text().split()[:2]))
        for f in p.run.glob("*.init")
    ]
    assert len(inits) == 7 and all(i.alive() for i in inits)
    t0 = time.monotonic()
    for line in control.down(lambda m: print(f"{time.monotonic() - t0:.2f}s {m}")):
        print(f"{time.monotonic() - t0:.2f}s {line}")
    assert netns.lab_netns() == []
    assert not [
        n
        for n in subprocess.run(
            ["ip", "netns", "list"], text=True, capture_output=True
        ).stdout.split()
        if n.startswith("rbl-")
    ]
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(p.root) not in mounts
    assert not [r for r in rec.procs + inits if r.alive()]
    assert control.down() == []  # idempotent
    assert p.token.exists() and p.layers.exists()  # kept without --purge
