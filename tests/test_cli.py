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
    "cluster.cni",
    "cluster.admin-user",
    "cluster.insecure-api",
    "cluster.certs",
    "cluster.backup",
    "cluster.restore",
    "cluster.upgrade",
    "cluster.remove",
    "cluster.renew-certs",
    "patch",
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
    "cluster.cni",
    "cluster.admin-user",
    "cluster.insecure-api",
    "cluster.certs",
    "walkthrough",
    "patch",
    "cluster.remove",
    "cluster.renew-certs",
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


def squashed(text: str) -> str:
    """`text` without any whitespace: rich wraps a message at the terminal's width, at a space
    (the space becomes the line break) or inside a long word such as a temp path (a break is
    added), so a message is compared without whitespace (a longer temp path under xdist once
    failed a compare that only dropped the line breaks)."""
    return "".join(text.split())


def test_list_shows_the_whole_namespace() -> None:
    out = inv("--list").stdout
    listed = {
        line.split()[0]
        for line in out.splitlines()[1:]
        if line.strip() and line.startswith("  ") and not line.startswith("   ")
    }
    assert set(NAMESPACE) <= listed, set(NAMESPACE) - listed


def test_cluster_weave_is_another_name_for_cluster_cni() -> None:
    """Step 8 is `cluster.cni`; the post's name `cluster.weave` still runs the same task."""
    from runbook.tasks import namespace

    ns = namespace()
    assert ns["cluster.weave"] is ns["cluster.cni"]
    assert ns["cluster.cni"].name == "cni"
    listed = [ln for ln in inv("--list").stdout.splitlines() if "cluster.weave" in ln]
    assert listed and listed[0].split()[:2] == ["cluster.cni", "(cluster.weave)"], listed
    help_cni, help_weave = (
        inv("--help", "cluster.cni").stdout,
        inv("--help", "cluster.weave").stdout,
    )
    assert "Also named cluster.weave" in help_cni
    assert help_weave == help_cni.replace("cluster.cni [--options]", "cluster.weave [--options]")
    # the same body: the same role check, naming the task by its name
    runs = [
        inv(name, "--host", "k8node01", "--dry-run", inventory=REPO / "hosts.yaml")
        for name in ("cluster.cni", "cluster.weave")
    ]
    assert [r.returncode for r in runs] == [2, 2]
    assert runs[0].stdout + runs[0].stderr == runs[1].stdout + runs[1].stderr
    assert "task cluster.cni runs on control-plane hosts" in runs[1].stdout + runs[1].stderr


@pytest.mark.parametrize("task", STEP_TASKS)
def test_every_step_task_has_the_common_options_with_help(task: str) -> None:
    out = inv("--help", task).stdout
    for opt in ("--host", "--dry-run", "--yes"):
        assert opt in out, f"{task} lacks {opt}"
    for line in out.splitlines():
        if line.strip().startswith("-"):
            assert len(line.split(None, 1)) == 2 or "  " in line.strip(), f"no help: {line}"


def home_with_key(tmp_path: Path) -> dict[str, str]:
    """HOME holding the example inventory's ~/.ssh/id_ed25519 (validate checks it exists)."""
    (tmp_path / ".ssh").mkdir(exist_ok=True)
    (tmp_path / ".ssh" / "id_ed25519").write_text("not a real key\n")
    return {"HOME": str(tmp_path), "SSH_AUTH_SOCK": ""}


def test_validate_passes_on_hosts_yaml(tmp_path: Path) -> None:
    r = inv("validate", inventory=REPO / "hosts.yaml", env=home_with_key(tmp_path))
    assert r.returncode == 0, r.stderr + r.stdout
    assert "valid: 7 hosts" in r.stdout and "10.143.0.50" in r.stdout


