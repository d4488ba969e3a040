"""One run driver (`runbook.tasks._common.execute`) serves every step task and the walkthrough;
one registry (`runbook.steps.registry`) names the steps, their roles and what a run connects to.

The hosts, the cloud and the engine are replaced by recorders: these tests check what the driver
does around the steps (which hosts it connects, which steps it runs and how, the walkthrough's
--from/--only, progress lines, the exit codes), not the steps themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from invoke.config import Config
from invoke.context import Context
from invoke.exceptions import Exit

from runbook.cloud.api import CloudUnavailable
from runbook.core.engine import RunState, Step, StepContext
from runbook.core.plan import Change, Status, StepResult, TargetResult
from runbook.core.resources import Resource
from runbook.steps import registry
from runbook.steps.registry import StepEntry, scope
from runbook.tasks import _common as common
from runbook.tasks import cluster, core, lb

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Recorder:
    connected: list[list[str]] = field(default_factory=list)
    cloud: int = 0
    ran: list[tuple[str, bool, bool]] = field(default_factory=list)
    """(step name, dry-run, guided) per step run."""
    fail: str = ""
    pending: set[str] = field(default_factory=set)
    states: list[RunState] = field(default_factory=list)
    writes: bool | Exception | None = True
    """What the cloud's write probe answers (False: a Read token; an exception: raised)."""
    probed: list[str] = field(default_factory=list)


@dataclass
class Cloud:
    rec: Recorder

    def token_may_write(self, server: str) -> bool | None:
        self.rec.probed.append(server)
        if isinstance(self.rec.writes, Exception):
            raise self.rec.writes
        return self.rec.writes


