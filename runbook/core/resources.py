"""Idempotent primitives: each reads a fact, says what differs, and applies only that.

A resource declares a shell `probe()` (gathered with the others in one round trip), a pure
`check(host, fact) -> Change | None`, and `apply(host)`. After apply the engine probes again and
expects every check to come back clean: that is the generic part of verify.
"""

from __future__ import annotations

import base64
import difflib
import hashlib
import posixpath
import re
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Generic, TypeVar

from .plan import Change
from .remote import Fact, Host
from .target import Target

SECRET_MARKER = "<secret>"
BACKUP_ROOT = "/var/backups/runbook"
"""Where `File` keeps the previous version of a file it replaces (the path mirrored below it)."""
LEGACY_BACKUP_SUFFIX = ".rb-bak"
"""Earlier runs kept backups beside the live file under this suffix, secret files included."""


TargetT = TypeVar("TargetT", bound=Target, contravariant=True)
"""The kind of target a resource works on (`Host` for host resources, `CloudTarget`)."""


class Resource(ABC, Generic[TargetT]):
    """Base class of resources: `Resource[Host]` on a host, `Resource[CloudTarget]` in the
    cloud. The engine hands each resource the target of its step (any `Target`)."""

    #: the longest its apply may take (s), for resources that wait on something slow (apt):
    #: the engine says until when while it runs; None: no stated limit
    apply_timeout: ClassVar[float | None] = None

    @property
    @abstractmethod
    def key(self) -> str:
        """Unique label in a step, e.g. `file:/etc/ha.d/ha.cf`."""

    def probe(self) -> str | None:
        """Shell snippet whose stdout is the fact `check` needs (None: no fact)."""
        return None

    @abstractmethod
    def check(self, target: TargetT, fact: Fact | None) -> Change | None:
        """Return the change needed, or None when the target is already right."""

    @abstractmethod
    def apply(self, target: TargetT) -> None:
        """Make it so (only called after check returned a change)."""


def _q(s: str) -> str:
    return shlex.quote(s)


def _file_probe(path: str) -> str:
    """Mode, owner, group and base64 content of a file; exit 3 when there is none."""
    q = _q(path)
    return f"test -f {q} || exit 3; stat -c '%a %U %G' {q}; base64 -w0 {q}"


def _file_fact(fact: Fact | None) -> tuple[list[str], bytes] | None:
    """Parse `_file_probe` output: ([mode, owner, group], content), or None when absent."""
    if fact is None or fact.rc == 3:
        return None
    meta, _, b64 = fact.stdout.partition("\n")
    return meta.split(), base64.b64decode(b64.strip() or b"")


def file_text(fact: Fact | None) -> str | None:
    """The content a `File` probe found (None: no such file)."""
    found = _file_fact(fact)
    return None if found is None else _text(found[1])


def _text(raw: bytes) -> str:
    """File content as text; bytes that are not UTF-8 survive the round trip (`_raw`)."""
    return raw.decode("utf-8", "surrogateescape")


def _raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _lines(text: str) -> list[str]:
    """Lines as grep and sed see them: split at "\n" only."""
    lines = text.split("\n")
    return lines[:-1] if lines[-1] == "" else lines


def _diff_lines(text: str) -> list[str]:
    lines = re.findall(r"[^\n]*\n|[^\n]+\Z", text)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n\\ No newline at end of file\n"
    return lines


def unified_diff(old: str, new: str, fromfile: str, tofile: str) -> str:
    """What the plan shows for a changed text (a missing final newline marked, as diff does)."""
    diff = "".join(
        difflib.unified_diff(_diff_lines(old), _diff_lines(new), fromfile=fromfile, tofile=tofile)
    )
    return _raw(diff).decode("utf-8", "replace")  # printable, whatever the file's bytes


