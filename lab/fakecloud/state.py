"""The simulated cloud's state file: load, atomic save, and seeding.

The file is the contract between the API server and the lab's router (lab/sdn.py): resources are
stored in the API's own response shapes. Writes go to a temporary file in the same directory and
are renamed over the old one, so a reader never sees half a file and a crash never loses the state.
Servers cannot be created through the simulated API subset, so the lab seeds them here.
"""

from __future__ import annotations

import ipaddress
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.fakecloud import shapes

STATE_VERSION = 1
FIRST_ID = 1000
JSON = dict[str, Any]


@dataclass(frozen=True)
class SeedServer:
    """A server the lab provides (the API subset cannot create servers)."""

    name: str
    public_ipv4: str
    labels: dict[str, str] = field(default_factory=dict)
    location: str = "fsn1"


@dataclass(frozen=True)
class SeedFloatingIP:
    """A floating IP the project already owns (created once, unassigned)."""

    name: str
    ip: str
    home_location: str = "fsn1"


def empty_state() -> JSON:
    return {
        "version": STATE_VERSION,
        "next_id": FIRST_ID,
        "servers": [],
        "networks": [],
        "floating_ips": [],
        "firewalls": [],
        "actions": [],
        "pending": [],
    }


def load_state(path: Path) -> JSON:
    """Read the state file, or a fresh empty state when there is none yet."""
    if not path.exists():
        return empty_state()
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: not a fakecloud state file of version {STATE_VERSION}")
    base = empty_state()
    base.update(data)
    return base


def save_state(path: Path, state: JSON) -> None:
    """Write atomically: temp file in the same directory, fsync, rename over the old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(state, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def allocate_id(state: JSON) -> int:
    nid = int(state["next_id"])
    state["next_id"] = nid + 1
    return nid


def _check_ipv4(value: str, what: str) -> None:
    try:
        ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {value!r} is not an IPv4 address") from exc


def seed(
    state_path: Path,
    *,
    servers: list[SeedServer],
    floating_ips: list[SeedFloatingIP],
) -> None:
    """Add the given servers and floating IPs to the state file; names already present are kept.

    Idempotent, so `inv lab.up` can call it on every run without disturbing assignments the
    runbook made earlier.
    """
    state = load_state(state_path)
    server_names = {s["name"] for s in state["servers"]}
    used_public = {s["public_net"]["ipv4"]["ip"] for s in state["servers"]}
    for srv in servers:
        if srv.name in server_names:
            continue
        _check_ipv4(srv.public_ipv4, f"server {srv.name}")
        if not shapes.known_location(srv.location):
            raise ValueError(f"server {srv.name}: unknown location {srv.location!r}")
        if srv.public_ipv4 in used_public:
            raise ValueError(f"server {srv.name}: public IP {srv.public_ipv4} already in use")
        sid = allocate_id(state)
        primary_ip_id = allocate_id(state)
        state["servers"].append(
            shapes.server(sid, srv.name, srv.public_ipv4, srv.labels, srv.location, primary_ip_id)
        )
        server_names.add(srv.name)
        used_public.add(srv.public_ipv4)
    fip_names = {f["name"] for f in state["floating_ips"]}
    for fip in floating_ips:
        if fip.name in fip_names:
            continue
        _check_ipv4(fip.ip, f"floating IP {fip.name}")
        if not shapes.known_location(fip.home_location):
            raise ValueError(f"floating IP {fip.name}: unknown location {fip.home_location!r}")
        fid = allocate_id(state)
        state["floating_ips"].append(shapes.floating_ip(fid, fip.name, fip.ip, fip.home_location))
        fip_names.add(fip.name)
    save_state(state_path, state)
