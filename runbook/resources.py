"""Idempotent primitives: each reads a fact, says what differs, and applies only that.

A resource declares a shell `probe()` (gathered with the others in one round trip), a pure
`check(host, fact) -> Change | None`, and `apply(host)`. After apply the engine probes again and
expects every check to come back clean: that is the generic part of verify.
"""

from __future__ import annotations

import difflib
import hashlib
import shlex
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from .plan import Change
from .remote import Fact, Host

SECRET_MARKER = "<secret>"


class Resource(ABC):
    """Base class of host resources."""

    @property
    @abstractmethod
    def key(self) -> str:
        """Unique label in a step, e.g. `file:/etc/ha.d/ha.cf`."""

    def probe(self) -> str | None:
        """Shell snippet whose stdout is the fact `check` needs (None: no fact)."""
        return None

    @abstractmethod
    def check(self, host: Host, fact: Fact | None) -> Change | None:
        """Return the change needed, or None when the host is already right."""

    @abstractmethod
    def apply(self, host: Host) -> None:
        """Make it so (only called after check returned a change)."""


def _q(s: str) -> str:
    return shlex.quote(s)


def unified_diff(old: str, new: str, fromfile: str, tofile: str) -> str:
    """What the plan shows for a changed text."""
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=fromfile,
            tofile=tofile,
        )
    )


@dataclass
class File(Resource):
    """A whole file: content, mode, owner; atomic write with a backup, unified diff in the plan.

    `secret=True` keeps content out of diffs (the plan says the file changes, not how).
    `validate` is a command run on the new content (`%s` = temp path) before install.
    """

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False
    validate: str | None = None

    @property
    def key(self) -> str:
        return f"file:{self.path}"

    def probe(self) -> str:
        q = _q(self.path)
        return f"test -f {q} || exit 3; stat -c '%a %U %G' {q}; base64 -w0 {q}"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        if fact is None or fact.rc == 3:
            return Change(
                self.key,
                "create",
                f"mode {self.mode:o} {self.owner}:{self.group}",
                self._diff("", self.content),
            )
        meta, _, b64 = fact.stdout.partition("\n")
        import base64

        current = base64.b64decode(b64.strip() or b"").decode(errors="replace")
        parts = meta.split()
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
        host.write_file(self.path, data, mode=self.mode, owner=self.owner, group=self.group)


@dataclass
class LineInFile(Resource):
    """Ensure one line (matched by `match`, a regex) is present, or absent with `present=False`."""

    path: str
    line: str
    match: str
    present: bool = True

    @property
    def key(self) -> str:
        return f"line:{self.path}:{self.match}"

    def probe(self) -> str:
        return f"test -f {_q(self.path)} || exit 3; grep -E -- {_q(self.match)} {_q(self.path)}"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        lines = [] if fact is None or fact.rc == 3 else fact.stdout.splitlines()
        if self.present:
            if lines == [self.line]:
                return None
            action = "replace" if lines else "add"
            return Change(self.key, action, f"{self.path}: {self.line}")
        if not lines:
            return None
        return Change(
            self.key, "remove", f"{self.path}: {len(lines)} line(s) matching {self.match}"
        )

    def apply(self, host: Host) -> None:
        p, m = _q(self.path), _q(self.match)
        if self.present:
            script = (
                f"touch {p}; if grep -qE -- {m} {p}; then "
                f"awk -v re={m} -v line={_q(self.line)} "
                "'BEGIN{done=0} $0 ~ re {if(!done){print line; done=1}; next} {print}' "
                f"{p} > {p}.rb-tmp && cat {p}.rb-tmp > {p} && rm -f {p}.rb-tmp; "
                f"else printf '%s\\n' {_q(self.line)} >> {p}; fi"
            )
        else:
            script = f"grep -vE -- {m} {p} > {p}.rb-tmp; cat {p}.rb-tmp > {p}; rm -f {p}.rb-tmp"
        host.run(script)


@dataclass
class Sysctl(Resource):
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
class AptRepo(Resource):
    """An apt source with its keyring (`signed-by`); `key_url` is fetched on the host.

    `line` and `key_url` may name the host's release as `{id}` and `{codename}` (os-release
    `ID`, `VERSION_CODENAME`), e.g. Docker's `https://download.docker.com/linux/{id} {codename}
    stable`: the probe reads them, so one resource serves Debian 12/13 and Ubuntu hosts.
    """

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
class Packages(Resource):
    """Debian packages installed (`--no-install-recommends`), optionally held."""

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
class Service(Resource):
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
class GuardedCommand(Resource):
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


@dataclass
class SystemdReload(Resource):
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
