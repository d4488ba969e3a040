"""The SSH host-key policy (runbook/core/remote.py) against a real SSH server on loopback.

The server is paramiko's server side in a thread, with a host key of its own: an unknown key is
refused unless --accept-new-host-keys (then recorded in the inventory's known_hosts), a changed
key is always refused, and the connection that refuses runs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import select
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from runbook.core.remote import HostKeyPolicy, HostUnreachable, SSHHost, UnknownHostKey
from runbook.inventory import Inventory, load_inventory

REPO = Path(__file__).resolve().parents[1]


class _Server(paramiko.ServerInterface):
    """Accepts the password `pw` and one exec request; the command is recorded, never run.
    A direct-tcpip channel (a ProxyJump through this server) is forwarded to its destination."""

    def __init__(self, commands: list[str]) -> None:
        self.commands = commands
        self.event = threading.Event()
        self.forwards: dict[int, tuple[str, int]] = {}

    def check_channel_direct_tcpip_request(
        self, chanid: int, origin: tuple[str, int], destination: tuple[str, int]
    ) -> int:
        self.forwards[chanid] = destination
        return paramiko.OPEN_SUCCEEDED

    def get_allowed_auths(self, username: str) -> str:
        return "password"

    def check_auth_password(self, username: str, password: str) -> int:
        ok = password == "pw"
        return paramiko.AUTH_SUCCESSFUL if ok else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.commands.append(command.decode())
        self.event.set()
        return True


class SshServer:
    """A loopback SSH server; `key` is the host key it presents (swap it to 'rebuild' it)."""

    def __init__(self) -> None:
        self.key: paramiko.PKey = paramiko.Ed25519Key.from_private_key_file(_new_ed25519())
        self.commands: list[str] = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self._transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        """How paramiko names this server in known_hosts (non-default port)."""
        return f"[127.0.0.1]:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            t = paramiko.Transport(conn)
            self._transports.append(t)
            t.add_server_key(self.key)
            server = _Server(self.commands)
            try:
                t.start_server(server=server)
            except (paramiko.SSHException, EOFError, OSError):
                continue
            threading.Thread(target=self._session, args=(t, server), daemon=True).start()

    @staticmethod
    def _session(t: paramiko.Transport, server: _Server) -> None:
        while True:
            chan = t.accept(10)
            if chan is None:
                return
            destination = server.forwards.pop(chan.get_id(), None)
            if destination is not None:
                threading.Thread(target=_forward, args=(chan, destination), daemon=True).start()
                continue
            server.event.wait(10)
            chan.sendall(b"ran\n")
            chan.send_exit_status(0)
            chan.close()
            return

    def close(self) -> None:
        self.sock.close()
        for t in self._transports:
            t.close()


def _forward(chan: paramiko.Channel, destination: tuple[str, int]) -> None:
    """Pump bytes between a direct-tcpip channel and a TCP connection to its destination."""
    with socket.create_connection(destination, timeout=10) as sock:
        while True:
            ready, _, _ = select.select([chan, sock], [], [], 10)
            if not ready:
                break
            for src, dst in ((chan, sock), (sock, chan)):
                if src in ready:
                    data = src.recv(1 << 16)
                    if not data:
                        chan.close()
                        return
                    dst.sendall(data)
    chan.close()


_KEYS: list[str] = []


def _new_ed25519() -> str:
    """paramiko cannot generate Ed25519 keys: use cryptography's, written as OpenSSH PEM."""
    import tempfile

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    fd, path = tempfile.mkstemp(prefix="rb-test-hostkey-")
    with open(fd, "wb") as fh:
        fh.write(pem)
    _KEYS.append(path)
    return path


@pytest.fixture
def server() -> Iterator[SshServer]:
    s = SshServer()
    yield s
    s.close()
    while _KEYS:
        Path(_KEYS.pop()).unlink(missing_ok=True)


