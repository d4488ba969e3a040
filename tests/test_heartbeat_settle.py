"""The heartbeat step's settle check (`HeartbeatStep.verify_all`) repairs a broken pair.

A scripted LB pair answers the step's probes (`cl_status`, `ip addr`, `hcloud-failover`) from
its state; `hb_standby`/`hb_takeover` change that state as Heartbeat would. The waits run on a
fake clock: no test sleeps.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from runbook.core import waiting
from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import RunOptions, StepContext, StepFailed
from runbook.core.remote import Host, Result
from runbook.inventory import load_inventory
from runbook.steps.heartbeat import (
    END_WEDGED_HEARTBEAT,
    HB_STANDBY,
    HB_TAKEOVER,
    HEARTBEAT_MASTERS,
    HeartbeatStep,
    age_command,
)
from tests.conftest import FakeClock
from tests.fakeproc import gone, wedged_heartbeat

REPO = Path(__file__).resolve().parents[1]


class Pair:
    """Heartbeat's view (who owns the group), local VIPs, and where the cloud routes."""

    def __init__(self, owners: set[str], vips: set[str], routed: str) -> None:
        self.owners, self.vips, self.routed = owners, vips, routed
        self.commands: list[tuple[str, str]] = []
        self.started_at = -1e6  # both Heartbeats long up (fake clock time of their start)
        self.deferred: set[str] = set()  # owners whose start left the routing with the peer
        self.busy: set[str] = set()  # nodes whose Heartbeat says "transition"
        # Heartbeat master PIDs per node (one each; two: the pair cannot settle)
        self.masters = {"k8slb01": ["182"], "k8slb02": ["190"]}


class FakeLb(Host):
    def __init__(self, name: str, pair: Pair, vip: str, home: bool) -> None:
        super().__init__(name)
        self.pair, self.vip, self.home = pair, vip, home

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        p = self.pair
        peer = next(n for n in ("k8slb01", "k8slb02") if n != self.name)
        out = ""
        if cmd == HEARTBEAT_MASTERS:
            out = "".join(f"{m}\n" for m in p.masters[self.name])
        elif len(p.masters[self.name]) > 1 and cmd.startswith("cl_status"):
            out = ""  # the older one declared itself dead: no answer that counts
        elif cmd == "cl_status rscstatus":
            out = (
                "transition" if self.name in p.busy else "all" if self.name in p.owners else "none"
            )
        elif cmd.startswith("cl_status nodestatus"):
            out = "active"
        elif cmd == age_command():
            out = str(int(waiting.CLOCK.monotonic() - p.started_at))
        elif cmd.startswith("ip -o -4 addr show"):
            out = (
                f"2: ens10    inet {self.vip}/32 scope global ens10\n"
                if self.name in p.vips
                else ""
            )
        elif cmd.endswith("hcloud-failover status"):
            out = "running" if self.name in p.vips and p.routed == self.name else "stopped"
        elif cmd.endswith("hcloud-failover reassert"):
            p.commands.append((self.name, "reassert"))
            if self.name in p.deferred:  # the peer still serves: hand the group to it
                p.deferred.discard(self.name)
                p.owners = {peer}
            elif self.name in p.owners and len(p.owners) == 1:
                p.routed = self.name
            elif p.routed != self.name:
                p.vips.discard(self.name)  # a follower: the route moved, the addresses go
        elif cmd == f"{END_WEDGED_HEARTBEAT}; systemctl restart heartbeat":
            p.commands.append((self.name, "restart-wedged"))  # its processes ended first
            p.busy.discard(self.name)  # it joins again as the standby
            p.masters[self.name] = ["4242"]  # every one ended, one started
        elif cmd == "systemctl restart heartbeat":
            p.commands.append((self.name, "restart"))
            p.busy.discard(self.name)  # it joins again as the standby
        elif cmd == HB_STANDBY:
            p.commands.append((self.name, "standby"))
            p.owners.discard(self.name)
            p.owners.add(peer)
        elif cmd.startswith(HB_TAKEOVER):
            p.commands.append((self.name, "takeover"))
            p.owners = {self.name}
            p.vips.add(self.name)
        else:
            raise AssertionError(f"unexpected command on {self.name}: {cmd}")
        return Result(out, "", 0)


