"""The Ansible comparison playbook (bench/ansible/lb-tier.yml) and what it copies
(bench/ansible_files.py): it parses, it installs every file the runbook's renderers produce,
secrets stay in 0600 files copied with no_log.

Ansible is a benchmark tool, not a dependency of the runbook (`pip install '.[bench]'`, or
`python -m bench.ansible_compare` installs it on demand), so these checks run without it; the
bench itself runs the playbook for real against the lab (a stronger check than
`--syntax-check`, which would need Ansible installed here).
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from bench import ansible_files
from runbook.inventory import Inventory, load_inventory
from runbook.render import lbfiles

REPO = Path(__file__).resolve().parent.parent
INVENTORIES = [p for p in (REPO / "hosts.yaml", REPO / "lab" / "hosts.yaml") if p.exists()]
AUTHKEY = "a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6"
TOKEN = "tokenvalue0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"


def playbook() -> list[dict[str, Any]]:
    data = yaml.safe_load(ansible_files.PLAYBOOK.read_text())
    assert isinstance(data, list)
    return data


def tasks(play: dict[str, Any]) -> list[dict[str, Any]]:
    return [*(play.get("tasks") or []), *(play.get("handlers") or [])]


def copied_dests() -> dict[str, dict[str, Any]]:
    """dest path -> the copy task installing it (loops over literal paths included)."""
    out = {}
    for play in playbook():
        for t in tasks(play):
            copy = t.get("ansible.builtin.copy")
            if not copy:
                continue
            for dest in t.get("loop") if copy["dest"] == "{{ item }}" else [copy["dest"]]:
                out[dest] = t
    return out


def test_every_play_and_task_is_named_and_the_plays_cover_the_tier() -> None:
    names = ansible_files.task_names(playbook())
    assert all(n.strip() for n in names), names
    assert [p["name"].split(":")[0] for p in playbook()] == [
        "prepare",
        "network + lb (cloud)",
        "lb.setup",
    ]


@pytest.mark.parametrize("path", INVENTORIES, ids=lambda p: p.parent.name + "/" + p.name)
def test_the_playbook_installs_every_rendered_file_with_its_mode(path: Path) -> None:
    """A file added to runbook/render/lbfiles.py without a task here fails this test."""
    inv = load_inventory(path)
    dests = copied_dests()
    for host in lbfiles.lb_hosts(inv):
        for f in ansible_files.lb_files(inv, host.name, authkey=AUTHKEY, token=TOKEN):
            assert f.path in dests, f"{f.path} is not installed by the playbook"
            task = dests[f.path]
            assert task["ansible.builtin.copy"]["mode"] == f"{f.mode:04o}", f.path
            # secrets: never shown by Ansible (no_log), whatever the verbosity
            assert task.get("no_log") is (True if f.secret else None), f.path


def test_cloud_tasks_take_the_token_from_the_environment_only() -> None:
    text = ansible_files.PLAYBOOK.read_text()
    assert "api_token" not in text.replace("# api_token: from HCLOUD_TOKEN", "")
    assert "lookup('env'" not in text


def rendered(tmp_path: Path, inv: Inventory) -> Path:
    ansible_files.render(inv, tmp_path / "out", authkey=AUTHKEY, token=TOKEN)
    return tmp_path / "out"


@pytest.mark.parametrize("path", INVENTORIES, ids=lambda p: p.parent.name + "/" + p.name)
def test_render_writes_the_runbooks_files_and_keeps_secrets_out_of_vars(
    tmp_path: Path, path: Path
) -> None:
    inv = load_inventory(path)
    out = rendered(tmp_path, inv)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    for host in lbfiles.lb_hosts(inv):
        for f in ansible_files.lb_files(inv, host.name, authkey=AUTHKEY, token=TOKEN):
            dest = out / "files" / host.name / f.path.lstrip("/")
            assert dest.read_text() == f.content  # the renderers' bytes, unchanged
            assert stat.S_IMODE(dest.stat().st_mode) == (0o600 if f.secret else f.mode)
    for name in ("vars.yml", "inventory.yml", "manifest.json"):
        text = (out / name).read_text()
        assert TOKEN not in text and AUTHKEY not in text, name
    first = lbfiles.lb_hosts(inv)[0].name
    files = ansible_files.lb_files(inv, first, authkey=AUTHKEY, token=TOKEN)
    assert any(AUTHKEY in f.content for f in files) and any(TOKEN in f.content for f in files)
    data = yaml.safe_load((out / "vars.yml").read_text())
    assert data["rendered_dir"] == str(out / "files")
    assert data["lb_primary"] == inv.load_balancer.primary
    # the heartbeat step's line in shellfuncs, through YAML unchanged (quotes, `$`, braces)
    line = data["shellfuncs"]["line"]
    assert line == lbfiles.clustermsg_override() and re.search(data["shellfuncs"]["regexp"], line)


def test_etc_hosts_lines_are_the_prepare_steps() -> None:
    """The same lines as runbook.steps.prepare.hosts_lines (its LineInFile texts)."""
    from runbook.steps.prepare import hosts_lines

    inv = load_inventory(REPO / "lab" / "hosts.yaml")

    class Ctx:
        inventory = inv

    want = [line.line for line in hosts_lines(Ctx())]  # type: ignore[arg-type]
    got = [f"{e['ip']}\t{e['names']}" for e in ansible_files.etc_hosts_lines(inv)]
    assert got == want
