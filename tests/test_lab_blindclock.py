"""The lab's blind clock (`lab/blindclock.c`): a process that loads it reads every clock shifted
back by the offset in its file, and waits on absolute deadlines computed from those clocks as
long as they say (Python's sleep, lock timeouts and GIL use such deadlines: without the shift
back they would end at once). Compiled here with the machine's gcc (bin/setup installs it)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab import blindclock

# runs under the library: reads every clock, raises the offset by 5 s itself (as the lab does
# while the host is stopped), reads them again, then times waits on deadlines
CHILD = r"""
import json, os, queue, struct, subprocess, sys, threading, time

def clocks():
    return {
        "monotonic": time.monotonic(),
        "realtime": time.time(),
        "boottime": time.clock_gettime(time.CLOCK_BOOTTIME),
        "times": os.times().elapsed,
        "cpu": time.process_time(),
        "date": float(subprocess.run(["date", "+%s.%N"], capture_output=True, text=True).stdout),
    }

out = {"before": clocks()}
fd = os.open(sys.argv[1], os.O_RDWR)
os.pwrite(fd, struct.pack("q", int(sys.argv[2])), 0)
out["after"] = clocks()

def took(wait):
    began = time.perf_counter()
    wait()
    return time.perf_counter() - began

lock = threading.Lock()
lock.acquire()
q = queue.Queue()

def get():
    try:
        q.get(timeout=0.2)
    except queue.Empty:
        pass

out["waits"] = {
    "sleep": took(lambda: time.sleep(0.2)),
    "lock": took(lambda: lock.acquire(timeout=0.2)),
    "event": took(lambda: threading.Event().wait(0.2)),
    "queue": took(get),
}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return blindclock.build(tmp_path_factory.mktemp("blindclock") / "blindclock.so")


def run_child(library: Path, offset_file: Path | None, raise_to_s: float) -> dict:
    env = dict(os.environ, LD_PRELOAD=str(library))
    env.pop("RBLAB_BLIND_OFFSET", None)
    target = offset_file
    if offset_file is not None:
        env["RBLAB_BLIND_OFFSET"] = str(offset_file)
    else:  # the child still writes a file, which no process has mapped
        target = Path(os.environ.get("TMPDIR", "/tmp")) / f"blindclock-unmapped-{os.getpid()}"
        target.write_bytes(struct.pack("q", 0))
    began = time.monotonic()
    r = subprocess.run(
        [sys.executable, "-c", CHILD, str(target), str(int(raise_to_s * 1e9))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    out["wall"] = time.monotonic() - began  # the parent's own clock, never shifted
    return out


@pytest.fixture()
def offset_file(tmp_path: Path) -> Path:
    f = tmp_path / "offset"
    f.write_bytes(struct.pack("q", 0))
    return f


def test_every_wall_and_elapsed_clock_goes_back_by_the_offset_and_cpu_time_does_not(
    library: Path, offset_file: Path
) -> None:
    out = run_child(library, offset_file, 5.0)
    before, after = out["before"], out["after"]
    for clock in ("monotonic", "realtime", "boottime", "date"):
        moved = after[clock] - before[clock]
        assert -5.0 < moved < -4.5, (clock, moved)
    # times(2) counts clock ticks (100 a second): Heartbeat's clock
    assert -5.02 < after["times"] - before["times"] < -4.5
    assert 0 <= after["cpu"] - before["cpu"] < 0.5


def test_waits_on_deadlines_from_a_shifted_clock_last_as_long_as_asked(
    library: Path, offset_file: Path
) -> None:
    """Each of these computes its deadline from the shifted monotonic clock: without the shift
    back in clock_nanosleep / sem_clockwait / pthread_cond_timedwait the kernel sees a deadline
    5 s in the past and the wait ends at once."""
    out = run_child(library, offset_file, 5.0)
    for wait, took in out["waits"].items():
        assert 0.19 <= took < 1.0, (wait, took)
    assert out["wall"] >= 0.8  # four waits of 0.2 s, by the parent's clock


def test_without_an_offset_file_no_clock_moves(library: Path) -> None:
    out = run_child(library, None, 5.0)
    for clock in ("monotonic", "realtime", "boottime", "date"):
        assert 0 <= out["after"][clock] - out["before"][clock] < 0.5, clock