def make(pair: Pair) -> tuple[StepContext, io.StringIO]:
    inv = load_inventory(REPO / "hosts.yaml")
    out = io.StringIO()
    masker = Masker()
    ui = Ui(make_console(masker, file=out, width=120), masker, assume_yes=True, interactive=False)
    ctx = StepContext(inventory=inv, ui=ui, options=RunOptions(yes=True))
    vip = inv.load_balancer.vip
    for name in ("k8slb01", "k8slb02"):
        ctx.targets[name] = FakeLb(name, pair, vip, name == inv.load_balancer.primary)
    return ctx, out


def test_both_owning_the_group_is_repaired_keeping_the_routed_node(
    fake_clock: FakeClock,
) -> None:
    """Both Heartbeats claim the group, both hold the VIP, the cloud routes to k8slb02: k8slb02
    keeps it (no route move), k8slb01 gives it up and its addresses go."""
    pair = Pair({"k8slb01", "k8slb02"}, {"k8slb01", "k8slb02"}, routed="k8slb02")
    ctx, out = make(pair)
    HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])
    assert ("k8slb01", "standby") in pair.commands
    assert ("k8slb02", "standby") not in pair.commands
    assert pair.owners == {"k8slb02"} and pair.vips == {"k8slb02"} and pair.routed == "k8slb02"
    assert "both load balancers own the resource group: k8slb01 gives it up" in out.getvalue()


def test_a_deferred_owner_is_asked_to_hand_the_group_over(fake_clock: FakeClock) -> None:
    """After a pause or partition Heartbeat gave the group to k8slb01, whose start left the
    routing with k8slb02 (still serving: VIP local there, routed there): the settle check runs
    k8slb01's reassert, which hands the group over; no routing move."""
    pair = Pair({"k8slb01"}, {"k8slb02"}, routed="k8slb02")
    pair.deferred = {"k8slb01"}
    ctx, _ = make(pair)
    HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])
    assert ("k8slb01", "reassert") in pair.commands
    assert pair.owners == {"k8slb02"} and pair.vips == {"k8slb02"} and pair.routed == "k8slb02"


def test_both_owning_without_a_route_keeps_the_primary(fake_clock: FakeClock) -> None:
    pair = Pair({"k8slb01", "k8slb02"}, {"k8slb01", "k8slb02"}, routed="-")
    ctx, _ = make(pair)
    HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])
    assert [c for c in pair.commands if c[1] == "standby"] == [("k8slb02", "standby")]
    assert pair.owners == {"k8slb01"} and pair.vips == {"k8slb01"} and pair.routed == "k8slb01"


def test_two_owners_for_a_moment_are_left_to_heartbeat(fake_clock: FakeClock) -> None:
    """A hand-over in progress (both claim for less than deadtime + 2 s) is not touched."""
    pair = Pair({"k8slb01", "k8slb02"}, {"k8slb01", "k8slb02"}, routed="k8slb01")
    ctx, _ = make(pair)
    real_sleep = fake_clock.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if fake_clock.now >= 1002.0:  # Heartbeat resolves it itself after 2 s
            pair.owners = {"k8slb01"}

    fake_clock.sleep = sleep  # type: ignore[method-assign]
    HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])
    assert not [c for c in pair.commands if c[1] == "standby"]
    assert pair.vips == {"k8slb01"}


def test_a_pair_that_stays_split_fails_with_both_owners_named(
    fake_clock: FakeClock,
) -> None:
    pair = Pair({"k8slb01", "k8slb02"}, {"k8slb01", "k8slb02"}, routed="k8slb01")
    ctx, _ = make(pair)
    ctx.targets["k8slb02"]._exec = (  # type: ignore[method-assign]
        lambda cmd, stdin, timeout, _orig=ctx.targets["k8slb02"]._exec: (
            Result("", "", 0) if cmd == HB_STANDBY else _orig(cmd, stdin=stdin, timeout=timeout)
        )
    )
    with pytest.raises(StepFailed, match=r"resource owners: \['k8slb01', 'k8slb02'\]"):
        HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])


