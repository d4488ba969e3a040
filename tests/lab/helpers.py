"""Shared helpers of the lab tests."""

from __future__ import annotations

import subprocess

from lab import scenarios, topology
from lab.scenarios import wait_for

__all__ = ["inet_dev", "recap", "route_dev", "router_dev", "wait_for"]


def recap(out: str) -> dict[str, int]:
    """The run's recap counts; the output must have one."""
    counts = scenarios.recap(out)
    assert counts, out
    return counts


def route_dev(ns: str, addr: str) -> str | None:
    out = subprocess.run(
        ["ip", "-n", ns, "route", "show", f"{addr}/32"], text=True, capture_output=True, check=True
    ).stdout.split()
    return out[out.index("dev") + 1] if "dev" in out else None


def router_dev(addr: str) -> str | None:
    return route_dev(topology.ROUTER_NS, addr)


def inet_dev(addr: str) -> str | None:
    return route_dev(topology.INET_NS, addr)
