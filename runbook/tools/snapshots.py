"""The operator's local etcd snapshots: where they live, how they are named, which are pruned.

`.runbook/CLUSTER/backups/etcd-YYYYmmddTHHMMSSZ-HOST.db` beside the inventory, mode 0600 in a
0700 directory. Names sort by time, so retention keeps the newest `keep` names.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from pathlib import Path

NAME_RE = re.compile(r"^etcd-(\d{8}T\d{6}Z)-([A-Za-z0-9_.-]+)\.db$")


def snapshot_name(host: str, when: datetime) -> str:
    return f"etcd-{when.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{host}.db"


def existing(directory: Path) -> list[Path]:
    """Snapshots of the runbook in `directory`, oldest first (other files are not ours)."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.is_file() and NAME_RE.match(p.name))


def to_prune(directory: Path, keep: int, *, adding: int = 0) -> list[Path]:
    """The oldest snapshots beyond `keep`, counting `adding` new ones still to come."""
    found = existing(directory)
    excess = len(found) + adding - keep
    return found[: max(0, excess)]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
