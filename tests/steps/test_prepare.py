"""Step 1's upgrade and reboot path: package lists refreshed once per run; reboots asked, one host
at a time (LBs with the VIP holder last, then control planes, then workers), each back and ready
before the next, and a host that does not come back stops the rest."""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runbook.core.console import CheckpointDeclined, Masker, NeedsPerson, Ui, make_console
from runbook.core.engine import RunOptions, StepContext, run_step
from runbook.core.plan import Status
from runbook.core.remote import (
    CommandFailed,
    CommandTimeout,
    Fact,
    Host,
    HostUnreachable,
    Result,
)
from runbook.core.resources import Packages
from runbook.inventory import Inventory, load_inventory
from runbook.status.lbstatus import addr_probe
from runbook.steps.prepare import PrepareStep
from runbook.steps.reboot import (
    REBOOT_MARKER,
    Rebooted,
    RebootStep,
    Upgraded,
    refresh_lists_once,
)
from tests.conftest import FakeClock
from tests.fakehost import LocalHost

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(REPO / "hosts.yaml")


# -- package lists --------------------------------------------------------------------------------
def test_lists_are_refreshed_once_per_run_before_the_upgrade_check(tmp_path: Path) -> None:
    """The real snippet, run three times (plan, apply's re-check, final check) with the strict
    fake apt-get: one `apt-get update`; a new run (another id) refreshes again."""
    host = LocalHost("h", tmp_path / "state")
    stamp = str(tmp_path / "stamp")
    outs = [host.query(refresh_lists_once("run1", stamp=stamp)).stdout for _ in range(3)]
    assert outs == ["lists: refreshed\n", "lists: fresh\n", "lists: fresh\n"]
    assert [c for c in host.calls() if c.startswith("apt-get update")] == [
        "apt-get update -q -o DPkg::Lock::Timeout=300"
    ]
    host.query(refresh_lists_once("run2", stamp=stamp))
    assert len([c for c in host.calls() if c.startswith("apt-get update")]) == 2


def test_upgrade_check_reads_refreshed_lists_and_reports_a_failed_refresh() -> None:
    probe = Upgraded(run_id="abc").probe()
    assert probe.index("apt-get update") < probe.index("apt-get -s")
    assert "apt-get update" not in Upgraded().probe()  # --dry-run: lists read as they are
    h = Host("h")
    up = Upgraded(run_id="abc")
    assert up.check(h, Fact("lists: refreshed\n3\n", 0)) is not None
    assert up.check(h, Fact("lists: fresh\n0\n", 0)) is None
    assert up.check(h, Fact("2\n", 0)) is not None
    with pytest.raises(CommandFailed, match="Temporary failure resolving"):
        up.check(h, Fact("lists: update-failed: E: Temporary failure resolving 'deb'\n0\n", 0))


def test_nothing_after_the_check_updates_the_lists_again(inv: Inventory) -> None:
    """The upgrade and every package install of prepare use the lists the check refreshed."""
    ctx = _ctx(inv, {}, yes=True)
    for name in ("k8slb01", "k8scontrol01", "k8node01"):
        for res in PrepareStep().resources(ctx, name):
            if isinstance(res, Packages):
                assert not res.update_first, (name, res.key)
    sent: list[str] = []

    class Rec(Host):
        def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
            sent.append(cmd)
            return Result("", "", 0)

    Upgraded(run_id="x").apply(Rec("h"))
    assert "upgrade" in sent[0] and "update" not in sent[0].replace("upgrade", "")


# -- reboots --------------------------------------------------------------------------------------
@dataclass
class Lab:
    """What the fake hosts share: one event log (to check the order) and the VIP holder."""

    inv: Inventory
    holder: str = "k8slb01"
    events: list[str] = field(default_factory=list)
    down: set[str] = field(default_factory=set)  # rebooted, not ready yet


