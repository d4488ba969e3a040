"""Remote hosts: one Fabric connection per host per run, read-only queries vs mutating runs.

The split between `query` (read-only, allowed in --dry-run) and `run`/`write_file` (mutating,
refused in --dry-run) is what makes the dry-run promise checkable: a dry-run Host raises
`DryRunViolation` on every mutating call, so a step that tries to change something during
planning fails loudly instead of changing a production host.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shlex
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import paramiko
from fabric import Config, Connection
from fabric.connection import derive_shorthand
from invoke.exceptions import CommandTimedOut

from ..inventory.sshconfig import ssh_config_text
from . import trace
from .interrupt import Interrupted, StopFlag
from .sshconn import SessionConnection, why_unreachable

if TYPE_CHECKING:
    from ..inventory import HostSpec, Inventory

MARK = "==RB-FACT=="


class DryRunViolation(RuntimeError):
    """A mutating call was attempted while running with --dry-run."""


class HostUnreachable(RuntimeError):
    """The host could not be reached (network, auth or host-key problem)."""


class CommandTimeout(RuntimeError):
    """A remote command did not complete within its timeout. The connection may be dead: a host
    that went down under the command (a reboot) leaves it hanging when no FIN or RST arrives."""


#: what a look that may go unanswered catches: the host cannot be reached, or its command hangs
#: (a host going down under it, a wedged daemon). The caller reads either as "cannot be asked".
NO_ANSWER = (HostUnreachable, CommandTimeout)


class SSHConfigError(ValueError):
    """The operator's ssh_config cannot be applied to a host (a ProxyJump loop, a bad Port)."""


class CommandFailed(RuntimeError):
    """A remote command exited with an unexpected code."""

    def __init__(self, host: str, cmd: str, exited: int, stderr: str) -> None:
        self.host, self.cmd, self.exited, self.stderr = host, cmd, exited, stderr
        tail = stderr.strip().splitlines()[-3:]
        super().__init__(f"{host}: `{cmd}` exited {exited}: {' | '.join(tail)}")


@dataclass(frozen=True)
class Result:
    """Outcome of a remote command."""

    stdout: str
    stderr: str
    exited: int

    @property
    def ok(self) -> bool:
        return self.exited == 0


@dataclass(frozen=True)
class Fact:
    """Output of one probe snippet, gathered in a batch with the others."""

    stdout: str
    rc: int


class CommandLog(Protocol):
    """Receives every command run (for --verbose); masking is the receiver's job."""

    def __call__(self, host: str, cmd: str, *, mutating: bool) -> None: ...


