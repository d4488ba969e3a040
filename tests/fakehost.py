"""A fake Host that runs the resources' real shell commands locally.

Commands run with bash; the package, service and sysctl tools are replaced by strict fakes in
tests/fakebin (state per fake host under a temp dir), so tests exercise the exact command strings
the resources send to a real host without touching this machine's packages or kernel.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runbook.core.remote import Host, HostUnreachable, Result

FAKEBIN = Path(__file__).parent / "fakebin"


class LocalHost(Host):
    def __init__(self, name: str, state: Path, *, dry_run: bool = False, log=None) -> None:
        super().__init__(name, dry_run=dry_run, log=log)
        self.state = state
        state.mkdir(parents=True, exist_ok=True)
        self.commands: list[tuple[str, bool]] = []
        self.unreachable = False

    def _call(self, cmd, *, mutating, timeout, ok_codes, stdin):  # type: ignore[override]
        self.commands.append((cmd, mutating))
        return super()._call(
            cmd, mutating=mutating, timeout=timeout, ok_codes=ok_codes, stdin=stdin
        )

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        if self.unreachable:
            raise HostUnreachable(f"{self.name}: unreachable: connection refused")
        env = dict(
            os.environ, PATH=f"{FAKEBIN}:{os.environ['PATH']}", RB_FAKE_STATE=str(self.state)
        )
        p = subprocess.run(
            ["bash", "-c", cmd],
            input=stdin or "",
            capture_output=True,
            text=True,
            env=env,
            timeout=timeout or 60,
        )
        return Result(p.stdout, p.stderr, p.returncode)

    # helpers for tests
    def add_unit(self, unit: str) -> None:
        (self.state / "units").mkdir(parents=True, exist_ok=True)
        (self.state / "units" / f"{unit}.known").touch()

    def calls(self) -> list[str]:
        log = self.state / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    def mutating(self) -> list[str]:
        return [c for c, m in self.commands if m]
