"""Issue 11 on the lab: the LB pair under faults nobody scripted, and under the runbook's own runs.

Each test runs one fault of `lab/campaign.py` while the issue's probes run (a new TCP+TLS
`GET /readyz` every 100 ms through the VIP from a control plane and through the floating IP from
outside) and checks the invariants I1–I4 (`lab/invariants.py`) with the fault's bounds. Only the
LB tier is needed: where no apiserver answers on the control planes, a TLS /readyz stand-in does
(`lab/readyz.py`), so HAProxy's health checks are the real ones.

Measurements are appended to <lab state>/measurements.json.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator

import pytest

from lab import blindclock, campaign, invariants, scenarios, topology
from lab.campaign import Bounds, Fault
from runbook.inventory import load_inventory
from runbook.render import lbfiles

from .helpers import measure

pytestmark = pytest.mark.lab
cli = scenarios.inv_runner()
SEED = 11


@pytest.fixture(scope="module")
def pair(lab_up: dict[str, float]) -> Iterator[None]:
    scenarios.REPAIRS.clear()  # this module's own (`test_no_fault_left_the_pair_broken`)
    scenarios.lb_tier(cli)
    installed = campaign.prepare()
    yield
    campaign.cleanup(installed)


def run(fault: Fault) -> campaign.FaultResult:
    res = campaign.run_fault(fault, cli, random.Random(SEED))
    measure(f"{fault.name}: {res.metric} (s or count)", res.measured)
    if res.settle_s is not None:
        measure(f"{fault.name}: I1 settled after (s)", res.settle_s)
    # Heartbeat's own settling, apart from I1 ("not at rest after N s" is in the notes only)
    rest = re.fullmatch(r"at rest after ([0-9.]+) s", str(res.notes.get("rest", "")))
    if rest:
        measure(f"{fault.name}: Heartbeat at rest after (s)", float(rest.group(1)))
    return res


def check(res: campaign.FaultResult) -> None:
    assert res.ok, res.report()


def test_hung_holder_resumes_and_the_keeper_owns_the_route(pair: None) -> None:
    """Issue 11 item 1: outage after the resume was 30-55 s (until the 60 s reassert timer);
    target ≤ 2 s, one LB holds both addresses and the route within 2 s of the resume and keeps
    them until the pair is at rest (I1), and the failover is the only routing move (I3):
    Heartbeat's partition recovery used to move it three more times, the last 20 s later."""
    res = run(campaign.CATALOGUE["holder-hung-5s"])
    check(res)


def test_cold_start_with_the_api_down_takes_over_without_an_operator(pair: None) -> None:
    """Issue 11 item 2: both LBs rebooted while the API was down longer than the script's
    deadline (30 s): nobody held the VIP once the API was back. Target: serving ≤ 15 s after."""
    fault = Fault(
        "both-reboot-api-down-45s",
        campaign.both_reboot(45.0),
        Bounds(campaign.SERVING, 15.0, settle=15.0, moves=1),
        "both LBs power-cycled while the API is unreachable for 45 s",
    )
    check(run(fault))


def test_rerun_after_drift_on_the_holder_fails_no_request(pair: None) -> None:
    """Issue 11 item 3: authkeys 0644 and a comment in ha.cf made the converge run restart
    Heartbeat on the holder (failover, failed requests, exit 1). Now: 0 failed, exit 0."""
    res = run(campaign.CATALOGUE["drift-rerun"])
    check(res)
    assert res.failed == {"vip": 0, "fip": 0}, res.notes


def test_hung_control_plane_is_out_of_rotation_within_4s(pair: None) -> None:
    """Issue 11 item 7: the last failed request came 10-12 s after the hang began (inter 2s
    fall 3); target ≤ 4 s."""
    fault = Fault(
        "cp-hung-10s",
        campaign.cp_hung("k8scontrol02", 10),
        Bounds(campaign.LAST_FAIL, 4.0, moves=0),
        "every process of k8scontrol02 SIGSTOPped for 10 s",
    )
    check(run(fault))