class Host:
    """A target host; subclasses provide `_exec`. Mutating calls are refused in dry-run."""

    def __init__(self, name: str, *, dry_run: bool = False, log: CommandLog | None = None) -> None:
        self.name = name
        self.dry_run = dry_run
        self._log = log
        # One Host object per host per run: this id marks what a run did once on a host.
        self.run_id = uuid.uuid4().hex[:12]
        # The run's interrupt flag (set by the engine): after Ctrl-C no new query starts, and
        # no new mutating command once the running work's grace is over.
        self.stop: StopFlag | None = None
        # Keys of resources that changed (or would change) in this run: lets a Service
        # know that a file it watches was rewritten.
        self.touched: set[str] = set()

    # -- to be provided by subclasses -------------------------------------------------
    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection (no-op by default)."""

    # -- public API ---------------------------------------------------------------------
    def query(
        self,
        cmd: str,
        *,
        timeout: float | None = 60,
        ok_codes: Sequence[int] | None = (0,),
        stdin: str | None = None,
    ) -> Result:
        """Run a read-only command (allowed in dry-run)."""
        return self._call(cmd, mutating=False, timeout=timeout, ok_codes=ok_codes, stdin=stdin)

    def run(
        self,
        cmd: str,
        *,
        timeout: float | None = 600,
        ok_codes: Sequence[int] | None = (0,),
        stdin: str | None = None,
    ) -> Result:
        """Run a mutating command. Secrets go through `stdin`, never into `cmd`."""
        if self.dry_run:
            raise DryRunViolation(f"{self.name}: refused in --dry-run: {cmd}")
        return self._call(cmd, mutating=True, timeout=timeout, ok_codes=ok_codes, stdin=stdin)

    def _call(
        self,
        cmd: str,
        *,
        mutating: bool,
        timeout: float | None,
        ok_codes: Sequence[int] | None,
        stdin: str | None,
    ) -> Result:
        stop = self.stop
        if stop is not None and stop.requested and (not mutating or stop.grace_over()):
            raise Interrupted(stop.signum)
        if self._log is not None:
            self._log(self.name, cmd, mutating=mutating)
        t0 = time.monotonic()
        res = self._exec(cmd, stdin=stdin, timeout=timeout)
        trace.command(self.name, cmd, mutating, t0, res.exited)
        if ok_codes is not None and res.exited not in ok_codes:
            raise CommandFailed(self.name, cmd, res.exited, res.stderr)
        return res

    def gather(self, probes: Sequence[str | None]) -> list[Fact | None]:
        """Run every probe snippet in ONE round trip; None probes give None facts."""
        wanted = [(i, p) for i, p in enumerate(probes) if p]
        facts: list[Fact | None] = [None] * len(probes)
        if not wanted:
            return facts
        token = uuid.uuid4().hex[:8]
        parts = []
        for i, probe in wanted:
            parts.append(
                f"echo '{MARK}{token}:{i}'; ( {probe} ) 2>/dev/null; __rc=$?; "
                f'echo; echo "{MARK}{token}:rc:$__rc"'
            )
        out = self.query("; ".join(parts), ok_codes=None).stdout
        for i, _ in wanted:
            start = out.find(f"{MARK}{token}:{i}\n")
            if start < 0:
                raise CommandFailed(self.name, "fact gathering", -1, "probe output missing")
            body_start = start + len(f"{MARK}{token}:{i}\n")
            end = out.find(f"{MARK}{token}:rc:", body_start)
            rc_end = out.find("\n", end)
            rc = int(out[end + len(f"{MARK}{token}:rc:") : rc_end if rc_end >= 0 else None])
            body = out[body_start:end]
            # strip the newline we appended after the probe output
            body = body[:-1] if body.endswith("\n") else body
            facts[i] = Fact(stdout=body, rc=rc)
        return facts

    def probe(self, snippet: str | None) -> Fact | None:
        """Gather a single fact (one round trip)."""
        return self.gather([snippet])[0]

    def read_file(self, path: str) -> bytes | None:
        """Return the file's bytes, or None when it does not exist."""
        q = shlex.quote(path)
        res = self.query(f"test -f {q} && base64 -w0 {q}", ok_codes=None)
        if res.exited != 0:
            return None
        return base64.b64decode(res.stdout.strip() or b"")

    def download(self, path: str, dest: Path) -> bool:
        """Copy the remote file `path` to the local `dest`, readable by the owner only from the
        first byte and put in place atomically; False when it does not exist. This reads it
        through a command (fakes, tests); SSHHost streams it over SFTP, never whole in memory."""
        data = self.read_file(path)
        if data is None:
            return False
        with private_writer(dest) as fh:
            fh.write(data)
        return True

    def write_file(
        self,
        path: str,
        content: bytes | Path,
        *,
        mode: int = 0o644,
        owner: str = "root",
        group: str = "root",
        backup: bool = True,
    ) -> None:
        """Atomic write: temp file in the same directory, chmod/chown, keep a backup, rename.

        Content travels through stdin (never argv), so secrets in files stay out of `ps`. A
        local Path as content is streamed (SSH: over SFTP), never read whole into memory.
        """
        q = shlex.quote(path)
        tmp = shlex.quote(f"{path}.rb-tmp")
        directory = shlex.quote(str(Path(path).parent))
        fill, stdin = self._stage(content, tmp)
        script = (
            f"set -e; umask 077; mkdir -p {directory}; {fill}; "
            f"chown {shlex.quote(owner)}:{shlex.quote(group)} {tmp}; chmod {mode:o} {tmp}; "
            + (f"if [ -f {q} ]; then cp -p {q} {q}.rb-bak; fi; " if backup else "")
            + f"mv -f {tmp} {q}"
        )
        self.run(script, stdin=stdin)

    def _stage(self, content: bytes | Path, tmp: str) -> tuple[str, str | None]:
        """How content reaches `tmp` on the host: a shell snippet and its stdin (base64)."""
        if self.dry_run:
            raise DryRunViolation(f"{self.name}: refused in --dry-run: write {tmp}")
        data = content.read_bytes() if isinstance(content, Path) else content
        return f"base64 -d > {tmp}", base64.b64encode(data).decode() + "\n"


