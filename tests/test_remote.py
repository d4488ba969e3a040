"""SSH connections: the ProxyCommand child in its own session, one line per unreachable host,
no paramiko traceback on stderr."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import paramiko
import pytest

from runbook.core.remote import CommandTimeout, Host, HostKeyPolicy, Result, SSHHost
from runbook.core.sshconn import SessionProxyCommand, why_unreachable

REPO = Path(__file__).resolve().parents[1]


def test_proxy_command_runs_in_its_own_session_and_is_reaped() -> None:
    """The terminal's Ctrl-C goes to its foreground process group: the proxy must not be in it."""
    proxy = SessionProxyCommand("sleep 30")
    pid = proxy.process.pid
    try:
        assert os.getsid(pid) == pid != os.getsid(0)
        assert os.getpgid(pid) != os.getpgid(0)
    finally:
        proxy.close()
    assert proxy.process.returncode is not None  # terminated and waited for: no zombie


SILENT_HOST = """
import sys
from pathlib import Path
from types import SimpleNamespace
from runbook.core.remote import HostKeyPolicy, HostUnreachable, SSHHost
ssh = SimpleNamespace(
    user="root", port=22, connect_timeout=1, proxy_command="sleep 30", model_fields_set=set()
)
inventory = SimpleNamespace(ssh=ssh, identity_path=None, ssh_config_files=())
spec = SimpleNamespace(name="k8slb01", address="192.0.2.10", gateway=None)
host = SSHHost(spec, inventory, keys=HostKeyPolicy(Path(sys.argv[1])))
try:
    host.query("true")
except HostUnreachable as exc:
    print(exc)
host.close()
"""


def test_a_silent_host_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    """A proxy that connects but never speaks SSH (a host that accepts and hangs); in a process of
    its own, as on the CLI (pytest's log capture would hide logging's stderr fallback)."""
    r = subprocess.run(
        [sys.executable, "-c", SILENT_HOST, str(tmp_path / "known_hosts")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.stdout == "k8slb01: unreachable: no SSH banner within 1 s\n", r.stdout + r.stderr
    assert r.stderr == ""


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (paramiko.SSHException("Error reading SSH protocol banner"), "no SSH banner within 2 s"),
        (
            paramiko.SSHException("No existing session"),
            "no SSH handshake within 2 s",
        ),
        (paramiko.ProxyCommandFailure("nc x 22", "Broken pipe"), "proxy command failed: "),
        (ConnectionRefusedError(111, "Connection refused"), "[Errno 111] Connection refused"),
    ],
)
def test_why_unreachable_says_it_in_one_line(exc: BaseException, line: str) -> None:
    text = why_unreachable(exc, timeout=2)
    assert text.startswith(line) and "\n" not in text


def test_proxy_eof_is_the_end_of_the_connection_not_a_spin() -> None:
    """paramiko's ProxyCommand.recv ignores EOF (the proxy's peer, e.g. a rebooting host's sshd,
    went away): the transport then waited forever. Ours returns b"", which paramiko reads as a
    closed connection."""
    proxy = SessionProxyCommand("printf SSH-2.0-x")
    proxy.settimeout(2)
    try:
        assert proxy.recv(100) == b"SSH-2.0-x"
        assert proxy.recv(100) == b""
    finally:
        proxy.close()


