"""The LB pair's invariants (issue 11), checked from outside the pair:

I1  within 2 s after any fault ends, exactly one LB holds the VIP and the floating IP locally and
    the API routes both to that same LB;
I2  each fault's outage stays within its bound;
I3  at most one routing move per fault (no flapping);
I4  a runbook run never causes an outage by itself;
I5  verification through the VIP rides out a hand-over (the runbook's side:
    `runbook/steps/_k8s.py`).

`pair_state()` reads the local addresses of both LBs and the simulated API's routing;
`RoutingWatch` samples the API's routing in the background and counts the moves.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from lab import labstate, netlink, netns, probe, topology

LBS = ("k8slb01", "k8slb02")


def other(name: str) -> str:
    """The other LB of the pair."""
    return LBS[1] if name == LBS[0] else LBS[0]


@functools.lru_cache(maxsize=4)
def _topology(path: Path, mtime_ns: int) -> topology.Topology:
    return topology.load(path)


def _topo() -> topology.Topology:
    """The lab's topology, parsed once per inventory file (YAML: ~10 ms a parse, twice a look)."""
    path = topology.default_path()
    return _topology(path, path.stat().st_mtime_ns)


def cloud_routing() -> tuple[str, str]:
    """(server routed the VIP, server routed the floating IP) per the simulated API ('-': none).
    Read from the API's state file, which it writes atomically with every change it applies (the
    same data as `GET /_lab/state`): no request to the API's process, which a busy lab answered
    0.1-0.4 s late, and the cloud's routing stays readable while its API is faulted."""
    topo = _topo()
    state = json.loads(labstate.paths().cloud_state.read_text())
    names = {s["id"]: s["name"] for s in state["servers"]}
    vip = [
        s["name"]
        for s in state["servers"]
        for net in s.get("private_net") or []
        if topo.vip in (net.get("alias_ips") or [])
    ]
    fips = [f for f in state["floating_ips"] if f["name"] == topo.floating_ip_name]
    fip = names.get(fips[0]["server"], "-") if fips and fips[0]["server"] else "-"
    return (",".join(vip) or "-"), fip


def local_holders() -> tuple[list[str], list[str]]:
    """(LBs with the VIP, LBs with the floating IP, each configured on one of its interfaces); a
    host that cannot be asked (rebooting) holds nothing. Read over netlink in this process
    (`lab.netlink`): `settle`'s sampler looks every ~0.05 s, and the moment it measures is one
    in which a resumed host saturates both cores (two `ip` spawns took 0.1-0.4 s then)."""
    topo = _topo()
    vip, fip = [], []
    for h in LBS:
        try:
            netns.init_pid(h)  # a host between power-off and boot holds nothing
            have = netlink.ipv4_addresses(str(netns.NETNS_DIR / topology.host_ns(h)))
        except (OSError, RuntimeError):
            continue
        if topo.vip in have:
            vip.append(h)
        if topo.floating_ip in have:
            fip.append(h)
    return vip, fip


@dataclass(frozen=True)
class PairState:
    vip_local: tuple[str, ...]
    fip_local: tuple[str, ...]
    vip_routed: str
    fip_routed: str

    @property
    def holder(self) -> str | None:
        """The one LB that holds both locally and gets both routed; None otherwise (I1)."""
        if len(self.vip_local) == 1 and self.vip_local == self.fip_local:
            h = self.vip_local[0]
            if self.vip_routed == h and self.fip_routed == h:
                return h
        return None

    def __str__(self) -> str:
        return (
            f"VIP local {list(self.vip_local)} routed {self.vip_routed}; "
            f"floating IP local {list(self.fip_local)} routed {self.fip_routed}"
        )


def pair_state() -> PairState:
    vip, fip = local_holders()
    vr, fr = cloud_routing()
    return PairState(tuple(vip), tuple(fip), vr, fr)


