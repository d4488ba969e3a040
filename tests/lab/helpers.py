"""Shared helpers of the lab tests."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from lab import labstate, scenarios, topology
from lab.scenarios import wait_for

__all__ = [
    "fresh_lab",
    "inet_dev",
    "measure",
    "recap",
    "route_dev",
    "router_dev",
    "wait_for",
    "wipe_hosts",
]

# what `lab.up` makes per state dir; the apt cache and the built stand-in debs are kept
HOST_STATE = ("hosts", "run", "cloud-state.json", "lab-record.json", "logs")


def wipe_hosts(root: Path) -> None:
    """Remove the host layers and the API state of the (down) lab of `root`."""
    for d in HOST_STATE:
        p = root / d
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def fresh_lab() -> None:
    """Down, wipe the host layers and the API state, up: 7 fresh hosts (apt cache kept)."""
    from lab import control

    control.down()
    wipe_hosts(labstate.paths().root)
    control.up()


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


def measure(name: str, value: float) -> None:
    """Append a measured value to <lab state>/measurements.json (the README's lab numbers)."""
    path = labstate.paths().root / "measurements.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(name, []).append(round(value, 3))
    path.write_text(json.dumps(data, indent=1, sort_keys=True))