def auth_kwargs(identity: Path | None, config_keys: Sequence[str] = ()) -> dict[str, Any]:
    """How paramiko authenticates: the inventory's key file; without one, the ssh_config's
    IdentityFile keys that exist (`config_keys`), then the default keys in ~/.ssh. The ssh agent
    only when the named key file does not exist (`validate` accepts that with a warning when
    SSH_AUTH_SOCK is set: the agent may hold the key)."""
    if identity is None:
        found = [k for k in config_keys if Path(k).expanduser().is_file()]
        keys: dict[str, Any] = {"key_filename": found} if found else {}
        return {**keys, "look_for_keys": True, "allow_agent": False}
    if identity.is_file():
        return {"key_filename": [str(identity)], "look_for_keys": False, "allow_agent": False}
    return {"look_for_keys": False, "allow_agent": True}


def read_ssh_config(paths: Sequence[Path]) -> paramiko.SSHConfig:
    """The files of `paths` that exist, parsed into one ssh_config (the first value obtained for
    a key wins, as in ssh). `validate` has refused an unreadable or unparsable one."""
    config = paramiko.SSHConfig()
    for path in paths:
        if path.is_file():
            config.parse(ssh_config_text(path).splitlines())
    return config


#: Jump hosts a ProxyJump chain may pass before it is taken for a loop (`Host *` + ProxyJump).
MAX_JUMPS = 8


