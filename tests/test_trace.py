"""RUNBOOK_TRACE: one JSON line per remote command and per step; file contents never traced."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runbook.core import trace
from runbook.core.resources import File

from .fakehost import LocalHost


def events(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_commands_are_traced_without_their_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "trace.jsonl"
    monkeypatch.setattr(trace, "PATH", str(out))
    host = LocalHost("h1", tmp_path / "h1")
    host.query("true")
    host.run("cat > /dev/null", stdin="canary-secret-value\n", ok_codes=(0,))
    dst = tmp_path / "f.conf"
    File(str(dst), "canary-file-content\n").apply(host)
    rows = events(out)
    assert [r["kind"] for r in rows] == ["command"] * len(rows) and len(rows) >= 3
    assert rows[0] == {**rows[0], "host": "h1", "mutating": False, "exited": 0, "cmd": "true"}
    assert rows[1]["mutating"] is True and float(rows[1]["seconds"]) >= 0  # type: ignore[arg-type]
    assert "canary" not in out.read_text()
    assert dst.read_text() == "canary-file-content\n"


def test_off_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "PATH", "")
    monkeypatch.chdir(tmp_path)
    LocalHost("h1", tmp_path / "h1").query("true")
    assert not trace.enabled() and list(tmp_path.glob("*.jsonl")) == []
