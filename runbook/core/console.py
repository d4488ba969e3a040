"""The operator console: plans, diffs, checkpoints, progress and recaps — secrets masked.

The rich Console is injected (tests render to a StringIO at a fixed width). Every string that
reaches it passes the `Masker` first, and the Console's file is wrapped by a masking writer too,
so a secret is caught even where a renderable was built elsewhere.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import IO, Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.text import Text
from rich.tree import Tree

from .plan import Status, StepResult, TargetPlan

MASK = "********"


class CheckpointDeclined(Exception):
    """The operator said no (exit 3)."""


class NeedsPerson(Exception):
    """A checkpoint needs an answer but there is no TTY and no --yes (exit 3)."""


class Masker:
    """Replaces every registered secret (and its base64 form) in text."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def register(self, secret: str | None) -> None:
        if not secret or len(secret) < 4:
            return
        import base64

        with self._lock:
            self._secrets.add(secret)
            self._secrets.add(base64.b64encode(secret.encode()).decode().rstrip("="))
            ordered = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in ordered))

    def mask(self, text: str) -> str:
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern else text


class OutputLost(OSError):
    """The console's file refused a write (stdout on a full disk, /dev/full, a closed pipe)."""


class MaskingWriter(io.TextIOBase):
    """File wrapper: masks whatever is written (defence in depth below rich).

    A failing write raises `OutputLost` (an OSError), which the task layer turns into one
    message on stderr instead of a traceback.
    """

    def __init__(self, inner: IO[str], masker: Masker) -> None:
        self._inner, self._masker = inner, masker

    def write(self, s: str) -> int:
        try:
            self._inner.write(self._masker.mask(s))
        except OSError as exc:
            raise OutputLost(exc.errno, exc.strerror) from exc
        return len(s)

    def flush(self) -> None:
        try:
            self._inner.flush()
        except OSError as exc:
            raise OutputLost(exc.errno, exc.strerror) from exc

    def isatty(self) -> bool:
        return self._inner.isatty()

    def fileno(self) -> int:
        return self._inner.fileno()


_STATUS_STYLE = {
    Status.OK: "green",
    Status.CHANGED: "yellow",
    Status.FAILED: "bold red",
    Status.UNREACHABLE: "bold magenta",
    Status.SKIPPED: "cyan",
}


def make_console(
    masker: Masker, *, file: IO[str] | None = None, width: int | None = None
) -> Console:
    """A rich Console writing through the masker."""
    target = file if file is not None else sys.stdout
    return Console(
        file=MaskingWriter(target, masker),  # type: ignore[arg-type]
        width=width,
        highlight=False,
        force_terminal=None if file is None else False,
    )


def until(seconds: float) -> str:
    """The wall-clock time `seconds` from now, HH:MM:SS (what an operator compares with)."""
    import datetime

    return (datetime.datetime.now() + datetime.timedelta(seconds=seconds)).strftime("%H:%M:%S")