class RebootHost(Host):
    """Answers exactly the commands of the reboot path; anything else fails the test."""

    def __init__(
        self,
        name: str,
        lab: Lab,
        *,
        required: bool = True,
        configured: bool = True,
        boot_probes: int = 2,
        never_back: bool = False,
        not_ready: int = 0,
        hangs: int = 0,
        ready_hangs: int = 0,
    ) -> None:
        super().__init__(name)
        self.lab, self.required, self.configured = lab, required, configured
        self.boot_probes, self.never_back, self.not_ready = boot_probes, never_back, not_ready
        # looks whose command hangs past its timeout (a connection the reboot cut): the first
        # `hangs` looks for the marker, the first `ready_hangs` readiness checks
        self.hangs, self.ready_hangs = hangs, ready_hangs
        self.closed = 0
        self._booting = 0
        self.marker = False

    def gather(self, probes: Sequence[str | None]) -> list[Fact | None]:
        out: list[Fact | None] = []
        for p in probes:
            assert p is not None and p.startswith("test -e /var/run/reboot-required"), p
            out.append(Fact("linux-image-6.1.0-28-amd64\n", 0) if self.required else Fact("", 1))
        return out

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        lab = self.lab
        if cmd.startswith(f"touch {REBOOT_MARKER}; (sleep 1; systemctl reboot"):
            assert not lab.down, f"{self.name} rebooted while {lab.down} is down"
            lab.events.append(f"reboot {self.name}")
            lab.down.add(self.name)
            self.marker, self._booting = True, self.boot_probes
            if lab.holder == self.name:  # the VIP moves to the peer
                lab.holder = "k8slb02" if self.name == "k8slb01" else "k8slb01"
            return Result("", "", 0)
        if cmd == f"test -e {REBOOT_MARKER}":
            if self.hangs:
                self.hangs -= 1
                raise CommandTimeout(f"{self.name}: `{cmd}` did not complete within 20 s")
            if self.never_back or self._booting:
                self._booting -= 1
                raise HostUnreachable(f"{self.name}: unreachable: connection refused")
            if self.marker:
                self.marker, self.required = False, False  # fresh /run
                lab.events.append(f"up {self.name}")
                if not self.configured:  # nothing set up to wait for
                    lab.down.discard(self.name)
            return Result("", "", 1)
        lb = lab.inv.load_balancer
        if cmd == addr_probe(lb.interface):
            own = lab.inv.hosts[self.name].private_ip
            addrs = [own, lb.vip] if lab.holder == self.name else [own]
            lines = [f"3: {lb.interface}    inet {a}/32 scope global {lb.interface}" for a in addrs]
            return Result("\n".join(lines) + "\n", "", 0)
        if cmd == "test -f /etc/ha.d/ha.cf":
            return Result("", "", 0 if self.configured else 1)
        if cmd == "cl_status hbstatus" or cmd.startswith("cl_status nodestatus"):
            return Result("active\n", "", self._ready_rc())
        if "/readyz" in cmd or "kubelet" in cmd:
            return Result("", "", self._ready_rc())
        raise AssertionError(f"unexpected command on {self.name}: {cmd}")

    def close(self) -> None:
        self.closed += 1

    def _ready_rc(self) -> int:
        if self.ready_hangs:
            self.ready_hangs -= 1
            raise CommandTimeout(f"{self.name}: a readiness check did not complete within 20 s")
        if self.not_ready:
            self.not_ready -= 1
            return 1
        if self.name in self.lab.down:
            self.lab.down.discard(self.name)
            self.lab.events.append(f"ready {self.name}")
        return 0


def _ctx(
    inv: Inventory,
    hosts: dict[str, Host],
    *,
    yes: bool,
    interactive: bool = False,
    answer: str = "",
) -> StepContext:
    masker = Masker()
    ui = Ui(
        make_console(masker, file=io.StringIO(), width=120),
        masker,
        assume_yes=yes,
        interactive=interactive,
        stdin=io.StringIO(answer),
    )
    ctx = StepContext(inventory=inv, ui=ui, options=RunOptions(yes=yes, hosts=tuple(hosts)))
    ctx.targets.update(hosts)
    return ctx


def _hosts(inv: Inventory, lab: Lab, **special: dict[str, object]) -> dict[str, Host]:
    return {n: RebootHost(n, lab, **special.get(n, {})) for n in inv.hosts}  # type: ignore[arg-type]


