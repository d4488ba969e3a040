"""The watchdog's reference clock (`files/clock-watch`), run as the watchdog runs it, against
local HTTPS servers whose `Date` header the test moves: it reports when this node's clock fell
behind theirs (as after a hypervisor pause no clock of the node showed), and nothing else."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.clockcost import DateServer, self_signed

SCRIPT = Path(__file__).resolve().parent.parent / "files" / "clock-watch"


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture()
def servers(tls: tuple[Path, Path]) -> Iterator[list[DateServer]]:
    made = [DateServer(*tls), DateServer(*tls)]
    yield made
    for s in made:
        s.close()


class Watch:
    """clock-watch as the watchdog starts it; its report lines read in a thread."""

    def __init__(self, sources: list[str], parent: int, quiet: float = 30.0) -> None:
        argv = [sys.executable, str(SCRIPT), "--parent", str(parent), "--every", "0.1"]
        argv += ["--jump", "2", "--quiet", f"{quiet:g}", *sources]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def wait_lines(self, n: int, timeout: float) -> list[str]:
        end = time.monotonic() + timeout
        while len(self.lines) < n and time.monotonic() < end:
            time.sleep(0.05)
        return list(self.lines)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(5)


def test_a_clock_that_fell_behind_the_reference_is_reported_once(
    servers: list[DateServer],
) -> None:
    ref = servers[0]
    watch = Watch([ref.source], parent=1, quiet=1.5)
    try:
        assert watch.wait_lines(1, 1.5) == []  # in step: nothing
        assert ref.requests >= 5  # it does look
        ref.ahead = 20.0  # this node was paused 20 s and its clocks did not show it
        lines = watch.wait_lines(1, 2.0)
        assert len(lines) == 1, lines
        behind, host = lines[0].split()
        assert 19.0 <= float(behind) <= 21.0 and host == "127.0.0.1"
        time.sleep(0.6)
        assert watch.lines == lines  # the new difference is the new normal
        ref.ahead = 30.0  # another pause inside the quiet time: not reported
        time.sleep(0.6)
        assert watch.lines == lines
        lines = watch.wait_lines(2, 2.5)  # at its end: reported, both pauses in one
        assert len(lines) == 2 and 9.0 <= float(lines[1].split()[0]) <= 11.0, lines
    finally:
        watch.stop()


def test_a_clock_stepped_forward_small_steps_and_bad_dates_are_not_pauses(
    servers: list[DateServer],
) -> None:
    """NTP stepping this node's clock forward (the reference falls behind), the Date's whole
    seconds, a source that sends no date: none of them is this node falling behind."""
    ref = servers[0]
    watch = Watch([ref.source], parent=1, quiet=0.1)
    try:
        time.sleep(0.5)
        ref.ahead = -10.0
        time.sleep(0.5)
        ref.ahead = -8.8  # 1.2 s "behind" again: under the 2 s that count
        time.sleep(0.5)
        ref.bad = True
        time.sleep(0.5)
        assert watch.lines == []
        assert watch.proc.poll() is None
    finally:
        watch.stop()


def test_the_next_source_answers_when_the_first_does_not(servers: list[DateServer]) -> None:
    first, second = servers
    gone = first.source
    first.close()
    watch = Watch([gone, second.source], parent=1)
    try:
        time.sleep(0.8)
        second.ahead = 5.0
        lines = watch.wait_lines(1, 2.0)
        assert len(lines) == 1 and 4.0 <= float(lines[0].split()[0]) <= 6.0, lines
    finally:
        watch.stop()


def test_it_ends_with_the_watchdog(servers: list[DateServer]) -> None:
    parent = subprocess.Popen(["sleep", "0.5"])
    watch = Watch([servers[0].source], parent=parent.pid)
    try:
        parent.wait(5)
        assert watch.proc.wait(3) == 0
    finally:
        watch.stop()


@pytest.fixture()
def silent() -> Iterator[str]:
    """A source that takes the connection and never answers (a hung control plane): each ask
    of it costs clock-watch its whole timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def test_a_silent_source_is_not_asked_first_again(silent: str, servers: list[DateServer]) -> None:
    """Asked in a fixed order, a silent first source made every look wait its 0.5 s timeout
    first: a pause was seen up to 0.5 s later, and the answering source was asked ~5 times in
    3 s instead of ~20 (one look every 0.1 s)."""
    second = servers[1]
    watch = Watch([silent, second.source], parent=1)
    try:
        time.sleep(3.0)
        assert second.requests >= 12, second.requests
        second.ahead = 5.0
        began = time.monotonic()
        lines = watch.wait_lines(1, 2.0)
        assert len(lines) == 1 and 4.0 <= float(lines[0].split()[0]) <= 6.0, lines
        assert time.monotonic() - began < 0.5
    finally:
        watch.stop()


def test_a_source_whose_clock_differs_from_the_last_ones_is_not_a_pause(
    servers: list[DateServer],
) -> None:
    """Each source is compared with its own last answer: when the first control plane stops
    answering and the next one's clock is 3 s ahead of it, this node did not fall behind."""
    first, second = servers
    second.ahead = 3.0
    watch = Watch([first.source, second.source], parent=1)
    try:
        deadline = time.monotonic() + 5.0
        while first.requests < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        first.close()
        deadline = time.monotonic() + 5.0
        asked = second.requests
        while second.requests < asked + 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert second.requests >= asked + 5, "the second source was not asked"
        assert watch.lines == []
        assert watch.proc.poll() is None
    finally:
        watch.stop()
