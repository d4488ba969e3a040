"""What a step runs on: a `Target`. A host over SSH (`remote.Host`) and the Hetzner project
(`cloud.api.CloudTarget`) are both targets; the engine and `Resource` know only this protocol.

The engine gathers every resource's probe in one round trip (`gather`), re-reads one before
its apply (`probe`), and marks what changed in this run (`touched`); `dry_run` targets refuse
writes; `close` releases a connection at the end of a run."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from .remote import Fact, Host


class Target(Protocol):
    @property
    def name(self) -> str:
        """The target's name in plans and recaps (a host name, or `CLOUD`)."""

    @property
    def dry_run(self) -> bool:
        """Whether writes are refused (`--dry-run`)."""

    touched: set[str]
    """Keys of the resources changed (or to change) in this run on this target."""

    def gather(self, probes: Sequence[str | None]) -> list[Fact | None]:
        """The facts of all `probes` at once (None where a resource has no probe)."""

    def probe(self, snippet: str | None) -> Fact | None:
        """The fact of one probe."""

    def close(self) -> None:
        """Release what the target holds open (a connection)."""


HOST_IS_A_TARGET: type[Target] = Host
"""mypy checks here that a Host satisfies the protocol (`cloud.api` does so for the cloud)."""
