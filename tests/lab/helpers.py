"""Shared helpers of the lab tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable

from lab import topology


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 20.0, step: float = 0.1) -> float:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        time.sleep(step)
    return time.monotonic() - t0


def route_dev(ns: str, addr: str) -> str | None:
    out = subprocess.run(
        ["ip", "-n", ns, "route", "show", f"{addr}/32"], text=True, capture_output=True, check=True
    ).stdout.split()
    return out[out.index("dev") + 1] if "dev" in out else None


def router_dev(addr: str) -> str | None:
    return route_dev(topology.ROUTER_NS, addr)


def inet_dev(addr: str) -> str | None:
    return route_dev(topology.INET_NS, addr)
