"""The CLI as the lab runs it: seed, serve (PID file, SIGTERM), fault, show."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from lab.fakecloud.cli import build_parser, main
from tests.fakecloud.conftest import write_token

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "lab.fakecloud", *args],
        cwd=REPO,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=20,
    )


def get(url: str, token: str) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_seed_serve_fault_and_sigterm(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    token = "cli-" + os.urandom(8).hex()
    token_file = write_token(tmp_path / "token", token)
    pid_file = tmp_path / "serve.pid"
    seeded = run_cli(
        "seed",
        "--state",
        str(state),
        "--server",
        "k8slb01=203.0.113.5",
        "--label",
        "k8slb01:role=lb",
        "--floating-ip",
        "k8s-api=203.0.113.100",
    )
    assert seeded.returncode == 0, seeded.stderr
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lab.fakecloud",
            "serve",
            "--state",
            str(state),
            "--token-file",
            str(token_file),
            "--listen",
            "127.0.0.1:0:admin",
            "--pid-file",
            str(pid_file),
            "--action-seconds",
            "0.05",
        ],
        cwd=REPO,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("fakecloud listening on 127.0.0.1:") and "(admin)" in line
        url = "http://" + line.split()[3]
        assert pid_file.read_text().strip() == str(proc.pid)
        assert token not in Path(f"/proc/{proc.pid}/cmdline").read_bytes().decode()
        status, body = get(f"{url}/v1/servers?label_selector=role%3Dlb", token)
        assert status == 200 and body["servers"][0]["name"] == "k8slb01"  # type: ignore[index]

        fault = run_cli(
            "fault",
            "--url",
            url,
            "--token-file",
            str(token_file),
            "--fail-next",
            "1",
            "--code",
            "locked",
        )
        assert fault.returncode == 0, fault.stderr
        assert json.loads(fault.stdout)["fail_next"] == 1
        assert get(f"{url}/v1/servers", token)[0] == 423
        assert get(f"{url}/v1/servers", token)[0] == 200
        shown = run_cli("show", "calls", "--url", url, "--token-file", str(token_file))
        calls = json.loads(shown.stdout)["calls"]
        assert [c["status"] for c in calls[-2:]] == [423, 200]
        cleared = run_cli("fault", "--url", url, "--token-file", str(token_file), "--clear")
        assert json.loads(cleared.stdout)["fail_next"] == 0
        busy = run_cli("busy", "k8slb01", "5", "--url", url, "--token-file", str(token_file))
        assert busy.returncode == 0, busy.stderr
        assert json.loads(busy.stdout)["command"] == "create_image"
        status, body = get(f"{url}/v1/servers?name=k8slb01", token)
        assert body["servers"][0]["locked"] is True  # type: ignore[index]
        unknown = run_cli("busy", "nope", "5", "--url", url, "--token-file", str(token_file))
        assert unknown.returncode != 0 and "not found" in unknown.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
    assert rc == 0
    assert not pid_file.exists()
    assert token not in state.read_text()


def test_token_file_must_be_private(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("secret\n")
    token_file.chmod(0o644)
    rc = main(
        [
            "serve",
            "--state",
            str(tmp_path / "s.json"),
            "--token-file",
            str(token_file),
            "--listen",
            "127.0.0.1:0",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "chmod 600" in err and "secret" not in err
    token_file.chmod(0o600)
    rc = main(
        [
            "serve",
            "--state",
            str(tmp_path / "s.json"),
            "--token-file",
            str(token_file),
            "--listen",
            "nonsense",
        ]
    )
    assert rc == 2 and "HOST:PORT" in capsys.readouterr().err


def test_every_option_has_help() -> None:
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subs.choices) == {"serve", "seed", "fault", "busy", "show"}
    for name, sub in subs.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
    assert run_cli("serve", "--help").returncode == 0
