"""Opt-in timing trace for profiling and `bench/`: RUNBOOK_TRACE=<file> appends one JSON line per
remote command (host, start, seconds, mutating, exit code, the command's first 120 characters)
and per step (name, start, seconds, changed/failed counts).

Commands never carry secrets (those travel through stdin or files), so the trace holds none.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any

PATH = os.environ.get("RUNBOOK_TRACE", "")
_lock = threading.Lock()


def enabled() -> bool:
    return bool(PATH)


def record(kind: str, started: float, **fields: Any) -> None:
    """Append one event; `started` is a time.monotonic() value taken when the thing began."""
    if not PATH:
        return
    now = time.monotonic()
    line = json.dumps(
        {
            "kind": kind,
            "start": round(time.time() - (now - started), 3),
            "seconds": round(now - started, 4),
            **fields,
        }
    )
    with _lock, open(PATH, "a") as fh:
        fh.write(line + "\n")


def command(host: str, cmd: str, mutating: bool, started: float, exited: int) -> None:
    record(
        "command",
        started,
        host=host,
        mutating=mutating,
        exited=exited,
        cmd=" ".join(cmd.split())[:120],
    )
