"""Failover scenarios on a running lab with the LB tier set up: each one fails the pair in one
way, measures the outage a TCP probe sees, restores, and returns the numbers.

Shared by the lab tests (which assert the issue's bounds) and `bench/failover.py` (which repeats
each scenario and reports median and max). Every scenario leaves exactly one VIP holder behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab import invariants, labstate, netns, probe, topology

REPO = Path(__file__).resolve().parents[1]
LBS = invariants.LBS
other = invariants.other
PROBE_HOST = "k8scontrol01"  # a host on the private network: probes the VIP from inside
DEADTIME = 3.0  # lab/hosts.yaml's heartbeat deadtime

Inv = Callable[..., "subprocess.CompletedProcess[str]"]


def token() -> str:
    return labstate.paths().token.read_text().strip()


def inv_runner(
    outputs: list[str] | None = None,
    *,
    columns: int = 160,
    state: Path | None = None,
    inventory: Path | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> Inv:
    """`inv` against the lab's inventory (of `state`, default the current lab; or `inventory`),
    API token in the environment (never argv); every output is appended to `outputs` (the leak
    test reads them)."""
    exe = str(Path(sys.executable).parent / "inv")

    def run(
        *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        root = state or labstate.paths().root
        env = dict(
            os.environ,
            # the runbook of this checkout: `inv` is the virtualenv's console script, which
            # imports `runbook` through the editable install (the main checkout) before invoke
            # reads tasks.py, so a bench run from a `git archive` installed the main checkout's
            # working tree on the hosts
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            INVOKE_RUNBOOK_INVENTORY=str(inventory or root / "hosts.yaml"),
            RBLAB_HCLOUD_TOKEN=(root / "hcloud-token").read_text().strip(),
            COLUMNS=str(columns),
            **(extra_env or {}),
        )
        r = subprocess.run(
            [exe, "-r", str(REPO), *args],
            capture_output=True,
            text=True,
            env=env,
            stdin=subprocess.DEVNULL,
            timeout=timeout,
        )
        if outputs is not None:
            outputs.append(r.stdout + r.stderr)
        if check and r.returncode != 0:
            raise AssertionError(
                f"inv {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
            )
        return r

    return run


def recap(out: str) -> dict[str, int]:
    """The counts of the last `recap: ok=.. changed=..` line of a run's output ({} if none)."""
    m = re.findall(r"^recap: (.*)$", out, re.M)
    return {k: int(v) for k, v in (kv.split("=") for kv in m[-1].split())} if m else {}


def wait_for(what: str, ok: Callable[[], bool], timeout: float = 20.0, step: float = 0.1) -> float:
    t0 = time.monotonic()
    while not ok():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out after {timeout}s: {what}")
        time.sleep(step)
    return time.monotonic() - t0


LB_TIER_RUNS = (("prepare", "--host", LBS[0], "--host", LBS[1]), ("network",), ("lb.setup",))


def lb_tier(inv: Inv) -> dict[str, float]:
    """The LB tier through the real CLI (prepare on the LBs, network, lb.setup; each with --yes
    and no failed host), then wait for one VIP holder. Returns the seconds per command."""
    took = {}
    for args in LB_TIER_RUNS:
        t0 = time.monotonic()
        r = inv(*args, "--yes")
        took[args[0]] = round(time.monotonic() - t0, 2)
        if recap(r.stdout).get("failed", 1) != 0:
            raise AssertionError(f"inv {' '.join(args)}: {r.stdout[-2000:]}")
    holder(timeout=60)
    return took


def holders() -> list[str]:
    """The LBs that have the VIP on their private interface now."""
    vip = topology.load().vip
    out = []
    for h in LBS:
        addrs = netns.host_exec(h, ["ip", "-4", "-o", "addr", "show", "dev", "ens10"]).stdout
        if f" {vip}/" in addrs:
            out.append(h)
    return out


def holder(timeout: float = 45) -> str:
    wait_for("exactly one VIP holder", lambda: len(holders()) == 1, timeout=timeout, step=0.5)
    return holders()[0]


@dataclass
class Outcome:
    """What one scenario run measured (seconds)."""

    scenario: str
    outages: dict[str, float] = field(default_factory=dict)  # target -> the number that counts
    extra: dict[str, float] = field(default_factory=dict)  # e.g. the longest window, heal
    failed_over: bool | None = None