def test_the_wedge_repair_on_the_holder_moves_nothing_and_fails_no_request(pair: None) -> None:
    """Stop 33: a wedged Heartbeat delayed its stop for good, so the watchdog's restart hung
    (four piled up) and the node could not take over in the next fault. The repair now ends
    Heartbeat's processes (SIGKILL to its process group) before the restart. Done on the VIP
    holder of a healthy pair (a wedge cannot be made on demand): its addresses stay while the
    cloud routes there, the peer's takeover defers to it; nothing moves, nothing fails."""
    res = run(campaign.CATALOGUE["wedge-repair-holder"])
    check(res)
    assert res.failed == {"vip": 0, "fip": 0} and res.moves == 0, res.notes


def test_the_wedge_repair_on_a_holder_that_is_not_the_home_node_leaves_the_group_owned(
    pair: None,
) -> None:
    """Campaign, stop 34: the same repair on a holder that is not the haresources home node
    (it got the VIP by a failover, auto_failback off) left Heartbeat with "No one owns" the
    group: the pair served, but was not at rest within 90 s and the next fault began with an
    `lb.setup` repair. The node the cloud routes to now takes the orphaned group back at the
    end of its follow (`hb_takeover`, no routing move)."""
    home = topology.load().primary
    if scenarios.holder() == home:  # a graceful hand-over puts the VIP on the other node
        scenarios.drill(cli, "stop", 8)
    assert scenarios.holder() != home
    res = run(campaign.CATALOGUE["wedge-repair-holder"])
    check(res)
    assert res.failed == {"vip": 0, "fip": 0} and res.moves == 0, res.notes
    assert str(res.notes.get("rest", "")).startswith("at rest after"), res.report()


@pytest.mark.parametrize("role", ["standby", "holder"])
def test_a_second_heartbeat_on_a_node_is_ended_and_nothing_moves(pair: None, role: str) -> None:
    """Official CI (stop 46): a second Heartbeat ran on k8slb02 beside the first; each dropped
    the other's messages as replays, the pair never came to rest for 21 minutes, and neither
    the watchdog nor `inv lb.setup` repaired it (13 later tests failed, 27 errored). The
    watchdog now ends every Heartbeat there at the first look that sees two (and a recheck
    0.3 s later) and starts one: no failed request, no routing move, on the standby and on the
    holder. With a 3 s grace the standby's older one, deaf to the peer (the peer's messages
    reach one of the two readers), took over first in 1 of 4 bench runs."""
    res = run(campaign.CATALOGUE[f"heartbeat-doubled-{role}"])
    check(res)
    assert res.notes["seen"], res.report()


def test_a_dead_holder_with_slow_api_actions_is_taken_over_without_burning_the_rate_limit(
    pair: None,
) -> None:
    """Hetzner's actions take seconds; the lab's take 0.2 s. With 3 s actions the takeover waits
    for the old holder's alias removal and then its own add (bound: deadtime + 1 + 2 × 3 s, and
    1 s for polling the removal). The add used to be repeated every 0.05 s for the whole
    removal, and after 1 s the removal read each time too: ~36 requests a second of a project's
    3600 an hour. Now at most `ADD_TAKEN_MAX` "still taken" answers per takeover."""
    res = run(campaign.CATALOGUE["holder-links-down-slow-actions"])
    check(res)
    calls = res.notes["api_calls"]
    measure("holder-links-down-slow-actions: 'still taken' answers", calls["still_taken"])
    assert 1 <= calls["still_taken"] <= campaign.ADD_TAKEN_MAX, calls


def test_a_dead_holder_locked_by_a_backup_moves_the_floating_ip_at_once_and_the_vip_after(
    pair: None,
) -> None:
    """Hetzner locks a server while an action of its own runs there (a backup, a snapshot):
    every action on it answers 423 `locked`. With the dead holder locked for 15 s the VIP's
    alias cannot leave it before the lock ends (bound 17.5 s: the lock, the retries at most 1 s
    apart, two 0.2 s actions); the floating IP, locked on its own, must not wait for it
    (bound deadtime + 2 s); one routing move, I1 within 2 s of the links' return."""
    res = run(campaign.CATALOGUE["holder-links-down-busy-15s"])
    check(res)
    calls = res.notes["api_calls"]
    measure("holder-links-down-busy-15s: 423 locked answers", calls["locked"])
    assert calls["locked"] >= 2, calls  # the lock was met, not missed