def test_closing_the_proxy_under_a_recv_never_lets_it_read_another_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CI 75: at the end of `inv patch --dry-run` the recap's lazy import of a module failed
    with a SyntaxError from the module's 17th byte on. paramiko's transport thread was in the
    proxy's recv, past its select, when the run closed the connection: the pipe's descriptor
    number went to the module file the importer opened next, and the recv read 16 bytes of it
    (an SSH packet's first block). Here the recv is held right after its select said ready,
    `close` runs in another thread, and the test opens files (the lowest free numbers first);
    then the recv goes on. No file may lose a byte, and the recv reads nothing after close."""
    import select as select_module
    import threading

    import runbook.core.sshconn as sshconn

    proxy = SessionProxyCommand("sleep 30")
    in_select, go_on = threading.Event(), threading.Event()
    real_select = select_module.select

    def held_select(r: list, w: list, x: list, timeout: float | None = None) -> tuple:
        in_select.set()
        go_on.wait(10)
        return (r, [], [])  # "ready": the recv's next step is its read

    monkeypatch.setattr(sshconn.select, "select", held_select)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(proxy.recv(16)), daemon=True)
    reader.start()
    assert in_select.wait(5)
    closer = threading.Thread(target=proxy.close, daemon=True)
    closer.start()
    time.sleep(0.5)  # close has run as far as it will before the recv goes on
    content = b"0123456789abcdefghijklmnopqrstuvwxyz\n"
    files = []
    for i in range(4):
        (tmp_path / f"f{i}").write_bytes(content)
        files.append(open(tmp_path / f"f{i}", "rb"))  # noqa: SIM115 - closed below
    go_on.set()
    reader.join(10)
    monkeypatch.setattr(sshconn.select, "select", real_select)
    closer.join(10)
    try:
        assert [f.read() for f in files] == [content] * 4
        assert got == [b""]
    finally:
        for f in files:
            f.close()
    assert proxy.process.returncode is not None and proxy.process.stdout is not None
    assert proxy.process.stdout.closed  # closed once the recv had left


def test_auth_uses_the_key_file_or_the_agent_when_the_named_key_is_missing(tmp_path: Path) -> None:
    """validate accepts a missing ssh.identity with a warning when SSH_AUTH_SOCK is set (an agent
    may hold the key): the connection must then ask the agent, not fail on every host."""
    from runbook.core.remote import auth_kwargs

    key = tmp_path / "id_ed25519"
    key.write_text("k")
    assert auth_kwargs(key) == {
        "key_filename": [str(key)],
        "look_for_keys": False,
        "allow_agent": False,
    }
    assert auth_kwargs(tmp_path / "missing") == {"look_for_keys": False, "allow_agent": True}
    assert auth_kwargs(None) == {"look_for_keys": True, "allow_agent": False}


class _ShellHost(Host):
    """A Host whose commands run in a local shell (the base class's file transfer paths)."""

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        r = subprocess.run(
            ["sh", "-c", cmd], input=stdin, capture_output=True, text=True, timeout=timeout
        )
        return Result(r.stdout, r.stderr, r.returncode)


def test_download_is_private_from_the_first_byte_and_upload_takes_a_local_file(
    tmp_path: Path,
) -> None:
    """A snapshot copied to the operator is 0600 in a 0700 directory, put in place atomically;
    a local file given as content is written as it is (restore uploads a snapshot so)."""
    host = _ShellHost("h")
    remote = tmp_path / "remote.db"
    remote.write_bytes(bytes(range(256)) * 4096)
    dest = tmp_path / "local" / "snap.db"
    assert host.download(str(remote), dest)
    assert dest.read_bytes() == remote.read_bytes()
    assert dest.stat().st_mode & 0o777 == 0o600 and dest.parent.stat().st_mode & 0o777 == 0o700
    assert not list(dest.parent.glob("*.rb-tmp"))
    assert not host.download(str(tmp_path / "missing"), tmp_path / "local" / "other.db")
    assert not (tmp_path / "local" / "other.db").exists()
    target = tmp_path / "up" / "restore.db"
    host.write_file(str(target), dest, mode=0o600, owner=_me(), group=_my_group(), backup=False)
    assert target.read_bytes() == remote.read_bytes() and target.stat().st_mode & 0o777 == 0o600


def _me() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _my_group() -> str:
    import grp

    return grp.getgrgid(os.getgid()).gr_name


class _HangingConnection:
    """A Fabric connection whose command hangs past its timeout (invoke raises CommandTimedOut,
    also with warn=True)."""

    user = "root"

    def run(self, cmd: str, **kw: object) -> object:
        from invoke.exceptions import CommandTimedOut
        from invoke.runners import Result as InvokeResult

        raise CommandTimedOut(InvokeResult(command=cmd), timeout=kw["timeout"])

    def close(self) -> None:
        pass


def test_a_command_that_hangs_is_a_command_timeout_naming_the_host_and_command(
    tmp_path: Path,
) -> None:
    """CI (reboot re-run): a look at a host that went down under it hung for its 20 s timeout;
    invoke's CommandTimedOut went up as a step failure. The host layer names it CommandTimeout
    (the reboot wait reads it as "not back yet")."""
    from types import SimpleNamespace

    conn = _HangingConnection()
    connector = SimpleNamespace(host=lambda spec: conn)
    inventory = SimpleNamespace(ssh=SimpleNamespace(connect_timeout=5))
    spec = SimpleNamespace(name="k8scontrol03")
    host = SSHHost(
        spec,  # type: ignore[arg-type]
        inventory,  # type: ignore[arg-type]
        keys=HostKeyPolicy(tmp_path / "known_hosts"),
        connector=connector,  # type: ignore[arg-type]
    )
    with pytest.raises(CommandTimeout) as info:
        host.query("test -e /run/runbook-reboot-pending", timeout=20)
    assert str(info.value) == (
        "k8scontrol03: `test -e /run/runbook-reboot-pending` did not complete within 20 s"
    )