def _admin(method: str, path: str, body: object = None) -> Any:
    """One call to the simulated API's admin listener (`/_lab/…`), its JSON answer; a status
    other than 200 or 201 is an AssertionError."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{topology.API_ADMIN_PORT}{path}",
        method=method,
        data=data,
        headers={"Authorization": f"Bearer {token()}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        if resp.status not in (200, 201):
            raise AssertionError(f"{path} answered {resp.status}")
        return json.load(resp)


def fault(**kw: object) -> None:
    """Configure the simulated API's faults (fail_next/code, outage, latency, action_seconds,
    clear)."""
    _admin("POST", "/_lab/faults", kw)


@contextmanager
def api_fault(**kw: object) -> Iterator[None]:
    """The simulated API's faults `kw` for the body, all cleared after it (also on an error)."""
    fault(**kw)
    try:
        yield
    finally:
        fault(clear=True)


def busy(server: str, seconds: float) -> None:
    """Lock `server` for `seconds` with an action of the simulated cloud's own (a backup:
    every action on it answers 423 locked meanwhile)."""
    _admin("POST", "/_lab/busy", {"server": server, "seconds": seconds})


def api_calls(since: float) -> list[dict[str, Any]]:
    """The simulated API's public calls from `since` (the epoch) on, from its call log (a ring
    of its last 1000): method, path, status, time."""
    calls = _admin("GET", "/_lab/calls")["calls"]
    return [c for c in calls if c["time"] >= since]


def rotate_token(*, read_only: bool = False, revoke: bool = True) -> str:
    """A new API token (the simulated API's admin call): `read_only` a Read token, `revoke` the
    old ones revoked at once. The lab's token file, which the runbook's runs read
    (RBLAB_HCLOUD_TOKEN), holds the new one; returns the one it held before."""
    new = secrets.token_hex(32)
    old = labstate.paths().token.read_text().strip()
    _admin("POST", "/_lab/token", {"token": new, "read_only": read_only, "revoke": revoke})
    use_token(new)
    return old


def use_token(token: str) -> None:
    """The lab's token file (what the runbook's runs read) holds `token` from now on."""
    path = labstate.paths().token
    tmp = path.with_suffix(".new")
    tmp.write_text(token + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)


