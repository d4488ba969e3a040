"""`runbook.core.waiting.wait_until` with a fake clock: no test sleeps."""

from __future__ import annotations

import io

import pytest

from runbook.core import waiting
from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import StepFailed


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(waiting, "CLOCK", waiting.Clock(fake.monotonic, fake.sleep))
    return fake


def test_returns_the_first_true_answer(clock: FakeClock) -> None:
    answers = iter(["", "", "token"])
    got = waiting.wait_until(lambda: next(answers), seconds=10, interval=2, failure="never")
    assert got == "token" and clock.slept == [2, 2]


def test_fails_with_the_message_after_the_deadline(clock: FakeClock) -> None:
    with pytest.raises(StepFailed, match="not ready after 5 s"):
        waiting.wait_until(lambda: False, seconds=5, interval=1, failure="not ready after 5 s")
    assert sum(clock.slept) == 5  # checked once more at the deadline, then failed


def test_a_failure_message_is_read_at_the_deadline(clock: FakeClock) -> None:
    seen = []

    def check() -> bool:
        seen.append(len(seen))
        return False

    with pytest.raises(StepFailed, match="after 4 checks"):
        waiting.wait_until(
            check, seconds=3, interval=1, failure=lambda: f"after {len(seen)} checks"
        )


def test_the_wait_is_shown_with_what_and_its_deadline(clock: FakeClock) -> None:
    out = io.StringIO()
    masker = Masker()
    ui = Ui(make_console(masker, file=out, width=100), masker, interactive=False)
    waiting.wait_until(lambda: True, seconds=30, interval=1, failure="x", ui=ui, what="the node")
    assert "waiting for the node, until" in out.getvalue() and "(at most 30 s)" in out.getvalue()
