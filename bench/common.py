"""What every benchmark needs: a fresh lab of a given topology, `inv` runs with the timing trace,
SSH sessions counted from the lab hosts' sshd logs, machine facts, tables and JSON results.

Benchmarks run as root on a machine with the lab's packages (`inv lab.up --install` once); they
drive the real CLI as an operator would and read the lab from outside.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from lab import scenarios

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
INV = str(Path(sys.executable).parent / "inv")  # for lab tasks
console = Console(width=int(os.environ.get("COLUMNS", "120")))


# -- the lab -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Lab:
    """One lab instance: its state dir and the inventory it is built from."""

    state: Path
    topology: Path

    @property
    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k != "RUNBOOK_TRACE"}
        # this checkout's runbook and lab, not the editable install's (see lab.scenarios.inv)
        path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
        return base | {
            "RBLAB_STATE": str(self.state),
            "RBLAB_TOPOLOGY": str(self.topology),
            "PYTHONPATH": path,
        }

    @property
    def inventory(self) -> Path:
        return self.state / "hosts.yaml"

    def hosts(self) -> list[str]:
        return list(yaml.safe_load(self.topology.read_text())["hosts"])

    def lab_task(self, *args: str) -> None:
        r = subprocess.run(
            [INV, "-r", str(REPO), *args], env=self.env, capture_output=True, text=True
        )
        if r.returncode != 0:
            raise SystemExit(f"inv {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")

    def fresh(self) -> float:
        """Down, forget every host layer and the cloud state (keep the apt cache), up again:
        a new lab of brand-new servers. Returns the seconds `lab.up` took."""
        self.lab_task("lab.down")
        for name in ("hosts", "cloud-state.json", "run"):
            path = self.state / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        t0 = time.monotonic()
        self.lab_task("lab.up")
        return time.monotonic() - t0

    def down(self) -> None:
        self.lab_task("lab.down")

    def sshd_log(self, host: str) -> Path:
        return self.state / "hosts" / host / "var.upper" / "log" / "rblab-sshd.log"


@contextmanager
def lab_session(lab: Lab) -> Iterator[Lab]:
    """The lab is the machine's only one (lab.up refuses a second): take the shared lock, and
    take the lab down afterwards even when the benchmark fails."""
    import fcntl

    with open("/run/rblab-use.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # said only when another run holds it
            console.print("[dim]waiting for the lab lock (/run/rblab-use.lock)…[/dim]")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield lab
        finally:
            lab.down()


# -- runs of the CLI ----------------------------------------------------------------------------
@dataclass
class Run:
    """One `inv` run: wall time, exit code, recap, trace events, sshd sessions per host."""

    args: tuple[str, ...]
    seconds: float
    exited: int
    recap: dict[str, int]
    steps: list[dict[str, Any]]
    commands: dict[str, int]  # per host, from the trace
    sessions: dict[str, dict[str, int]]  # per host, from sshd: connections, commands, sftp
    cpu_busy: float = 0.0  # share of all the machine's cores busy during the run (0..1)
    stdout: str = field(repr=False, default="")


SSHD_PATTERNS = {
    "connections": re.compile(r"^Accepted publickey for ", re.M),
    "commands": re.compile(r"^Starting session: (?:forced-)?command ", re.M),
    "sftp": re.compile(r"^Starting session: subsystem 'sftp' ", re.M),
}


def sshd_offsets(lab: Lab) -> dict[str, int]:
    return {h: (p.stat().st_size if (p := lab.sshd_log(h)).exists() else 0) for h in lab.hosts()}


def sshd_sessions(lab: Lab, since: dict[str, int]) -> dict[str, dict[str, int]]:
    out = {}
    for h in lab.hosts():
        p = lab.sshd_log(h)
        text = ""
        if p.exists():
            with p.open("rb") as fh:
                fh.seek(since.get(h, 0))
                text = fh.read().decode(errors="replace")
        out[h] = {k: len(rx.findall(text)) for k, rx in SSHD_PATTERNS.items()}
    return out


def run_inv(lab: Lab, *args: str, timeout: float = 3600) -> Run:
    """`inv ARGS` against the lab's inventory with the API token in the environment."""
    trace = lab.state / f"trace-{os.getpid()}-{time.monotonic_ns()}.jsonl"
    inv = scenarios.inv_runner(state=lab.state, extra_env=lab.env | {"RUNBOOK_TRACE": str(trace)})
    before = sshd_offsets(lab)
    cpu0 = cpu_times()
    t0 = time.monotonic()
    r = inv(*args, check=False, timeout=timeout)
    cpu1 = cpu_times()
    seconds = time.monotonic() - t0
    events = [json.loads(x) for x in trace.read_text().splitlines()] if trace.exists() else []
    trace.unlink(missing_ok=True)
    commands: dict[str, int] = {}
    for e in events:
        if e["kind"] == "command":
            commands[e["host"]] = commands.get(e["host"], 0) + 1
    recap = scenarios.recap(r.stdout)
    steps = [e for e in events if e["kind"] == "step"]
    for st in steps:  # how much remote work ran inside the step: parallel hosts overlap
        st["command_seconds"] = round(
            sum(
                e["seconds"]
                for e in events
                if e["kind"] == "command"
                and st["start"] <= e["start"] < st["start"] + st["seconds"]
            ),
            2,
        )
    busy = (cpu1[0] - cpu0[0]) / max(cpu1[1] - cpu0[1], 1)
    res = Run(
        tuple(args),
        seconds,
        r.returncode,
        recap,
        steps,
        commands,
        sshd_sessions(lab, before),
        round(busy, 2),
        r.stdout + r.stderr,
    )
    if r.returncode != 0:
        raise SystemExit(f"inv {' '.join(args)} exited {r.returncode}:\n{res.stdout[-4000:]}")
    return res


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all cores from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


# -- numbers and results ------------------------------------------------------------------------
def median_max(values: Sequence[float]) -> tuple[float, float]:
    return statistics.median(values), max(values)


def describe_commit(repo: Path) -> str:
    """The commit `repo` is at, "+changes" when a tracked file differs from it (a result measured
    with uncommitted code must not name a commit that lacks that code), or "not a git checkout"
    (a `git archive`: the caller writes down what it was made from)."""
    rev = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    if rev.returncode != 0 or not rev.stdout.strip():
        return "not a git checkout"
    changed = subprocess.run(
        ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return rev.stdout.strip() + ("+changes" if changed else "")


#: the code a benchmark runs, read when it starts (a commit made while it runs is not its code)
STARTED_AT_COMMIT = describe_commit(REPO)


def machine() -> dict[str, Any]:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "commit": STARTED_AT_COMMIT,
    }


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=1) + "\n")
    console.print(f"results: {path.relative_to(REPO)}")
    return path


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    t = Table(title=title, title_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for row in rows:
        t.add_row(*(f"{v:.2f}" if isinstance(v, float) else str(v) for v in row))
    console.print(t)


def verdict(ok: bool) -> str:
    return "[green]met[/green]" if ok else "[red]MISSED[/red]"
