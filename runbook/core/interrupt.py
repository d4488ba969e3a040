"""Ctrl-C and SIGTERM: stop starting new work, give running commands a short grace, then report.

The first SIGINT/SIGTERM only sets a flag (`StopFlag`): the engine stops starting new work,
waits up to `GRACE` seconds for running remote commands and then abandons them; the task layer
closes the connections, prints the recap with the word "interrupted" and exits 128 + signal
(130 for SIGINT, 143 for SIGTERM). A second signal exits at once with the same code. The
handler never raises into arbitrary code (no KeyboardInterrupt tracebacks from library threads),
except while the main thread waits for an answer at a checkpoint (`StopFlag.raising`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import Any

GRACE = 3.0
"""Seconds running remote commands get after the first interrupt before they are abandoned."""

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """The run was interrupted by a signal; `partial` carries what a step had done by then."""

    def __init__(self, signum: int, partial: Any = None) -> None:
        self.signum = signum
        self.partial = partial
        super().__init__(f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopFlag:
    """Set by the first interrupt; read by the engine before it starts anything new."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signum = 0
        self.at = 0.0
        self._raising = False

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, signum: int) -> None:
        if not self._event.is_set():
            self.signum, self.at = signum, time.monotonic()
            self._event.set()

    def grace_over(self, grace: float | None = None) -> bool:
        """Whether running work has had its grace (default `GRACE`) since the interrupt."""
        limit = GRACE if grace is None else grace
        return self.requested and time.monotonic() - self.at >= limit

    def check(self, partial: Any = None) -> None:
        """Raise `Interrupted` when an interrupt was requested."""
        if self.requested:
            raise Interrupted(self.signum, partial)

    @contextlib.contextmanager
    def raising(self) -> Iterator[None]:
        """While blocked on the operator (a prompt), an interrupt raises `Interrupted` at once."""
        self.check()
        self._raising = True
        try:
            yield
        finally:
            self._raising = False

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.requested:
            _say(f"\ninterrupted again ({signal.Signals(signum).name}): exiting now\n")
            os._exit(128 + self.signum)
        self.request(signum)
        _say(
            f"\ninterrupted ({signal.Signals(signum).name}): no new work starts; running "
            f"commands get {GRACE:.0f} s, then the recap. Ctrl-C again to exit at once.\n"
        )
        if self._raising:
            self._raising = False
            raise Interrupted(signum)


def _say(text: str) -> None:
    """Write to stderr without Python's buffered IO (safe inside a signal handler)."""
    with contextlib.suppress(OSError):
        os.write(2, text.encode())


@contextlib.contextmanager
def handle_signals(stop: StopFlag) -> Iterator[StopFlag]:
    """Route SIGINT/SIGTERM to `stop` for the duration (main thread only; no-op elsewhere)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {s: signal.signal(s, stop._on_signal) for s in SIGNALS}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def wait_for_workers(stop: StopFlag, *, budget: float = 4.0) -> bool:
    """After an interrupt: give abandoned worker threads until `budget` s after the interrupt to
    end; False when some still run (the caller then exits without joining them)."""
    deadline = stop.at + budget
    for t in threading.enumerate():
        if t is threading.current_thread() or t.daemon or not t.is_alive():
            continue
        t.join(max(0.0, deadline - time.monotonic()))
        if t.is_alive():
            return False
    return True