def bad_inventory(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    mutate(data)
    p = tmp_path / "bad.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


@pytest.mark.bad_input
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


@pytest.mark.bad_input
@pytest.mark.parametrize("args", [("prepare", "--yes"), ("status", "--no-cloud")])
def test_bad_inventory_exits_2_before_touching_hosts(tmp_path: Path, args: tuple[str, ...]) -> None:
    p = bad_inventory(tmp_path, lambda d: d["load_balancer"].update(primary="k8node01"))
    r = inv(*args, inventory=p)
    assert r.returncode == 2 and "load_balancer.primary" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr


@pytest.mark.bad_input
def test_restore_bad_input_exits_2_before_touching_hosts(tmp_path: Path) -> None:
    r = inv("cluster.restore", "--snapshot", str(tmp_path / "none.db"), "--confirm", "skgm")
    assert r.returncode == 2 and "none.db: no such file" in r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    snap = tmp_path / "s.db"
    snap.write_bytes(b"x")
    p = bad_inventory(tmp_path, lambda d: d["kubernetes"].update(backup={"keep": 0}))
    r = inv("cluster.restore", "--snapshot", str(snap), inventory=p)
    assert r.returncode == 2 and "kubernetes.backup.keep" in r.stdout + r.stderr
    r = inv("cluster.backup", "--dry-run", inventory=p)
    assert r.returncode == 2 and "kubernetes.backup.keep" in r.stdout + r.stderr


@pytest.mark.bad_input
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


@pytest.mark.bad_input
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
        (("--only", "nosuch"), "--only: 'nosuch' is not one of prepare,"),
        (("--from", "later"), "--from: 'later' is not one of prepare,"),
        (("--from", "lb", "--only", "network"), "--from and --only: give one of them"),
    ],
)
def test_walkthrough_from_and_only_name_a_step(args: tuple[str, ...], message: str) -> None:
    r = inv("walkthrough", "--yes", *args, inventory=REPO / "hosts.yaml")
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert message in text and "Traceback" not in text


# --- usage errors: Invoke's message, exit 2 (bad input), never a traceback, nothing run ---

USAGE_ERRORS = [
    (("validate", "extra"), "No idea what 'extra' is!"),
    (("valdate",), "No idea what 'valdate' is!"),
    (("--nosuch-flag",), "No idea what '--nosuch-flag' is!"),
    (("render", "--host", "k8slb01"), "did not receive required positional arguments: 'out'"),
    (("--help", "nosuch"), "No idea what 'nosuch' is!"),
    (("--list", "nosuch"), "Sub-collection 'nosuch' not found!"),
    # a value-less --host used to mean "every host" (and --yes confirmed it)
    (("prepare", "--host"), "--host needs a value"),
    (("prepare", "--host", "--yes"), "--host needs a value"),
    (("walkthrough", "--host", "--yes"), "--host needs a value"),
    (("cluster.join", "--host", "k8node01", "--host", "--dry-run"), "--host needs a value"),
    (("lb.setup", "--host=", "--dry-run"), "--host: '': not in the inventory"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("args", "fragment"), [pytest.param(a, f, id=" ".join(a)) for a, f in USAGE_ERRORS]
)
def test_usage_errors_exit_2_with_invokes_message(args: tuple[str, ...], fragment: str) -> None:
    r = inv(*args, inventory=REPO / "hosts.yaml", env={"HCLOUD_TOKEN": "x"})
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert fragment in text and "Traceback" not in text, text


def _config_file(tmp_path: Path, kind: str) -> Path:
    suffix = {"json": "json", "py": "py", "txt": "txt"}.get(kind, "yaml")
    path = tmp_path / f"{kind}.{suffix}"
    if kind in ("json", "py", "txt"):
        path.write_text({"json": '{"runbook": ', "py": "runbook = {\n", "txt": "x"}[kind])
    elif kind == "broken":
        path.write_text("runbook: {inventory: [unclosed\n")
    elif kind == "bomb":
        path.write_text(
            "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 12))
        )
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    return path


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("kind", "fragment"),
    [
        ("missing", "-f {path}: no such file"),
        ("broken", "{path}: line 2, column 1: invalid YAML"),
        ("bomb", "{path}: (yaml): more than 50000 values once its aliases are expanded"),
        ("fifo", "{path}: (file): not a regular file (it is a FIFO)"),
        ("directory", "-f {path}: is a directory"),
        ("json", "-f {path}: JSONDecodeError: Expecting value"),
        ("py", "-f {path}: SyntaxError: '{{' was never closed"),
        ("txt", "-f {path}: UnknownFileType: Config files of type 'txt'"),
    ],
)
def test_runtime_config_file_problems_exit_2(tmp_path: Path, kind: str, fragment: str) -> None:
    path = _config_file(tmp_path, kind)
    r = inv("-f", str(path), "validate")
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert fragment.format(path=path) in text and "Traceback" not in text, text


