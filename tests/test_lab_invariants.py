"""The campaign's outage arithmetic (`lab/invariants.py`), on recorded probe results, and how
`settle` times I1 (on a scripted pair state)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from lab import invariants
from lab.invariants import PairState, down_after, longest, longest_silence
from lab.probe import Attempt, ProbeResult

HELD = PairState(("k8slb02",), ("k8slb02",), "k8slb02", "k8slb02")
STALE = PairState(("k8slb01", "k8slb02"), ("k8slb01", "k8slb02"), "k8slb02", "k8slb02")


def result(fails: list[float], oks: list[float]) -> ProbeResult:
    attempts = [Attempt(t, False, "TimeoutError") for t in fails]
    attempts += [Attempt(t, True, "HTTP/1.1 200 OK") for t in oks]
    return ProbeResult("probe", tuple(sorted(attempts, key=lambda a: a.at)))


def test_an_outage_that_begins_just_before_the_faults_mark_counts() -> None:
    """Lab (public link down 20 s): the floating IP failed from 1.04 s to 8.3 s, the fault's
    mark said 1.05 s, and the longest outage "since the fault began" came out as 0.2 s (the VIP
    probe's), because only windows starting at or after the mark counted."""
    fip = result([1.04 + 0.1 * i for i in range(73)], [0.9, 8.4, 8.5])
    assert longest(fip, 1.05) == 7.35


def test_windows_before_the_fault_or_after_until_do_not_count() -> None:
    r = result([0.2, 0.3, 5.0, 5.1], [0.1, 0.5, 4.0, 5.3, 9.0])
    assert longest(r, 1.0) == 0.3  # the 0.2-0.5 window ended before the fault
    assert longest(r, 1.0, until=4.5) == 0.0
    assert longest(r) == 0.3
    assert down_after(r, 5.05) == 0.25


def scripted(
    monkeypatch: pytest.MonkeyPatch,
    state_at: Callable[[float], PairState],
    rest_look_s: float,
    look_s: float = 0.0,
) -> float:
    """`pair_state` reads `state_at(seconds since now)` and takes `look_s`; `at_rest`
    (Heartbeat's view of both nodes, slow in the lab) takes `rest_look_s` and agrees with the
    state."""
    t0 = time.monotonic()

    def pair_state() -> PairState:
        st = state_at(time.monotonic() - t0)
        time.sleep(look_s)
        return st

    monkeypatch.setattr(invariants, "pair_state", pair_state)

    def at_rest() -> bool:
        time.sleep(rest_look_s)
        return state_at(time.monotonic() - t0).holder is not None

    monkeypatch.setattr(invariants, "at_rest", at_rest)
    return t0


def test_settle_times_i1_to_the_look_that_saw_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI: a hung holder's stale addresses came off ~1.5 s after the resume, and `settle`
    reported I1 after 3.1-3.5 s (bound 2): it threw its first look away and slept between slow
    looks (here 0.25 s each: 0.95 s reported for a change at 0.3 s)."""
    t0 = scripted(monkeypatch, lambda t: STALE if t < 0.3 else HELD, rest_look_s=0.5, look_s=0.25)
    settle_s, state, rest = invariants.settle(since=t0, hold=0.6, give_up=10)
    assert state == HELD and rest.startswith("at rest after ")
    assert settle_s is not None and 0.3 <= settle_s < 0.75


def test_settle_counts_from_the_faults_end_not_from_its_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    t0 = scripted(monkeypatch, lambda t: STALE if t < 0.3 else HELD, rest_look_s=0.05)
    settle_s, _, _ = invariants.settle(since=t0 - 1.0, hold=0.3, give_up=10)
    assert settle_s is not None and 1.3 <= settle_s < 1.6


def test_a_sampler_started_before_the_fault_times_i1_even_when_settle_comes_late(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Bench with CPU hogs: a sampler started when `settle` was called (after the fault's end)
    took its first look 3.06 s after the resume, and I1 was reported then, while the resumed
    holder's addresses were off 0.44 s after it. The campaign starts the sampler before the
    fault; `settle` goes on with it (no second thread) and times I1 by its looks."""
    t0 = scripted(monkeypatch, lambda t: STALE if t < 0.3 else HELD, rest_look_s=0.05)
    sampler = invariants.StateSampler().start()
    thread = sampler._thread
    time.sleep(1.2)  # the harness's turn comes late: the pair has held I1 since 0.3 s
    settle_s, _, _ = invariants.settle(since=t0, hold=0.3, give_up=10, sampler=sampler)
    assert sampler._thread is thread  # the same thread, not a second one
    assert settle_s is not None and 0.3 <= settle_s < 0.45
    assert sampler.changes(t0)[0][1] == str(STALE)  # it saw the stale state before


def test_the_sampler_raises_its_sessions_cpu_share_while_it_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Bench with CPU hogs: the sampler looked nothing for 2.3 s around a resume (its thread's
    nice value counts only within its session; the kernel gives each session an equal share).
    While it runs, its session's autogroup has OBSERVER_NICE; afterwards the value before."""
    scripted(monkeypatch, lambda t: HELD, rest_look_s=0.0)
    autogroup = tmp_path / "autogroup"
    autogroup.write_text("/autogroup-7 nice 0\n")
    monkeypatch.setattr(invariants, "AUTOGROUP", autogroup)
    sampler = invariants.StateSampler().start()
    try:
        assert autogroup.read_text() == str(invariants.OBSERVER_NICE)
    finally:
        autogroup.write_text("/autogroup-7 nice -10\n")  # as the kernel shows it
        sampler.stop()
    assert autogroup.read_text() == "0"  # the value before


def test_without_autogroups_the_sampler_samples_all_the_same(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scripted(monkeypatch, lambda t: HELD, rest_look_s=0.0)
    monkeypatch.setattr(invariants, "AUTOGROUP", tmp_path / "missing" / "autogroup")
    sampler = invariants.StateSampler().start()
    time.sleep(0.2)
    sampler.stop()
    assert sampler.last() == HELD


def test_a_break_during_the_hold_restarts_it_and_moves_i1(monkeypatch: pytest.MonkeyPatch) -> None:
    """I1 held at 0.2 s, broke from 0.8 to 1.0 s (a second move), then held: I1 is from 1.0 s,
    and the hold counts from there (a break between two slow rest checks counts too)."""
    t0 = scripted(
        monkeypatch, lambda t: HELD if 0.2 <= t < 0.8 or t >= 1.0 else STALE, rest_look_s=0.3
    )
    settle_s, _, _ = invariants.settle(since=t0, hold=0.9, give_up=10)
    assert settle_s is not None and 1.0 <= settle_s < 1.3
    assert time.monotonic() - t0 >= 1.9


def test_settle_gives_up_when_i1_never_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = scripted(monkeypatch, lambda t: STALE, rest_look_s=0.05)
    monkeypatch.setattr(invariants, "rest_view", lambda: "k8slb01: all/active")
    settle_s, state, rest = invariants.settle(since=t0, hold=0.2, give_up=0.6)
    assert (settle_s, state) == (None, STALE)
    assert rest == "not at rest after 0.6 s (k8slb01: all/active)"


def test_i1_that_holds_while_heartbeat_never_rests_is_reported_apart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI, hung holder: the addresses and the routing agreed from 1.43 s on for the whole
    90 s, Heartbeat's ownership did not come to rest, and the test failed as "I1: None"."""
    t0 = scripted(monkeypatch, lambda t: STALE if t < 0.2 else HELD, rest_look_s=0.05)
    monkeypatch.setattr(invariants, "at_rest", lambda: False)
    monkeypatch.setattr(invariants, "rest_view", lambda: "k8slb01: all/active")
    settle_s, state, rest = invariants.settle(since=t0, hold=0.5, give_up=1.2)
    assert settle_s is not None and 0.2 <= settle_s < 0.45 and state == HELD
    assert rest.startswith("not at rest after 1.2 s")


def test_i1_that_broke_late_is_not_for_good(monkeypatch: pytest.MonkeyPatch) -> None:
    t0 = scripted(monkeypatch, lambda t: STALE if 0.9 <= t < 1.0 else HELD, rest_look_s=0.05)
    monkeypatch.setattr(invariants, "at_rest", lambda: False)
    monkeypatch.setattr(invariants, "rest_view", lambda: "?")
    assert invariants.settle(since=t0, hold=0.5, give_up=1.2)[0] is None


# ----- what a failed fault tells a CI log ---------------------------------------------------------
def test_failure_runs_compress_a_window_of_like_failures() -> None:
    from lab.campaign import failure_runs

    at = [f"{t / 10:.1f} TimeoutError" for t in range(11, 60)] + ["6.0 OSError", "6.3 TimeoutError"]
    assert failure_runs(at) == "1.1-5.9 TimeoutError x49, 6.0 OSError, 6.3 TimeoutError"
    # a gap longer than a few probe intervals starts a new run
    assert failure_runs(["1.0 x", "1.1 x", "3.0 x"]) == "1.0-1.1 x x2, 3.0 x"
    assert failure_runs([]) == ""


def test_a_failed_faults_report_leads_with_what_failed_and_ends_with_heartbeats_log() -> None:
    """CI shows the head and the tail of a failure: a JSON dump of the row put 300 probe lines
    first and cut the checks and Heartbeat's view off (the hung-holder failure of 0e98735)."""
    from lab.campaign import FaultResult

    res = FaultResult(
        "holder-hung-5s",
        "every process of the VIP holder SIGSTOPped for 5 s, then SIGCONT",
        {"begin": 1.09, "end": 6.18},
        "outage after the fault ended",
        0.41,
        2.0,
        2.11,
        1,
        {"vip": 3, "fip": 0},
        {"I1": False, "I2": True, "I3": True, "ran": True},
        {
            "rest": "at rest after 3.1 s",
            "failed_at": {
                "vip": ["1.1 TimeoutError", "1.2 TimeoutError", "1.3 OSError"],
                "fip": [],
            },
            "routing_changes": [[4.9, "k8slb02", "k8slb02"]],
            "pair_states": [[-0.1, "VIP local [] routed k8slb01"], [2.11, "VIP local ['k8slb02']"]],
            "pair_state_looks": "9 samples",
            "pair_at_end": ["VIP local ['k8slb02'] routed k8slb02", "--- k8slb01: log", "hb: x"],
        },
        "state",
    )
    text = res.report().splitlines()
    assert text[0].startswith("holder-hung-5s: I1 failed")
    assert "I1 after 2.11 s" in text[1] and "(bound 2.0)" in text[1]
    assert "  failed vip (3): 1.1-1.2 TimeoutError x2, 1.3 OSError" in text
    assert not any(line.startswith("  failed fip") for line in text)
    assert "  pair at +2.11 s: VIP local ['k8slb02']" in text
    assert text[-3:] == [
        "    VIP local ['k8slb02'] routed k8slb02",
        "    --- k8slb01: log",
        "    hb: x",
    ]


def test_describe_ends_with_the_tail_of_heartbeats_log_on_both_lbs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[str]]] = []

    class Done:
        stdout = (
            "line 0\nline 1\n"
            "Dec 02 04:50:49 k8slb02 heartbeat: [4214]: info: glib: ucast: set SO_REUSEPORT\n"
            "2026/12/02_05:32:00.120  hcloud-failover[77]: GET /servers?name=k8slb01 attempt 1: "
            "200 in 0.01s\n"
            "line 2\n"
        )

    def host_exec(host: str, argv: list[str], **_kw: object) -> Done:
        calls.append((host, argv))
        return Done()

    monkeypatch.setattr(invariants.netns, "host_exec", host_exec)
    monkeypatch.setattr(invariants, "pair_state", lambda: PairState((), (), "-", "-"))
    monkeypatch.setattr(invariants, "heartbeat_view", lambda h: ("all", "active"))
    out = invariants.describe(lines=2)
    assert out[0] == "VIP local [] routed -; floating IP local [] routed -"
    assert out[1] == "k8slb01: all/active; k8slb02: all/active"
    assert out[2:] == [
        "--- k8slb01: the last 2 lines of Heartbeat's log",
        "line 1",
        "line 2",
        "--- k8slb02: the last 2 lines of Heartbeat's log",
        "line 1",
        "line 2",
    ]
    # the lab inventory's logfile, read from lab/hosts.yaml; the noise left out, the last 2 kept
    assert calls == [(h, ["tail", "-n", "20", "/var/log/ha-log"]) for h in invariants.LBS]