def test_reboots_one_host_at_a_time_vip_holder_last_each_ready_before_the_next(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    lab = Lab(inv, holder="k8slb01")
    hosts = _hosts(inv, lab, k8scontrol02={"not_ready": 3})
    res = run_step(RebootStep(), _ctx(inv, hosts, yes=True))
    assert {r.status for r in res.results} == {Status.CHANGED}
    order = ["k8slb02", "k8slb01", "k8scontrol01", "k8scontrol02", "k8scontrol03"]
    order += ["k8node01", "k8node02"]
    assert lab.events == [f"{e} {n}" for n in order for e in ("reboot", "up", "ready")]


def test_a_look_that_hangs_after_the_reboot_is_not_back_yet_not_a_failure(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    """CI (the reboot re-run): the first look after k8scontrol03's reboot command connected
    while the host went down; its command hung for the 20 s timeout, and the step failed
    ("Command did not complete within 20 seconds!"), skipping the workers. A look that hangs
    is "not back yet", and so is a readiness check that hangs on a host just back: the
    connection is closed and the wait goes on."""
    lab = Lab(inv, holder="k8slb01")
    hosts = _hosts(inv, lab, k8scontrol03={"hangs": 2, "ready_hangs": 1})
    res = run_step(RebootStep(), _ctx(inv, hosts, yes=True))
    assert {r.status for r in res.results} == {Status.CHANGED}, res.results
    order = ["k8slb02", "k8slb01", "k8scontrol01", "k8scontrol02", "k8scontrol03"]
    order += ["k8node01", "k8node02"]
    assert lab.events == [f"{e} {n}" for n in order for e in ("reboot", "up", "ready")]
    cp3 = hosts["k8scontrol03"]
    assert isinstance(cp3, RebootHost)
    assert cp3.hangs == 0 and cp3.ready_hangs == 0
    assert cp3.closed >= 4  # after the reboot command, and after each look that hung


def test_lb_waits_for_the_pair_to_settle_before_the_next_reboot(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    lab = Lab(inv, holder="k8slb02")
    hosts = _hosts(inv, lab, k8slb01={"not_ready": 4})
    run_step(RebootStep(), _ctx(inv, {n: hosts[n] for n in ("k8slb01", "k8slb02")}, yes=True))
    assert lab.events[:3] == ["reboot k8slb01", "up k8slb01", "ready k8slb01"]
    assert lab.events[3:] == ["reboot k8slb02", "up k8slb02", "ready k8slb02"]


def test_reboots_need_a_person_without_tty_and_yes(inv: Inventory) -> None:
    lab = Lab(inv)
    ctx = _ctx(inv, _hosts(inv, lab), yes=False, interactive=False)
    with pytest.raises(NeedsPerson, match="Reboot k8slb02, k8slb01, k8scontrol01"):
        run_step(RebootStep(poll=0), ctx)
    assert lab.events == []
    ctx = _ctx(inv, _hosts(inv, lab), yes=False, interactive=True, answer="n\n")
    with pytest.raises(CheckpointDeclined):
        run_step(RebootStep(poll=0), ctx)
    assert lab.events == []


def test_a_host_that_does_not_come_back_stops_the_reboots(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    lab = Lab(inv)
    hosts = _hosts(inv, lab, k8scontrol01={"never_back": True})
    res = run_step(RebootStep(), _ctx(inv, hosts, yes=True))
    by = {r.target: r for r in res.results}
    assert by["k8scontrol01"].status is Status.UNREACHABLE
    assert "k8scontrol01: not back 600 s after the reboot" in by["k8scontrol01"].message
    # the two LBs before it were back after 3 looks (6 s each); k8scontrol01 was given 600 s
    assert sum(fake_clock.slept) == 2 * 6 + 600
    for name in ("k8scontrol02", "k8scontrol03", "k8node01", "k8node02"):
        assert by[name].status is Status.SKIPPED, by[name]
    assert "reboot k8scontrol02" not in lab.events


def test_back_but_never_ready_fails_with_what_it_waits_for(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    lab = Lab(inv)
    hosts = _hosts(inv, lab, k8scontrol01={"not_ready": 10**6, "boot_probes": 3})
    res = run_step(
        RebootStep(wait_seconds=60),
        _ctx(inv, {"k8scontrol01": hosts["k8scontrol01"]}, yes=True),
    )
    (r,) = res.results
    assert r.status is Status.FAILED and "apiserver does not answer ok" in r.message
    assert "k8scontrol01: back after the reboot, but not ready within 60 s" in r.message
    # one deadline for both: back after 3 failed looks, then not ready until 60 s in all
    assert sum(fake_clock.slept) == 60


def test_a_rebooted_host_is_in_service_at_the_first_look_that_says_so(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    """The wait ends as soon as the host is back and ready: a poll after the reboot command,
    one per failed look, no more."""
    lab = Lab(inv)
    hosts = _hosts(inv, lab, k8scontrol01={"boot_probes": 2, "not_ready": 3})
    res = run_step(RebootStep(), _ctx(inv, {"k8scontrol01": hosts["k8scontrol01"]}, yes=True))
    assert [r.status for r in res.results] == [Status.CHANGED]
    assert fake_clock.slept == [2.0] * (1 + 2 + 3)
    assert lab.events == ["reboot k8scontrol01", "up k8scontrol01", "ready k8scontrol01"]


def test_only_hosts_that_need_it_reboot_and_checks_skip_what_is_not_set_up(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    lab = Lab(inv)
    hosts = _hosts(
        inv,
        lab,
        k8slb01={"required": False},
        k8scontrol01={"required": False},
        k8slb02={"configured": False},
    )
    res = run_step(RebootStep(), _ctx(inv, hosts, yes=True))
    by = {r.target: r.status for r in res.results}
    assert by["k8slb01"] is Status.OK and by["k8scontrol01"] is Status.OK
    assert "reboot k8slb01" not in lab.events
    assert lab.events[:2] == ["reboot k8slb02", "up k8slb02"]  # no Heartbeat there yet
    assert "ready k8slb02" not in lab.events


def test_rebooted_is_not_planned_without_reboot_required(inv: Inventory) -> None:
    h = RebootHost("x", Lab(inv), required=False)
    assert Rebooted().check(h, h.gather([Rebooted().probe()])[0]) is None
    h.required = True
    change = Rebooted().check(h, h.gather([Rebooted().probe()])[0])
    assert change is not None and "linux-image" in change.summary


def test_one_lb_alone_waits_for_heartbeat_not_for_a_peer_it_cannot_see(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    """`prepare --host k8slb01` while k8slb02 holds the VIP: k8slb02 is not connected."""
    lab = Lab(inv, holder="k8slb02")
    hosts = _hosts(inv, lab)
    res = run_step(RebootStep(wait_seconds=10), _ctx(inv, {"k8slb01": hosts["k8slb01"]}, yes=True))
    assert res.results[0].status is Status.CHANGED, res.results[0].message
    assert lab.events == ["reboot k8slb01", "up k8slb01", "ready k8slb01"]
