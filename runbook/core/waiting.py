"""One way to wait for a condition: poll until it holds or a deadline passes, saying what for and
until when. The clock is injectable (`CLOCK`), so unit tests run the waits without sleeping.

`poll` returns the last answer either way (the caller judges it: a kubectl result, a message);
`wait_until` fails at the deadline with the caller's message or exception."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from .engine import StepFailed

if TYPE_CHECKING:
    from .console import Ui

T = TypeVar("T")

Failure = str | Exception | Callable[[], str | Exception]
"""What a wait raises at its deadline: a message (StepFailed), an exception, or either one made
when the deadline passes (it can then name what was still missing)."""


@dataclass(frozen=True)
class Clock:
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


#: the clock every wait uses; tests replace it with a fake one
CLOCK = Clock()


def now() -> float:
    """The waits' clock now (for a condition that must last, measured on the same clock)."""
    return CLOCK.monotonic()


def pause(seconds: float) -> None:
    """Sleep on the waits' clock (a fixed pause, not a wait for a condition)."""
    CLOCK.sleep(seconds)


def poll(
    check: Callable[[], T],
    *,
    seconds: float,
    interval: float,
    done: Callable[[T], object] = bool,
    ui: Ui | None = None,
    what: str = "",
) -> T:
    """`check()` every `interval` s until `done(answer)` (default: the answer is true) or
    `seconds` passed, checking once more at the deadline; the last answer either way. With `ui`
    and `what`, the wait is shown with its deadline."""
    clock = CLOCK
    deadline = clock.monotonic() + seconds
    shown: AbstractContextManager[None] = (
        ui.waiting(what, seconds) if ui is not None and what else nullcontext()
    )
    with shown:
        while True:
            answer = check()
            if done(answer) or clock.monotonic() >= deadline:
                return answer
            clock.sleep(interval)


def wait_until(
    check: Callable[[], T],
    *,
    seconds: float,
    interval: float,
    failure: Failure,
    done: Callable[[T], object] = bool,
    ui: Ui | None = None,
    what: str = "",
) -> T:
    """`poll` that must succeed: the answer for which `done` holds, else `failure` at the
    deadline (a message: StepFailed; an exception: raised as is; a callable: read then)."""
    answer = poll(check, seconds=seconds, interval=interval, done=done, ui=ui, what=what)
    if done(answer):
        return answer
    why = failure() if callable(failure) else failure
    raise why if isinstance(why, Exception) else StepFailed(why)
