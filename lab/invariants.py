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

import itertools
import json
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from lab import labstate, netns, probe, topology

LBS = ("k8slb01", "k8slb02")


def _admin(path: str) -> Any:
    token = labstate.paths().token.read_text().strip()
    req = urllib.request.Request(
        f"http://127.0.0.1:{topology.API_ADMIN_PORT}{path}",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())


def cloud_routing() -> tuple[str, str]:
    """(server routed the VIP, server routed the floating IP) per the API ('-': none)."""
    topo = topology.load()
    state = _admin("/_lab/state")
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
    """(LBs with the VIP on ens10, LBs with the floating IP on eth0); a host that cannot be
    asked (rebooting, frozen) holds nothing."""
    topo = topology.load()
    vip, fip = [], []
    for h in LBS:
        try:
            out = netns.host_exec(h, ["ip", "-4", "-o", "addr", "show"], timeout=5).stdout
        except Exception:
            continue
        if f" {topo.vip}/" in out:
            vip.append(h)
        if f" {topo.floating_ip}/" in out:
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
    peer = LBS[1] if host == LBS[0] else LBS[0]
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
    """What `cl_status rscstatus` means: the group is "local" on its home node (the primary,
    k8slb01) and "foreign" on the other, where "local" (its zero own resources) means nothing."""
    return rscstatus in ("all", "local" if host == LBS[0] else "foreign")


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


def quiet(timeout: float = 90.0, hold: float = REST_HOLD_S) -> bool:
    """Wait until the pair is at rest (`at_rest`) for `hold` s on end. False when it did not
    within `timeout` (the next fault then starts from whatever state there is)."""
    t0 = time.monotonic()
    since: float | None = None
    while time.monotonic() - t0 < timeout:
        if at_rest():
            since = time.monotonic() if since is None else since
            if time.monotonic() - since >= hold:
                return True
        else:
            since = None
        time.sleep(0.5)
    return False


def settle(*, hold: float = REST_HOLD_S, give_up: float = 120.0) -> tuple[float | None, PairState]:
    """Seconds until I1 holds FOR GOOD (None when it did not within `give_up`), and the state
    then: the start of the last stretch in which I1 held without a break until the pair had
    been at rest for `hold` s. The first instant I1 holds is not enough: after a pause or a
    partition Heartbeat restarts both nodes, and the group it hands out `initdead` later may
    move the routing once more (20+ s after the fault: a settle that stopped at the first
    instant, as this did before, never saw that move)."""
    t0 = time.monotonic()
    ok_since: float | None = None
    rest_since: float | None = None
    st = pair_state()
    while time.monotonic() - t0 <= give_up:
        st = pair_state()
        now = time.monotonic()
        if st.holder is None:
            ok_since = rest_since = None
        else:
            ok_since = now if ok_since is None else ok_since
            if at_rest():
                rest_since = now if rest_since is None else rest_since
                if now - rest_since >= hold:
                    return ok_since - t0, st
            else:
                rest_since = None
        time.sleep(0.2)
    return None, st


@dataclass
class RoutingWatch:
    """Samples the API's routing every `interval` s; `moves()` counts changes of the VIP route
    (a floating IP that follows within the same fault counts as the same move)."""

    interval: float = 0.2
    samples: list[tuple[float, str, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> RoutingWatch:
        t0 = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                try:
                    vip, fip = cloud_routing()
                    self.samples.append((time.monotonic() - t0, vip, fip))
                except OSError:
                    pass
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> RoutingWatch:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return self

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


def longest(result: probe.ProbeResult, since: float = 0.0, until: float | None = None) -> float:
    """The longest outage window that overlaps [since, until], counted from `since` at the
    earliest. A window that begins a moment before `since` counts: the fault's mark is taken
    after the fault was applied, so its first failed request may come first (seen: a 7.3 s
    floating-IP outage measured as 0.2 s because its first failure came 0.01 s early)."""
    windows = [
        o.end - max(o.start, since)
        for o in result.outages
        if o.end > since and (until is None or o.start <= until)
    ]
    return round(max(windows, default=0.0), 2)