def heartbeat_view(host: str) -> tuple[str, str]:
    """(Heartbeat's resource status on `host`, how it sees its peer); ('', '') when unknown."""
    peer = other(host)
    try:
        r = netns.host_exec(
            host,
            ["sh", "-c", f"cl_status rscstatus; cl_status nodestatus {peer}"],
            check=False,
            timeout=10,
        )
    except Exception:
        return "", ""
    lines = r.stdout.split()
    padded = [*lines, "", ""]
    return padded[0], padded[1]


def owns(host: str, rscstatus: str) -> bool:
    """What `cl_status rscstatus` means: the group is "local" on its home node (the
    inventory's `load_balancer.primary`, which the runbook requires; the first LB for a lab
    topology without it) and "foreign" on the other, where "local" (its zero own resources)
    means nothing."""
    home = _topo().primary or LBS[0]
    return rscstatus in ("all", "local" if host == home else "foreign")


def owners() -> list[str]:
    """The LBs Heartbeat gives the resource group."""
    return [h for h in LBS if owns(h, heartbeat_view(h)[0])]


#: how long the pair must look at rest before a fault: Heartbeat's initdead (10 s in the lab) +
#: 2 s. A pair that restarted itself (partition recovery) looks settled during initdead, but a
#: holder lost then is taken over only once initdead is over (a 21 s outage measured so)
REST_HOLD_S = 12.0


def at_rest() -> bool:
    """Heartbeat at rest on both nodes and I1: each sees its peer active, none is in
    transition, exactly one owns the group, and that one holds both addresses and the API routes
    them to it."""
    views = [heartbeat_view(h) for h in LBS]
    owning = [h for h, v in zip(LBS, views, strict=True) if owns(h, v[0])]
    return (
        all(v[1] == "active" for v in views)
        and all(v[0] != "transition" for v in views)
        and owning == [pair_state().holder]
    )


@dataclass
class _RestSeen:
    """The pair seen at rest without a break by `quiet`, `settle` and `watch_rest`: since when,
    and when the last look saw it. A stretch one of them saw carries over to the next call when
    no more than `LOOK_GAP_S` passed between the looks: a fault that `settle` saw end at rest
    and `watch_rest` watched through the probes' tail starts the next fault without a second
    `hold` (the campaign's faults waited REST_HOLD_S twice, ~12 s a fault)."""

    since: float | None = None
    seen: float = float("-inf")

    def look(self, rest: bool, now: float) -> float | None:
        """Record one look; returns since when the pair has been at rest (None: it is not)."""
        if not rest:
            self.since = None
        elif self.since is None or now - self.seen > LOOK_GAP_S:
            self.since = now
        if rest:
            self.seen = now
        return self.since


#: the longest gap between two looks that still counts as watching without a break
LOOK_GAP_S = 2.0
REST_SEEN = _RestSeen()