@dataclass
class File(Resource[Host]):
    """A whole file: content, mode, owner; atomic write, unified diff in the plan.

    Before replacing a file, the previous version is copied under `backup_root` (the path
    mirrored: /etc/haproxy/haproxy.cfg -> /var/backups/runbook/etc/haproxy/haproxy.cfg, one copy,
    directories 0700). `secret=True` keeps content out of diffs (the plan says the file changes,
    not how) and out of backups: an old key or token lying in a copy is still a live credential.
    `validate` is a command run on the new content (`%s` = temp path) before install.
    """

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False
    validate: str | None = None
    backup_root: str | None = None  # None: BACKUP_ROOT

    @property
    def key(self) -> str:
        return f"file:{self.path}"

    @property
    def backup_path(self) -> str:
        """Where the previous version goes (never used for a secret file)."""
        return posixpath.join(self.backup_root or BACKUP_ROOT, self.path.lstrip("/"))

    def probe(self) -> str:
        return _file_probe(self.path)

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        found = _file_fact(fact)
        if found is None:
            return Change(
                self.key,
                "create",
                f"mode {self.mode:o} {self.owner}:{self.group}",
                self._diff("", self.content),
            )
        parts, current = found[0], _text(found[1])
        wants = [f"{self.mode:o}", self.owner, self.group]
        notes = []
        if parts != wants:
            notes.append(f"{' '.join(parts)} -> {' '.join(wants)}")
        if current != self.content:
            return Change(self.key, "update", "; ".join(notes), self._diff(current, self.content))
        if notes:
            return Change(self.key, "chmod/chown", notes[0])
        return None

    def _diff(self, old: str, new: str) -> str:
        if self.secret:
            return f"(content hidden: secret; sha256 changes to {SECRET_MARKER})"
        return unified_diff(old, new, f"{self.path} (host)", f"{self.path} (wanted)")

    def apply(self, host: Host) -> None:
        data = self.content.encode()
        if self.validate:
            tmp = f"/tmp/rb-validate-{hashlib.sha256(self.path.encode()).hexdigest()[:10]}"
            host.write_file(tmp, data, mode=0o600, backup=False)
            res = host.run(
                self.validate.replace("%s", _q(tmp)) + f"; rc=$?; rm -f {_q(tmp)}; exit $rc",
                ok_codes=None,
            )
            if res.exited != 0:
                raise ValueError(
                    f"{self.path}: validation failed, file not installed:\n{res.stdout}{res.stderr}"
                )
        if not self.secret:
            host.run(self._backup_command())
        host.write_file(
            self.path, data, mode=self.mode, owner=self.owner, group=self.group, backup=False
        )

    def _backup_command(self) -> str:
        q, b = _q(self.path), _q(self.backup_path)
        return (
            f"if [ -f {q} ]; then umask 077; mkdir -p {_q(posixpath.dirname(self.backup_path))} "
            f"&& cp -p {q} {b}; fi"
        )


@dataclass
class RestoredFile(File):
    """`content` written back only over a file the runbook wrote (its first line holds `mark`):
    the way back to a package's own file once the runbook stops managing it. A missing file, or
    one the operator or the package wrote, is left as it is."""

    mark: str = ""

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        current = file_text(fact)
        if current is None or self.mark not in current.partition("\n")[0]:
            return None
        return super().check(host, fact)


@dataclass
class SecretBackupsAbsent(Resource[Host]):
    """No copy of a secret file left beside it by an earlier run (`<path>.rb-bak`).

    Earlier versions of the runbook backed up every file it replaced, Heartbeat's authkeys and
    the API token's env file included; this removes those copies. A resource of its own, not
    part of `File`: a change here must not count as a change of the file a service watches.
    """

    paths: Sequence[str]

    @property
    def key(self) -> str:
        return "stale-secret-backups:" + ",".join(self.paths)

    def _backups(self) -> str:
        return " ".join(_q(p + LEGACY_BACKUP_SUFFIX) for p in self.paths)

    def probe(self) -> str:
        return f'for f in {self._backups()}; do if [ -e "$f" ]; then echo "$f"; fi; done'

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        found = (fact.stdout if fact else "").split()
        if not found:
            return None
        return Change(self.key, "remove", "old backup copies of secret files: " + ", ".join(found))

    def apply(self, host: Host) -> None:
        host.run(f"rm -f {self._backups()}")


def secret_backups_absent(resources: Sequence[Resource]) -> list[Resource]:
    """The `SecretBackupsAbsent` for the secret files among `resources` (none: empty list)."""
    paths = [r.path for r in resources if isinstance(r, File) and r.secret]
    return [SecretBackupsAbsent(paths)] if paths else []


_POSIX_CLASSES = {
    "[:space:]": r"\s",
    "[:blank:]": r" \t",
    "[:digit:]": "0-9",
    "[:alpha:]": "A-Za-z",
    "[:alnum:]": "0-9A-Za-z",
    "[:upper:]": "A-Z",
    "[:lower:]": "a-z",
}


def _regex(pattern: str) -> re.Pattern[str]:
    """A pattern in Python's `re` syntax; POSIX classes such as `[[:space:]]` are accepted."""
    for posix, python in _POSIX_CLASSES.items():
        pattern = pattern.replace(posix, python)
    return re.compile(pattern)


