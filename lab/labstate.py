"""Where the lab keeps its state, and the record of what `lab.up` created (what `lab.down` removes).

Why a record: `down` must remove exactly what `up` made and end only processes the lab started.
Every process is recorded with its PID *and* its kernel start time, so a PID reused by an unrelated
process after a crash is never signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DEFAULT_STATE = "/var/lib/rblab"


def state_dir() -> Path:
    """The lab state dir: $RBLAB_STATE or /var/lib/rblab."""
    return Path(os.environ.get("RBLAB_STATE") or DEFAULT_STATE)


@dataclass(frozen=True)
class LabPaths:
    """Every path the lab uses, derived from the state dir."""

    root: Path

    @property
    def layers(self) -> Path:
        """Per-host overlay upper/work dirs (kept by reboots and `down`; `--purge` removes)."""
        return self.root / "hosts"

    @property
    def apt_cache(self) -> Path:
        return self.root / "apt-cache"

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def docker_repo(self) -> Path:
        """The simulated download.docker.com (hosts: file:/run/labdocker)."""
        return self.root / "docker-repo"

    @property
    def docker_key(self) -> Path:
        """GNUPGHOME of the key that signs the simulated Docker repository."""
        return self.root / "docker-gpg"

    @property
    def run(self) -> Path:
        """Runtime files of a running lab (init PIDs, boot counters); emptied by `down`."""
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def tools(self) -> Path:
        """Files hostinit copies into every host (systemctl replacement, lab config)."""
        return self.root / "tools"

    @property
    def key(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @property
    def token(self) -> Path:
        return self.root / "hcloud-token"

    @property
    def cloud_state(self) -> Path:
        return self.root / "cloud-state.json"

    @property
    def record(self) -> Path:
        return self.root / "lab-record.json"

    @property
    def host_config(self) -> Path:
        """JSON the supervisor and hostinit read (topology + paths), written by `up`."""
        return self.root / "lab-config.json"

    @property
    def sdn_log(self) -> Path:
        return self.logs / "sdn.log"

    @property
    def sdn_applied(self) -> Path:
        return self.run / "sdn-applied.json"

    def host_layer(self, host: str) -> Path:
        return self.layers / host

    def init_pid_file(self, host: str) -> Path:
        return self.run / f"{host}.init"


def paths() -> LabPaths:
    return LabPaths(state_dir())


def proc_starttime(pid: int) -> int | None:
    """Kernel start time (clock ticks since boot) of `pid`, None when it does not exist."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[19])


def _proc_state(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return raw[raw.rindex(")") + 2]


@dataclass(frozen=True)
class ProcRef:
    """A process the lab started: PID + start time (identity that survives PID reuse)."""

    name: str
    pid: int
    start: int

    @classmethod
    def of(cls, name: str, pid: int) -> ProcRef:
        start = proc_starttime(pid)
        if start is None:
            raise ProcessLookupError(f"{name}: pid {pid} is gone")
        return cls(name, pid, start)

    def alive(self) -> bool:
        """Running (a zombie counts as gone; one of our own children is reaped on the way)."""
        if proc_starttime(self.pid) != self.start:
            return False
        if _proc_state(self.pid) == "Z":
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            return False
        return True

    def signal(self, sig: int) -> bool:
        """Send `sig` only if the PID still names the process we started."""
        if not self.alive():
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 10.0) -> bool:
        """SIGTERM, wait up to `timeout`, then SIGKILL. True when it was running."""
        if not self.signal(signal.SIGTERM):
            return False
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return True
            time.sleep(0.05)
        self.signal(signal.SIGKILL)
        for _ in range(100):
            if not self.alive():
                break
            time.sleep(0.05)
        return True


@dataclass
class Record:
    """What a running lab consists of (mutable: built while `up` runs, saved per step)."""

    netns: list[str] = field(default_factory=list)
    procs: list[ProcRef] = field(default_factory=list)
    started: float = 0.0

    def add_netns(self, name: str) -> None:
        if name not in self.netns:
            self.netns.append(name)

    def add_proc(self, ref: ProcRef) -> None:
        self.procs = [p for p in self.procs if p.name != ref.name] + [ref]

    def proc(self, name: str) -> ProcRef | None:
        return next((p for p in self.procs if p.name == name), None)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        data = {
            "netns": self.netns,
            "procs": [asdict(p) for p in self.procs],
            "started": self.started,
        }
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Record:
        if not path.exists():
            return cls()
        data = json.loads(path.read_text())
        return cls(
            netns=list(data.get("netns", [])),
            procs=[ProcRef(**p) for p in data.get("procs", [])],
            started=float(data.get("started", 0.0)),
        )

    def empty(self) -> bool:
        return not self.netns and not self.procs