class Connector:
    """Builds every Fabric connection of a run the same way: hosts, their jump hosts, ProxyJump
    hops — each with the run's host-key policy, the same authentication and timeouts.

    ssh_config (`inventory.ssh_config_files`) is read here and applied explicitly, Fabric's own
    loading stays off: Fabric appends ssh_config IdentityFiles to the inventory's key, opens
    ProxyJump hops with its AutoAddPolicy (any jump host key accepted) and chains `a,b` from b.
    The rules, per setting: the inventory's explicit value wins, then the ssh_config's, then the
    inventory's default; except the port of an inventory host, always `ssh.port`: the cloud
    firewall opens that port, so a host must never be reached on another.
    """

    def __init__(self, inventory: Inventory, keys: HostKeyPolicy) -> None:
        self.inventory = inventory
        self.keys = keys
        self.ssh_config = read_ssh_config(inventory.ssh_config_files)
        given = inventory.ssh.model_fields_set
        self._user = inventory.ssh.user if "user" in given else None

    def host(self, spec: HostSpec) -> SessionConnection:
        """An inventory host: its `address` looked up in ssh_config (HostName, User,
        IdentityFile, ProxyJump, ProxyCommand); its `gateway` or `ssh.proxy_command` win over
        the ssh_config's jump settings."""
        ssh = self.inventory.ssh
        gateway: Connection | str | None = None
        if spec.gateway:
            gateway = self._inventory_gateway(spec)
        elif ssh.proxy_command:
            host = self.ssh_config.lookup(spec.address)["hostname"]
            gateway = ssh.proxy_command.replace("%h", host).replace("%p", str(ssh.port))
        try:
            return self.connect(spec.address, user=self._user, port=ssh.port, gateway=gateway)
        except SSHConfigError as exc:
            raise SSHConfigError(f"{spec.address}: {exc}") from None

    def _inventory_gateway(self, spec: HostSpec) -> SessionConnection:
        """A jump host: another inventory host or an explicit `user@host:port`."""
        gw = self.inventory.gateway_for(spec)
        if gw is None:  # pragma: no cover - caller checks
            raise ValueError("no gateway")
        if hasattr(gw, "address"):
            return self.connect(gw.address, user=self._user, port=self.inventory.ssh.port)
        return self.connect(gw.host, user=gw.user, port=gw.port)

    def connect(
        self,
        name: str,
        *,
        user: str | None,
        port: int | None,
        gateway: Connection | str | None = None,
        depth: int = 0,
    ) -> SessionConnection:
        """A lazily connecting Connection to `name` (an alias ssh_config may map): `user`/`port`
        given win over ssh_config's; `gateway` None means the ssh_config's, if any."""
        ssh = self.inventory.ssh
        found = self.ssh_config.lookup(name)
        host = found["hostname"]
        if gateway is None:
            gateway = self._config_gateway(name, found, depth)
        connect_kwargs: dict[str, Any] = {
            **auth_kwargs(self.inventory.identity_path, found.get("identityfile", [])),
            "banner_timeout": ssh.connect_timeout,
            "auth_timeout": ssh.connect_timeout,
        }
        conn = SessionConnection(
            host,
            user=user or found.get("user") or ssh.user,
            port=port or _config_port(found, name),
            config=Config(
                overrides={"load_ssh_configs": False, "run": {"hide": True, "warn": True}}
            ),
            connect_timeout=ssh.connect_timeout,
            connect_kwargs=connect_kwargs,
            forward_agent=False,  # never hand the operator's agent to a cluster host
            gateway=gateway if gateway is not None else False,  # False: none, not Fabric's
        )
        self.keys.install(conn.client)
        return conn

    def _config_gateway(
        self, name: str, found: paramiko.SSHConfigDict, depth: int
    ) -> Connection | str | None:
        """ssh_config's ProxyJump (hops in order, each reaching the next), else its
        ProxyCommand (tokens already expanded by paramiko), else None."""
        jump = found.get("proxyjump")
        if jump and jump.lower() != "none":
            hops = [h.strip().removeprefix("ssh://") for h in jump.split(",")]
            if depth + len(hops) > MAX_JUMPS:
                raise SSHConfigError(
                    f"the ssh_config's ProxyJump leads through more than {MAX_JUMPS} jump "
                    "hosts (a loop, e.g. `Host *` with ProxyJump? exclude the jump host: "
                    "`Host * !bastion`)"
                )
            prev: Connection | None = None
            for hop in hops:
                hop_host, hop_user, hop_port = _shorthand(hop)
                if hop_host in (name, found["hostname"]):
                    return None  # our own jump host (a `Host *` rule): connect directly, as Fabric
                prev = self.connect(
                    hop_host,
                    user=hop_user,
                    port=hop_port,
                    gateway=prev,
                    depth=depth + len(hops),
                )
            return prev
        command = found.get("proxycommand")
        return command if command else None


def _shorthand(hop: str) -> tuple[str, str | None, int | None]:
    """`[user@]host[:port]` of a ProxyJump hop (Fabric's parser, IPv6-aware)."""
    try:
        parts = derive_shorthand(hop)
    except ValueError:
        parts = {"port": -1}
    port = parts["port"]
    if not parts.get("host") or (port is not None and not 1 <= port <= 65535):
        raise SSHConfigError(f"the ssh_config's ProxyJump {hop!r} is not [user@]host[:port]")
    return parts["host"], parts["user"], port


def _config_port(found: paramiko.SSHConfigDict, name: str) -> int:
    """A jump host's port: the ssh_config's, else 22."""
    value = found.get("port")
    if value is None:
        return 22
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise SSHConfigError(f"the ssh_config's Port {value!r} for {name} is not a port (1-65535)")
    return int(value)