def test_inv_is_the_runbooks_entry_point() -> None:
    """The CLI contract above needs runbook.cli's `inv`, not Invoke's (re-run bin/setup)."""
    assert "from runbook.cli import main" in Path(INV).read_text(), "run: bash bin/setup"


def test_inventory_in_a_config_file_is_relative_to_that_file(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "hosts.yaml").write_text((REPO / "hosts.yaml").read_text())
    cfg = tmp_path / "site" / "runbook.yaml"
    cfg.write_text("runbook:\n  inventory: hosts.yaml\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = inv("-f", str(cfg), "validate", cwd=elsewhere, env=home_with_key(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert squashed(str(tmp_path / "site" / "hosts.yaml")) in squashed(r.stdout)


# --- the operator's own files the inventory names ---


def ssh_files_inventory(tmp_path: Path, **ssh: object) -> Path:
    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["ssh"].update(ssh)

    return bad_inventory(tmp_path, mutate)


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("ssh", "fragment"),
    [
        ({"identity": "keys/missing"}, "ssh.identity: {tmp}/keys/missing does not exist"),
        ({"identity": "."}, "ssh.identity: {tmp} is a directory, not a file"),
        ({"identity": "/dev/null"}, "ssh.identity: /dev/null is not a regular file"),
        ({"identity": None, "known_hosts": "kh"}, "ssh.known_hosts: {tmp}/kh is a directory"),
        ({"identity": "k\0ey"}, "ssh.identity: {tmp}/k\0ey is not a valid path"),
        (
            {"identity": None, "config_file": "ssh/missing"},
            "ssh.config_file: {tmp}/ssh/missing does not exist",
        ),
        ({"identity": None, "config_file": "kh"}, "ssh.config_file: {tmp}/kh is a directory"),
        (
            {"identity": None, "config_file": "loop_config"},
            "hosts.k8slb01.address: k8slb01.skgm.de: the ssh_config's ProxyJump leads through "
            "more than 8 jump hosts",
        ),
    ],
    ids=[
        "identity-missing",
        "identity-dir",
        "identity-device",
        "known-hosts-dir",
        "nul",
        "ssh-config-missing",
        "ssh-config-dir",
        "ssh-config-jump-loop",
    ],
)
def test_validate_checks_ssh_files(tmp_path: Path, ssh: dict[str, object], fragment: str) -> None:
    (tmp_path / "kh").mkdir()
    (tmp_path / "loop_config").write_text(
        "Host a\n    ProxyJump b\nHost b\n    ProxyJump a\nHost *\n    ProxyJump a\n"
    )
    p = ssh_files_inventory(tmp_path, **ssh)
    r = inv("validate", inventory=p, env={"SSH_AUTH_SOCK": ""})
    text = squashed(r.stdout + r.stderr)
    assert r.returncode == 2, text
    want = squashed(f"{p.name}: {fragment.format(tmp=tmp_path)}")
    assert want in text.replace(squashed(str(p)), p.name), text


def test_missing_identity_is_a_warning_when_an_agent_runs(tmp_path: Path) -> None:
    p = ssh_files_inventory(tmp_path, identity="keys/missing")
    r = inv("validate", inventory=p, env={"SSH_AUTH_SOCK": str(tmp_path / "agent.sock")})
    text = squashed(r.stdout + r.stderr)
    assert r.returncode == 0, text
    assert "warning" in text and squashed("an ssh agent may hold the key") in text