@dataclass
class LineInFile(Resource[Host]):
    """Ensure one line (matched by `match`, a regex) is present, or absent with `present=False`.

    Present: the first matching line is replaced by `line` and further matches are dropped; with
    no match, `line` is appended. Absent: every matching line is dropped. The edit is made in
    Python on the file's content and written with the host's atomic write (mode and owner kept;
    a new file is root 0644); the plan shows a replacement or removal as a unified diff, an
    append by its line alone (the summary holds it whole). `match` is searched in each
    line (Python `re`; POSIX classes such as `[[:space:]]` are accepted). With `fields`, a
    matching line that has the same whitespace-separated fields counts as the wanted one (files
    such as /etc/hosts, where the spacing means nothing).
    """

    path: str
    line: str
    match: str
    present: bool = True
    fields: bool = False

    def _same(self, ln: str) -> bool:
        return ln == self.line or (self.fields and ln.split() == self.line.split())

    @property
    def key(self) -> str:
        return f"line:{self.path}:{self.match}"

    def probe(self) -> str:
        return _file_probe(self.path)

    def edited(self, current: str) -> str:
        """`current` with the edit made (unchanged when there is nothing to do)."""
        rx = _regex(self.match)
        lines = _lines(current)
        kept: list[str] = []
        replaced = False
        for ln in lines:
            if not rx.search(ln):
                kept.append(ln)
            elif self.present and not replaced:
                kept.append(ln if self._same(ln) else self.line)
                replaced = True
        if self.present and not replaced:
            kept.append(self.line)
        if kept == lines:
            return current
        return "".join(f"{ln}\n" for ln in kept)

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        found = _file_fact(fact)
        if found is None and not self.present:
            return None
        current = _text(found[1]) if found else ""
        rx = _regex(self.match)
        matching = [ln for ln in _lines(current) if rx.search(ln)]
        if self.present:
            if len(matching) == 1 and self._same(matching[0]):
                return None
            action = "replace" if matching else "add"
            summary = f"{self.path}: {self.line}"
        else:
            if not matching:
                return None
            action = "remove"
            summary = f"{self.path}: {len(matching)} line(s) matching {self.match}"
        if action == "add":  # appended: the summary holds the whole line, a diff adds only context
            return Change(self.key, action, summary)
        return Change(
            self.key,
            action,
            summary,
            unified_diff(
                current, self.edited(current), f"{self.path} (host)", f"{self.path} (wanted)"
            ),
        )

    def apply(self, host: Host) -> None:
        found = _file_fact(host.probe(self.probe()))
        if found is None and not self.present:
            return
        (mode, owner, group), raw = found if found else (["644", "root", "root"], b"")
        current = _text(raw)
        new = self.edited(current)
        if found is not None and new == current:
            return
        host.write_file(
            self.path, _raw(new), mode=int(mode, 8), owner=owner, group=group, backup=False
        )


@dataclass
class Sysctl(Resource[Host]):
    """A kernel parameter: runtime value and a persistent file in /etc/sysctl.d/."""

    name: str
    value: str
    file: str = "/etc/sysctl.d/90-runbook.conf"

    @property
    def key(self) -> str:
        return f"sysctl:{self.name}"

    def probe(self) -> str:
        return (
            f"sysctl -n {_q(self.name)}; echo '|'; "
            f"grep -hE '^[[:space:]]*{self.name.replace('.', '[.]')}[[:space:]]*=' {_q(self.file)}"
        )

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        runtime, _, persisted = (fact.stdout if fact else "").partition("|")
        want_line = f"{self.name} = {self.value}"
        problems = []
        if runtime.split() != self.value.split():
            problems.append(f"runtime {runtime.strip() or '?'} -> {self.value}")
        if persisted.strip() != want_line:
            problems.append(f"persist in {self.file}")
        if not problems:
            return None
        return Change(self.key, "set", "; ".join(problems))

    def apply(self, host: Host) -> None:
        LineInFile(
            self.file,
            f"{self.name} = {self.value}",
            rf"^[[:space:]]*{self.name.replace('.', '[.]')}[[:space:]]*=",
        ).apply(host)
        host.run(f"sysctl -q -w {_q(self.name)}={_q(self.value)}")


