"""The `inv` entry point: Invoke's CLI held to the runbook's exit-code contract.

Invoke's own program exits 1 on a parse error ("No idea what 'valdate' is!"), silently skips a
missing `-f` file, prints a traceback for a broken config file, and reads a value-less
`--host` as "no host given" (= every host). Here every one of those is bad input: one line,
exit 2 (EXIT_INPUT), before any task runs. Config files are read with the inventory's bounded
YAML reader (regular files only, size, depth and alias limits).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from invoke import Config, Program, __version__
from invoke.exceptions import Exit, ParseError, UnknownFileType
from invoke.parser import Parser, ParseResult
from invoke.parser import parser as invoke_parser

from .core.interrupt import GRACE, SIGNALS
from .inventory import InventoryError, Problem
from .inventory.load import read_yaml
from .tasks._common import EXIT_INPUT


def _hard_exit(signum: int) -> None:
    """One line, stdio flushed, exit 128 + signal without joining threads that wait on hosts."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(OSError):
        os.write(2, f"interrupted ({signal.Signals(signum).name}): stopped\n".encode())
    os._exit(128 + signum)


class RunbookConfig(Config):
    """Invoke config whose YAML files go through the inventory's bounded reader."""

    def _load_yaml(self, path: Any) -> Any:
        if not os.path.lexists(path):  # Invoke tries several suffixes and skips absent files
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", str(path))
        data, duplicates = read_yaml(Path(path))
        if duplicates:
            raise InventoryError(duplicates)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise InventoryError([Problem(str(path), "(file)", "expected a mapping of settings")])
        return data

    _load_yml = _load_yaml


_ParseMachine = invoke_parser.ParseMachine


def _value_required_machine(*args: Any, **kwargs: Any) -> Any:
    """Invoke's parse machine, except that a list flag (`--host`) seen without a value is an
    error; Invoke keeps the empty list, which a task cannot tell from "not given".

    (Invoke's state machine library refuses subclasses, so the one method is wrapped.)
    """
    machine = _ParseMachine(*args, **kwargs)
    complete_flag = machine.complete_flag

    def strict_complete_flag() -> None:
        flag = machine.flag
        if flag is not None and flag.kind is list and not machine.flag_got_value:
            name = flag.name.replace("_", "-")
            machine.error(f"--{name} needs a value (e.g. --{name} NAME); none was given")
        complete_flag()

    machine.complete_flag = strict_complete_flag  # type: ignore[method-assign]
    return machine


class _StrictParser(Parser):
    def parse_argv(self, argv: list[str]) -> ParseResult:
        # Parser.parse_argv builds its ParseMachine from the module global; swap it for the
        # duration of this call only (single-threaded CLI start-up).
        invoke_parser.ParseMachine = _value_required_machine  # type: ignore[misc,assignment]
        try:
            return super().parse_argv(argv)
        finally:
            invoke_parser.ParseMachine = _ParseMachine  # type: ignore[misc]


def _as_input_error(exc: Exception) -> Exit:
    """A usage or config problem as Invoke's message with exit code 2."""
    if isinstance(exc, InventoryError):
        return Exit("\n".join(str(p) for p in exc.problems), code=EXIT_INPUT)
    return Exit(str(exc), code=EXIT_INPUT)


class RunbookProgram(Program):
    """Invoke's Program with parse and config errors mapped to exit 2 (bad input)."""

    def create_config(self) -> None:
        try:
            super().create_config()  # system and user config files
        except InventoryError as exc:
            raise _as_input_error(exc) from None

    def parse_collection(self) -> None:
        try:
            super().parse_collection()  # tasks.py and the project's invoke.yaml
        except InventoryError as exc:
            raise _as_input_error(exc) from None
        except Exit as exc:
            raise _usage(exc) from None

    def parse_tasks(self) -> None:
        try:
            super().parse_tasks()
        except ParseError as exc:
            raise _as_input_error(exc) from None

    def parse_cleanup(self) -> None:
        try:
            super().parse_cleanup()
        except ParseError as exc:
            raise _as_input_error(exc) from None
        except Exit as exc:
            raise _usage(exc) from None

    def update_config(self, merge: bool = True) -> None:
        """`-f FILE` (or INVOKE_RUNTIME_CONFIG) must exist: Invoke would skip it silently."""
        path = self.args.config.value or os.environ.get("INVOKE_RUNTIME_CONFIG")
        if path is not None:
            full = os.path.expanduser(path)
            if not os.path.lexists(full):
                raise Exit(f"-f {path}: no such file", code=EXIT_INPUT)
            if os.path.isdir(full):
                raise Exit(f"-f {path}: is a directory, not a config file", code=EXIT_INPUT)
        try:
            super().update_config(merge)
        except InventoryError as exc:
            raise _as_input_error(exc) from None
        except (OSError, ValueError, SyntaxError, UnknownFileType) as exc:
            if path is None:
                raise
            # unreadable, an unknown suffix, broken JSON, a .py config that does not compile
            raise Exit(f"-f {path}: {type(exc).__name__}: {exc}", code=EXIT_INPUT) from None

    def execute(self) -> None:
        """Tasks without the step engine's own interrupt handling (status, lb.status, validate,
        render, the drill) end on Ctrl-C or SIGTERM with 130/143 and one line, not Invoke's
        silent 1 (step tasks install their own handler for their run, see runbook.core.interrupt).
        The signal raises KeyboardInterrupt so `finally` blocks run (the drill restores the
        failed node); threads still waiting on a host are not joined, and a second signal, or
        `GRACE` + 1 s without an exit, ends the process at once."""
        first: list[int] = []

        def on_signal(signum: int, _frame: object) -> None:
            if first:
                _hard_exit(first[0])
            first.append(signum)
            timer = threading.Timer(GRACE + 1, _hard_exit, args=(signum,))
            timer.daemon = True
            timer.start()
            raise KeyboardInterrupt

        previous = {s: signal.signal(s, on_signal) for s in SIGNALS}
        try:
            super().execute()
        except KeyboardInterrupt:
            _hard_exit(first[0] if first else signal.SIGINT)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def _make_parser(self) -> Parser:
        return _StrictParser(
            initial=self.initial_context,
            contexts=self.collection.to_contexts(
                ignore_unknown_help=self.config.tasks.ignore_unknown_help
            ),
        )


def _usage(exc: Exit) -> Exit:
    """Invoke's own exits while parsing (no tasks.py, unknown --list root) are usage errors;
    the quiet exits after --help/--list/--version stay 0."""
    if exc.code == 1 and exc.message:
        return Exit(exc.message, code=EXIT_INPUT)
    return exc


program = RunbookProgram(
    name="Invoke (hetzner-ha-runbook)",
    binary="inv[oke]",
    binary_names=["invoke", "inv"],
    version=__version__,
    config_class=RunbookConfig,
)


def main() -> None:
    """Console script `inv` (exits with the task's code; 2 for bad input)."""
    program.run()


if __name__ == "__main__":
    main()