def drill(inv: Inv, mode: str, seconds: int | None = None) -> Outcome:
    """`inv lb.failover-drill --mode MODE`: the failover outage per target (VIP, floating IP).

    linkdown's probe window also covers the heal after the link returns; the failover is its
    first outage window, the longest window is kept in `extra`."""
    at_rest(inv)
    before = holder()
    secs = seconds or (20 if mode == "linkdown" else 12)
    r = inv("lb.failover-drill", "--mode", mode, "--yes", "--seconds", str(secs), check=False)
    if r.returncode not in (0, 1):
        raise AssertionError(f"lb.failover-drill exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
    took = re.search(r"^takeover: (\S+) ([0-9.]+)$", r.stdout, re.M)
    longest = {t: float(v) for t, v in re.findall(r"^outage: (\S+) ([0-9.]+)$", r.stdout, re.M)}
    first = {t: float(v) for t, v in re.findall(r"^first-outage: (\S+) ([0-9.]+)$", r.stdout, re.M)}
    if len(longest) != 2:
        raise AssertionError(f"drill printed no outage lines:\n{r.stdout}")
    wait_for(
        "pair settles",
        lambda: holders() == [other(before)] or (mode == "linkdown" and len(holders()) == 1),
        timeout=45,
        step=0.5,
    )
    failover = {t: (first.get(t, v) if mode == "linkdown" else v) for t, v in longest.items()}
    extra = {f"{t} longest": v for t, v in longest.items()}
    # linkdown: the old holder may take the group back once its links return (Heartbeat's
    # split-brain recovery favours the home node); the peer's takeover during the fault counts
    moved = took is not None and took[1] == other(before)
    if took is not None:
        extra["takeover"] = float(took[2])
    return Outcome(
        f"drill {mode}", failover, extra, moved and (mode == "linkdown" or holder() != before)
    )


def partition(on: bool) -> None:
    """Drop traffic between the two LBs on the private network only (router policy rules)."""
    topo = topology.load()
    a, b = (topo.host(h).private_ip for h in LBS)
    for src, dst in ((a, b), (b, a)):
        subprocess.run(
            [
                *("ip", "-n", topology.ROUTER_NS, "rule", "add" if on else "del"),
                *("from", f"{src}/32", "to", f"{dst}/32", "blackhole"),
            ],
            check=True,
        )


@dataclass(frozen=True)
class Repair:
    """The pair was not at rest before a fault: `inv lb.setup --yes` exited `code`, and the pair
    came to rest after it (`rested`) or not; `before` is its state before the repair."""

    code: int | None  # None: not tried again (the repair before this one did not help)
    rested: bool
    before: list[str]
    fault: str = "the fault"  # what was about to run (the campaign names it)

    def __str__(self) -> str:
        after = "at rest after it" if self.rested else "still not at rest after it"
        did = (
            f"inv lb.setup --yes exited {self.code}, {after}"
            if self.code is not None
            else "not repaired again (the last repair did not bring it to rest)"
        )
        return "\n".join(
            [
                f"the LB pair did not come to rest within 90 s before {self.fault}; {did}. "
                "Before the repair:",
                *self.before,
            ]
        )


#: the repairs `rest_or_repair` made in this process (a fault before left the pair broken); the
#: last test of the tier and of the faults file assert there were none (`no_repairs`), so one
#: broken pair is one failure, not one per later test
REPAIRS: list[Repair] = []


def rest_or_repair(inv: Inv | None = None, fault: str = "the fault") -> Repair | None:
    """Wait for the pair to be at rest (`invariants.quiet`). When it does not come to rest, a
    fault before left it broken: repair it the way an operator would (`inv lb.setup --yes`) and
    wait again, so the next fault (`fault`) starts from a healthy pair. The repair is recorded
    in `REPAIRS`. None when no repair was needed."""
    global _LAST_REPAIR
    if invariants.quiet():
        return None
    before = invariants.describe()
    if _LAST_REPAIR is not None and not _LAST_REPAIR.rested:
        # one repair that did not help is enough: each one costs up to ~3 min, and a CI run
        # has 90 (the faults after it fail at once, each with the state it found)
        repair = Repair(None, False, before, fault)
    else:
        r = (inv or inv_runner())("lb.setup", "--yes", check=False, timeout=600)
        repair = _LAST_REPAIR = Repair(r.returncode, invariants.quiet(), before, fault)
    REPAIRS.append(repair)
    return repair


_LAST_REPAIR: Repair | None = None


def at_rest(inv: Inv | None = None) -> None:
    """Start a fault from a pair at rest: a previous one's recovery (Heartbeat restarting both
    nodes after a partition, the home node taking the group back) must not land in this one. A
    pair that does not come to rest is repaired (`rest_or_repair`, which records it); one the
    repair does not bring to rest fails the fault."""
    repair = rest_or_repair(inv)
    if repair is not None and not repair.rested:
        raise AssertionError(f"{repair}\nAfter it:\n" + "\n".join(invariants.describe()))


def no_repairs(inv: Inv | None = None) -> None:
    """A module's last test: no fault or scenario in it needed a repair before it started (each
    such repair is a failure of the one before it, reported here once). The last one's
    leftovers count too."""
    at_rest(inv)
    assert not REPAIRS, "\n\n".join(map(str, REPAIRS))


def partition_heal(hold: float = 8.0) -> Outcome:
    """Cut the private link between the LBs for `hold` s, then heal: the public heartbeat path
    keeps the pair together, so expect no failover and no outage."""
    at_rest()
    topo = topology.load()
    before = holder()
    result: dict[str, probe.ProbeResult] = {}
    t = threading.Thread(
        target=lambda: result.update(
            vip=probe.probe(topo.vip, 6443, read=False, host=PROBE_HOST, duration=hold + 8)
        )
    )
    t.start()
    partition(True)
    try:
        time.sleep(hold)
        during = holders()
    finally:
        partition(False)
        t.join()
    longest = max((o.seconds for o in result["vip"].outages), default=0.0)
    return Outcome(
        "private partition + heal",
        {"vip": longest},
        failed_over=during != [before] or holder() != before,
    )


def api_faults(inv: Inv, code: str, n: int = 3) -> Outcome:
    """A graceful failover while the API fails the next `n` calls with `code`."""
    fault(fail_next=n, code=code)
    try:
        out = drill(inv, "stop")
    finally:
        fault(clear=True)
    out.scenario = f"drill stop, {n}x {code}"
    return out


def api_latency(inv: Inv, mode: str, latency: float = 0.3) -> Outcome:
    """A failover while every API call takes `latency` s (the issue's 0.3 s target case)."""
    fault(latency=latency)
    try:
        out = drill(inv, mode)
    finally:
        fault(clear=True)
    out.scenario = f"drill {mode}, API {latency:g} s/call"
    return out


def api_down(outage: float = 20.0) -> Outcome:
    """Stop Heartbeat on the holder while the API is down for `outage` s: the VIP must serve
    again once the API is back (the resource script retries until its deadline)."""
    topo = topology.load()
    before = holder()
    fault(outage=outage)
    t0 = time.monotonic()
    try:
        netns.host_exec(before, ["systemctl", "stop", "heartbeat"], timeout=60)
        res = probe.probe(
            topo.vip,
            6443,
            read=False,
            host=PROBE_HOST,
            duration=outage + 25,
            until=lambda r: time.monotonic() - t0 > outage + 1 and r.attempts[-1].ok,
        )
    finally:
        fault(clear=True)
        netns.host_exec(before, ["systemctl", "start", "heartbeat"], timeout=60)
    if not res.attempts[-1].ok:
        raise AssertionError(f"VIP did not come back: {res.summary()}")
    return Outcome(
        f"API down {outage:g} s during failover",
        {"vip back after": res.attempts[-1].at},
        failed_over=holder() == other(before),
    )


def haproxy_pids(host: str, timeout: float = 15) -> list[str]:
    """HAProxy's running master and workers on `host`: the pid file and systemd's MainPID (the
    lab's systemctl replacement can report a stale one after a restart), kept only when they are
    haproxy processes now, plus their children."""
    script = (
        "for p in $(cat /run/haproxy.pid 2>/dev/null) "
        "$(systemctl show -p MainPID haproxy | cut -d= -f2); do "
        '[ "$(cat /proc/$p/comm 2>/dev/null)" = haproxy ] && echo $p '
        "$(cat /proc/$p/task/*/children 2>/dev/null); done"
    )
    deadline = time.monotonic() + timeout
    while True:
        out = netns.host_exec(host, ["sh", "-c", script], check=False).stdout.split()
        pids = list(dict.fromkeys(p for p in out if p.isdigit() and int(p) > 1))
        if pids:
            return pids
        if time.monotonic() > deadline:
            raise AssertionError(f"no running haproxy on {host}")
        time.sleep(0.5)


def dead_haproxy() -> Outcome:
    """Kill haproxy on the holder with a config it refuses, so it cannot restart (a mode change
    would not do: root reads a 000 file): the watchdog hands over to the peer."""
    at_rest()
    topo = topology.load()
    h = holder()
    pids = " ".join(haproxy_pids(h))
    cfg, keep = "/etc/haproxy/haproxy.cfg", "/run/rblab-haproxy.cfg.keep"
    t0 = time.monotonic()
    try:
        netns.host_exec(
            h,
            [
                "sh",
                "-c",
                f"cp -p {cfg} {keep} && echo rblab-not-a-keyword >> {cfg} && kill -9 {pids}",
            ],
        )
        res = probe.probe(
            topo.vip,
            6443,
            read=False,
            host=PROBE_HOST,
            duration=20,
            until=lambda r: time.monotonic() - t0 > 2 and r.attempts[-1].ok,
        )
    finally:
        netns.host_exec(h, ["sh", "-c", f"cp -p {keep} {cfg} && rm -f {keep}"])
        netns.host_exec(h, ["systemctl", "restart", "haproxy"])
    if not res.attempts[-1].ok:
        raise AssertionError(f"VIP did not come back: {res.summary()}")
    longest = max((o.seconds for o in res.outages), default=0.0)
    return Outcome("dead haproxy on holder", {"vip": longest}, failed_over=holder() != h)