def test_nobody_owning_while_heartbeat_starts_is_its_start_not_a_fault(
    fake_clock: FakeClock,
) -> None:
    """Both Heartbeats were just started: nobody owns the group until `initdead`, and an
    hb_takeover in that window collides with the initial acquisition (the lab saw the group
    left in transition for good). The repair waits until both have run initdead + deadtime;
    when Heartbeat acquires the group itself meanwhile, no takeover is sent at all."""
    pair = Pair(set(), {"k8slb01"}, routed="k8slb01")
    pair.started_at = waiting.CLOCK.monotonic()
    ctx, _ = make(pair)
    hb = ctx.inventory.load_balancer.heartbeat
    acquire_at = pair.started_at + hb.effective_initdead + 1
    real_sleep = fake_clock.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if waiting.CLOCK.monotonic() >= acquire_at:
            pair.owners = pair.owners or {"k8slb01"}

    fake_clock.sleep = sleep  # type: ignore[method-assign]
    HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])
    assert [c for c in pair.commands if c[1] == "takeover"] == []
    assert pair.owners == {"k8slb01"}


def test_nobody_owning_after_the_start_window_is_repaired(fake_clock: FakeClock) -> None:
    """Started long enough ago and still nobody: the primary is asked to take over, once the
    start window (initdead + deadtime) and deadtime + 2 s of nobody have passed."""
    pair = Pair(set(), {"k8slb01"}, routed="k8slb01")
    pair.started_at = waiting.CLOCK.monotonic()
    ctx, _ = make(pair)
    hb = ctx.inventory.load_balancer.heartbeat
    t0 = waiting.CLOCK.monotonic()
    HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])
    assert [c for c in pair.commands if c[1] == "takeover"] == [("k8slb01", "takeover")]
    took = waiting.CLOCK.monotonic() - t0
    assert took >= hb.effective_initdead + hb.deadtime + hb.deadtime + 2


def test_a_standby_wedged_in_transition_is_restarted_and_the_holder_left_alone(
    fake_clock: FakeClock,
) -> None:
    """The step said "heartbeat pair up" while the standby's Heartbeat stayed in "transition"
    (a lost hand-over message; it cannot take over then): the lab's at-rest check disagreed
    for the rest of a CI run. Now the pair is not settled while a node is in transition, and
    a standby stuck in it while the peer serves has its Heartbeat restarted (it holds nothing:
    nothing moves)."""
    pair = Pair({"k8slb01"}, {"k8slb01"}, routed="k8slb01")
    pair.busy = {"k8slb02"}
    ctx, out = make(pair)
    t0 = waiting.CLOCK.monotonic()
    HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])
    assert pair.commands.count(("k8slb02", "restart-wedged")) == 1
    assert not [c for c in pair.commands if c[0] == "k8slb01" and c[1] != "reassert"]
    assert pair.owners == {"k8slb01"} and pair.vips == {"k8slb01"} and pair.routed == "k8slb01"
    assert waiting.CLOCK.monotonic() - t0 >= 30
    assert "k8slb02: Heartbeat has been in transition for 30 s" in out.getvalue()


def test_a_transition_that_ends_by_itself_is_waited_for_not_repaired(
    fake_clock: FakeClock,
) -> None:
    pair = Pair({"k8slb01"}, {"k8slb01"}, routed="k8slb01")
    pair.busy = {"k8slb02"}
    ctx, out = make(pair)
    real_sleep = fake_clock.sleep

    def sleep(seconds: float) -> None:
        real_sleep(seconds)
        if fake_clock.now >= 1011.0:  # an unanswered standby request is cancelled after ~11 s
            pair.busy.clear()

    fake_clock.sleep = sleep  # type: ignore[method-assign]
    HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])
    assert not [c for c in pair.commands if c[1].startswith("restart")]
    assert fake_clock.now >= 1011.0  # not "pair up" while it lasted
    assert "heartbeat pair up: k8slb01 holds the VIP" in out.getvalue()


def test_a_pair_that_stays_in_transition_fails_naming_the_node(fake_clock: FakeClock) -> None:
    pair = Pair({"k8slb01"}, {"k8slb01"}, routed="k8slb01")
    pair.busy = {"k8slb02"}
    ctx, _ = make(pair)
    ctx.targets["k8slb02"]._exec = (  # type: ignore[method-assign]
        lambda cmd, stdin, timeout, _orig=ctx.targets["k8slb02"]._exec: (
            Result("", "", 0)  # the restart does not help
            if cmd.endswith("systemctl restart heartbeat")
            else _orig(cmd, stdin=stdin, timeout=timeout)
        )
    )
    with pytest.raises(StepFailed, match=r"in transition: \['k8slb02'\]"):
        HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])


