"""The engine's flow and failure paths with fake steps over fake hosts."""

from __future__ import annotations

import io
import re
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace

import pytest

from runbook.core import interrupt
from runbook.core.console import CheckpointDeclined, Masker, NeedsPerson, Ui, make_console
from runbook.core.engine import RunOptions, Step, StepContext, StepFailed, StepQuit, run_step
from runbook.core.plan import Status, TargetPlan
from runbook.core.remote import DryRunViolation, Fact, Host
from runbook.core.resources import File, Resource
from tests.fakehost import LocalHost


class Boom(Resource):
    """Plans a change, then fails to apply it."""

    key = "boom"

    def check(self, host: Host, fact: Fact | None):  # type: ignore[override]
        from runbook.core.plan import Change

        return Change("boom", "explode")

    def apply(self, host: Host) -> None:
        raise RuntimeError("disk full")


class FileStep(Step):
    name, title = "files", "write a file on each host"

    def __init__(
        self,
        root: Path,
        names: Sequence[str],
        *,
        all_or_nothing: bool = False,
        question: str | None = None,
        broken: str = "",
        verify_fails: str = "",
    ) -> None:
        self.root, self.names = root, list(names)
        self.all_or_nothing = all_or_nothing
        self.question, self.broken, self.verify_fails = question, broken, verify_fails
        self.verified: list[str] = []

    def target_names(self, ctx: StepContext) -> list[str]:
        return self.names

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        res: list[Resource] = [File(str(self.root / target / "motd"), f"hello {target}\n")]
        if target == self.broken:
            res.append(Boom())
        return res

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        return self.question

    def verify(self, ctx: StepContext, target: str) -> None:
        self.verified.append(target)
        if target == self.verify_fails:
            raise StepFailed("backend DOWN")


def make_ctx(
    hosts: dict[str, Host],
    *,
    dry_run: bool = False,
    yes: bool = True,
    interactive: bool = False,
    answer: str = "",
    guided: bool = False,
) -> tuple[StepContext, io.StringIO]:
    out = io.StringIO()
    masker = Masker()
    ui = Ui(
        make_console(masker, file=out, width=100),
        masker,
        assume_yes=yes,
        interactive=interactive,
        stdin=io.StringIO(answer),
    )
    ctx = StepContext(
        inventory=SimpleNamespace(),
        ui=ui,  # type: ignore[arg-type]
        options=RunOptions(dry_run=dry_run, yes=yes, guided=guided),
    )
    ctx.targets.update(hosts)
    return ctx, out


@pytest.fixture
def hosts(tmp_path: Path) -> dict[str, LocalHost]:
    for n in ("a", "b", "c"):
        (tmp_path / "fs" / n).mkdir(parents=True)
    return {n: LocalHost(n, tmp_path / "state" / n) for n in ("a", "b", "c")}


def test_changed_then_ok(tmp_path: Path, hosts: dict[str, LocalHost]) -> None:
    step = FileStep(tmp_path / "fs", ["a", "b", "c"])
    ctx, _ = make_ctx(dict(hosts))
    first = run_step(step, ctx)
    assert [r.status for r in first.results] == [Status.CHANGED] * 3
    ctx2, out = make_ctx({n: LocalHost(n, h.state) for n, h in hosts.items()})
    second = run_step(step, ctx2)
    assert [r.status for r in second.results] == [Status.OK] * 3
    assert "a, b, c: ok (no changes)" in out.getvalue()
    assert sorted(step.verified) == ["a", "a", "b", "b", "c", "c"]


def test_failing_and_unreachable_host_do_not_stop_the_others(
    tmp_path: Path, hosts: dict[str, LocalHost]
) -> None:
    hosts["c"].unreachable = True
    step = FileStep(tmp_path / "fs", ["a", "b", "c"], broken="b")
    ctx, out = make_ctx(dict(hosts))
    res = run_step(step, ctx)
    by = {r.target: r for r in res.results}
    assert by["a"].status is Status.CHANGED
    assert by["b"].status is Status.FAILED and "disk full" in by["b"].message
    assert by["c"].status is Status.UNREACHABLE and "connection refused" in by["c"].message
    assert (tmp_path / "fs" / "a" / "motd").exists()
    assert res.failed
    assert "UNREACHABLE" in out.getvalue()