@pytest.fixture
def rec(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    r = Recorder()

    def connect_all(inv: Any, names: list[str], **_: Any) -> dict[str, object]:
        r.connected.append(list(names))
        return {n: object() for n in names}

    def from_inventory(*_: Any, **__: Any) -> Cloud:
        r.cloud += 1
        return Cloud(r)

    def run_step(step: Step, ctx: StepContext) -> StepResult:
        dry = ctx.options.dry_run
        r.ran.append((step.name, dry, ctx.options.guided))
        r.states.append(ctx.run)
        ctx.ui.step_title(step.name, step.title)  # as the engine does first
        if step.name == r.fail:
            return StepResult(step.name, (TargetResult("h", Status.FAILED, (), "boom"),))
        changes = (Change("x", "set"),) if step.name in r.pending else ()
        status = Status.CHANGED if changes else Status.OK
        return StepResult(step.name, (TargetResult("h", status, changes),), dry)

    monkeypatch.setattr("runbook.core.remote.connect_all", connect_all)
    monkeypatch.setattr("runbook.cloud.api.CloudTarget.from_inventory", from_inventory)
    monkeypatch.setattr(common, "run_step", run_step)
    monkeypatch.setattr(common, "check_local_files", lambda inv, ui: None)
    monkeypatch.setattr(common, "register_secrets", lambda inv, ui: None)
    monkeypatch.setattr(common, "cloud_facts", lambda inv, *a, **k: inv)
    monkeypatch.setenv("COLUMNS", "200")
    return r


def ctx_for(inventory: Path = REPO / "hosts.yaml") -> Context:
    return Context(Config(overrides={"runbook": {"inventory": str(inventory)}}))


class Fake(Step):
    def __init__(self, name: str) -> None:
        self.name = name

    def target_names(self, ctx: StepContext) -> list[str]:
        return []

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        return []


def fake_procedure(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    entries = tuple(
        StepEntry(n, i + 1, Fake, (n,), cloud=True, first_cp=True) for i, n in enumerate(names)
    )
    monkeypatch.setattr(registry, "PROCEDURE", entries)
    monkeypatch.setattr(registry, "HAPROXY", entries[names.index("haproxy")])


# -- the registry -------------------------------------------------------------------------------
def test_a_scope_is_the_union_of_its_entries_needs() -> None:
    s = scope([registry.JOIN, registry.JOIN_WORKERS])
    assert (set(s.roles or ()), s.cloud, s.hosts, s.first_cp) == (
        {"control-plane", "worker"},
        False,
        True,
        True,
    )
    assert scope([registry.LB, registry.HEARTBEAT]).roles == ("lb",)
    assert scope([registry.LB]).cloud and not scope([registry.HEARTBEAT]).cloud
    assert scope([registry.PREPARE, registry.INIT]).roles is None  # prepare: every host
    assert not scope([registry.NETWORK]).hosts
    walk = scope(registry.PROCEDURE)
    assert (walk.roles, walk.cloud, walk.hosts, walk.first_cp) == (None, True, True, True)


def test_render_asks_the_steps_that_write_files_in_the_procedure_order() -> None:
    names = [s.name for s in registry.rendering_steps()]
    assert names == [
        "prepare", "lb", "haproxy", "heartbeat", "init", "join", "join-workers", "cni",
        "admin-user", "insecure-api", "certs",
    ]  # fmt: skip


# -- step tasks through the driver --------------------------------------------------------------
def test_join_on_a_worker_also_connects_the_first_control_plane(rec: Recorder) -> None:
    cluster.join.body(ctx_for(), host=["k8node01"], dry_run=True)
    assert rec.connected == [["k8node01", "k8scontrol01"]] and rec.cloud == 0
    assert [(n, dry) for n, dry, _ in rec.ran] == [("join", True), ("join-workers", True)]


def test_lb_setup_asks_the_cloud_and_network_connects_no_host(rec: Recorder) -> None:
    lb.setup.body(ctx_for(), dry_run=True)
    assert rec.connected == [["k8slb01", "k8slb02"]] and rec.cloud == 1
    assert [n for n, _, _ in rec.ran] == ["lb", "haproxy", "heartbeat"]
    core.network.body(ctx_for(), dry_run=True)
    assert len(rec.connected) == 1 and rec.cloud == 2


@pytest.mark.bad_input
def test_a_read_token_is_bad_input_before_any_step_of_a_task_that_writes_with_it(
    rec: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    """Hetzner makes Read and Read & Write tokens. A Read token fails the cloud's steps at their
    first write, and the heartbeat step would deploy it to the failover, which cannot move the
    addresses with it: exit 2 before any step runs. The probe is a write (one that changes
    nothing), so a dry-run does not make it and says so; a task that neither writes through
    the API nor deploys the token does not ask."""
    assert scope([registry.HEARTBEAT]).token_writes and scope([registry.NETWORK]).token_writes
    assert not scope([registry.HAPROXY, registry.INIT, registry.JOIN]).token_writes
    rec.writes = False
    with pytest.raises(Exit) as exc:
        lb.heartbeat.body(ctx_for(), yes=True)  # the heartbeat step alone: no cloud step
    assert exc.value.code == 2 and rec.ran == [] and rec.probed == ["k8slb01"]
    out = capsys.readouterr().out
    assert "HCLOUD_TOKEN: the API token may only read" in out and "Read & Write" in out
    lb.setup.body(ctx_for(), dry_run=True)
    assert rec.probed == ["k8slb01"] and [n for n, _, _ in rec.ran] == [
        "lb",
        "haproxy",
        "heartbeat",
    ]
    assert "checked when the run applies" in capsys.readouterr().out
    rec.ran.clear()
    lb.haproxy.body(ctx_for(), yes=True)
    assert rec.probed == ["k8slb01"] and [n for n, _, _ in rec.ran] == ["haproxy"]
    rec.writes = True
    lb.setup.body(ctx_for(), yes=True)
    assert rec.probed == ["k8slb01", "k8slb01"] and len(rec.ran) == 4
    # the API down (or another error): the steps' own calls meet it; no traceback here
    rec.writes = CloudUnavailable("the Hetzner API did not answer within hcloud.retry_deadline")
    lb.setup.body(ctx_for(), yes=True)
    assert len(rec.probed) == 3 and len(rec.ran) == 7
    assert "could not ask the API whether the token may write" in capsys.readouterr().out


def test_a_host_outside_the_tasks_roles_is_bad_input(
    rec: Recorder, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(Exit) as exc:
        lb.heartbeat.body(ctx_for(), host=["k8scontrol01"], dry_run=True)
    assert exc.value.code == 2 and rec.connected == [] and rec.ran == []
    assert "task lb.heartbeat runs on lb hosts" in capsys.readouterr().out


def test_a_failed_step_stops_the_task_with_exit_1(rec: Recorder) -> None:
    rec.fail = "prepare"
    with pytest.raises(Exit) as exc:
        core.prepare.body(ctx_for(), yes=True)
    assert exc.value.code == 1 and [n for n, _, _ in rec.ran] == ["prepare"]


# -- the walkthrough through the same driver ----------------------------------------------------
def walk(**kw: Any) -> list[StepResult]:
    opts: dict[str, Any] = dict(
        host=[], dry_run=False, yes=True, verbose=False, accept_new_host_keys=False, from_step=""
    )
    return core.run_walkthrough(ctx_for(), **{**opts, **kw})


def test_walkthrough_runs_every_step_in_order_with_progress_and_done(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_procedure(monkeypatch, "one", "haproxy", "three")
    results = walk()
    assert [r.step for r in results] == ["one", "haproxy", "three"]
    assert rec.ran == [("one", False, False), ("haproxy", False, False), ("three", False, False)]
    assert rec.connected == [ctx_hosts()] and rec.cloud == 1  # every host, the cloud
    out = capsys.readouterr().out
    assert "walkthrough 1/3: step 1 (one)" in out and "walkthrough 3/3: step 3 (three)" in out
    assert "failover drill: not run unattended" in out  # offered after haproxy, --yes
    assert "walkthrough done in" in out and "the cluster answers on" in out


def ctx_hosts() -> list[str]:
    from runbook.inventory import load_inventory

    return list(load_inventory(REPO / "hosts.yaml").hosts)


def test_walkthrough_from_only_checks_the_earlier_steps(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_procedure(monkeypatch, "one", "haproxy", "three")
    rec.pending = {"one"}
    results = walk(from_step="three")
    assert rec.ran == [("one", True, False), ("haproxy", True, False), ("three", False, False)]
    first = results[0].results[0]
    assert first.status is Status.SKIPPED and "before --from" in first.message
    assert not results[0].dry_run


def test_walkthrough_only_runs_one_step_and_a_failure_exits_1(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_procedure(monkeypatch, "one", "haproxy", "three")
    walk(only="three")
    assert rec.ran == [("three", False, False)]
    assert "walkthrough 1/1: step 3 (three)" in capsys.readouterr().out
    rec.ran.clear()
    rec.fail = "one"
    with pytest.raises(Exit) as exc:
        walk()
    assert exc.value.code == 1 and [n for n, _, _ in rec.ran] == ["one"]
    assert "walkthrough done" not in capsys.readouterr().out


def test_walkthrough_bad_from_or_only_is_bad_input_before_connecting(
    rec: Recorder, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake_procedure(monkeypatch, "one", "haproxy", "three")
    for kw in ({"from_step": "nope"}, {"only": "nope"}, {"from_step": "one", "only": "three"}):
        with pytest.raises(Exit) as exc:
            walk(**kw)
        assert exc.value.code == 2
    out = capsys.readouterr().out
    assert "--from: 'nope' is not one of one, haproxy, three" in out
    assert "--from and --only: give one of them" in out
    assert rec.connected == [] and rec.ran == []


def test_walkthrough_without_a_tty_or_yes_needs_a_person(rec: Recorder) -> None:
    with pytest.raises(Exit) as exc:
        walk(yes=False)
    assert exc.value.code == 3 and rec.connected == []


# -- typed per-run state ------------------------------------------------------------------------
def test_run_state_keeps_one_instance_per_class_made_once_across_threads() -> None:
    import threading

    from runbook.steps.heartbeat import HeartbeatRun
    from runbook.steps.restore import RestoreRun

    made: list[int] = []

    def make() -> HeartbeatRun:
        made.append(1)
        return HeartbeatRun(authkey="k")

    run = RunState()
    seen: list[HeartbeatRun] = []
    threads = [
        threading.Thread(target=lambda: seen.append(run.of(HeartbeatRun, make))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert made == [1] and all(s is seen[0] for s in seen) and seen[0].authkey == "k"
    assert RunState().of(HeartbeatRun).authkey is None  # another run starts empty
    given = RunState().given(RestoreRun(confirm="skgm"))
    assert given.of(RestoreRun).confirm == "skgm" and not given.render


def test_the_driver_hands_the_tasks_state_to_the_steps(rec: Recorder) -> None:
    from runbook.core.engine import RunState
    from runbook.steps.restore import RestoreRun

    run = RunState().given(RestoreRun(confirm="skgm"))
    common.execute(ctx_for(), [Fake("x"), Fake("y")], task="t", yes=True, run=run)
    assert [n for n, _, _ in rec.ran] == ["x", "y"]
    assert rec.states == [run, run] and rec.states[0] is run
    common.execute(ctx_for(), [Fake("z")], task="t", yes=True)
    assert rec.states[-1] is not run and rec.states[-1].of(RestoreRun).confirm is None