def test_the_age_command_reads_heartbeats_right_aligned_pid_file(tmp_path: Path) -> None:
    """Heartbeat writes its PID file as "%10d\\n" (seen in the lab: "       189"); the command
    must still name that process's age (a quoted `cat` gave ps an "improper list")."""
    import os
    import subprocess

    pid_file = tmp_path / "heartbeat.pid"
    pid_file.write_text(f"{os.getpid():>10}\n")
    out = subprocess.run(
        ["sh", "-c", age_command(str(pid_file))], capture_output=True, text=True, check=False
    ).stdout.strip()
    assert out.isdigit(), out
    missing = subprocess.run(
        ["sh", "-c", age_command(str(tmp_path / "none"))], capture_output=True, text=True
    )
    assert missing.stdout.strip() == ""


def _ended(proc: subprocess.Popen[bytes], child: int) -> bool:
    return proc.poll() is not None and gone(child)


@pytest.mark.parametrize("shell", ["sh", "bash"])
def test_a_wedged_heartbeats_processes_are_ended_before_its_restart(
    tmp_path: Path, shell: str
) -> None:
    """Bench with CPU hogs (stop 33): a wedged Heartbeat delayed its shutdown for good, and the
    step's (and the watchdog's) `systemctl restart heartbeat` hung in its stop. The command
    ends the PID file's process group first: a leader named heartbeat that ignores SIGTERM and
    its child; a PID file naming another process ends nothing. Official CI (stop 46): a second
    Heartbeat master the PID file did not name survived the restart; every master's group ends
    too (the masters are listed by `HEARTBEAT_MASTERS`, replaced here by a file: the real one
    would list the lab's Heartbeats on this machine)."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        wedged, wedged_child = wedged_heartbeat(tmp_path, "heartbeat", "1")
        stray, stray_child = wedged_heartbeat(tmp_path, "heartbeat", "2")
        other, other_child = wedged_heartbeat(tmp_path, "other", "3")
        procs += [wedged, stray, other]
        for proc in procs:
            threading.Thread(target=proc.wait, daemon=True).start()  # reaped, as by systemd
        pid_file = tmp_path / "heartbeat.pid"
        masters = tmp_path / "masters"
        command = END_WEDGED_HEARTBEAT.replace("/var/run/heartbeat.pid", str(pid_file))
        command = command.replace(HEARTBEAT_MASTERS, f"cat {masters}")
        assert HEARTBEAT_MASTERS in END_WEDGED_HEARTBEAT and "pgrep" not in command

        # a PID file naming another process, no master listed: nothing ends
        pid_file.write_text(f"{other.pid:>10}\n")  # as Heartbeat writes it: "%10d"
        subprocess.run([shell, "-c", command], check=True, timeout=10)
        time.sleep(0.3)
        assert not any(_ended(p, c) for p, c in ((wedged, wedged_child), (other, other_child)))

        # the PID file's Heartbeat and a master it does not name: both groups end
        pid_file.write_text(f"{wedged.pid:>10}\n")
        masters.write_text(f"{wedged.pid}\n{stray.pid}\n")
        subprocess.run([shell, "-c", command], check=True, timeout=10)
        end = time.monotonic() + 2
        pairs = ((wedged, wedged_child), (stray, stray_child))
        while not all(_ended(p, c) for p, c in pairs) and time.monotonic() < end:
            time.sleep(0.05)
        assert wedged.returncode == -9 and stray.returncode == -9
        assert all(_ended(p, c) for p, c in pairs), "a child lives on"
        assert not _ended(other, other_child)
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            proc.wait(timeout=5)


def test_more_than_one_heartbeat_on_a_node_is_ended_and_one_started(
    fake_clock: FakeClock,
) -> None:
    """Official CI (stop 46): two Heartbeats ran on k8slb02 (generations X and X+1); the pair
    never settled and `inv lb.setup`, the harness's repair, failed ("resource owners: k8slb01;
    peers seen active: False"). The settle check ends them all there and starts one; the pair
    then settles."""
    pair = Pair({"k8slb01"}, {"k8slb01"}, routed="k8slb01")
    pair.masters["k8slb02"] = ["117", "2533"]
    ctx, out = make(pair)
    HeartbeatStep().verify_all(ctx, ["k8slb01", "k8slb02"])
    assert pair.commands.count(("k8slb02", "restart-wedged")) == 1
    assert ("k8slb01", "restart-wedged") not in pair.commands
    assert "k8slb02: 2 Heartbeats run there (PIDs 117 2533)" in " ".join(out.getvalue().split())