def test_all_or_nothing_applies_nowhere_when_one_is_unreachable(
    tmp_path: Path, hosts: dict[str, LocalHost]
) -> None:
    hosts["b"].unreachable = True
    step = FileStep(tmp_path / "fs", ["a", "b"], all_or_nothing=True)
    ctx, _ = make_ctx({"a": hosts["a"], "b": hosts["b"]})
    res = run_step(step, ctx)
    by = {r.target: r for r in res.results}
    assert by["a"].status is Status.SKIPPED and by["b"].status is Status.UNREACHABLE
    assert not (tmp_path / "fs" / "a" / "motd").exists()
    assert hosts["a"].mutating() == []


def test_verify_failure_is_a_failure(tmp_path: Path, hosts: dict[str, LocalHost]) -> None:
    step = FileStep(tmp_path / "fs", ["a", "b"], verify_fails="b")
    ctx, _ = make_ctx({"a": hosts["a"], "b": hosts["b"]})
    by = {r.target: r for r in run_step(step, ctx).results}
    assert by["a"].status is Status.CHANGED
    assert by["b"].status is Status.FAILED and "backend DOWN" in by["b"].message


def test_dry_run_runs_no_mutating_command(tmp_path: Path, hosts: dict[str, LocalHost]) -> None:
    dry = {n: LocalHost(n, h.state, dry_run=True) for n, h in hosts.items()}
    step = FileStep(tmp_path / "fs", ["a", "b", "c"], question="really?")
    ctx, out = make_ctx(dict(dry), dry_run=True, yes=False)  # no checkpoint in dry-run
    res = run_step(step, ctx)
    assert res.dry_run and [r.status for r in res.results] == [Status.CHANGED] * 3
    assert all(h.mutating() == [] for h in dry.values())
    assert not any((tmp_path / "fs" / n / "motd").exists() for n in "abc")
    assert "+hello a" in out.getvalue()  # the plan shows the diff


def test_dry_run_hosts_raise_on_mutation(tmp_path: Path) -> None:
    h = LocalHost("x", tmp_path / "s", dry_run=True)
    with pytest.raises(DryRunViolation):
        h.run("touch /tmp/should-not-exist")


def test_checkpoint_without_tty_needs_a_person(tmp_path: Path, hosts: dict[str, LocalHost]) -> None:
    step = FileStep(tmp_path / "fs", ["a"], question="Create the DNS record api.k8s.skgm.de?")
    ctx, out = make_ctx({"a": hosts["a"]}, yes=False, interactive=False)
    with pytest.raises(NeedsPerson, match="--yes"):
        run_step(step, ctx)
    assert "Create the DNS record" in out.getvalue()
    assert hosts["a"].mutating() == []


def test_checkpoint_declined_and_confirmed(tmp_path: Path, hosts: dict[str, LocalHost]) -> None:
    step = FileStep(tmp_path / "fs", ["a"], question="Go on?")
    ctx, _ = make_ctx({"a": hosts["a"]}, yes=False, interactive=True, answer="\n")
    with pytest.raises(CheckpointDeclined):  # default is No
        run_step(step, ctx)
    assert hosts["a"].mutating() == []
    ctx, _ = make_ctx(
        {"a": LocalHost("a", hosts["a"].state)}, yes=False, interactive=True, answer="y\n"
    )
    assert run_step(step, ctx).results[0].status is Status.CHANGED


def test_no_checkpoint_when_nothing_changes(tmp_path: Path, hosts: dict[str, LocalHost]) -> None:
    run_step(FileStep(tmp_path / "fs", ["a"]), make_ctx({"a": hosts["a"]})[0])
    step = FileStep(tmp_path / "fs", ["a"], question="Go on?")
    ctx, _ = make_ctx({"a": LocalHost("a", hosts["a"].state)}, yes=False, interactive=False)
    assert run_step(step, ctx).results[0].status is Status.OK


def test_facts_gathered_in_one_round_trip(tmp_path: Path, hosts: dict[str, LocalHost]) -> None:
    class ManyFiles(FileStep):
        def resources(self, ctx: StepContext, target: str) -> list[Resource]:
            return [File(str(self.root / target / f"f{i}"), "x\n") for i in range(6)]

    h = hosts["a"]
    ctx, _ = make_ctx({"a": h}, dry_run=True)
    run_step(ManyFiles(tmp_path / "fs", ["a"]), ctx)
    assert len(h.commands) == 1  # six probes, one command


