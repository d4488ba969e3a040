"""Fixtures for every test."""

from __future__ import annotations

from pathlib import Path

import pytest

import runbook.core.resources


@pytest.fixture(autouse=True)
def _backups_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`File` backups go below the test's tmp dir: fake hosts run commands on this machine."""
    root = tmp_path / "var-backups-runbook"
    monkeypatch.setattr(runbook.core.resources, "BACKUP_ROOT", str(root))
    return root
