"""Values that flow through a run: changes, per-target plans and results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

CLOUD = "hcloud"
"""Target name of the Hetzner Cloud API in plans and recaps."""


@dataclass(frozen=True)
class Change:
    """One difference between wanted and real state, as shown in the plan."""

    resource: str
    action: str
    summary: str = ""
    diff: str = ""


@dataclass(frozen=True)
class TargetPlan:
    """What a step would change on one target (a host or the cloud)."""

    target: str
    changes: tuple[Change, ...] = ()
    error: str = ""
    unreachable: bool = False


class Status(Enum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class TargetResult:
    """How a step ended on one target."""

    target: str
    status: Status
    changes: tuple[Change, ...] = ()
    message: str = ""


@dataclass(frozen=True)
class StepResult:
    """Results of one step over all its targets."""

    step: str
    results: tuple[TargetResult, ...] = field(default_factory=tuple)
    dry_run: bool = False

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status is status)

    @property
    def failed(self) -> bool:
        return any(r.status in (Status.FAILED, Status.UNREACHABLE) for r in self.results)