@pytest.mark.parametrize("answer", ["\n", "a\n", "apply\n", "x\nA\n"])
def test_guided_apply(tmp_path: Path, hosts: dict[str, LocalHost], answer: str) -> None:
    step = FileStep(tmp_path / "fs", ["a", "b"])
    ctx, out = make_ctx(hosts, yes=False, interactive=True, answer=answer, guided=True)
    res = run_step(step, ctx)
    assert [r.status for r in res.results] == [Status.CHANGED] * 2
    assert "files: apply these changes on a, b APPLY / skip / quit?" in out.getvalue()
    if answer.startswith("x"):
        assert "please answer apply, skip, quit (empty: apply)" in out.getvalue()


def test_guided_question_is_one_line_on_a_narrow_screen(
    tmp_path: Path, hosts: dict[str, LocalHost]
) -> None:
    names = [f"k8scontrol{i:02d}" for i in (1, 3, 5, 7, 9, 11)]
    step = FileStep(tmp_path / "fs", names)
    for n in names:
        hosts[n] = LocalHost(n, tmp_path / "state" / n)
        (tmp_path / "fs" / n).mkdir(parents=True)
    ctx, out = make_ctx(
        {n: hosts[n] for n in names}, yes=False, interactive=True, answer="s\n", guided=True
    )
    ctx.ui.console.width = 40
    run_step(step, ctx)
    assert re.search(
        r"^files: apply these changes on k8scontrol01, .* APPLY / skip / quit\? ",
        out.getvalue(),
        re.M,
    ), out.getvalue()


def test_guided_skip_changes_nothing_and_goes_on(
    tmp_path: Path, hosts: dict[str, LocalHost]
) -> None:
    step = FileStep(tmp_path / "fs", ["a", "b"])
    ctx, _ = make_ctx(hosts, yes=False, interactive=True, answer="s\n", guided=True)
    res = run_step(step, ctx)
    assert [r.status for r in res.results] == [Status.SKIPPED] * 2
    assert not res.failed
    assert all(h.mutating() == [] for h in hosts.values())


@pytest.mark.parametrize("answer", ["q\n", "quit\n", ""])  # "" = end of input
def test_guided_quit_raises_and_changes_nothing(
    tmp_path: Path, hosts: dict[str, LocalHost], answer: str
) -> None:
    step = FileStep(tmp_path / "fs", ["a"])
    ctx, _ = make_ctx(hosts, yes=False, interactive=True, answer=answer, guided=True)
    with pytest.raises(StepQuit, match="--from files"):
        run_step(step, ctx)
    assert hosts["a"].mutating() == []


def test_guided_does_not_ask_when_nothing_changes(
    tmp_path: Path, hosts: dict[str, LocalHost]
) -> None:
    run_step(FileStep(tmp_path / "fs", ["a"]), make_ctx({"a": hosts["a"]})[0])
    ctx, out = make_ctx(
        {"a": LocalHost("a", hosts["a"].state)}, yes=False, interactive=True, guided=True
    )
    assert run_step(FileStep(tmp_path / "fs", ["a"]), ctx).results[0].status is Status.OK
    assert "apply / skip" not in out.getvalue().lower()


def test_serial_step_stops_at_the_first_failure(
    tmp_path: Path, hosts: dict[str, LocalHost]
) -> None:
    """Standby first, holder last: a failed standby must not lead to the holder's change."""
    step = FileStep(tmp_path / "fs", ["a", "b", "c"], broken="a")
    step.serial = True
    ctx, _ = make_ctx(dict(hosts))
    by = {r.target: r for r in run_step(step, ctx).results}
    assert by["a"].status is Status.FAILED and "disk full" in by["a"].message
    for n in ("b", "c"):
        assert by[n].status is Status.SKIPPED and "earlier target" in by[n].message
        assert hosts[n].mutating() == []
        assert not (tmp_path / "fs" / n / "motd").exists()


def test_serial_step_stops_after_a_failed_verify(
    tmp_path: Path, hosts: dict[str, LocalHost]
) -> None:
    step = FileStep(tmp_path / "fs", ["a", "b"], verify_fails="a")
    step.serial = True
    ctx, _ = make_ctx({"a": hosts["a"], "b": hosts["b"]})
    by = {r.target: r for r in run_step(step, ctx).results}
    assert by["a"].status is Status.FAILED and by["b"].status is Status.SKIPPED
    assert step.verified == ["a"]