@pytest.mark.bad_input
@pytest.mark.parametrize(
    "args",
    [("prepare", "--yes"), ("walkthrough", "--yes"), ("lb.failover-drill", "--yes")],
    ids=lambda a: a[0],
)
def test_a_connecting_task_stops_at_a_missing_identity_before_connecting(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    p = unreachable_inventory(tmp_path)
    data = yaml.safe_load(p.read_text())
    data["ssh"]["identity"] = str(tmp_path / "missing_key")
    p.write_text(yaml.safe_dump(data))
    r = inv(*args, inventory=p, env={"SSH_AUTH_SOCK": "", "HCLOUD_TOKEN": "tok"})
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert squashed("missing_key does not exist") in squashed(text), text
    assert "unreachable" not in text
    assert not (tmp_path / "known_hosts").exists()


@pytest.mark.bad_input
def test_a_connecting_task_stops_at_a_missing_ssh_config_before_connecting(
    tmp_path: Path,
) -> None:
    p = unreachable_inventory(tmp_path)
    data = yaml.safe_load(p.read_text())
    data["ssh"]["config_file"] = "no_such_ssh_config"
    p.write_text(yaml.safe_dump(data))
    r = inv("prepare", "--yes", inventory=p, env={"SSH_AUTH_SOCK": "", "HCLOUD_TOKEN": "tok"})
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    want = f"ssh.config_file: {tmp_path}/no_such_ssh_config does not exist"
    assert squashed(want) in squashed(text), text
    assert "unreachable" not in text and "Traceback" not in text
    assert not (tmp_path / "known_hosts").exists()


def test_inventory_in_the_projects_invoke_yaml_is_relative_to_it(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "site").mkdir(parents=True)
    (project / "site" / "hosts.yaml").write_text((REPO / "hosts.yaml").read_text())
    (project / "tasks.py").write_text("from runbook.tasks import namespace\n\nns = namespace()\n")
    (project / "invoke.yaml").write_text("runbook:\n  inventory: site/hosts.yaml\n")
    e = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    r = subprocess.run(
        [INV, "-r", str(project), "validate"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**e, **home_with_key(tmp_path), "COLUMNS": "200"},
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(project / "site" / "hosts.yaml") in r.stdout


def test_ctrl_c_in_a_task_without_the_step_engine_exits_130(tmp_path: Path) -> None:
    """`inv status` (no step engine) interrupted while it waits for SSH: 130 and one line, not
    Invoke's silent exit 1. The hosts' proxy hangs (no SSH banner), nothing leaves the machine."""
    import signal
    import time

    def mutate(d: dict) -> None:  # type: ignore[type-arg]
        d["ssh"].update(
            identity=None,
            known_hosts=str(tmp_path / "known_hosts"),
            connect_timeout=20,
            proxy_command="sh -c 'sleep 15' %h %p",
        )

    e = {k: v for k, v in os.environ.items() if not k.startswith("INVOKE_")}
    e.update(INVOKE_RUNBOOK_INVENTORY=str(bad_inventory(tmp_path, mutate)), HCLOUD_TOKEN="")
    # files, not pipes: the hanging proxies inherit stdout and would hold a pipe open
    with (tmp_path / "out").open("w+") as fo, (tmp_path / "err").open("w+") as fe:
        p = subprocess.Popen(
            [INV, "-r", str(REPO), "status", "--no-cloud"],
            stdout=fo,
            stderr=fe,
            stdin=subprocess.DEVNULL,
            env=e,
        )
        time.sleep(3)  # well into the SSH connects (each waits up to 20 s for a banner)
        t0 = time.monotonic()
        p.send_signal(signal.SIGINT)
        rc = p.wait(timeout=30)
        took = time.monotonic() - t0
        out, err = (tmp_path / "out").read_text(), (tmp_path / "err").read_text()
    assert rc == 130, out + err
    assert took < 5, took
    assert "interrupted" in err and "Traceback" not in out + err
