"""The lab hosts' systemctl wrapper (lab.hosttools.SYSTEMCTL): `show X.timer` agrees with its
`is-active X.timer` (enabled timer = active, as the host init runs it). The replacement alone says
ActiveState=unknown for every timer, so Ansible's systemd module started the re-assert timer again
on every run (bench.ansible_compare's no-op run: changed=1 per LB). No lab needed: the wrapper runs
against a stand-in replacement and a temporary unit directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lab import hosttools

REPLACEMENT = "print('Id=x.timer\\nActiveState=unknown\\nSubState=unknown\\nLoadState=loaded')\n"


def wrapper(tmp_path: Path) -> Path:
    (tmp_path / "replacement.py").write_text(REPLACEMENT)
    src = hosttools.SYSTEMCTL.replace(
        "/usr/lib/rblab/systemctl3.pyc", str(tmp_path / "replacement.py")
    ).replace('("/etc/systemd/system",)', f'("{tmp_path / "units"}",)')
    assert src.count(str(tmp_path)) >= 3, "the wrapper's paths changed: update this test"
    path = tmp_path / "systemctl"
    path.write_text(src)
    return path


def show(path: Path) -> dict[str, str]:
    out = subprocess.run(
        [sys.executable, str(path), "show", "x.timer"], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.mark.parametrize("is_enabled", [True, False])
def test_show_of_a_timer_agrees_with_is_active(tmp_path: Path, is_enabled: bool) -> None:
    path = wrapper(tmp_path)
    wants = tmp_path / "units" / "timers.target.wants"
    wants.mkdir(parents=True)
    if is_enabled:
        (wants / "x.timer").touch()
    props = show(path)
    active = subprocess.run(
        [sys.executable, str(path), "is-active", "x.timer"], capture_output=True, text=True
    ).stdout.strip()
    assert props["ActiveState"] == active == ("active" if is_enabled else "inactive")
    assert props["SubState"] == ("waiting" if is_enabled else "dead")
    assert props["LoadState"] == "loaded" and props["Id"] == "x.timer"  # the rest passes through
