"""`kubeadm certs check-expiration` read as data (for `inv status` and `cluster.renew-certs`).

kubeadm certificates last one year; the table gives each certificate's residual time
the way kubeadm prints it (`364d`, `23h`, `59m`, `9y`, `<invalid>` once expired).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WARN_DAYS = 30
_RESIDUAL = re.compile(r"^(\d+)([ydhms])$")
_UNIT_DAYS = {"y": 365.0, "d": 1.0, "h": 1 / 24, "m": 1 / 1440, "s": 1 / 86400}


@dataclass(frozen=True)
class CertExpiry:
    name: str
    expires: str
    residual: str
    days: float  # negative once expired
    authority: bool = False  # a CA (10 years) rather than a leaf certificate


def residual_days(text: str) -> float:
    if text.strip() == "<invalid>":
        return -1.0
    m = _RESIDUAL.match(text.strip())
    if not m:
        raise ValueError(f"not a kubeadm residual time: {text!r}")
    return int(m.group(1)) * _UNIT_DAYS[m.group(2)]


def parse(text: str) -> list[CertExpiry]:
    """Both tables of check-expiration (certificates, then authorities)."""
    out: list[CertExpiry] = []
    authority = False
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[:1] == ["CERTIFICATE"]:
            authority = False
            continue
        if cells[:1] == ["CERTIFICATE AUTHORITY"]:
            authority = True
            continue
        if len(cells) < 3 or line.startswith("["):
            continue
        try:
            days = residual_days(cells[2])
        except ValueError:
            continue
        out.append(CertExpiry(cells[0], cells[1], cells[2], days, authority))
    return out


def soonest(certs: list[CertExpiry]) -> CertExpiry | None:
    leaves = [c for c in certs if not c.authority] or certs
    return min(leaves, key=lambda c: c.days) if leaves else None