class Gate(Resource):
    """Applies by waiting on an event (a long remote command); counts how often it started."""

    key = "gate"

    def __init__(self, started: threading.Event, release: threading.Event) -> None:
        self.started, self.release = started, release

    def check(self, host: Host, fact: Fact | None):  # type: ignore[override]
        from runbook.core.plan import Change

        return Change("gate", "wait")

    def apply(self, host: Host) -> None:
        self.started.set()
        self.release.wait(30)


class GateStep(FileStep):
    def __init__(self, root: Path, names: Sequence[str], gate: Gate) -> None:
        super().__init__(root, names)
        self.gate = gate

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        return [self.gate, *super().resources(ctx, target)]


def test_interrupt_starts_nothing_new_and_abandons_a_hung_command(
    tmp_path: Path, hosts: dict[str, LocalHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(interrupt, "GRACE", 0.3)
    started, release = threading.Event(), threading.Event()
    step = GateStep(tmp_path / "fs", ["a", "b", "c"], Gate(started, release))
    step.serial = True
    ctx, _ = make_ctx(dict(hosts))
    threading.Thread(
        target=lambda: started.wait(10) and ctx.stop.request(signal.SIGINT), daemon=True
    ).start()
    try:
        with pytest.raises(interrupt.Interrupted) as exc:
            run_step(step, ctx)
        assert not release.is_set()  # returned while the command still hangs
    finally:
        release.set()
    assert exc.value.exit_code == 130
    by = {r.target: r for r in exc.value.partial.results}
    assert by["a"].status is Status.FAILED and "abandoned while running" in by["a"].message
    assert by["b"].status is Status.SKIPPED and by["b"].message == "interrupted: not started"
    assert by["c"].status is Status.SKIPPED
    assert hosts["b"].mutating() == []


def test_interrupt_lets_a_running_command_finish_then_stops_the_target(
    tmp_path: Path, hosts: dict[str, LocalHost]
) -> None:
    started, release = threading.Event(), threading.Event()
    step = GateStep(tmp_path / "fs", ["a"], Gate(started, release))
    ctx, _ = make_ctx({"a": hosts["a"]})

    def interrupt_then_release() -> None:
        started.wait(10)
        ctx.stop.request(signal.SIGTERM)
        release.set()

    threading.Thread(target=interrupt_then_release, daemon=True).start()
    with pytest.raises(interrupt.Interrupted) as exc:
        run_step(step, ctx)
    assert exc.value.exit_code == 143
    (r,) = exc.value.partial.results
    assert r.status is Status.FAILED and r.message == "interrupted by SIGTERM after 1 change(s)"
    assert not (tmp_path / "fs" / "a" / "motd").exists()  # the next resource never started


def test_interrupt_before_a_step_starts_nothing(
    tmp_path: Path, hosts: dict[str, LocalHost]
) -> None:
    ctx, _ = make_ctx({"a": hosts["a"]})
    ctx.stop.request(signal.SIGINT)
    with pytest.raises(interrupt.Interrupted):
        run_step(FileStep(tmp_path / "fs", ["a"]), ctx)
    assert hosts["a"].commands == []


def test_after_an_interrupt_no_new_query_and_no_new_command_after_the_grace(
    tmp_path: Path, hosts: dict[str, LocalHost], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Abandoned work must not go on changing hosts after the recap said the run stopped."""
    monkeypatch.setattr(interrupt, "GRACE", 0.2)
    ctx, _ = make_ctx({"a": hosts["a"]})
    run_step(FileStep(tmp_path / "fs", ["a"]), ctx)  # the engine hands the host its stop flag
    h = hosts["a"]
    ctx.stop.request(signal.SIGINT)
    with pytest.raises(interrupt.Interrupted):
        h.query("true")
    h.run(f"touch {tmp_path / 'in-grace'}")  # within the grace a resource may finish
    threading.Event().wait(0.3)
    with pytest.raises(interrupt.Interrupted):
        h.run(f"touch {tmp_path / 'after-grace'}")
    assert (tmp_path / "in-grace").exists() and not (tmp_path / "after-grace").exists()
