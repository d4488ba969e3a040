"""Fixtures for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

import runbook.core.resources
from runbook.core import waiting


@pytest.fixture(autouse=True)
def _backups_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`File` backups go below the test's tmp dir: fake hosts run commands on this machine."""
    root = tmp_path / "var-backups-runbook"
    monkeypatch.setattr(runbook.core.resources, "BACKUP_ROOT", str(root))
    return root


class FakeClock:
    """The waits' clock in a test: sleeping only moves `now` (and is recorded in `slept`)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """`runbook.core.waiting.CLOCK` (every wait of the runbook) on a fake clock: no test sleeps.
    Its methods are looked up at each call, so a test may replace `sleep` to act as time goes."""
    fake = FakeClock()
    monkeypatch.setattr(
        waiting, "CLOCK", waiting.Clock(lambda: fake.monotonic(), lambda s: fake.sleep(s))
    )
    return fake


def _no_real_sleep(seconds: float) -> None:
    raise AssertionError(
        f"a unit test waited {seconds} s in real time: take the `fake_clock` fixture"
    )


@pytest.fixture(autouse=True)
def _waits_do_not_sleep(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test whose wait would sleep fails: it takes `fake_clock`. Lab tests and tests
    marked `real_clock` (a wait for another thread of the same run) keep the real clock."""
    if not any(request.node.get_closest_marker(m) for m in ("lab", "real_clock")):
        monkeypatch.setattr(waiting, "CLOCK", waiting.Clock(sleep=_no_real_sleep))
