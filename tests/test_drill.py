"""`inv lb.failover-drill` (runbook/status/drill.py) against a scripted LB pair and a fake clock.

The pair answers `lbstatus`'s probes from its state; the commands the drill sends move the VIP
as Heartbeat would. The drill's clock (the waits' clock) is a fake one: no test sleeps.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from runbook.core.console import Masker, NeedsPerson, Ui, make_console
from runbook.core.remote import Fact, Host, HostUnreachable, Result
from runbook.inventory import Inventory, load_inventory
from runbook.status import drill
from tests.conftest import FakeClock

REPO = Path(__file__).resolve().parents[1]
VIP_T, FIP_T = "10.143.0.50:6443", "116.202.6.21:6443"


class Pair:
    """Who holds the VIP and the floating IP; what each LB was told to do."""

    def __init__(self, holder: str | None = "k8slb01", *, stuck: bool = False) -> None:
        self.holders: list[str] = [holder] if holder else []
        self.stuck = stuck  # the peer never takes over
        self.log: list[tuple[str, str]] = []


class FakeLb(Host):
    def __init__(self, name: str, pair: Pair, inv: Inventory) -> None:
        super().__init__(name)
        self.pair, self.inv = pair, inv
        self.heartbeat = "active"
        self.down_for = 0  # queries that fail after `linkdown`
        self.closed = 0

    def gather(self, probes: Sequence[str | None]) -> list[Fact | None]:
        if self.down_for:
            raise HostUnreachable(f"{self.name}: unreachable: timed out")
        lb = self.inv.load_balancer
        holds = self.name in self.pair.holders
        priv = f"2: ens10    inet 10.143.0.{5 if self.name == 'k8slb01' else 6}/32 scope global\n"
        pub = "3: eth0    inet 198.51.100.5/32 scope global\n"
        if holds:
            priv += f"2: ens10    inet {lb.vip}/32 scope global ens10\n"
            pub += f"3: eth0    inet {lb.floating_ip.address}/32 scope global eth0\n"
        answers = [f"{self.heartbeat}\nhb-running", priv, pub, "active", ""]
        return [Fact(a, 0) for a in answers]

    def close(self) -> None:
        self.closed += 1

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        if self.down_for:
            self.down_for -= 1
            raise HostUnreachable(f"{self.name}: unreachable: timed out")
        self.pair.log.append((self.name, cmd))
        peer = next(n for n in ("k8slb01", "k8slb02") if n != self.name)
        fails = (
            cmd == "systemctl stop heartbeat"
            or cmd.startswith("kill -9 ")
            or cmd.startswith("nohup sh -c ")
        )
        if fails and self.name in self.pair.holders and not self.pair.stuck:
            self.pair.holders = [peer]  # the peer takes over
            self.heartbeat = "inactive" if "stop" in cmd else self.heartbeat
            if cmd.startswith("nohup"):
                self.down_for = 3
        if cmd.endswith("systemctl start heartbeat") or cmd.endswith("restart heartbeat"):
            self.heartbeat = "active"
        return Result("", "", 0)


class ProbeHost(Host):
    """The control plane the probe runs on; its result file appears once the probe is started."""

    def __init__(self, result: dict[str, object] | None) -> None:
        super().__init__("k8scontrol01")
        self.result = result
        self.started = False
        self.writes: list[tuple[str, bytes, int]] = []
        self.commands: list[str] = []

    def write_file(self, path: str, content: bytes, **kw: object) -> None:  # type: ignore[override]
        self.writes.append((path, content, int(kw.get("mode", 0o644))))  # type: ignore[call-overload]

    def read_file(self, path: str) -> bytes | None:
        if path == drill.PROBE_OUT and self.started and self.result is not None:
            return json.dumps(self.result).encode()
        return None

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        self.commands.append(cmd)
        if drill.PROBE_PATH in cmd:
            self.started = True
        return Result("", "", 0)


def probe_result(vip_outage: float, fip_outage: float) -> dict[str, object]:
    def target(outage: float) -> dict[str, object]:
        windows = [[2.0, 2.0 + outage]] if outage else []
        return {
            "attempts": 100,
            "failures": int(outage * 10),
            "longest_outage_s": outage,
            "windows": windows,
        }

    return {"targets": {VIP_T: target(vip_outage), FIP_T: target(fip_outage)}}


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(REPO / "hosts.yaml")


def make_ui(*, yes: bool = True) -> tuple[Ui, io.StringIO]:
    out = io.StringIO()
    masker = Masker()
    return Ui(make_console(masker, file=out, width=120), masker, assume_yes=yes), out


def lbs_for(pair: Pair, inv: Inventory) -> dict[str, FakeLb]:
    return {n: FakeLb(n, pair, inv) for n in ("k8slb01", "k8slb02")}


# -- holder_of ------------------------------------------------------------------------------
def test_holder_of_needs_exactly_one_reachable_holder() -> None:
    node = drill.LbNode
    assert drill.holder_of([node("a", True, holds_vip=True), node("b", True)]) == "a"
    # an unreachable node's stale answer does not count
    assert drill.holder_of([node("a", False, holds_vip=True), node("b", True, holds_vip=True)])
    for nodes in (
        [node("a", True), node("b", True)],
        [node("a", True, holds_vip=True), node("b", True, holds_vip=True)],
        [node("a", False, holds_vip=True), node("b", True)],
    ):
        with pytest.raises(drill.DrillError, match="exactly one LB holding the VIP"):
            drill.holder_of(nodes)


# -- the commands ---------------------------------------------------------------------------
def test_fail_and_restore_commands_per_mode(inv: Inventory) -> None:
    assert drill.fail_command(inv, "stop", 20) == "systemctl stop heartbeat"
    assert drill.restore_command(inv, "stop") == "systemctl start heartbeat"
    assert drill.fail_command(inv, "kill", 20) == f'kill -9 "$(cat {drill.HB_PID})"'
    # a SIGKILLed node keeps its addresses: both are removed before Heartbeat restarts
    restore = drill.restore_command(inv, "kill")
    assert "ip addr del 10.143.0.50/32 dev ens10" in restore
    assert "ip addr del 116.202.6.21/32 dev eth0" in restore
    assert restore.endswith("systemctl restart heartbeat")
    assert drill.restore_command(inv, "linkdown") == "true"


def test_linkdown_detaches_and_brings_both_links_back(inv: Inventory) -> None:
    cmd = drill.fail_command(inv, "linkdown", 20)
    # detached from the SSH session that the link test cuts
    assert cmd.startswith("nohup sh -c ") and cmd.endswith(" >/dev/null 2>&1 </dev/null &")
    script = cmd[len("nohup sh -c ") :]
    assert "ip link set ens10 down; ip link set eth0 down; sleep 10.0;" in script
    assert "ip link set eth0 up; ip link set ens10 up" in script
    assert "ip route restore < /run/runbook-routes" in script
    # half the probe time, at least a second
    assert "sleep 1.0;" in drill.fail_command(inv, "linkdown", 1)


def test_unknown_mode_is_refused(inv: Inventory, fake_clock: FakeClock) -> None:
    with pytest.raises(drill.DrillError, match="unknown mode 'reboot'"):
        drill.fail_command(inv, "reboot", 20)
    pair = Pair()
    probe = ProbeHost(probe_result(1, 1))
    ui, _ = make_ui()
    with pytest.raises(drill.DrillError, match="unknown mode"):
        drill.run_drill(inv, lbs_for(pair, inv), probe, ui, mode="reboot", seconds=20)
    assert pair.log == [] and probe.writes == [] and probe.commands == []


# -- the whole drill ------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["stop", "kill"])
def test_drill_fails_the_holder_measures_and_restores(
    inv: Inventory, fake_clock: FakeClock, mode: str
) -> None:
    pair = Pair("k8slb01")
    lbs = lbs_for(pair, inv)
    probe = ProbeHost(probe_result(1.25, 0.0))
    ui, out = make_ui()
    res = drill.run_drill(inv, lbs, probe, ui, mode=mode, seconds=20)
    assert (res.mode, res.failed_node, res.holder_after) == (mode, "k8slb01", "k8slb02")
    assert res.outage(VIP_T) == 1.25 and res.outage(FIP_T) == 0.0
    assert res.outage("nowhere:1") == -1
    # the probe script goes to the probe host, executable, and runs detached, bounded
    [(path, content, mode_bits)] = probe.writes
    assert path == drill.PROBE_PATH and mode_bits == 0o755
    assert content == (REPO / "files" / "tcp-probe").read_bytes()
    [start] = probe.commands
    assert f"--target {VIP_T} --target {FIP_T} --duration 20.0" in start
    assert start.startswith(f"rm -f {drill.PROBE_OUT}; nohup sh -c ") and start.endswith("&")
    # only the holder is failed, then restored; the peer gets no command
    assert pair.log == [
        ("k8slb01", drill.fail_command(inv, mode, 20)),
        ("k8slb01", drill.restore_command(inv, mode)),
    ]
    text = out.getvalue()
    assert "checkpoint: confirmed by --yes" in text
    assert f"outage: {VIP_T} 1.25" in text and f"outage: {FIP_T} 0.00" in text
    assert f"first-outage: {VIP_T} 1.25" in text and f"first-outage: {FIP_T}" not in text
    assert "VIP now held by k8slb02" in text
    assert "takeover: k8slb02 0.5" in text and res.takeover_s == 0.5  # the first look
    assert re.search(rf"{re.escape(VIP_T)}.*1\.25 s.*12/100.*yes", text)
    # the baseline, the probe time and the settle time passed on the fake clock only
    assert sum(fake_clock.slept) >= 20 + 1.5


def test_drill_reports_an_outage_over_deadtime_plus_one(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    pair = Pair("k8slb02")
    probe = ProbeHost(probe_result(4.5, 3.9))
    ui, out = make_ui()
    res = drill.run_drill(inv, lbs_for(pair, inv), probe, ui, mode="stop", seconds=20)
    assert res.failed_node == "k8slb02" and res.holder_after == "k8slb01"
    text = out.getvalue()
    assert "target ≤ 4 s" in text  # deadtime 3 + 1
    assert re.search(rf"{re.escape(VIP_T)}.*4\.50 s.*NO", text)
    assert re.search(rf"{re.escape(FIP_T)}.*3\.90 s.*yes", text)


def test_linkdown_waits_for_the_holder_to_come_back(inv: Inventory, fake_clock: FakeClock) -> None:
    pair = Pair("k8slb01")
    lbs = lbs_for(pair, inv)
    probe = ProbeHost(probe_result(4.2, 3.9))
    ui, _ = make_ui()
    res = drill.run_drill(inv, lbs, probe, ui, mode="linkdown", seconds=20)
    assert res.holder_after == "k8slb02"
    # the connection was dropped and re-opened until a query got through
    assert lbs["k8slb01"].closed >= 3 and lbs["k8slb01"].down_for == 0
    assert pair.log[-1] == ("k8slb01", "true")


def test_no_holder_no_drill(inv: Inventory, fake_clock: FakeClock) -> None:
    pair = Pair(None)
    probe = ProbeHost(probe_result(1, 1))
    ui, _ = make_ui()
    with pytest.raises(drill.DrillError, match=re.escape("found none: run `inv lb.status`")):
        drill.run_drill(inv, lbs_for(pair, inv), probe, ui, mode="stop", seconds=20)
    assert pair.log == [] and probe.writes == [] and probe.commands == []


def test_checkpoint_without_a_person_fails_nothing(inv: Inventory, fake_clock: FakeClock) -> None:
    pair = Pair("k8slb01")
    probe = ProbeHost(probe_result(1, 1))
    ui, out = make_ui(yes=False)
    ui.interactive = False
    with pytest.raises(NeedsPerson):
        drill.run_drill(inv, lbs_for(pair, inv), probe, ui, mode="stop", seconds=20)
    assert pair.log == [] and probe.writes == [] and pair.holders == ["k8slb01"]
    assert "Fail k8slb01 (stop) now?" in out.getvalue()


def test_a_missing_probe_result_still_restores_the_failed_node(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    pair = Pair("k8slb01")
    lbs = lbs_for(pair, inv)
    probe = ProbeHost(None)  # the probe never writes its result
    ui, _ = make_ui()
    with pytest.raises(drill.DrillError, match=re.escape(f"no result in {drill.PROBE_OUT}")):
        drill.run_drill(inv, lbs, probe, ui, mode="stop", seconds=20)
    # the failed node is not left without Heartbeat: the pair keeps its standby
    assert pair.log[-1] == ("k8slb01", "systemctl start heartbeat")
    assert lbs["k8slb01"].heartbeat == "active"


def test_wait_back_gives_up_with_a_clear_error(inv: Inventory, fake_clock: FakeClock) -> None:
    lb = FakeLb("k8slb01", Pair(), inv)
    lb.down_for = 10**6
    with pytest.raises(drill.DrillError, match="k8slb01: not reachable 5 s after the link test"):
        drill._wait_back(lb, timeout=5)
    assert lb.closed >= 5


@pytest.mark.parametrize("mode", ["stop", "linkdown"])
def test_a_peer_that_never_takes_over_is_reported(
    inv: Inventory, fake_clock: FakeClock, mode: str
) -> None:
    """Who holds the addresses after the drill is no proof (a linkdown's old holder may take
    the group back once its links return): the drill watches the peer while it probes."""
    pair = Pair("k8slb01", stuck=True)
    ui, out = make_ui()
    res = drill.run_drill(
        inv, lbs_for(pair, inv), ProbeHost(probe_result(20, 20)), ui, mode=mode, seconds=20
    )
    assert res.takeover_s is None and res.holder_after == "k8slb01"
    text = " ".join(out.getvalue().split())
    assert "k8slb02 did not take over the VIP and the floating IP while k8slb01 was failed" in text
    assert "takeover:" not in text