def quiet(timeout: float = 90.0, hold: float = REST_HOLD_S) -> bool:
    """Wait until the pair is at rest (`at_rest`) for `hold` s on end, counting a stretch the
    looks before this call saw (`REST_SEEN`). False when it did not within `timeout` (the next
    fault then starts from whatever state there is)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        rest = at_rest()
        now = time.monotonic()
        since = REST_SEEN.look(rest, now)
        if since is not None and now - since >= hold:
            return True
        time.sleep(0.5)
    return False


def watch_rest(seconds: float) -> None:
    """Look at the pair every 0.5 s for `seconds` (the probes' tail after a fault), so the next
    `quiet` knows whether it stayed at rest meanwhile."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        REST_SEEN.look(at_rest(), time.monotonic())
        time.sleep(max(0.0, min(0.5, until - time.monotonic())))


#: the scheduling priority of `StateSampler`'s thread (root may raise it; -10 of -20..19)
OBSERVER_NICE = -10
AUTOGROUP = Path("/proc/self/autogroup")


def set_autogroup_nice(nice: str) -> str | None:
    """Set the nice value of this process's autogroup (its session: the kernel gives each
    session an equal share of the CPU whatever its threads' nice values, so `OBSERVER_NICE` on
    the sampler's thread alone did not help against the lab's sessions: bench with CPU hogs,
    the sampler looked nothing for 2.3 s around a resume). Returns the value before (None:
    no autogroups, or not allowed)."""
    try:
        before = AUTOGROUP.read_text().split()[-1]
        AUTOGROUP.write_text(nice)
    except (OSError, IndexError):
        return None
    return before


@dataclass
class _Poller:
    """A background thread that runs `_look()` every `interval` s until `stop()`."""

    interval: float = 0.2
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _setup(self) -> None:
        """Runs once in the thread, before the first look."""

    def _look(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        """Start the thread (once: a poller already running goes on)."""
        if self._thread is not None:
            return self

        def run() -> None:
            self._setup()
            while not self._stop.is_set():
                self._look()
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Self:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self


@dataclass
class StateSampler(_Poller):
    """Samples `pair_state()` every `interval` s in the background (both LBs' addresses over
    netlink and the API's state file: ~2 ms a look), each sample stamped when its reads were
    done: the instant I1 began is known to ~0.05 s, not to one lap of `settle`'s slow checks
    (Heartbeat's view of both nodes: 1-1.7 s on a loaded 2-core machine, which a hung holder's
    I1 of ~1.5 s was measured as 3.1-3.5 s)."""

    interval: float = 0.05
    samples: list[tuple[float, PairState]] = field(default_factory=list)
    looks: list[float] = field(default_factory=list)  # how long each sample's reads took
    _autogroup_was: str | None = None

    def start(self) -> Self:
        """Start sampling; while it runs, this process's session has a raised CPU share."""
        if self._thread is None:
            self._autogroup_was = set_autogroup_nice(str(OBSERVER_NICE))
        return super().start()

    def stop(self) -> Self:
        super().stop()
        if self._autogroup_was is not None:
            set_autogroup_nice(self._autogroup_was)
            self._autogroup_was = None
        return self

    def _setup(self) -> None:
        # the observer is outside the pair in the real world, with CPU of its own: here it
        # shares two cores with the lab, and a resumed host's burst of starts (Heartbeat's
        # scripts, the re-assert) held its looks back 1-1.5 s each, longer than the I1 it
        # measures. This thread runs before the lab's processes.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), OBSERVER_NICE)

    def _look(self) -> None:
        began = time.monotonic()
        try:
            st = pair_state()
        except (OSError, ValueError):  # no state file (yet): no sample
            return
        self.samples.append((time.monotonic(), st))
        self.looks.append(time.monotonic() - began)

    def good_since(self) -> float | None:
        """When the last unbroken stretch of samples with I1 holding began (its first sample);
        None when the last sample broke I1 or there is none."""
        since = None
        for at, st in reversed(self.samples):
            if st.holder is None:
                break
            since = at
        return since

    def last(self) -> PairState | None:
        return self.samples[-1][1] if self.samples else None

    def look_times(self) -> str:
        """How long a sample took (median / 90th percentile / max): the resolution of I1."""
        if not self.looks:
            return "no samples"
        xs = sorted(self.looks)
        return (
            f"{len(xs)} samples, each {xs[len(xs) // 2]:.3f} s median, "
            f"{xs[len(xs) * 9 // 10]:.3f} s p90, {xs[-1]:.3f} s max"
        )

    def changes(self, since: float) -> list[tuple[float, str]]:
        """(s since `since`, the state) at the first sample and at each sample that differs from
        the one before: where a slow I1 went, in the campaign's notes."""
        out: list[tuple[float, str]] = []
        prev: PairState | None = None
        for at, st in self.samples:
            if st != prev:
                out.append((round(at - since, 2), str(st)))
                prev = st
        return out


def rest_view() -> str:
    """Heartbeat's view on both nodes (resource status / the peer), for a pair not at rest."""
    return "; ".join(f"{h}: {'/'.join(heartbeat_view(h)) or '?'}" for h in LBS)


# lines of Heartbeat's log file that say nothing about a failure: its socket set-up at each
# start (a dozen lines), the lab's memory-lock limit, and the resource script's reads that worked
# (it logs beside Heartbeat, `heartbeat.logfile`; those only when retried)
LOG_NOISE = re.compile(
    r"glib: ucast: |Cannot lock ourselves into memory|: GET \S+ attempt \d+: 2\d\d in "
)


_STAMPS = (  # the two ways lines in Heartbeat's log file begin, and how to read them
    (re.compile(r"^(\d{4}/\d\d/\d\d_\d\d:\d\d:\d\d(?:\.\d+)?)"), "%Y/%m/%d_%H:%M:%S"),
    (re.compile(r"^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d)"), "%b %d %H:%M:%S"),
)


def log_time(line: str, year: int) -> float | None:
    """When a line of Heartbeat's log file was written (the epoch, local time; `year` for
    syslog's stamps, which have none), None for a line without a stamp (a continuation)."""
    for pattern, fmt in _STAMPS:
        m = pattern.match(line)
        if not m:
            continue
        whole, _, frac = m.group(1).partition(".")
        try:
            t = time.strptime(
                whole if "%Y" in fmt else f"{year} {whole}", fmt if "%Y" in fmt else f"%Y {fmt}"
            )
        except ValueError:
            return None
        return time.mktime(t) + (float(f"0.{frac}") if frac else 0.0)
    return None


def since_window(log: list[str], since: float, lines: int) -> list[str]:
    """The lines of `log` written from one second before `since` (the epoch) on (the stamps of
    Heartbeat's own lines have whole seconds), without `LOG_NOISE`. Over `lines` of them: the
    first two thirds and the last third, with how many were left out between (the lines right
    after a fault began tell why a pair did not settle; a CI log shortens long reports)."""
    year = time.localtime(since).tm_year
    kept: list[str] = []
    for ln in log:
        if not kept:
            at = log_time(ln, year)
            if at is None or at < since - 1.0:
                continue
        if not LOG_NOISE.search(ln):
            kept.append(ln)
    if len(kept) <= lines:
        return kept
    head = lines * 2 // 3
    tail = lines - head
    return [*kept[:head], f"... {len(kept) - lines} lines left out ...", *kept[-tail:]]


def heartbeat_log(host: str, lines: int = 40, since: float | None = None) -> list[str]:
    """The last `lines` telling lines of Heartbeat's own log file on `host` (the inventory's
    `heartbeat.logfile`, where the resource script and the watchdog log too), without
    `LOG_NOISE`; with `since` (the epoch), the lines from then on instead (`since_window`);
    [] when no log file is set or it cannot be read (a host that is down)."""
    path = _topo().heartbeat_log
    if not path:
        return []
    many = str(lines * 10 if since is None else 20000)
    try:
        r = netns.host_exec(host, ["tail", "-n", many, path], check=False, timeout=10)
    except Exception:
        return []
    if since is not None:
        return since_window(r.stdout.splitlines(), since, lines)
    return [ln for ln in r.stdout.splitlines() if not LOG_NOISE.search(ln)][-lines:]


# the resource script's lines that time a takeover (its own stamps have milliseconds)
_TIMELINE = (
    ("start", re.compile(r"hcloud-failover\[\d+\]: start: routing ")),
    ("routed", re.compile(r"hcloud-failover\[\d+\]: \S+ and \S+ routed to \S+ \(")),
)


def timeline(log: list[str], since: float) -> dict[str, float]:
    """When, in seconds after `since` (the epoch a fault began), the first takeover in `log`
    (one LB's Heartbeat log file) began and when its moves were verified: {"start": s,
    "routed": s}, each present when its line is (rounded to 10 ms). Where a dead holder's
    failover spends its time: up to "start" Heartbeat's detection and its scripts, from there
    the resource script's lookups and the API's moves."""
    year = time.localtime(since).tm_year
    out: dict[str, float] = {}
    for ln in log:
        for key, pattern in _TIMELINE:
            if key in out or not pattern.search(ln):
                continue
            at = log_time(ln, year)
            if at is not None and at >= since and (key == "start" or "start" in out):
                out[key] = round(at - since, 2)
    return out


def takeover_timeline(since: float) -> dict[str, dict[str, float]]:
    """`timeline` of each LB whose log shows a takeover after `since` (the epoch)."""
    found = {}
    for h in LBS:
        t = timeline(heartbeat_log(h, 400, since), since)
        if t:
            found[h] = t
    return found


def describe(
    lines: int = 40, since: float | None = None, began: str = "the fault began"
) -> list[str]:
    """The pair as a failure message shows it: the addresses and the routing, Heartbeat's view
    on both LBs, and Heartbeat's log on each: its end, or with `since` (the epoch a fault
    began) every line from then on, up to `lines` (a CI log is all there is to go by: CI, hung
    holder, stop 30: the last 40 lines began 2 s after the resume, the telling ones were cut)."""
    out = [str(pair_state()), rest_view()]
    for h in LBS:
        log = heartbeat_log(h, lines, since)
        if not log:
            continue
        if since is None:
            out.append(f"--- {h}: the last {len(log)} lines of Heartbeat's log")
        else:
            at = time.strftime("%H:%M:%S", time.localtime(since))
            out.append(f"--- {h}: Heartbeat's log from 1 s before {began} ({at}) on")
        out += log
    return out


def settle(
    *,
    since: float | None = None,
    hold: float = REST_HOLD_S,
    give_up: float = 120.0,
    sampler: StateSampler | None = None,
) -> tuple[float | None, PairState, str]:
    """Seconds from `since` (the fault's end, `time.monotonic()`; default: now) until I1 holds
    FOR GOOD (None when it did not), the state then, and how the pair ended ("at rest after N
    s", or Heartbeat's view of both nodes when it was not at rest by `give_up`). I1 counts from
    the start of the last stretch in which it held without a break (`StateSampler`) until the
    pair had been at rest for `hold` s: the first instant I1 holds is not enough, as after a
    pause or a partition Heartbeat restarts both nodes, and the group it hands out `initdead`
    later may move the routing once more (20+ s after the fault). A pair whose Heartbeat is not
    at rest by `give_up` still has I1 when the stretch has lasted `hold` s by then and through
    it: the addresses and the routing are what I1 is about; the unrest is reported apart (CI,
    hung holder: I1 from 1.43 s on for the whole 90 s, and the test failed as "I1: None").
    The caller may pass its own `sampler` to read the samples afterwards (it is started here
    unless it runs already, as one started before the fault does, and stopped on return)."""
    t0 = time.monotonic() if since is None else since
    sampler = (sampler or StateSampler()).start()
    try:
        rest_since: float | None = None
        while time.monotonic() - t0 <= give_up:
            rest = at_rest()
            now = time.monotonic()
            REST_SEEN.look(rest, now)
            ok = sampler.good_since()
            if not rest or ok is None:
                rest_since = None
            else:
                # a break the sampler saw during the hold restarts it
                rest_since = max(rest_since or now, ok)
                if now - rest_since >= hold:
                    at = f"at rest after {rest_since - t0:.1f} s"
                    return max(0.0, ok - t0), sampler.last() or pair_state(), at
            time.sleep(0.2)
        ok = sampler.good_since()
        unrest = f"not at rest after {give_up:g} s ({rest_view()})"
        last = sampler.last() or pair_state()
        if ok is not None and time.monotonic() - ok >= hold:
            return max(0.0, ok - t0), last, unrest
        return None, last, unrest
    finally:
        sampler.stop()


@dataclass
class RoutingWatch(_Poller):
    """Samples the API's routing every `interval` s; `moves()` counts changes of the VIP route
    (a floating IP that follows within the same fault counts as the same move)."""

    samples: list[tuple[float, str, str]] = field(default_factory=list)
    _t0: float = 0.0

    def start(self) -> Self:
        self._t0 = time.monotonic()  # the clock starts with the call, not with the thread
        return super().start()

    def _look(self) -> None:
        try:
            vip, fip = cloud_routing()
        except OSError:
            return
        self.samples.append((time.monotonic() - self._t0, vip, fip))

    def changes(self) -> list[tuple[float, str, str]]:
        out: list[tuple[float, str, str]] = []
        for s in self.samples:
            if not out or (s[1], s[2]) != (out[-1][1], out[-1][2]):
                out.append(s)
        return out[1:]

    def moves(self, since: float = 0.0) -> int:
        """VIP route changes to a server at or after `since` (a transient '-' between two
        holders is no move)."""
        route = [s[1] for s in self.samples if s[1] != "-" and s[0] >= since - 0.5]
        return sum(1 for a, b in itertools.pairwise(route) if a != b)


# ----- numbers from a probe result ----------------------------------------------------------------
def failed(result: probe.ProbeResult, since: float = 0.0) -> list[probe.Attempt]:
    return [a for a in result.attempts if not a.ok and a.at >= since]


def last_failure(result: probe.ProbeResult, since: float = 0.0) -> float | None:
    """Start time of the last failed request at or after `since` (None: none failed)."""
    f = failed(result, since)
    return max(a.at for a in f) if f else None


def down_after(result: probe.ProbeResult, since: float, interval: float = 0.1) -> float:
    """Seconds without a successful request at or after `since` (the outage windows clipped)."""
    total = 0.0
    for o in result.outages:
        start, end = max(o.start, since), max(o.end, since)
        if end > start:
            total += end - start
    # a last failed request with no success after it counts one interval
    last = last_failure(result, since)
    if last is not None and not any(a.ok and a.at > last for a in result.attempts):
        total += interval
    return round(total, 2)


#: an outage ends only with SERVED_AGAIN_S seconds of answers: requests that fail again sooner
#: belong to the same outage
SERVED_AGAIN_S = 0.5


def outage_windows(result: probe.ProbeResult) -> list[tuple[float, float]]:
    """The probe's outages (first failure, first answer after it), those less than
    SERVED_AGAIN_S apart merged into one. Why: stop 38 found single answers in the middle of a
    dead holder's failover (8 of 15 runs; in 5 of them in both probes at the same moment),
    before the routing watch saw the move (a request made then, or one timed then and sent
    later: not settled); each split the failover in two, and the longer part was reported
    (3.3 s for failures from the fault until 3.9 s after it)."""
    return merge_windows((o.start, o.end) for o in result.outages)


def merge_windows(windows: Iterable[tuple[float, float]]) -> list[tuple[float, float]]:
    """Outage windows (start, end), in order, those less than SERVED_AGAIN_S apart merged."""
    merged: list[tuple[float, float]] = []
    for start, end in windows:
        if merged and start - merged[-1][1] < SERVED_AGAIN_S:
            merged[-1] = (merged[-1][0], end)
        else:
            merged.append((start, end))
    return merged


def longest(result: probe.ProbeResult, since: float = 0.0, until: float | None = None) -> float:
    """The longest outage window (`outage_windows`) that overlaps [since, until], counted from
    `since` at the earliest. A window that begins a moment before `since` counts: the fault's
    mark is taken after the fault was applied, so its first failed request may come first
    (seen: a 7.3 s floating-IP outage measured as 0.2 s because its first failure came 0.01 s
    early)."""
    return longest_window(outage_windows(result), since, until)


def longest_silence(
    result: probe.ProbeResult, since: float = 0.0, until: float | None = None
) -> float:
    """The longest time without an answer that overlaps [since, until] (the probe's own
    windows, none merged). For a fault that degrades the network without failing the pair
    over (packet loss): there single answers between failures are the service a client gets,
    and merging them (`outage_windows`) made one 38.9 s "outage" of 60 s of 30 % loss in which
    about half the requests were answered (stop 40; 0.8-1.1 s before the merge of stop 38)."""
    return longest_window(((o.start, o.end) for o in result.outages), since, until)


def longest_window(
    windows: Iterable[tuple[float, float]], since: float = 0.0, until: float | None = None
) -> float:
    """`longest` for windows (start, end) already merged: the longest that overlaps [since,
    until], counted from `since` at the earliest."""
    lengths = [
        end - max(start, since)
        for start, end in windows
        if end > since and (until is None or start <= until)
    ]
    return round(max(lengths, default=0.0), 2)