class Ui:
    """What steps and tasks show the operator; never prints an unmasked secret."""

    def __init__(
        self,
        console: Console,
        masker: Masker,
        *,
        assume_yes: bool = False,
        verbose: bool = False,
        interactive: bool | None = None,
        stdin: IO[str] | None = None,
    ) -> None:
        self.console = console
        self.masker = masker
        self.assume_yes = assume_yes
        self.verbose = verbose
        self.title_prefix = ""  # printed at the head of the next step title, then cleared
        self._stdin = stdin if stdin is not None else sys.stdin
        self.interactive = self._stdin.isatty() if interactive is None else interactive
        self._lock = threading.Lock()

    # -- text ------------------------------------------------------------------------------
    def m(self, text: str) -> str:
        """Mask and escape for rich markup."""
        return escape(self.masker.mask(text))

    def print(self, text: str = "", *, style: str | None = None) -> None:
        with self._lock:
            self.console.print(Text(self.masker.mask(text), style=style or ""))

    def info(self, text: str) -> None:
        self.print(text)

    def warn(self, text: str) -> None:
        self.print(f"warning: {text}", style="yellow")

    def error(self, text: str) -> None:
        self.print(f"error: {text}", style="bold red")

    def command(self, host: str, cmd: str, *, mutating: bool) -> None:
        """--verbose: show each remote command (masked, first lines only)."""
        if not self.verbose:
            return
        first = cmd if len(cmd) < 400 else cmd[:400] + " …"
        self.print(f"  [{host}] {'$' if mutating else '?'} {first}", style="dim")

    # -- plan ------------------------------------------------------------------------------
    def step_title(self, name: str, title: str) -> None:
        """The step's rule; a `title_prefix` (the walkthrough's progress) heads it, once."""
        with self._lock:
            head, self.title_prefix = self.title_prefix, ""
            text = f"{head} — {title}" if head else f"{name} — {title}"
            self.console.rule(Text(self.masker.mask(text), style="bold"))

    def show_plan(self, step: str, plans: Sequence[TargetPlan]) -> None:
        """The plan tree: grouped over targets (plangroup), per target with --verbose."""
        if not self.verbose:
            from .plangroup import grouped_tree

            with self._lock:
                self.console.print(grouped_tree(step, plans, self.masker.mask))
            return
        tree = Tree(Text(f"plan: {step}", style="bold"))
        for plan in plans:
            if plan.error:
                label = "UNREACHABLE" if plan.unreachable else "ERROR"
                tree.add(
                    Text(
                        self.masker.mask(f"{plan.target}: {label}: {plan.error}"), style="bold red"
                    )
                )
                continue
            if not plan.changes:
                tree.add(Text(f"{plan.target}: ok (no changes)", style="green"))
                continue
            branch = tree.add(Text(f"{plan.target}: {len(plan.changes)} change(s)", style="yellow"))
            for ch in plan.changes:
                line = f"{ch.action} {ch.resource}" + (f" — {ch.summary}" if ch.summary else "")
                node = branch.add(Text(self.masker.mask(line)))
                if ch.diff:
                    node.add(
                        Syntax(
                            self.masker.mask(ch.diff.rstrip("\n")),
                            "diff",
                            theme="ansi_dark",
                            word_wrap=True,
                        )
                    )
        with self._lock:
            self.console.print(tree)

    # -- checkpoints ----------------------------------------------------------------------
    def checkpoint(self, question: str, *, default: bool = False) -> None:
        """Ask the operator; returns when confirmed, raises otherwise (exit 3)."""
        q = self.masker.mask(question)
        with self._lock:
            self.console.print(Panel(Text(q), title="checkpoint", border_style="cyan"))
        if self.assume_yes:
            self.print("checkpoint: confirmed by --yes", style="cyan")
            return
        if not self.interactive:
            raise NeedsPerson(
                f"checkpoint needs a person: {q} (no TTY; re-run with --yes to confirm)"
            )
        hint = "[Y/n]" if default else "[y/N]"
        with self._lock:
            # a Text, not markup: "[y/N]" as markup is a style tag and vanishes
            self.console.print(Text(f"confirm? {hint} "), end="", soft_wrap=True)
        answer = self._stdin.readline().strip().lower()
        ok = default if not answer else answer in ("y", "yes")
        if not ok:
            # the question is on the screen once, in the panel above: not again here
            raise CheckpointDeclined("declined at the checkpoint: this step changed nothing")

    def choose(self, question: str, choices: Sequence[str], default: str) -> str:
        """Ask for one of `choices` (a unique prefix will do; empty = `default`) on a TTY.

        End of input counts as the last choice (the way out, e.g. "quit").
        """
        shown = " / ".join(c.upper() if c == default else c for c in choices)
        while True:
            with self._lock:
                # soft_wrap: one line, however narrow (the terminal wraps it if it must)
                self.console.print(
                    Text(f"{self.masker.mask(question)} {shown}? "), end="", soft_wrap=True
                )
            line = self._stdin.readline()
            if not line:
                self.print("")
                return choices[-1]
            answer = line.strip().lower()
            if not answer:
                return default
            matches = [c for c in choices if c.startswith(answer)]
            if len(matches) == 1:
                return matches[0]
            self.print(f"please answer {', '.join(choices)} (empty: {default})", style="yellow")

    def typed_checkpoint(self, question: str, *, expected: str, given: str | None) -> None:
        """A checkpoint for what cannot be undone: the operator types `expected` (`--yes` is
        not enough; a script passes it as `given`, e.g. an option `--confirm NAME`)."""
        q = self.masker.mask(question)
        with self._lock:
            self.console.print(Panel(Text(q), title="checkpoint", border_style="red"))
        if given is not None:
            if given != expected:
                raise CheckpointDeclined(f"declined: typed {given!r}, not {expected!r}")
            self.print(f"checkpoint: confirmed by typing {expected!r}", style="cyan")
            return
        if not self.interactive:
            raise NeedsPerson(
                f"checkpoint needs a person: {q} (no TTY; re-run with --confirm {expected})"
            )
        with self._lock:
            self.console.print(f"type {escape(expected)} to confirm: ", end="")
        answer = self._stdin.readline().strip()
        if answer != expected:
            raise CheckpointDeclined(f"declined: typed {answer!r}, not {expected!r}")

    def ask_secret(self, prompt: str) -> str:
        """Ask for a secret without echo (TTY only); registered with the masker."""
        if not self.interactive:
            raise NeedsPerson(f"needs a person: {prompt} (no TTY)")
        import getpass

        value = getpass.getpass(f"{prompt}: ")
        self.masker.register(value)
        return value

    # -- progress --------------------------------------------------------------------------
    @contextlib.contextmanager
    def status(self, text: str, *, seconds: float | None = None) -> Iterator[None]:
        """A spinner for a wait (quiet when not a terminal); with `seconds`, the longest it may
        take, it says until when."""
        if seconds:
            text += f", until {until(seconds)} (at most {seconds:.0f} s)"
        if not self.console.is_terminal:
            yield
            return
        with self.console.status(Text(self.masker.mask(text))):
            yield

    @contextlib.contextmanager
    def waiting(self, what: str, seconds: float) -> Iterator[None]:
        """A wait with a deadline: says what for and until when (a spinner on a terminal, one
        line otherwise)."""
        text = f"waiting for {what}, until {until(seconds)} (at most {seconds:.0f} s)"
        if not self.console.is_terminal:
            self.print(text, style="dim")
            yield
            return
        with self.console.status(Text(self.masker.mask(text))):
            yield

    def wait(self, description: str, total: float) -> Any:
        """A progress bar for a wait with a known length (seconds), naming its deadline; without
        a terminal one line says what for and until when."""
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        description = f"{description}, until {until(total)}"
        if not self.console.is_terminal:
            self.print(f"waiting for {description} (at most {total:.0f} s)", style="dim")
        return Progress(
            TextColumn(self.m(description)),
            BarColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
            disable=not self.console.is_terminal,
        )

    # -- tables and recap -----------------------------------------------------------------
    def table(self, title: str, columns: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        """A table fitted to the screen; the first column (a name) is never cut."""
        from .screen import fitted_table

        t = fitted_table(
            self.console,
            self.masker.mask(title),
            columns,
            [[str(v) for v in row] for row in rows],
            whole=columns[:1],
            cell=lambda v: Text(self.masker.mask(v)),
        )
        with self._lock:
            self.console.print(t)

    def recap(self, results: Sequence[StepResult], *, note: str = "") -> str:
        """Print a table (targets with the same outcome share a row; one per target with
        --verbose) and the plain `recap:` line; return that line.

        `note` (e.g. "interrupted by SIGINT") goes into the title and on a line of its own."""
        from .plangroup import host_ranges, recap_rows
        from .screen import fitted_table

        if self.verbose:
            rows = [
                (sr.step, host_ranges([r.target]), r.status, len(r.changes), r.message)
                for sr in results
                for r in sr.results
            ]
        else:
            rows = recap_rows(results)
        title = (
            "recap"
            + (" (dry-run: nothing changed)" if any(r.dry_run for r in results) else "")
            + (f" ({note})" if note else "")
        )
        t = fitted_table(
            self.console,
            title,
            ("step", "target", "status", "changes", "message"),
            [
                (step, target, Text(st.value, style=_STATUS_STYLE[st]), str(n), msg)
                for step, target, st, n, msg in rows
            ],
            whole=("step", "target", "status"),
            cell=lambda v: Text(self.masker.mask(v)),
        )
        counts = dict.fromkeys(Status, 0)
        for sr in results:
            for r in sr.results:
                counts[r.status] += 1
        line = "recap: " + " ".join(f"{s.value}={counts[s]}" for s in Status)
        with self._lock:
            self.console.print(Group(t))
            if note:
                self.console.print(Text(note, style="bold red"), soft_wrap=True)
            self.console.print(Text(line), soft_wrap=True)
        return line
