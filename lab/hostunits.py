"""Unit handling for the lab host init (stdlib only; runs inside a host with Debian's python3).

Why: docker-systemctl-replacement starts/stops units on request but has no manager loop, so it has
no `.timer` support and ignores `Restart=`. The host init closes those gaps here, reading the same
unit files (and drop-ins) so the runbook can ship normal systemd units and timers.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

UNIT_DIRS = (Path("/etc/systemd/system"), Path("/run/systemd/system"), Path("/lib/systemd/system"))
WANTS = ("multi-user.target.wants", "default.target.wants")
RESTART_ON_FAILURE = {"always", "on-failure", "on-abnormal", "on-abort", "on-watchdog"}
_SPAN = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")
_UNITS = {
    "": 1.0,
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "seconds": 1.0,
    "ms": 0.001,
    "msec": 0.001,
    "us": 1e-6,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "minutes": 60.0,
    "h": 3600.0,
    "hr": 3600.0,
    "hour": 3600.0,
    "hours": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
    "days": 86400.0,
    "w": 604800.0,
    "week": 604800.0,
    "weeks": 604800.0,
}
_CALENDAR = {"minutely": 60.0, "hourly": 3600.0, "daily": 86400.0, "weekly": 604800.0}


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} hostinit: {msg}\n")
    sys.stderr.flush()


def parse_span(text: str) -> float | None:
    """systemd time span ('5min', '1h 30s', '90') in seconds; None when unparsable."""
    total, pos, text = 0.0, 0, text.strip().lower()
    if not text:
        return None
    for m in _SPAN.finditer(text):
        if text[pos : m.start()].strip() or m.group(2) not in _UNITS:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total if not text[pos:].strip() else None


def parse_calendar(text: str) -> float | None:
    """The simple OnCalendar= forms as a period aligned to the wall clock:
    minutely/hourly/daily/weekly, '*:0/N' (every N minutes), '*:*:0/N' (every N seconds). None for
    anything else."""
    t = text.strip().lower()
    if t in _CALENDAR:
        return _CALENDAR[t]
    t = t.removeprefix("*-*-* ")
    m = re.fullmatch(r"\*:(?:0)?/(\d+)(?::00)?", t) or re.fullmatch(r"\*:0/(\d+)", t)
    if m:
        return float(m.group(1)) * 60
    m = re.fullmatch(r"\*:\*:(?:0)?/(\d+)", t)
    if m:
        return float(m.group(1))
    if re.fullmatch(r"\*:\*(?::00)?", t):
        return 60.0
    return None


def find_unit(name: str) -> Path | None:
    for d in UNIT_DIRS:
        p = d / name
        if p.exists():
            return p
    return None


def read_unit(name: str) -> dict[str, dict[str, list[str]]]:
    """Sections → key → values of a unit file plus its drop-ins (an empty value resets, as in
    systemd)."""
    files: list[Path] = []
    main = find_unit(name)
    if main:
        files.append(main)
    dropins: dict[str, Path] = {}
    for d in reversed(UNIT_DIRS):
        dd = d / f"{name}.d"
        if dd.is_dir():
            for f in dd.glob("*.conf"):
                dropins[f.name] = f
    files += [dropins[k] for k in sorted(dropins)]
    out: dict[str, dict[str, list[str]]] = {}
    for f in files:
        section = ""
        try:
            text = f.read_text()
        except OSError:
            continue
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1]
                continue
            if "=" in line:
                k, v = (x.strip() for x in line.split("=", 1))
                vals = out.setdefault(section, {}).setdefault(k, [])
                if v:
                    vals.append(v)
                else:
                    vals.clear()
    return out


def last(unit: dict[str, dict[str, list[str]]], section: str, key: str, default: str = "") -> str:
    vals = unit.get(section, {}).get(key, [])
    return vals[-1] if vals else default


SYSTEMCTL = "/usr/bin/systemctl"


def systemctl(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [SYSTEMCTL, *args],
            text=True,
            capture_output=True,
            timeout=timeout,
            close_fds=True,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        log(f"systemctl {' '.join(args)}: timed out after {timeout}s")
        return subprocess.CompletedProcess(args, 124, "", "timeout")


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@dataclass
class Timer:
    name: str
    service: str
    on_boot: float | None
    on_active: float | None
    calendar: float | None
    next_due: float = 0.0


@dataclass
class Units:
    timers: dict[str, Timer] = field(default_factory=dict)
    restart_after: dict[str, float] = field(default_factory=dict)
    # the timers' jobs at work (timer name → the systemctl running it): PID 1 never waits for
    # one. It did: hostinit reaps in the same loop, and a re-assert's follow (up to 60 s) left a
    # killed Heartbeat a zombie for as long, so the watchdog's restart of a wedged one waited 5 s
    # for the old PID to go and the peer took over meanwhile (systemd reaps at once)
    jobs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @staticmethod
    def enabled(suffix: str, wants: tuple[str, ...] = WANTS) -> list[str]:
        names: set[str] = set()
        for w in wants:
            d = Path("/etc/systemd/system") / w
            if d.is_dir():
                names.update(p.name for p in d.iterdir() if p.name.endswith(suffix))
        return sorted(names)

    def enabled_services(self) -> list[str]:
        return self.enabled(".service")

    def start(self, unit: str) -> None:
        t0 = time.monotonic()
        r = systemctl("start", unit)
        log(f"start {unit}: rc {r.returncode} ({time.monotonic() - t0:.1f}s)")

    def stop_all(self) -> None:
        """Stop running enabled services (bounded: the replacement's stop has no timeout)."""
        for unit in reversed(self.enabled_services()):
            if self.main_pid_alive(unit) is not False:
                r = systemctl("stop", unit, timeout=15)
                log(f"stop {unit}: rc {r.returncode}")

    def arm_timers(self, now: float) -> None:
        self.timers.clear()
        for name in self.enabled(".timer", ("timers.target.wants",)):
            u = read_unit(name)
            svc = last(u, "Timer", "Unit", name[: -len(".timer")] + ".service")
            on_boot = parse_span(last(u, "Timer", "OnBootSec") or last(u, "Timer", "OnStartupSec"))
            on_active = parse_span(
                last(u, "Timer", "OnUnitActiveSec") or last(u, "Timer", "OnUnitInactiveSec")
            )
            cal_text = last(u, "Timer", "OnCalendar")
            cal = parse_calendar(cal_text) if cal_text else None
            if cal_text and cal is None:
                log(f"timer {name}: OnCalendar={cal_text} not supported by the lab init")
            t = Timer(name, svc, on_boot, on_active, cal)
            t.next_due = self._first_due(t, now)
            if t.next_due == float("inf"):
                log(f"timer {name}: nothing to schedule")
            self.timers[name] = t

    @staticmethod
    def _first_due(t: Timer, now: float) -> float:
        cands = []
        if t.on_boot is not None:
            cands.append(now + t.on_boot)
        if t.calendar:
            cands.append((now // t.calendar + 1) * t.calendar)
        if not cands and t.on_active is not None:
            cands.append(now + t.on_active)
        return min(cands) if cands else float("inf")

    def run_due_timers(self, now: float) -> None:
        if set(self.timers) != set(self.enabled(".timer", ("timers.target.wants",))):
            self.arm_timers(now)  # enabled/disabled at run time
        for t in self.timers.values():
            job = self.jobs.get(t.name)
            if job is not None:
                # (a job reaped by `reap` reads as ended: poll() takes ECHILD for an exit)
                if job.poll() is None:
                    continue
                del self.jobs[t.name]
                self._schedule_next(t, time.time())
                continue
            if now < t.next_due:
                continue
            # the replacement keeps a finished oneshot "active" and will not start it again: restart
            # it
            oneshot = last(read_unit(t.service), "Service", "Type", "simple") == "oneshot"
            verb = "restart" if oneshot else "start"
            log(f"timer {t.name}: {verb} {t.service}")
            self.jobs[t.name] = subprocess.Popen(
                [SYSTEMCTL, verb, t.service],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )

    @staticmethod
    def _schedule_next(t: Timer, done: float) -> None:
        """The timer's next run once its job has ended at `done`."""
        nxt = []
        if t.on_active is not None:
            nxt.append(done + t.on_active)
        if t.calendar:
            nxt.append((done // t.calendar + 1) * t.calendar)
        t.next_due = min(nxt) if nxt else float("inf")

    @staticmethod
    def main_pid_alive(unit: str) -> bool | None:
        """Cheap liveness from the PIDFile or the replacement's status file; None when unknown."""
        u = read_unit(unit)
        pidfile = last(u, "Service", "PIDFile")
        path = Path(pidfile) if pidfile else Path("/run") / f"{unit}.status"
        try:
            text = path.read_text()
        except OSError:
            return None
        m = re.search(r"MainPID=(\d+)", text) if not pidfile else re.match(r"\s*(\d+)", text)
        return pid_alive(int(m.group(1))) if m else None

    def restart_failed(self) -> None:
        """Restart= for enabled services: a unit reported `failed` is started again."""
        now = time.monotonic()
        for unit in self.enabled_services():
            u = read_unit(unit)
            policy = last(u, "Service", "Restart", "no")
            if policy not in RESTART_ON_FAILURE or self.main_pid_alive(unit):
                continue
            state = systemctl("is-active", unit, timeout=20).stdout.strip()
            if state != "failed":
                self.restart_after.pop(unit, None)
                continue
            delay = parse_span(last(u, "Service", "RestartSec", "100ms")) or 0.1
            due = self.restart_after.setdefault(unit, now + delay)
            if now >= due:
                log(f"{unit} failed; Restart={policy}: starting again")
                self.restart_after.pop(unit, None)
                self.start(unit)
