"""The real `inv` CLI: namespace, help text, exit codes, bad input, render."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
INV = str(Path(sys.executable).parent / "inv")

NAMESPACE = [
    "prepare",
    "network",
    "lb.setup",
    "lb.heartbeat",
    "lb.haproxy",
    "lb.status",
    "lb.failover-drill",
    "cluster.init",
    "cluster.join",
    "cluster.weave",
    "cluster.admin-user",
    "cluster.insecure-api",
    "cluster.certs",
    "walkthrough",
    "status",
    "validate",
    "render",
    "lab.up",
    "lab.down",
    "lab.status",
]
STEP_TASKS = [
    "prepare",
    "network",
    "lb.setup",
    "lb.heartbeat",
    "lb.haproxy",
    "cluster.init",
    "cluster.join",
    "cluster.weave",
    "cluster.admin-user",
    "cluster.insecure-api",
    "cluster.certs",
    "walkthrough",
]


def inv(
    *args: str, inventory: Path | None = None, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    e["COLUMNS"] = "200"
    if inventory is not None:
        e["INVOKE_RUNBOOK_INVENTORY"] = str(inventory)
    e.update(env or {})
    return subprocess.run(
        [INV, "-r", str(REPO), *args],
        capture_output=True,
        text=True,
        env=e,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def test_list_shows_the_whole_namespace() -> None:
    out = inv("--list").stdout
    listed = {
        line.split()[0]
        for line in out.splitlines()[1:]
        if line.strip() and line.startswith("  ") and not line.startswith("   ")
    }
    assert set(NAMESPACE) <= listed, set(NAMESPACE) - listed


@pytest.mark.parametrize("task", STEP_TASKS)
def test_every_step_task_has_the_common_options_with_help(task: str) -> None:
    out = inv("--help", task).stdout
    for opt in ("--host", "--dry-run", "--yes"):
        assert opt in out, f"{task} lacks {opt}"
    for line in out.splitlines():
        if line.strip().startswith("-"):
            assert len(line.split(None, 1)) == 2 or "  " in line.strip(), f"no help: {line}"


def test_validate_passes_on_hosts_yaml() -> None:
    r = inv("validate", inventory=REPO / "hosts.yaml")
    assert r.returncode == 0, r.stderr + r.stdout
    assert "valid: 7 hosts" in r.stdout and "10.143.0.50" in r.stdout


def bad_inventory(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    mutate(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_validate_lists_all_problems_exit_2_no_traceback(tmp_path: Path) -> None:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["hcloud"]["network"]["ip_range"] = "10.0.0.0/8"
        d["kubernetes"]["pod_subnet"] = "10.32.0.0/12"
        d["load_balancer"]["vip"] = "10.143.0.5"

    p = bad_inventory(tmp_path, mutate)
    r = inv("validate", inventory=p)
    assert r.returncode == 2
    text = r.stdout + r.stderr
    assert "Traceback" not in text
    assert f"{p.name}: load_balancer.vip" in text.replace(str(p), p.name)
    assert "10.32.0.0/12" in text and "10.0.0.0/8" in text


@pytest.mark.parametrize("args", [("prepare", "--yes"), ("status", "--no-cloud")])
def test_bad_inventory_exits_2_before_touching_hosts(tmp_path: Path, args: tuple[str, ...]) -> None:
    p = bad_inventory(tmp_path, lambda d: d["load_balancer"].update(primary="k8node01"))
    r = inv(*args, inventory=p)
    assert r.returncode == 2 and "load_balancer.primary" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


def test_unknown_and_wrong_role_host_exit_2() -> None:
    r = inv(
        "lb.setup",
        "--host",
        "k8node01",
        "--host",
        "nosuch",
        "--dry-run",
        inventory=REPO / "hosts.yaml",
    )
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert "nosuch" in text and "not in the inventory" in text and "k8node01" in text


def test_missing_token_is_bad_input(tmp_path: Path) -> None:
    r = inv("network", "--dry-run", inventory=REPO / "hosts.yaml", env={"HCLOUD_TOKEN": ""})
    assert r.returncode == 2
    assert "HCLOUD_TOKEN" in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr


def unreachable_inventory(tmp_path: Path) -> Path:
    """hosts.yaml with every host on a closed loopback port: refused at once, nothing leaves."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["ssh"].update(port=port, identity=None, known_hosts=str(tmp_path / "known_hosts"))
        for i, h in enumerate(d["hosts"].values()):
            h["address"] = f"127.0.0.{i + 2}"

    return bad_inventory(tmp_path, mutate)


def test_status_with_every_host_down_exits_1_listing_why(tmp_path: Path) -> None:
    r = inv("status", inventory=unreachable_inventory(tmp_path), env={"HCLOUD_TOKEN": ""})
    text = r.stdout + r.stderr
    assert r.returncode == 1, text
    assert "Traceback" not in text
    assert "hosts (0/7 reachable over SSH)" in text and text.count(" no: ") == 7
    assert "k8scontrol01: unreachable over SSH" in text
    assert "cloud API not asked or not reachable" in text and "HCLOUD_TOKEN" in text
    assert "status: degraded problems=" in text


def test_status_options_have_help() -> None:
    out = inv("--help", "status").stdout
    for opt in ("--verbose", "--accept-new-host-keys", "--[no-]cloud"):
        line = next(ln for ln in out.splitlines() if opt in ln)
        assert len(line.split(opt, 1)[1].strip()) > 10, line


def test_walkthrough_without_tty_or_yes_exits_3_at_once() -> None:
    r = inv("walkthrough", inventory=REPO / "hosts.yaml")
    text = r.stdout + r.stderr
    assert r.returncode == 3, text
    assert "--yes" in text and "Traceback" not in text


def test_render_writes_files_and_touches_no_host(tmp_path: Path) -> None:
    r = inv(
        "render", "--host", "k8slb01", "--out", str(tmp_path / "out"), inventory=REPO / "hosts.yaml"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert files, r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--only", "nosuch"), "--only: 'nosuch' is not one of prepare, network, lb"),
        (("--from", "later"), "--from: 'later' is not one of prepare, network, lb"),
        (("--from", "lb", "--only", "network"), "--from and --only: give one of them"),
    ],
)
def test_walkthrough_from_and_only_name_a_step(args: tuple[str, ...], message: str) -> None:
    r = inv("walkthrough", "--yes", *args, inventory=REPO / "hosts.yaml")
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert message in text and "Traceback" not in text
