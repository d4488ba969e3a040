"""One way to wait for a condition: poll until it holds or a deadline passes, saying what for and
until when. The clock is injectable (`CLOCK`), so unit tests run the waits without sleeping."""

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


@dataclass(frozen=True)
class Clock:
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


#: the clock every wait uses; tests replace it with a fake one
CLOCK = Clock()


def wait_until(
    check: Callable[[], T],
    *,
    seconds: float,
    interval: float,
    failure: str | Callable[[], str],
    ui: Ui | None = None,
    what: str = "",
) -> T:
    """`check()` until it returns something true (returned), every `interval` s; StepFailed
    with `failure` (or what it returns, read at the deadline) after `seconds`. With `ui` and
    `what`, the wait is shown with its deadline."""
    clock = CLOCK
    deadline = clock.monotonic() + seconds
    shown: AbstractContextManager[None] = (
        ui.waiting(what, seconds) if ui is not None and what else nullcontext()
    )
    with shown:
        while True:
            result = check()
            if result:
                return result
            if clock.monotonic() >= deadline:
                raise StepFailed(failure() if callable(failure) else failure)
            clock.sleep(interval)