# ----- a pair a fault before left broken -------------------------------------------------------
class _Inv:
    def __init__(self, code: int = 0) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.code = code

    def __call__(self, *args: str, **_kw: object) -> object:
        self.calls.append(args)
        return type("Done", (), {"returncode": self.code})()


def _quiet(monkeypatch: pytest.MonkeyPatch, answers: list[bool]) -> None:
    from lab import scenarios

    monkeypatch.setattr(scenarios.invariants, "quiet", lambda *a, **k: answers.pop(0))
    monkeypatch.setattr(scenarios.invariants, "describe", lambda: ["state X", "log Y"])
    monkeypatch.setattr(scenarios, "REPAIRS", [])
    monkeypatch.setattr(scenarios, "_LAST_REPAIR", None)


def test_a_pair_at_rest_is_not_repaired(monkeypatch: pytest.MonkeyPatch) -> None:
    from lab import scenarios

    _quiet(monkeypatch, [True])
    inv = _Inv()
    scenarios.at_rest(inv)
    assert inv.calls == [] and scenarios.REPAIRS == []


def test_a_pair_not_at_rest_is_repaired_and_the_repair_recorded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CI on 0e98735: one pair left broken failed the 9 scenarios after it, 90 s each. Now the
    next scenario repairs it (as an operator would), runs, and the repair is reported once."""
    from lab import scenarios

    _quiet(monkeypatch, [False, True])
    inv = _Inv(code=0)
    scenarios.at_rest(inv)  # no raise: the scenario runs from a healthy pair
    assert inv.calls == [("lb.setup", "--yes")]
    (repair,) = scenarios.REPAIRS
    assert repair.rested and repair.code == 0
    text = str(repair).splitlines()
    assert "exited 0, at rest after it" in text[0] and text[1:] == ["state X", "log Y"]


def test_a_repair_before_a_campaign_fault_is_recorded_with_the_faults_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The campaign (`run_fault`) repairs through `rest_or_repair` too: the repair is recorded
    where the faults file's last test finds it, naming the fault that was about to run."""
    from lab import scenarios

    _quiet(monkeypatch, [False, True])
    repair = scenarios.rest_or_repair(_Inv(code=0), "holder-hung-5s")
    (recorded,) = scenarios.REPAIRS
    assert recorded is repair
    assert "within 90 s before holder-hung-5s; inv lb.setup --yes exited 0" in str(repair)
    with pytest.raises(AssertionError, match="before holder-hung-5s"):
        monkeypatch.setattr(scenarios.invariants, "quiet", lambda *a, **k: True)
        scenarios.no_repairs()