def test_a_takeover_whose_message_heartbeat_lost_is_made_by_the_watchdog(pair: None) -> None:
    """Bench (stop 42) and, by its outcome, CI 54: the standby's Heartbeat declared the dead
    holder dead and lost a message of its own in the takeover ("NV failure"): no start, nobody
    served for the whole 10 s cut. The lab loses that message on purpose; the watchdog sees the
    stalled takeover and runs the start, within the fault's bound, one routing move."""
    res = run(campaign.CATALOGUE["takeover-message-lost"])
    check(res)
    assert res.notes["lost"] and res.notes["watchdog_started"], res.report()


def test_a_takeover_whose_completion_was_lost_is_repaired_within_the_rest_window(
    pair: None,
) -> None:
    """CI 79: Heartbeat's FIFO race cut the home node's mach_down message as it took over from a
    holder whose Heartbeat was killed: the start ran and the routing moved, but its Heartbeat
    stayed in "transition" while it served, after the old holder's Heartbeat came back too, and
    the watchdog repaired it only after 150 s (the harness gives a pair 90 s to come to rest).
    The lab loses that message on purpose; the watchdog on the node that serves (the script
    idle, the peer active, the API routing there) restarts its Heartbeat after
    `wedge_idle_after` (50 s by default): one move (the takeover), and the pair at rest within
    the window."""
    res = run(campaign.CATALOGUE["takeover-completion-lost"])
    check(res)
    log = invariants.heartbeat_log(res.notes["home"], 3000, res.notes["since"])
    repaired = [ln for ln in log if "holder with no run of the resource script" in ln]
    assert repaired, "\n".join(log[-60:])  # the wedge happened, and this repair ended it
    rest = re.fullmatch(r"at rest after ([0-9.]+) s", str(res.notes.get("rest", "")))
    bound = lbfiles.wedge_idle_after(load_inventory(topology.default_path())) + 25
    assert rest and float(rest.group(1)) <= bound, res.report()


def test_a_read_token_is_refused_before_it_reaches_the_failover(pair: None) -> None:
    """Hetzner's console makes Read and Read & Write tokens. A re-run with a Read token made
    beside the old one exits 2 before it changes anything (deployed, the failover could not
    have moved the addresses with it: found at the first failover, by an outage); the LBs keep
    the old token, the failover after it moves the routing, and no request fails meanwhile."""
    res = run(campaign.CATALOGUE["token-read-only"])
    check(res)
    assert res.notes["lb.setup"]["rc"] == 2, res.report()


def test_a_holder_paused_without_seeing_it_takes_its_stale_addresses_off(pair: None) -> None:
    """A hypervisor's stop and continue of a kvm-clock guest, which no clock of the guest shows
    (the lab's blind clock: Heartbeat, the watchdog's pause detector and /proc/uptime see no
    gap). Before the watchdog's reference clock, the resumed holder's stale addresses stayed
    0.7-3.8 s after the resume (I1 missed in 5 of 10 bench runs), until the peer's Heartbeat
    restarted for the split brain it saw. Now its wall clock, behind the control planes' by the
    pause, tells it: I1 within 2 s, no request fails after the resume, one move. Last of the
    faults here: the host's clocks stay shifted until it reboots (`blindclock.restore`)."""
    host = campaign.holder()
    try:
        res = run(campaign.CATALOGUE["holder-hung-blind-5s"])
        check(res)
        assert res.notes["host"] == host and res.notes["reference_clock"], res.report()
    finally:
        blindclock.restore(host)
        invariants.quiet()


def test_short_seeded_campaign(pair: None) -> None:
    """Three faults drawn with a fixed seed from the cheap ones: each meets I1-I3."""
    pool = ["standby-hung-20s", "heartbeat-kill-restart", "api-5xx-failover", "cp-killed"]
    names = random.Random(SEED).sample(pool, 3)  # three different ones
    results = [run(campaign.CATALOGUE[n]) for n in names]
    bad = [r.report() for r in results if not r.ok]
    assert not bad, "\n\n".join(bad)


def test_no_fault_left_the_pair_broken(pair: None) -> None:
    """Each fault starts from a pair at rest, and one that finds it not at rest repairs it
    (`inv lb.setup --yes`) and goes on; its own checks may still pass. The repair is a failure
    of the fault before it: reported here (before, a repair in this file was silent)."""
    scenarios.no_repairs(cli)
