"""Ctrl-C, SIGTERM and a lost stdout end a run with a recap and an exit code, never a traceback.

Each case runs `tests/interrupt_child.py` in its own process (signals and stdout are per
process): a serial step whose first host runs a command that never ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from runbook.core import interrupt

REPO = Path(__file__).resolve().parents[1]


def child(mode: str, tmp: Path, *, stdout: object = subprocess.PIPE) -> subprocess.CompletedProcess:  # type: ignore[type-arg]
    return subprocess.run(
        [sys.executable, "-m", "tests.interrupt_child", mode, str(tmp)],
        cwd=REPO,
        stdout=stdout,  # type: ignore[arg-type]
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


def test_a_run_without_signal_ends_normally(tmp_path: Path) -> None:
    r = child("quiet", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "recap: ok=0 changed=3 failed=0" in r.stdout and "interrupted" not in r.stdout


@pytest.mark.parametrize(
    ("mode", "code", "name"), [("int", 130, "SIGINT"), ("term", 143, "SIGTERM")]
)
def test_first_signal_stops_abandons_the_hung_command_and_prints_the_recap(
    tmp_path: Path, mode: str, code: int, name: str
) -> None:
    r = child(mode, tmp_path)
    assert r.returncode == code, r.stdout + r.stderr
    assert f"interrupted ({name}): no new work starts" in r.stderr
    assert f"recap (interrupted by {name}" in r.stdout
    assert "abandoned while running" in r.stdout and "interrupted: not started" in r.stdout
    assert "recap: ok=0 changed=0 failed=1 unreachable=0 skipped=2" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "files").exists()  # nothing new started


def test_second_interrupt_exits_at_once(tmp_path: Path) -> None:
    r = child("int2", tmp_path)
    assert r.returncode == 130
    assert "interrupted again (SIGINT): exiting now" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_stdout_on_dev_full_is_one_message_not_a_traceback(tmp_path: Path) -> None:
    with open("/dev/full", "w") as full:
        r = child("quiet", tmp_path, stdout=full)
    assert r.returncode == 1
    assert r.stderr.strip() == (
        "error: cannot write to standard output (No space left on device); stopped"
    )


def test_a_prompt_is_interrupted_at_once() -> None:
    import os
    import signal

    stop = interrupt.StopFlag()
    with interrupt.handle_signals(stop), pytest.raises(interrupt.Interrupted), stop.raising():
        os.kill(os.getpid(), signal.SIGINT)
        signal.sigtimedwait([], 0)  # let the handler run
        pytest.fail("the handler did not raise")
    assert stop.requested and stop.signum == signal.SIGINT


def test_the_cli_with_stdout_on_dev_full_says_so_in_one_line() -> None:
    """Through the real `inv`: the walkthrough's first message already cannot be written."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    env["INVOKE_RUNBOOK_INVENTORY"] = str(REPO / "hosts.yaml")
    with open("/dev/full", "w") as full:
        r = subprocess.run(
            [str(Path(sys.executable).parent / "inv"), "-r", str(REPO), "walkthrough"],
            stdin=subprocess.DEVNULL,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
        )
    assert r.returncode == 1
    assert r.stderr == (
        "error: cannot write to standard output (No space left on device); stopped\n"
    )