def test_a_pair_the_repair_does_not_bring_to_rest_fails_the_scenario(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lab import scenarios

    _quiet(monkeypatch, [False, False])
    with pytest.raises(AssertionError, match="exited 1, still not at rest") as e:
        scenarios.at_rest(_Inv(code=1))
    assert "After it:\nstate X\nlog Y" in str(e.value)
    assert len(scenarios.REPAIRS) == 1


# ----- a rest seen to the end of one fault counts for the next ----------------------------------
class _Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


def _rest_looks(monkeypatch: pytest.MonkeyPatch, rest: Callable[[float], bool]) -> list[float]:
    """A fake clock for `invariants`, a fresh REST_SEEN, and `at_rest` answering `rest(t)`;
    returns the times of the looks."""
    clock = _Clock()
    looks: list[float] = []

    def at_rest() -> bool:
        looks.append(clock.t)
        clock.t += 0.1  # a look takes time (two cl_status)
        return rest(clock.t)

    monkeypatch.setattr(invariants, "time", clock)
    monkeypatch.setattr(invariants, "REST_SEEN", invariants._RestSeen())
    monkeypatch.setattr(invariants, "at_rest", at_rest)
    return looks


def test_quiet_counts_the_rest_the_faults_tail_watched(monkeypatch: pytest.MonkeyPatch) -> None:
    """The campaign waited REST_HOLD_S twice between two faults (`settle`'s hold, then the next
    fault's `quiet`): a rest watched without a break carries over, one look confirms it."""
    looks = _rest_looks(monkeypatch, lambda t: True)
    invariants.watch_rest(12.5)
    before = len(looks)
    assert invariants.quiet(hold=12.0) is True
    assert len(looks) == before + 1


def test_a_gap_between_the_looks_makes_quiet_hold_again(monkeypatch: pytest.MonkeyPatch) -> None:
    looks = _rest_looks(monkeypatch, lambda t: True)
    invariants.watch_rest(12.5)
    invariants.time.sleep(invariants.LOOK_GAP_S + 0.5)  # nobody looked: anything may have happened
    start = invariants.time.monotonic()
    assert invariants.quiet(hold=12.0) is True
    assert invariants.time.monotonic() - start >= 12.0
    assert len([t for t in looks if t >= start]) > 20


def test_unrest_seen_in_the_tail_makes_quiet_hold_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Heartbeat restart during the tail (the pair looks settled again during initdead)."""
    t_break = 1010.0
    looks = _rest_looks(monkeypatch, lambda t: not (t_break <= t < t_break + 0.6))
    invariants.watch_rest(12.5)
    assert invariants.quiet(hold=12.0) is True
    assert invariants.time.monotonic() >= t_break + 0.6 + 12.0
    assert looks  # looked all along


def test_a_repair_that_did_not_help_is_not_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each repair costs up to ~3 min (90 s waiting, lb.setup, 90 s again): a pair the first
    one did not bring to rest fails the later faults at once, within CI's 90 min."""
    from lab import scenarios

    monkeypatch.setattr(scenarios, "_LAST_REPAIR", None)
    _quiet(monkeypatch, [False, False, False])
    inv = _Inv(code=1)
    with pytest.raises(AssertionError, match="still not at rest"):
        scenarios.at_rest(inv)
    with pytest.raises(AssertionError, match="not repaired again"):
        scenarios.at_rest(inv)
    assert inv.calls == [("lb.setup", "--yes")]


def test_a_failed_faults_log_starts_a_second_before_the_fault_began() -> None:
    since = time.mktime(time.strptime("2026/12/02_08:15:34", "%Y/%m/%d_%H:%M:%S")) + 0.5
    log = [
        "Dec 02 08:15:32 k8slb01 heartbeat: [921]: info: before",
        "2026/12/02_08:15:33.400  haproxy-watchdog[975]: also before",
        "2026/12/02_08:15:33.600  haproxy-watchdog[975]: the second before the begin",
        "a continuation line",
        "Dec 02 08:15:34 k8slb01 heartbeat: [921]: info: glib: ucast: noise",
        "2026/12/02_08:15:35  harc(default)[4467]:    info: after",
        "Dec 02 08:15:36 k8slb01 heartbeat: [921]: info: later",
    ]
    assert invariants.since_window(log, since, 10) == [
        "2026/12/02_08:15:33.600  haproxy-watchdog[975]: the second before the begin",
        "a continuation line",
        "2026/12/02_08:15:35  harc(default)[4467]:    info: after",
        "Dec 02 08:15:36 k8slb01 heartbeat: [921]: info: later",
    ]
    # over the limit: the first two thirds and the last third, and how many were left out
    many = [f"2026/12/02_08:15:40.{i:03d}  x[1]: line {i}" for i in range(10)]
    assert invariants.since_window(many, since, 6) == [
        *many[:4],
        "... 4 lines left out ...",
        *many[-2:],
    ]
    assert invariants.log_time("no stamp here", 2026) is None


def test_describe_with_a_begin_shows_the_log_from_then_on(monkeypatch: pytest.MonkeyPatch) -> None:
    since = time.mktime(time.strptime("2026/12/02_08:15:34", "%Y/%m/%d_%H:%M:%S"))

    class Done:
        stdout = "Dec 02 08:15:20 k8slb01 heartbeat: old\nDec 02 08:15:35 k8slb01 heartbeat: new\n"

    monkeypatch.setattr(invariants.netns, "host_exec", lambda *a, **k: Done())
    monkeypatch.setattr(invariants, "pair_state", lambda: PairState((), (), "-", "-"))
    monkeypatch.setattr(invariants, "heartbeat_view", lambda h: ("all", "active"))
    out = invariants.describe(lines=5, since=since)
    assert out[2:4] == [
        "--- k8slb01: Heartbeat's log from 1 s before the fault began (08:15:34) on",
        "Dec 02 08:15:35 k8slb01 heartbeat: new",
    ]


def test_timeline_times_the_first_takeover_after_the_fault_began() -> None:
    since = time.mktime(time.strptime("2026/12/02_08:15:34", "%Y/%m/%d_%H:%M:%S"))
    log = [
        # an earlier takeover's lines (before the fault) do not count
        "2026/12/02_08:15:33.900  hcloud-failover[10]: start: routing 10.0.0.5 and 1.2.3.4 to a",
        "2026/12/02_08:15:33.950  hcloud-failover[10]: 10.0.0.5 and 1.2.3.4 routed to a (0.05s)",
        "Dec 02 08:15:37 k8slb02 heartbeat: [921]: WARN: node k8slb01: is dead",
        "2026/12/02_08:15:37.412  hcloud-failover[11]: start: routing 10.0.0.5 and 1.2.3.4 to b",
        "2026/12/02_08:15:37.980  hcloud-failover[11]: 10.0.0.5 and 1.2.3.4 routed to b (0.52s)",
        # a second takeover later on does not overwrite the first
        "2026/12/02_08:15:50.000  hcloud-failover[12]: start: routing 10.0.0.5 and 1.2.3.4 to b",
    ]
    assert invariants.timeline(log, since) == {"start": 3.41, "routed": 3.98}
    # a takeover that never got routed: only its start
    assert invariants.timeline(log[:4], since) == {"start": 3.41}
    assert invariants.timeline(log[:3], since) == {}


@pytest.mark.parametrize(
    ("primary", "k8slb01_owns", "k8slb02_owns"),
    [("k8slb01", True, False), ("k8slb02", False, True)],
)
def test_owns_reads_the_home_node_from_the_inventory(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    primary: str,
    k8slb01_owns: bool,
    k8slb02_owns: bool,
) -> None:
    """`cl_status rscstatus` says "local" on the group's home node: which node that is comes
    from `load_balancer.primary`, not from the order of the LBs (it was the first LB, always)."""
    hosts = Path(__file__).resolve().parents[1] / "lab" / "hosts.yaml"
    text = hosts.read_text(encoding="utf-8")
    assert "primary: k8slb01" in text
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(text.replace("primary: k8slb01", f"primary: {primary}"))
    monkeypatch.setenv("RBLAB_TOPOLOGY", str(inventory))
    assert invariants.owns("k8slb01", "local") is k8slb01_owns
    assert invariants.owns("k8slb02", "local") is k8slb02_owns
    assert invariants.owns("k8slb01", "foreign") is not k8slb01_owns
    assert invariants.owns("k8slb02", "all") is True


def test_a_single_answer_inside_a_failover_does_not_end_its_outage() -> None:
    """Stop 38: one answer 3.4 s into a dead holder's failover, failures again until 3.9 s:
    the outage is 3.9 s (+ the next answer), not the longest of its two parts (3.3 s)."""
    fails = [round(1.0 + 0.1 * i, 1) for i in range(34)] + [4.5, 4.6, 4.7, 4.8, 4.9]
    oks = [0.9, 4.4] + [round(5.0 + 0.1 * i, 1) for i in range(20)]
    assert longest(result(fails, oks), since=1.0) == 4.0
    # answers for SERVED_AGAIN_S or more end it: two outages, the longer one counts
    oks2 = (
        [0.9]
        + [round(4.4 + 0.1 * i, 1) for i in range(6)]
        + [round(5.5 + 0.1 * i, 1) for i in range(9)]
    )
    fails2 = [round(1.0 + 0.1 * i, 1) for i in range(34)] + [5.0, 5.1, 5.2, 5.3, 5.4]
    assert longest(result(fails2, oks2), since=1.0) == 3.4


def test_under_packet_loss_single_answers_are_service_not_part_of_one_outage() -> None:
    """Stop 40: 30 % loss for 60 s, about every other request answered, none two in a row for
    0.5 s: the merged count made one 38.9 s outage of it. The loss fault is judged by the
    longest time without an answer (the probe's windows as they are)."""
    from lab import campaign

    fails = [round(1.0 + 0.1 * i, 1) for i in range(600) if i % 2 == 0 or i % 7 == 0]
    oks = [0.9] + [round(1.0 + 0.1 * i, 1) for i in range(600) if not (i % 2 == 0 or i % 7 == 0)]
    res = result(fails, oks)
    assert longest(res, since=1.0) > 50.0  # merged: one outage
    assert longest_silence(res, since=1.0) <= 0.3
    fault = campaign.CATALOGUE["private-loss-30pct-60s"]
    assert fault.bounds.metric == campaign.SILENT
    assert campaign.measure(campaign.SILENT, {"vip": res}, {"begin": 1.0}) <= 0.3


def test_a_fault_that_holds_up_one_address_bounds_the_other_on_its_own() -> None:
    """A backup locking the dead holder's server holds up the VIP (its alias must leave that
    server first) for the lock's 15 s; the floating IP has its own lock and must not wait for
    it. The fault's bound (17.5 s) covers the VIP; `Bounds.each` bounds the floating IP's own
    outage: the same 15 s outage on the floating IP fails I2 (the longest of both alone
    passed it)."""
    from lab import campaign

    fault = campaign.CATALOGUE["holder-links-down-busy-15s"]
    assert dict(fault.bounds.each) == {"fip": campaign.FAILOVER_BOUND + 1.0}
    marks = {"begin": 1.0}
    vip_15s = result([round(1.0 + 0.1 * i, 1) for i in range(155)], [0.9, 16.6, 16.7])
    fip_4s = result([round(1.0 + 0.1 * i, 1) for i in range(38)], [0.9, 4.9, 5.0])
    measured, _, each, within = campaign.judge(fault.bounds, {"vip": vip_15s, "fip": fip_4s}, marks)
    assert measured == 15.6 and each == {"fip": 3.9} and within
    measured, _, each, within = campaign.judge(
        fault.bounds, {"vip": vip_15s, "fip": vip_15s}, marks
    )
    assert measured == 15.6 and each == {"fip": 15.6} and not within