@dataclass
class AptRepo(Resource[Host]):
    """An apt source with its keyring (`signed-by`); `key_url` is fetched on the host.

    `line` and `key_url` may name the host's release as `{id}` and `{codename}` (os-release
    `ID`, `VERSION_CODENAME`), e.g. Docker's `https://download.docker.com/linux/{id} {codename}
    stable`: the probe reads them, so one resource serves Debian 12/13 and Ubuntu hosts.
    """

    apply_timeout: ClassVar[float | None] = 600  # the keyring download, apt-get update

    name: str
    line: str
    keyring: str | None = None
    key_url: str | None = None
    list_dir: str = "/etc/apt/sources.list.d"

    @property
    def key(self) -> str:
        return f"apt-repo:{self.name}"

    @property
    def list_path(self) -> str:
        return f"{self.list_dir}/{self.name}.list"

    @property
    def _per_os(self) -> bool:
        return "{" in self.line or "{" in (self.key_url or "")

    def probe(self) -> str:
        os_line = '. /etc/os-release; echo "$ID|$VERSION_CODENAME"; ' if self._per_os else ""
        kr = f"test -s {_q(self.keyring)} && echo key; " if self.keyring else ""
        return f"{os_line}{kr}cat {_q(self.list_path)}"

    def _wanted(self, fact: Fact | None) -> tuple[str, str | None, list[str]]:
        """(line, key_url, the rest of the fact's lines) for this host."""
        lines = (fact.stdout if fact else "").splitlines()
        if not self._per_os:
            return self.line, self.key_url, lines
        os_id, _, codename = (lines[0] if lines else "").partition("|")
        if not os_id or not codename:
            raise ValueError(f"{self.key}: /etc/os-release has no ID or VERSION_CODENAME")
        fields = {"id": os_id, "codename": codename}
        url = self.key_url.format(**fields) if self.key_url else None
        return self.line.format(**fields), url, lines[1:]

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        line, _, out = self._wanted(fact)
        missing = []
        if self.keyring and out[:1] != ["key"]:
            missing.append(f"keyring {self.keyring}")
        if line not in out:
            missing.append(f"source {self.list_path}: {line}")
        return Change(self.key, "add", ", ".join(missing)) if missing else None

    def apply(self, host: Host) -> None:
        line, key_url, _ = self._wanted(host.probe(self.probe()))
        if self.keyring and key_url:
            kd = _q(self.keyring.rsplit("/", 1)[0])
            host.run(
                # no pipe: a failed download must fail here, not leave an empty keyring
                f"install -d -m 0755 {kd} && k=$(curl -fsSL {_q(key_url)}) && "
                f"printf '%s\\n' \"$k\" | gpg --dearmor --yes -o {_q(self.keyring)} && "
                f"chmod 0644 {_q(self.keyring)}"
            )
        host.write_file(self.list_path, (line + "\n").encode(), backup=False)
        host.run("apt-get update -q", timeout=600)


def apt_install(host: Host, names: Sequence[str], *, update_first: bool = True) -> None:
    """`apt-get install` without recommends, keeping changed config files (never prompts)."""
    upd = "apt-get update -q && " if update_first else ""
    host.run(
        f"{upd}DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
        f"-o Dpkg::Options::=--force-confold {' '.join(_q(n) for n in names)}",
        timeout=1800,
    )


@dataclass
class Packages(Resource[Host]):
    """Debian packages installed (`--no-install-recommends`), optionally held."""

    apply_timeout: ClassVar[float | None] = 600 + 1800  # apt-get update, then install

    names: Sequence[str]
    hold: bool = False
    update_first: bool = True

    @property
    def key(self) -> str:
        return "packages:" + ",".join(self.names)

    def probe(self) -> str:
        names = " ".join(_q(n) for n in self.names)
        held = "; echo '|'; apt-mark showhold" if self.hold else ""
        return f"dpkg-query -W -f='${{Package}} ${{db:Status-Abbrev}}\\n' {names}{held}"

    def _state(self, fact: Fact | None) -> tuple[list[str], list[str]]:
        out = fact.stdout if fact else ""
        status, _, held = out.partition("|")
        installed = {
            line.split()[0]
            for line in status.splitlines()
            # db:Status-Abbrev: want (i/h/…) + status; "hi" = held AND installed
            if len(line.split()) >= 2 and line.split()[1][1:2] == "i"
        }
        missing = [n for n in self.names if n not in installed]
        held_set = set(held.split())
        unheld = [n for n in self.names if self.hold and n not in held_set]
        return missing, unheld

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        missing, unheld = self._state(fact)
        if not missing and not unheld:
            return None
        parts = []
        if missing:
            parts.append("install " + " ".join(missing))
        if unheld:
            parts.append("hold " + " ".join(unheld))
        return Change(self.key, "install" if missing else "hold", "; ".join(parts))

    def apply(self, host: Host) -> None:
        missing, unheld = self._state(host.probe(self.probe()))
        if missing:
            apt_install(host, missing, update_first=self.update_first)
        if unheld:
            host.run("apt-mark hold " + " ".join(_q(n) for n in unheld))