class SSHHost(Host):
    """A host reached with Fabric; `sudo -n` wraps commands when the SSH user is not root."""

    def __init__(
        self,
        spec: HostSpec,
        inventory: Inventory,
        *,
        keys: HostKeyPolicy,
        dry_run: bool = False,
        log: CommandLog | None = None,
        connector: Connector | None = None,
    ) -> None:
        super().__init__(spec.name, dry_run=dry_run, log=log)
        if connector is None:
            connector = Connector(inventory, keys)
        self.conn = connector.host(spec)
        self.user = self.conn.user  # the login in effect: root runs commands without sudo
        self.connect_timeout = float(inventory.ssh.connect_timeout)
        self._lock = threading.Lock()

    def _wrap(self, cmd: str) -> str:
        if self.user == "root":
            return cmd
        return f"sudo -n -- sh -c {shlex.quote(cmd)}"

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        import io

        try:
            with self._lock:
                r = self.conn.run(
                    self._wrap(cmd),
                    hide=True,
                    warn=True,
                    timeout=timeout,
                    in_stream=io.StringIO(stdin) if stdin is not None else False,
                )
        except paramiko.BadHostKeyException as exc:
            raise HostUnreachable(
                f"{self.name}: host key CHANGED for {exc.hostname} — refusing to connect. If the "
                "server was rebuilt, remove its old entry from known_hosts after verifying the "
                "new fingerprint out of band."
            ) from exc
        except UnknownHostKey as exc:
            raise HostUnreachable(str(exc)) from exc
        except paramiko.AuthenticationException as exc:
            raise HostUnreachable(f"{self.name}: SSH authentication failed: {exc}") from exc
        except CommandTimedOut as exc:
            raise CommandTimeout(
                f"{self.name}: `{cmd}` did not complete within {timeout:g} s"
            ) from exc
        except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
            why = why_unreachable(self._transport_error() or exc, timeout=self.connect_timeout)
            raise HostUnreachable(f"{self.name}: unreachable: {why}") from exc
        return Result(stdout=r.stdout, stderr=r.stderr, exited=r.exited)

    def _transport_error(self) -> BaseException | None:
        """What ended the transport thread (e.g. the banner timeout), when the caller only got a
        consequence of it ("No existing session")."""
        transport = self.conn.client.get_transport()
        if transport is None:
            return None
        if transport.is_alive() and not transport.initial_kex_done:
            # connect's own wait (connect_timeout) can end just before the banner wait does
            transport.join(2)
        return transport.get_exception()

    def _stage(self, content: bytes | Path, tmp: str) -> tuple[str, str | None]:
        """Upload over SFTP (a 0600 file in /tmp), then move it into place with the script.

        Large contents through the exec channel's stdin proved unreliable; SFTP is not. A local
        Path is copied in 1 MiB blocks (an etcd snapshot may be gigabytes).
        """
        if self.dry_run:
            raise DryRunViolation(f"{self.name}: refused in --dry-run: write {tmp}")
        upload = f"/tmp/.rb-upload-{uuid.uuid4().hex}"
        t0 = time.monotonic()
        try:
            with self._lock:
                sftp = self.conn.sftp()
                with sftp.open(upload, "wb") as fh:
                    fh.chmod(0o600)
                    if isinstance(content, Path):
                        with content.open("rb") as src:
                            shutil.copyfileobj(src, fh, 1 << 20)
                    else:
                        fh.write(content)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise HostUnreachable(f"{self.name}: upload failed: {exc}") from exc
        size = content.stat().st_size if isinstance(content, Path) else len(content)
        trace.record("sftp", t0, host=self.name, size=size)
        u = shlex.quote(upload)
        return f"cat {u} > {tmp}; rm -f {u}", None

    def download(self, path: str, dest: Path) -> bool:
        """Over SFTP into the local file (an etcd snapshot may be gigabytes). A login that is
        not root reads a root-only file from a 0600 copy it owns, removed afterwards."""
        q = shlex.quote(path)
        if self.query(f"test -f {q}", ok_codes=None).exited != 0:
            return False
        src = path
        if self.user != "root":
            src = f"/tmp/.rb-download-{uuid.uuid4().hex}"
            self.run(f"install -m 0600 -o {shlex.quote(self.user)} {q} {shlex.quote(src)}")
        t0 = time.monotonic()
        try:
            with private_writer(dest) as fh, self._lock:
                self.conn.sftp().getfo(src, fh)
        except (OSError, paramiko.SSHException, EOFError) as exc:
            raise HostUnreachable(f"{self.name}: download of {path} failed: {exc}") from exc
        finally:
            if src != path:
                self.run(f"rm -f {shlex.quote(src)}", ok_codes=None)
        trace.record("sftp-get", t0, host=self.name, size=dest.stat().st_size)
        return True

    def close(self) -> None:
        self.conn.close()


