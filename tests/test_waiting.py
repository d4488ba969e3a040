"""`runbook.core.waiting.wait_until` with a fake clock: no test sleeps."""

from __future__ import annotations

import io

import pytest

from runbook.core import waiting
from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import StepFailed
from tests.conftest import FakeClock


def test_returns_the_first_true_answer(fake_clock: FakeClock) -> None:
    answers = iter(["", "", "token"])
    got = waiting.wait_until(lambda: next(answers), seconds=10, interval=2, failure="never")
    assert got == "token" and fake_clock.slept == [2, 2]


def test_fails_with_the_message_after_the_deadline(fake_clock: FakeClock) -> None:
    with pytest.raises(StepFailed, match="not ready after 5 s"):
        waiting.wait_until(lambda: False, seconds=5, interval=1, failure="not ready after 5 s")
    assert sum(fake_clock.slept) == 5  # checked once more at the deadline, then failed


def test_a_failure_message_is_read_at_the_deadline(fake_clock: FakeClock) -> None:
    seen = []

    def check() -> bool:
        seen.append(len(seen))
        return False

    with pytest.raises(StepFailed, match="after 4 checks"):
        waiting.wait_until(
            check, seconds=3, interval=1, failure=lambda: f"after {len(seen)} checks"
        )


def test_the_wait_is_shown_with_what_and_its_deadline(fake_clock: FakeClock) -> None:
    out = io.StringIO()
    masker = Masker()
    ui = Ui(make_console(masker, file=out, width=100), masker, interactive=False)
    waiting.wait_until(lambda: True, seconds=30, interval=1, failure="x", ui=ui, what="the node")
    assert "waiting for the node, until" in out.getvalue() and "(at most 30 s)" in out.getvalue()


def test_poll_returns_the_last_answer_at_the_deadline(fake_clock: FakeClock) -> None:
    """poll judges with `done` and hands back the last answer either way (no exception)."""
    answers = iter(range(10))
    got = waiting.poll(lambda: next(answers), seconds=3, interval=1, done=lambda n: n > 5)
    assert got == 3 and fake_clock.slept == [1, 1, 1]
    answers = iter(range(10))
    got = waiting.poll(lambda: next(answers), seconds=30, interval=1, done=lambda n: n >= 2)
    assert got == 2 and fake_clock.slept == [1, 1, 1, 1, 1]


def test_no_time_means_one_check(fake_clock: FakeClock) -> None:
    calls = []
    assert waiting.poll(lambda: calls.append(1), seconds=0, interval=1) is None
    assert calls == [1] and fake_clock.slept == []


class Gone(RuntimeError):
    pass


def test_the_failure_may_be_the_callers_exception(fake_clock: FakeClock) -> None:
    with pytest.raises(Gone, match="host gone"):
        waiting.wait_until(lambda: False, seconds=2, interval=1, failure=Gone("host gone"))
    state = {"phase": "first"}
    with pytest.raises(StepFailed, match="still in second"):

        def step() -> bool:
            state["phase"] = "second"
            return False

        waiting.wait_until(
            step,
            seconds=2,
            interval=1,
            failure=lambda: (
                Gone("never began") if state["phase"] == "first" else f"still in {state['phase']}"
            ),
        )


def test_done_judges_an_answer_that_is_false_itself(fake_clock: FakeClock) -> None:
    """An empty answer can be the good one (no nodes missing): `done` decides, not truth."""
    answers = iter(["x", ""])
    got = waiting.wait_until(
        lambda: next(answers), seconds=5, interval=1, failure="never", done=lambda s: s == ""
    )
    assert got == "" and fake_clock.slept == [1]