@dataclass
class Service(Resource[Host]):
    """A systemd unit enabled and running; reloaded/restarted when a watched resource changed."""

    name: str
    enabled: bool = True
    running: bool = True
    watch: Sequence[str] = field(default_factory=tuple)
    on_change: str = "restart"  # or "reload"

    @property
    def key(self) -> str:
        return f"service:{self.name}"

    def probe(self) -> str:
        n = _q(self.name)
        return f"systemctl is-enabled {n}; echo '|'; systemctl is-active {n}"

    def _wants(self, host: Host, fact: Fact | None) -> list[str]:
        enabled_s, _, active_s = (fact.stdout if fact else "").partition("|")
        is_enabled = enabled_s.strip() == "enabled"
        is_active = active_s.strip() == "active"
        todo = []
        if self.enabled and not is_enabled:
            todo.append("enable")
        if self.running and not is_active:
            todo.append("start")
        elif not self.running and is_active:
            todo.append("stop")
        elif self.running and any(k in host.touched for k in self.watch):
            todo.append(self.on_change)
        return todo

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        todo = self._wants(host, fact)
        if not todo:
            return None
        why = [k for k in self.watch if k in host.touched]
        return Change(self.key, "+".join(todo), f"changed: {', '.join(why)}" if why else "")

    def apply(self, host: Host) -> None:
        todo = self._wants(host, host.probe(self.probe()))
        n = _q(self.name)
        for action in todo:
            host.run(f"systemctl {action} {n}", timeout=120)
        # A watched change is handled once per run.
        host.touched.difference_update(self.watch)


@dataclass
class GuardedCommand(Resource[Host]):
    """A command that runs only when its guard says so (guard exit 0 = already done)."""

    name: str
    command: str
    guard: str
    summary: str = ""
    stdin: Callable[[], str] | None = None
    timeout: float = 600

    @property
    def key(self) -> str:
        return f"command:{self.name}"

    def probe(self) -> str:
        return f"{self.guard} >/dev/null 2>&1; echo $?"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        done = fact is not None and fact.stdout.strip().splitlines()[-1:] == ["0"]
        return None if done else Change(self.key, "run", self.summary or self.command)

    def apply(self, host: Host) -> None:
        host.run(self.command, stdin=self.stdin() if self.stdin else None, timeout=self.timeout)


# the state of a module's compiled copy: ok (checked-hash, matching its source), stale, missing
_PYC_STATE = """import importlib.util as u, sys
p = sys.argv[1]
try:
    c = open(u.cache_from_source(p), "rb").read(16)
    s = open(p, "rb").read()
except OSError:
    print("missing")
    sys.exit()
hashed = c[:4] == u.MAGIC_NUMBER and c[4:8] == bytes([3, 0, 0, 0])
print("ok" if hashed and c[8:16] == u.source_hash(s) else "stale")
"""
_PYC_WRITE = """import py_compile as c, sys
c.compile(sys.argv[1], doraise=True, invalidation_mode=c.PycInvalidationMode.CHECKED_HASH)
"""


@dataclass
class PythonBytecode(Resource[Host]):
    """A module's compiled copy in `__pycache__`, checked against a hash of its source (PEP 552
    "checked-hash"), not its mtime: a source replaced twice in one second never runs from a
    stale copy, and Python recompiles it the same way when the source changes. Compiled when it
    is missing or stale, or when `watch` (the module's file) changes in this run."""

    path: str
    watch: str = ""

    @property
    def key(self) -> str:
        return f"bytecode:{self.path}"

    def probe(self) -> str:
        return f"python3 -IS -c {_q(_PYC_STATE)} {_q(self.path)}"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        state = fact.stdout.strip() if fact is not None else "missing"
        if self.watch in host.touched:
            state = "its source changes"
        if state == "ok":
            return None
        return Change(self.key, "compile", f"checked-hash .pyc ({state})")

    def compile_command(self) -> str:
        """The shell command that writes the checked-hash copy (what `apply` runs)."""
        return f"python3 -IS -c {_q(_PYC_WRITE)} {_q(self.path)}"

    def apply(self, host: Host) -> None:
        host.run(self.compile_command())


@dataclass
class SystemdReload(Resource[Host]):
    """`systemctl daemon-reload` when a unit file among `watch` changed in this run."""

    watch: Sequence[str]

    @property
    def key(self) -> str:
        return "systemd:daemon-reload"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        why = [k for k in self.watch if k in host.touched]
        return Change(self.key, "daemon-reload", ", ".join(why)) if why else None

    def apply(self, host: Host) -> None:
        host.run("systemctl daemon-reload")