@contextlib.contextmanager
def private_writer(dest: Path) -> Iterator[BinaryIO]:
    """A local file readable by the owner only from the first byte (0600, its directory 0700),
    written beside `dest` and renamed into place when the block ends without an error."""
    dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = dest.with_name(dest.name + ".rb-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)


class UnknownHostKey(paramiko.SSHException):
    """Raised by the host-key policy for a key not in known_hosts."""


class HostKeyPolicy:
    """known_hosts handling: user's file + the inventory's; unknown refused unless accepted.

    A changed key is always refused (paramiko's BadHostKeyException); with
    `accept_new=True` unknown keys are recorded in the inventory's known_hosts file.
    """

    def __init__(self, known_hosts: Path, *, accept_new: bool = False) -> None:
        self.known_hosts = known_hosts
        self.accept_new = accept_new
        self._lock = threading.Lock()

    def install(self, client: paramiko.SSHClient) -> None:
        user_file = Path("~/.ssh/known_hosts").expanduser()
        if user_file.exists():
            client.load_system_host_keys(str(user_file))
        if self.known_hosts.exists():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(self._policy())

    def _policy(self) -> paramiko.MissingHostKeyPolicy:
        outer = self

        class _Policy(paramiko.MissingHostKeyPolicy):
            def missing_host_key(
                self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
            ) -> None:
                fingerprint = (
                    base64.b64encode(__import__("hashlib").sha256(key.asbytes()).digest())
                    .decode()
                    .rstrip("=")
                )
                if not outer.accept_new:
                    raise UnknownHostKey(
                        f"{hostname}: unknown host key ({key.get_name()} SHA256:{fingerprint}). "
                        "Verify the fingerprint, then re-run with --accept-new-host-keys to record "
                        f"it in {outer.known_hosts}."
                    )
                outer.record(hostname, key)
                client.get_host_keys().add(hostname, key.get_name(), key)

        return _Policy()

    def record(self, hostname: str, key: paramiko.PKey) -> None:
        """Append the accepted key once: a jump host that several hosts pass (each connection
        loaded the file before) is recorded by the first."""
        line = f"{hostname} {key.get_name()} {key.get_base64()}\n"
        with self._lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with self.known_hosts.open("a+") as fh:
                fh.seek(0)
                if line not in fh.readlines():
                    fh.write(line)


class UnusableHost(Host):
    """A host the ssh_config gives no usable way to (`SSHConfigError`): every command is
    unreachable with the reason, as for any host that cannot be reached."""

    def __init__(self, name: str, reason: str, **kwargs: Any) -> None:
        super().__init__(name, **kwargs)
        self.reason = reason

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        raise HostUnreachable(f"{self.name}: unreachable: {self.reason}")


def connect_all(
    inventory: Inventory,
    names: Sequence[str],
    *,
    dry_run: bool,
    accept_new_host_keys: bool = False,
    log: CommandLog | None = None,
    factory: Callable[..., Host] | None = None,
) -> dict[str, Host]:
    """Create (lazily connecting) Host objects; one per host for the whole run."""
    keys = HostKeyPolicy(inventory.known_hosts_path, accept_new=accept_new_host_keys)
    connector: Connector | None = None
    hosts: dict[str, Host] = {}
    for name in names:
        spec = inventory.hosts[name]
        if factory is not None:
            hosts[name] = factory(spec, dry_run=dry_run, log=log)
            continue
        connector = connector or Connector(inventory, keys)
        try:
            hosts[name] = SSHHost(
                spec, inventory, keys=keys, dry_run=dry_run, log=log, connector=connector
            )
        except SSHConfigError as exc:
            hosts[name] = UnusableHost(name, str(exc), dry_run=dry_run, log=log)
    return hosts


def ssh_config_problems(inventory: Inventory) -> list[tuple[str, str]]:
    """(host name, reason) for each host whose connection the ssh_config makes impossible:
    `validate` and the connecting tasks refuse them before connecting (nothing is opened)."""
    connector = Connector(inventory, HostKeyPolicy(inventory.known_hosts_path))
    out = []
    for name, spec in inventory.hosts.items():
        try:
            connector.host(spec).close()
        except SSHConfigError as exc:
            out.append((name, str(exc)))
    return out
