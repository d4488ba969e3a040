"""Every resource: changed on the first apply, ok on the second; checks read real state."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from runbook.core.remote import CommandFailed, DryRunViolation, Fact
from runbook.core.resources import (
    AptRepo,
    File,
    GuardedCommand,
    LineInFile,
    Packages,
    Resource,
    RestoredFile,
    Service,
    Sysctl,
    secret_backups_absent,
)
from tests.fakehost import LocalHost


@pytest.fixture
def host(tmp_path: Path) -> LocalHost:
    return LocalHost("h1", tmp_path / "state")


def converge(host: LocalHost, res: Resource) -> tuple[object, object]:
    """check → apply → check; returns (first change, second change)."""
    first = res.check(host, host.probe(res.probe()))
    if first is not None:
        host.touched.add(res.key)
        res.apply(host)
    second = res.check(host, host.probe(res.probe()))
    return first, second


def test_file_create_then_ok(host: LocalHost, tmp_path: Path) -> None:
    path = tmp_path / "etc" / "ha.d" / "ha.cf"
    f = File(str(path), "keepalive 1\ndeadtime 3\n", mode=0o600)
    first, second = converge(host, f)
    assert first is not None and first.action == "create"
    assert "+keepalive 1" in first.diff
    assert second is None
    assert path.read_text() == "keepalive 1\ndeadtime 3\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_file_update_shows_diff_and_keeps_backup_under_the_backup_root(
    host: LocalHost, tmp_path: Path
) -> None:
    path = tmp_path / "etc" / "haproxy.cfg"
    path.parent.mkdir()
    path.write_text("old line\n")
    os.chmod(path, 0o640)
    root = tmp_path / "backups"
    f = File(str(path), "new line\n", mode=0o640, backup_root=str(root))
    first, second = converge(host, f)
    assert first is not None and first.action == "update"
    assert "-old line" in first.diff and "+new line" in first.diff
    assert second is None
    backup = Path(f.backup_path)
    assert backup == root / str(path).lstrip("/")
    assert backup.read_text() == "old line\n" and stat.S_IMODE(backup.stat().st_mode) == 0o640
    assert stat.S_IMODE(backup.parent.stat().st_mode) == 0o700
    # nothing left beside the live file
    assert sorted(p.name for p in path.parent.iterdir()) == ["haproxy.cfg"]


@pytest.mark.parametrize(
    ("found", "restored"),
    [
        ("# /etc/x — managed by the runbook from hosts.yaml\n/var/log/x {\n}\n", True),
        ("/var/log/x {\n    missingok\n}\n", False),  # the package's (or nobody's) file
        ("# an operator's note\n# managed by the runbook? no: only the first line counts\n", False),
        (None, False),  # no file: nothing to put back
    ],
    ids=["ours", "package", "mark-not-first", "none"],
)
def test_restored_file_replaces_only_a_file_the_runbook_wrote(
    host: LocalHost, tmp_path: Path, found: str | None, restored: bool
) -> None:
    path = tmp_path / "logrotate.d" / "heartbeat"
    path.parent.mkdir()
    if found is not None:
        path.write_text(found)
    f = RestoredFile(str(path), "package rule\n", mark="managed by the runbook")
    first, second = converge(host, f)
    assert (first is not None) == restored and second is None
    assert (path.read_text() if path.exists() else None) == (
        "package rule\n" if restored else found
    )
    if restored:
        assert first is not None and "-/var/log/x {" in first.diff and "+package rule" in first.diff


def test_backup_root_defaults_to_the_runbook_directory(_backups_in_tmp: Path) -> None:
    assert File("/etc/ha.d/ha.cf", "").backup_path == f"{_backups_in_tmp}/etc/ha.d/ha.cf"


def test_new_file_makes_no_backup(host: LocalHost, tmp_path: Path, _backups_in_tmp: Path) -> None:
    converge(host, File(str(tmp_path / "motd"), "hi\n"))
    assert not _backups_in_tmp.exists()


def test_secret_file_is_never_backed_up(host: LocalHost, tmp_path: Path) -> None:
    path = tmp_path / "hcloud-failover.env"
    path.write_text("HCLOUD_TOKEN=old-token-0123456789\n")
    os.chmod(path, 0o600)
    root = tmp_path / "backups"
    f = File(str(path), "HCLOUD_TOKEN=new\n", mode=0o600, secret=True, backup_root=str(root))
    first, second = converge(host, f)
    assert first is not None and first.action == "update" and second is None
    assert path.read_text() == "HCLOUD_TOKEN=new\n"
    assert not root.exists()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and "old-token" in p.read_text()]
    assert leftovers == []


def test_old_backups_of_secret_files_are_removed_and_planned(
    host: LocalHost, tmp_path: Path
) -> None:
    authkeys = tmp_path / "authkeys"
    env = tmp_path / "hcloud-failover.env"
    cfg = tmp_path / "ha.cf"
    for p in (authkeys, env, cfg):
        p.write_text("current\n")
        Path(f"{p}.rb-bak").write_text("an earlier version\n")
    files = [
        File(str(authkeys), "current\n", secret=True),
        File(str(env), "current\n", secret=True),
        File(str(cfg), "current\n"),
    ]
    (cleanup,) = secret_backups_absent(files)
    first, second = converge(host, cleanup)
    assert first is not None and first.action == "remove"
    assert f"{authkeys}.rb-bak" in first.summary and f"{env}.rb-bak" in first.summary
    assert f"{cfg}.rb-bak" not in first.summary
    assert second is None
    assert not Path(f"{authkeys}.rb-bak").exists() and not Path(f"{env}.rb-bak").exists()
    assert Path(f"{cfg}.rb-bak").exists()  # not a secret: left alone
    assert secret_backups_absent(files[2:]) == []


def test_file_mode_only_change(host: LocalHost, tmp_path: Path) -> None:
    path = tmp_path / "authkeys"
    path.write_text("auth 1\n")
    os.chmod(path, 0o644)
    first, second = converge(host, File(str(path), "auth 1\n", mode=0o600))
    assert (
        first is not None
        and first.action == "chmod/chown"
        and first.summary == "644 root root -> 600 root root"
    )
    assert second is None and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_secret_file_diff_hides_content(host: LocalHost, tmp_path: Path) -> None:
    f = File(str(tmp_path / "authkeys"), "auth 1\n1 sha1 s3cr3tvalue\n", mode=0o600, secret=True)
    change = f.check(host, host.probe(f.probe()))
    assert change is not None and "s3cr3tvalue" not in change.diff


def test_file_content_travels_on_stdin_not_argv(host: LocalHost, tmp_path: Path) -> None:
    f = File(str(tmp_path / "env"), "HCLOUD_TOKEN=tok-abcdef123456\n", mode=0o600, secret=True)
    converge(host, f)
    assert all("tok-abcdef123456" not in cmd for cmd, _ in host.commands)


def test_file_validation_failure_installs_nothing(host: LocalHost, tmp_path: Path) -> None:
    path = tmp_path / "haproxy.cfg"
    path.write_text("good\n")
    f = File(str(path), "bad\n", validate="grep -q good %s")
    with pytest.raises(ValueError, match="validation failed"):
        f.apply(host)
    assert path.read_text() == "good\n"
    ok = File(str(path), "good too\n", validate="grep -q good %s")
    ok.apply(host)
    assert path.read_text() == "good too\n"


def test_line_in_file_add_replace_remove(host: LocalHost, tmp_path: Path) -> None:
    fstab = tmp_path / "fstab"
    fstab.write_text("UUID=1 / ext4 defaults 0 1\n/swapfile none swap sw 0 0\n")
    swap_off = LineInFile(
        str(fstab), "# /swapfile none swap sw 0 0", r"^[^#].*\sswap\s", present=False
    )
    first, second = converge(host, swap_off)
    assert first is not None and first.action == "remove"
    assert second is None and "swap" not in fstab.read_text()
    line = LineInFile(str(fstab), "tmpfs /tmp tmpfs defaults 0 0", r"^tmpfs /tmp ")
    first, second = converge(host, line)
    assert first is not None and first.action == "add" and second is None
    repl = LineInFile(str(fstab), "tmpfs /tmp tmpfs size=1G 0 0", r"^tmpfs /tmp ")
    first, second = converge(host, repl)
    assert first is not None and first.action == "replace" and second is None
    assert fstab.read_text().count("tmpfs /tmp") == 1


def test_line_in_file_edits_in_python_through_the_atomic_write_with_a_diff(
    host: LocalHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.0.0.2 old-name\n10.0.0.2 dup\n")
    os.chmod(hosts, 0o640)
    writes: list[tuple[str, bytes, int]] = []
    real_write = host.write_file

    def spy(path: str, content: bytes, **kw: object) -> None:
        writes.append((path, content, int(kw["mode"])))  # type: ignore[call-overload]
        real_write(path, content, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(host, "write_file", spy)
    line = LineInFile(str(hosts), "10.0.0.2 k8scontrol01", r"^10\.0\.0\.2[[:space:]]")
    first, second = converge(host, line)
    assert first is not None and first.action == "replace" and second is None
    assert "-10.0.0.2 old-name" in first.diff and "-10.0.0.2 dup" in first.diff
    assert "+10.0.0.2 k8scontrol01" in first.diff
    assert hosts.read_text() == "127.0.0.1 localhost\n10.0.0.2 k8scontrol01\n"
    assert stat.S_IMODE(hosts.stat().st_mode) == 0o640  # mode kept
    assert [(p, m) for p, _, m in writes] == [(str(hosts), 0o640)]
    assert not any(w in c for c, _ in host.commands for w in ("awk ", "grep ", "cat >"))


def test_line_in_file_appends_after_a_last_line_without_newline(
    host: LocalHost, tmp_path: Path
) -> None:
    conf = tmp_path / "99.conf"
    conf.write_text("vm.swappiness = 10")  # no newline at the end
    first, second = converge(host, LineInFile(str(conf), "net.ipv4.ip_forward = 1", r"^net"))
    assert first is not None and first.action == "add" and second is None
    # an append is shown by its line alone: the summary holds all of it, a diff only context
    assert first.summary == f"{conf}: net.ipv4.ip_forward = 1" and first.diff == ""
    assert conf.read_text() == "vm.swappiness = 10\nnet.ipv4.ip_forward = 1\n"


def test_line_in_file_keeps_bytes_that_are_not_utf8(host: LocalHost, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(b"# caf\xe9 (latin-1)\r\n10.0.0.2 old\n")
    line = LineInFile(str(hosts), "10.0.0.2 new", r"^10\.0\.0\.2[[:space:]]")
    first, second = converge(host, line)
    assert first is not None and "-10.0.0.2 old" in first.diff and second is None
    assert hosts.read_bytes() == b"# caf\xe9 (latin-1)\r\n10.0.0.2 new\n"


def test_file_diff_shows_a_missing_last_newline(host: LocalHost, tmp_path: Path) -> None:
    path = tmp_path / "motd"
    path.write_text("hello")
    os.chmod(path, 0o644)
    change = File(str(path), "hello\n").check(host, host.probe(File(str(path), "").probe()))
    assert change is not None and change.action == "update"
    assert "-hello\n\\ No newline at end of file\n+hello\n" in change.diff


def test_line_in_file_absent_on_a_missing_file_is_clean(host: LocalHost, tmp_path: Path) -> None:
    gone = LineInFile(str(tmp_path / "nofile"), "", r"swap", present=False)
    assert converge(host, gone) == (None, None)
    assert not (tmp_path / "nofile").exists() and host.mutating() == []


def test_sysctl_runtime_and_persistent(host: LocalHost, tmp_path: Path) -> None:
    conf = tmp_path / "sysctl.d" / "90-runbook.conf"
    conf.parent.mkdir()
    s = Sysctl("net.ipv4.ip_nonlocal_bind", "1", file=str(conf))
    first, second = converge(host, s)
    assert first is not None and "runtime 0 -> 1" in first.summary
    assert second is None
    assert "net.ipv4.ip_nonlocal_bind = 1" in conf.read_text()
    assert (host.state / "sysctl" / "net.ipv4.ip_nonlocal_bind").read_text().strip() == "1"


def test_sysctl_detects_runtime_drift(host: LocalHost, tmp_path: Path) -> None:
    conf = tmp_path / "90.conf"
    s = Sysctl("net.ipv4.ip_forward", "1", file=str(conf))
    converge(host, s)
    (host.state / "sysctl" / "net.ipv4.ip_forward").write_text("0\n")  # someone reset it
    change = s.check(host, host.probe(s.probe()))
    assert change is not None and "runtime 0 -> 1" in change.summary


def _installed(host: LocalHost, *names: str) -> None:
    (host.state / "pkgs").mkdir(parents=True, exist_ok=True)
    for n in names:
        (host.state / "pkgs" / n).touch()


def test_apt_repo_keyring_and_source(host: LocalHost, tmp_path: Path) -> None:
    _installed(host, "ca-certificates", "curl", "gpg")
    (tmp_path / "keyrings").mkdir()
    (tmp_path / "sources").mkdir()
    repo = AptRepo(
        "kubernetes",
        "deb [signed-by=/etc/apt/keyrings/k.gpg] https://pkgs.k8s.io/core:/stable:/v1.36/deb/ /",
        keyring=str(tmp_path / "keyrings" / "k.gpg"),
        key_url="https://pkgs.k8s.io/core:/stable:/v1.36/deb/Release.key",
        list_dir=str(tmp_path / "sources"),
    )
    first, second = converge(host, repo)
    assert first is not None and "keyring" in first.summary and "source" in first.summary
    assert second is None
    assert "apt-get update -q" in host.calls()


def test_packages_install_and_hold(host: LocalHost) -> None:
    pk = Packages(["kubelet", "kubeadm"], hold=True)
    first, second = converge(host, pk)
    assert first is not None and first.summary.startswith("install kubelet kubeadm")
    assert second is None
    assert any("--no-install-recommends" in c for c in host.calls())
    assert "apt-mark hold kubelet kubeadm" in host.calls()
    # a second converge runs no apt at all
    n = len(host.calls())
    assert converge(host, pk) == (None, None) and len(host.calls()) == n


def test_packages_only_missing_installed(host: LocalHost) -> None:
    (host.state / "pkgs").mkdir(parents=True, exist_ok=True)
    (host.state / "pkgs" / "haproxy").touch()
    pk = Packages(["haproxy", "heartbeat"])
    first, _ = converge(host, pk)
    assert first is not None and first.summary == "install heartbeat"
    installs = [c for c in host.calls() if " install " in f" {c} "]
    assert installs and "haproxy" not in installs[0].split("install", 1)[1]


def test_service_enable_start_then_reload_on_watched_change(
    host: LocalHost, tmp_path: Path
) -> None:
    host.add_unit("haproxy")
    cfg = File(str(tmp_path / "haproxy.cfg"), "global\n")
    svc = Service("haproxy", watch=[cfg.key], on_change="reload")
    first, second = converge(host, svc)
    assert first is not None and first.action == "enable+start" and second is None
    # nothing changed: no reload
    assert converge(host, svc) == (None, None)
    # the watched file changes in this run -> reload once
    f1, _ = converge(host, cfg)
    assert f1 is not None
    change = svc.check(host, host.probe(svc.probe()))
    assert change is not None and change.action == "reload" and cfg.key in change.summary
    svc.apply(host)
    assert host.calls()[-1] == "systemctl reload haproxy"
    assert svc.check(host, host.probe(svc.probe())) is None


def test_service_stopped(host: LocalHost) -> None:
    host.add_unit("apache2")
    (host.state / "units" / "apache2.active").touch()
    svc = Service("apache2", enabled=False, running=False)
    first, second = converge(host, svc)
    assert first is not None and first.action == "stop" and second is None


def test_guarded_command_runs_once(host: LocalHost, tmp_path: Path) -> None:
    marker = tmp_path / "initialised"
    cmd = GuardedCommand("init", f"touch {marker}", guard=f"test -e {marker}")
    first, second = converge(host, cmd)
    assert first is not None and first.action == "run" and second is None
    assert marker.exists()


def test_guarded_command_secret_via_stdin(host: LocalHost, tmp_path: Path) -> None:
    out = tmp_path / "token"
    cmd = GuardedCommand(
        "store",
        f"umask 077; cat > {out}",
        guard=f"test -s {out}",
        stdin=lambda: "join-token-abcdef",
    )
    converge(host, cmd)
    assert out.read_text() == "join-token-abcdef"
    assert all("join-token-abcdef" not in c for c, _ in host.commands)


def test_dry_run_host_refuses_mutation(tmp_path: Path) -> None:
    h = LocalHost("h", tmp_path / "s", dry_run=True)
    f = File(str(tmp_path / "x"), "x\n")
    assert f.check(h, h.probe(f.probe())) is not None  # planning works
    with pytest.raises(DryRunViolation):
        f.apply(h)
    assert not (tmp_path / "x").exists()


def test_apt_repo_fails_on_a_failed_key_download_instead_of_an_empty_keyring(
    host: LocalHost, tmp_path: Path
) -> None:
    """gpg but no curl (a minimal image): the apply fails at the download and leaves no keyring
    (a pipe `curl | gpg --dearmor` left an empty one), and no source."""
    _installed(host, "gpg")
    repo = AptRepo(
        "kubernetes",
        "deb [signed-by=/k.gpg] https://pkgs.k8s.io/core:/stable:/v1.36/deb/ /",
        keyring=str(tmp_path / "keyrings" / "k.gpg"),
        key_url="https://pkgs.k8s.io/core:/stable:/v1.36/deb/Release.key",
        list_dir=str(tmp_path / "sources"),
    )
    with pytest.raises(CommandFailed, match="curl: command not found"):
        repo.apply(host)
    assert not (tmp_path / "keyrings" / "k.gpg").exists()
    assert not (tmp_path / "sources" / "kubernetes.list").exists()


DOCKER = "deb [signed-by=/d.gpg] https://download.docker.com/linux"


@pytest.mark.parametrize(
    ("os_line", "suite_line"),
    [
        ("debian|bookworm", f"{DOCKER}/debian bookworm stable"),
        ("debian|trixie", f"{DOCKER}/debian trixie stable"),
        ("ubuntu|noble", f"{DOCKER}/ubuntu noble stable"),
    ],
)
def test_apt_repo_line_in_the_hosts_own_release(
    host: LocalHost, os_line: str, suite_line: str
) -> None:
    """Docker's repository: the suite and the distribution come from the host's os-release."""
    repo = AptRepo(
        "docker",
        "deb [signed-by=/d.gpg] https://download.docker.com/linux/{id} {codename} stable",
        keyring="/d.gpg",
        key_url="https://download.docker.com/linux/{id}/gpg",
    )
    assert repo.probe().startswith(". /etc/os-release;")
    assert repo.check(host, Fact(f"{os_line}\nkey\n{suite_line}", 0)) is None
    change = repo.check(host, Fact(f"{os_line}\nkey\n", 0))
    assert change is not None and change.summary.endswith(suite_line)
    other = "debian|bookworm" if "ubuntu" in os_line else "ubuntu|noble"
    assert repo.check(host, Fact(f"{other}\nkey\n{suite_line}", 0)) is not None


def test_line_in_file_with_fields_ignores_spacing_only(host: LocalHost, tmp_path: Path) -> None:
    """/etc/hosts: a line with the same fields but other spacing is already right (no change,
    no diff in the plan); other fields are still replaced, and exact matching stays the default."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n10.143.0.3 k8scontrol02\n")
    same = LineInFile(
        str(hosts), "10.143.0.3\tk8scontrol02", r"^10\.143\.0\.3[[:space:]]", fields=True
    )
    assert same.check(host, host.probe(same.probe())) is None
    exact = LineInFile(str(hosts), "10.143.0.3\tk8scontrol02", r"^10\.143\.0\.3[[:space:]]")
    change = exact.check(host, host.probe(exact.probe()))
    assert change is not None and change.action == "replace"
    other = LineInFile(
        str(hosts),
        "10.143.0.3\tk8scontrol02.example.org k8scontrol02",
        r"^10\.143\.0\.3\s",
        fields=True,
    )
    first, second = converge(host, other)
    assert first is not None and first.action == "replace" and second is None
    assert "10.143.0.3\tk8scontrol02.example.org k8scontrol02\n" in hosts.read_text()
