"""A stand-in for a wedged Heartbeat's processes, for the tests of the commands that end them
(the watchdog's and the heartbeat step's)."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path


def wedged_heartbeat(w: Path, name: str, tag: str = "") -> tuple[subprocess.Popen[bytes], int]:
    """A process group like a wedged Heartbeat's: a leader named `name` (a copy of sh in `w`)
    that ignores SIGTERM (`heartbeat -k` only delays the shutdown) with a child in its group;
    (leader, child PID). `tag` tells two of them apart."""
    if not (w / name).exists():
        shutil.copy("/bin/sh", w / name)
    child_pid = w / f"{name}{tag}.child"
    proc = subprocess.Popen(
        [str(w / name), "-c", f"trap '' TERM; sleep 60 & echo $! > {child_pid}; wait"],
        start_new_session=True,
    )
    end = time.monotonic() + 5
    while not child_pid.exists() or not child_pid.read_text().strip():
        assert time.monotonic() < end, "the fake Heartbeat did not start"
        time.sleep(0.05)
    return proc, int(child_pid.read_text())


def gone(pid: int) -> bool:
    """The process has ended (a zombie counts: its parent has not reaped it yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"
    except (FileNotFoundError, IndexError):
        return True
