"""A run that an interrupt test signals: `python -m tests.interrupt_child MODE STATE_DIR`.

Three hosts, one step, serial; the first host's first resource hangs (a remote command that
never ends). MODE: `int` (one SIGINT once the command runs), `int2` (two SIGINTs), `term`
(SIGTERM), `quiet` (no signal; the hang ends after 0.5 s: a normal run).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from invoke.exceptions import Exit

from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import RunOptions, Step, StepContext, run_step
from runbook.core.plan import Change
from runbook.core.remote import Fact, Host
from runbook.core.resources import File, Resource
from runbook.tasks._common import run_steps
from tests.fakehost import LocalHost

STARTED = threading.Event()


class Hang(Resource):
    key = "hang"

    def __init__(self, seconds: float, done: Path) -> None:
        self.seconds, self.done = seconds, done

    def probe(self) -> str:
        return f"test -e {self.done}"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        return None if fact and fact.rc == 0 else Change("hang", "run", "a long command")

    def apply(self, host: Host) -> None:
        STARTED.set()
        host.run(f"sleep {self.seconds} && touch {self.done}", timeout=None)


class Demo(Step):
    name, title, serial = "demo", "a step with a command that hangs", True

    def __init__(self, root: Path, seconds: float) -> None:
        self.root, self.seconds = root, seconds

    def target_names(self, ctx: StepContext) -> list[str]:
        return ["a", "b", "c"]

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        hang: list[Resource] = [Hang(self.seconds, self.root / "done")] if target == "a" else []
        return [*hang, File(str(self.root / "files" / target), f"{target}\n")]


def main(mode: str, state: Path) -> int:
    masker = Masker()
    ui = Ui(make_console(masker, width=120), masker, assume_yes=True, interactive=False)
    ctx = StepContext(inventory=None, ui=ui, options=RunOptions(yes=True))  # type: ignore[arg-type]
    ctx.targets.update({n: LocalHost(n, state / "hosts" / n) for n in "abc"})
    step = Demo(state, 0.5 if mode == "quiet" else 20)

    def send() -> None:
        STARTED.wait(30)
        sig = signal.SIGTERM if mode == "term" else signal.SIGINT
        os.kill(os.getpid(), sig)
        if mode == "int2":
            threading.Event().wait(0.3)
            os.kill(os.getpid(), sig)

    if mode != "quiet":
        threading.Thread(target=send, daemon=True).start()

    def body(results: list) -> int:  # type: ignore[type-arg]
        results.append(run_step(step, ctx))
        return 0

    try:
        run_steps(ctx, body)
    except Exit as exc:
        return int(exc.code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], Path(sys.argv[2])))