@pytest.fixture(autouse=True)
def _no_user_known_hosts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy also reads ~/.ssh/known_hosts: point HOME at an empty directory."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def connect(server: SshServer, policy: HostKeyPolicy) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    policy.install(client)
    client.connect(
        "127.0.0.1",
        port=server.port,
        username="root",
        password="pw",
        look_for_keys=False,
        allow_agent=False,
        timeout=10,
    )
    return client


def fingerprint(key: paramiko.PKey) -> str:
    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


# -- the policy on a paramiko client ----------------------------------------------------------
def test_unknown_key_is_refused_and_nothing_recorded(server: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    with pytest.raises(UnknownHostKey) as exc:
        connect(server, HostKeyPolicy(known))
    msg = str(exc.value)
    assert f"{server.name}: unknown host key (ssh-ed25519 SHA256:{fingerprint(server.key)})" in msg
    assert "--accept-new-host-keys" in msg and str(known) in msg
    assert not known.exists()
    assert server.commands == []


def test_accepted_key_is_recorded_then_known(server: SshServer, tmp_path: Path) -> None:
    known = tmp_path / "sub" / "known_hosts"
    connect(server, HostKeyPolicy(known, accept_new=True)).close()
    assert known.read_text() == f"{server.name} ssh-ed25519 {server.key.get_base64()}\n"
    # the next run, without the option, trusts the recorded key and records nothing more
    connect(server, HostKeyPolicy(known)).close()
    assert known.read_text().count("\n") == 1


def test_user_known_hosts_is_trusted_too(server: SshServer, tmp_path: Path) -> None:
    user = tmp_path / "home" / ".ssh" / "known_hosts"
    user.parent.mkdir(parents=True)
    user.write_text(f"{server.name} ssh-ed25519 {server.key.get_base64()}\n")
    known = tmp_path / "known_hosts"
    connect(server, HostKeyPolicy(known)).close()
    assert not known.exists()


@pytest.mark.parametrize("accept_new", [False, True])
def test_changed_key_is_always_refused(server: SshServer, tmp_path: Path, accept_new: bool) -> None:
    known = tmp_path / "known_hosts"
    connect(server, HostKeyPolicy(known, accept_new=True)).close()
    before = known.read_text()
    server.key = paramiko.Ed25519Key.from_private_key_file(_new_ed25519())  # "rebuilt"
    with pytest.raises(paramiko.BadHostKeyException):
        connect(server, HostKeyPolicy(known, accept_new=accept_new))
    assert known.read_text() == before


# -- the same through SSHHost, as the runbook's steps see it -----------------------------------
def ssh_host(server: SshServer, tmp_path: Path, *, accept_new: bool) -> SSHHost:
    text = (REPO / "hosts.yaml").read_text()
    text = text.replace("port: 22", f"port: {server.port}")
    text = text.replace("identity: ~/.ssh/id_ed25519", "identity: null")
    text = text.replace("address: k8slb01.skgm.de", "address: 127.0.0.1")
    (tmp_path / "hosts.yaml").write_text(text)
    inv = load_inventory(tmp_path / "hosts.yaml")
    keys = HostKeyPolicy(inv.known_hosts_path, accept_new=accept_new)
    host = SSHHost(inv.hosts["k8slb01"], inv, keys=keys)
    host.conn.connect_kwargs["password"] = "pw"
    return host


def test_sshhost_unknown_key_is_unreachable_and_runs_nothing(
    server: SshServer, tmp_path: Path
) -> None:
    host = ssh_host(server, tmp_path, accept_new=False)
    with pytest.raises(HostUnreachable, match="unknown host key"):
        host.query("true")
    assert server.commands == []
    assert not (tmp_path / ".runbook" / "known_hosts").exists()


def test_sshhost_changed_key_says_so_and_runs_nothing(server: SshServer, tmp_path: Path) -> None:
    host = ssh_host(server, tmp_path, accept_new=True)
    assert host.query("uname -n").stdout == "ran\n"
    host.close()
    server.key = paramiko.Ed25519Key.from_private_key_file(_new_ed25519())
    server.commands.clear()
    again = ssh_host(server, tmp_path, accept_new=True)
    with pytest.raises(HostUnreachable, match="host key CHANGED for"):
        again.query("uname -n")
    assert server.commands == []


def alias_inventory(server: SshServer, tmp_path: Path) -> Inventory:
    """The repo's inventory with k8slb01 at the ssh_config alias `lb-alias` (tmp_path/ssh_config),
    on this server's port, password login (no identity file)."""
    text = (REPO / "hosts.yaml").read_text()
    text = text.replace("  port: 22\n", f"  port: {server.port}\n  config_file: ssh_config\n")
    text = text.replace("identity: ~/.ssh/id_ed25519", "identity: null")
    text = text.replace("address: k8slb01.skgm.de", "address: lb-alias")
    (tmp_path / "hosts.yaml").write_text(text)
    return load_inventory(tmp_path / "hosts.yaml")


def test_ssh_config_reaches_an_alias_but_cannot_loosen_the_host_key_check(
    server: SshServer, tmp_path: Path
) -> None:
    """An ssh_config alias (HostName) is followed; its StrictHostKeyChecking and
    UserKnownHostsFile are not: an unknown key is still refused, an accepted one recorded in the
    inventory's known_hosts under the address connected to."""
    (tmp_path / "ssh_config").write_text(
        "Host lb-alias\n    HostName 127.0.0.1\n"
        "    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n"
    )
    inv = alias_inventory(server, tmp_path)
    known = inv.known_hosts_path
    for accept_new in (False, True):
        host = SSHHost(inv.hosts["k8slb01"], inv, keys=HostKeyPolicy(known, accept_new=accept_new))
        host.conn.connect_kwargs["password"] = "pw"
        if not accept_new:
            with pytest.raises(HostUnreachable, match="unknown host key"):
                host.query("true")
            assert server.commands == [] and not known.exists()
        else:
            assert host.query("uname -n").stdout == "ran\n"
            host.close()
    assert known.read_text() == f"{server.name} ssh-ed25519 {server.key.get_base64()}\n"


def test_proxyjump_from_ssh_config_tunnels_and_checks_the_jump_hosts_key(
    server: SshServer, tmp_path: Path
) -> None:
    """A ProxyJump line of the ssh_config: the host is reached through a direct-tcpip channel of
    the jump host (this server, reached under another alias); the jump host's unknown key is
    refused like any host's before anything runs, and accepted keys are recorded."""
    (tmp_path / "ssh_config").write_text(
        f"Host jump-alias\n    HostName 127.0.0.1\n    Port {server.port}\n    User ops\n"
        "Host lb-alias\n    HostName 127.0.0.1\n    ProxyJump jump-alias\n"
    )
    inv = alias_inventory(server, tmp_path)
    known = inv.known_hosts_path
    for accept_new in (False, True):
        host = SSHHost(inv.hosts["k8slb01"], inv, keys=HostKeyPolicy(known, accept_new=accept_new))
        jump = host.conn.gateway
        assert (jump.host, jump.port, jump.user) == ("127.0.0.1", server.port, "ops")
        for conn in (host.conn, jump):
            conn.connect_kwargs["password"] = "pw"
        if not accept_new:
            with pytest.raises(HostUnreachable, match="unknown host key"):
                host.query("true")
            assert server.commands == [] and not known.exists()
            assert not jump.is_connected  # refused at the jump host: no tunnel was opened
        else:
            assert host.query("uname -n").stdout == "ran\n"
            assert jump.is_connected and server.commands == ["uname -n"]
            host.close()
            jump.close()
    assert known.read_text() == f"{server.name} ssh-ed25519 {server.key.get_base64()}\n"
