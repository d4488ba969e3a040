"""Run one step over its targets: plan (parallel) → show → checkpoint → apply → verify → results.

An unreachable or failing target does not stop the others, unless the step declares
`all_or_nothing` (e.g. heartbeat: both nodes must get the same config) — then nothing is applied
anywhere — or `serial` (one target at a time, in order): then the first failure stops the step
and the targets after it are skipped. `--dry-run` stops after the plan; the targets themselves
refuse mutating calls.

All remote work runs in worker threads while the main thread only waits: after an interrupt
(`ctx.stop`, set by the task layer's signal handler) nothing new starts, running work gets
`interrupt.GRACE` seconds, and the step raises `Interrupted` carrying what it had done.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from . import trace
from .interrupt import Interrupted, StopFlag
from .plan import Change, Status, StepResult, TargetPlan, TargetResult
from .remote import Host, HostUnreachable
from .resources import Resource
from .target import Target

if TYPE_CHECKING:
    from ..inventory import Inventory
    from .console import Ui


class StepQuit(Exception):
    """The operator chose quit at a step's plan (exit 3; a re-run resumes there)."""


class StepFailed(RuntimeError):
    """Raised by a step's own verify when the result is not what was wanted."""


@dataclass
class RunOptions:
    dry_run: bool = False
    yes: bool = False
    verbose: bool = False
    hosts: tuple[str, ...] = ()
    guided: bool = False
    """Ask apply / skip / quit after each plan that changes something (walkthrough on a TTY)."""


T = TypeVar("T")


@dataclass
class RunState:
    """What the steps of one run share, typed: each step module keeps its own dataclass of
    per-run state (what it read once, what it decided) and finds this run's instance with
    `of(cls)`, so mypy checks every use; `render` is the run's mode."""

    render: bool = False
    """`inv render`: no host is asked; a secret is `SECRET_MARKER`."""
    _parts: dict[type[Any], Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def of(self, cls: type[T], make: Callable[[], T] | None = None) -> T:
        """This run's `cls` instance, made on first use (by `make`, else `cls()`); thread-safe."""
        with self._lock:
            if cls not in self._parts:
                self._parts[cls] = (make or cls)()
            return cast(T, self._parts[cls])

    def given(self, *parts: object) -> RunState:
        """This state with `parts` already set (what a task hands its steps)."""
        for p in parts:
            self._parts[type(p)] = p
        return self


@dataclass
class StepContext:
    """Everything a step may look at: inventory, targets, console, options, the run's state."""

    inventory: Inventory
    ui: Ui
    options: RunOptions
    targets: dict[str, Any] = field(default_factory=dict)
    """Name → `Target`: a `Host` per host, the `CloudTarget` under `CLOUD`. The engine reads
    them as `Target`; a host step reads its own `Host` (so the values stay untyped here)."""
    run: RunState = field(default_factory=RunState)
    stop: StopFlag = field(default_factory=StopFlag)


class Step(ABC):
    """A procedure step: which targets, which resources, what to verify."""

    name: str = ""
    title: str = ""
    all_or_nothing: bool = False
    serial: bool = False

    @abstractmethod
    def target_names(self, ctx: StepContext) -> list[str]:
        """Names of the targets this step runs on (host names or `CLOUD`)."""

    @abstractmethod
    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        """The wanted state of one target, in apply order."""

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        """A question for the operator before applying, or None."""
        return None

    def verify(self, ctx: StepContext, target: str) -> None:  # noqa: B027 - optional hook
        """Step-specific verification after apply (raise StepFailed)."""

    def verify_all(self, ctx: StepContext, targets: Sequence[str]) -> None:  # noqa: B027
        """Verification across targets after every target is done (e.g. the LB pair)."""


def _failed(r: TargetResult) -> bool:
    return r.status in (Status.FAILED, Status.UNREACHABLE)


def run_all(
    fn: Callable[[str], Any],
    names: Sequence[str],
    stop: StopFlag,
    *,
    serial: bool = False,
    halt: Callable[[Any], bool] | None = None,
    started: set[str] | None = None,
) -> dict[str, Any]:
    """`fn(name)` for each name in worker threads (up to 32 at once; `serial`: one at a time, in
    order, and nothing more after a result for which `halt` is true). Returns the results of the
    names that finished: after an interrupt nothing new starts and running calls are abandoned
    once their grace is over, so a name may be missing (`started` collects the names begun)."""
    done: dict[str, Any] = {}
    queue = list(names)
    if not queue:
        return done
    pool = ThreadPoolExecutor(max_workers=1 if serial else min(32, len(queue)))
    running: dict[Future[Any], str] = {}
    try:
        while queue or running:
            while queue and not stop.requested and (not serial or not running):
                name = queue.pop(0)
                running[pool.submit(fn, name)] = name
                if started is not None:
                    started.add(name)
            if not running or stop.grace_over():
                break
            finished, _ = wait(running, timeout=0.1, return_when=FIRST_COMPLETED)
            for fut in finished:
                name = running.pop(fut)
                done[name] = fut.result()
                if serial and halt is not None and halt(done[name]):
                    queue.clear()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return done


def run_one(fn: Callable[[], Any], stop: StopFlag) -> Any:
    """`fn()` in a worker thread, so an interrupt can abandon it; raises `Interrupted` then."""
    box = run_all(lambda _: _capture(fn), ["-"], stop)
    stop.check()
    if "-" not in box:  # pragma: no cover - only when interrupted (checked above)
        raise Interrupted(stop.signum)
    ok, value = box["-"]
    if not ok:
        raise value
    return value


def _capture(fn: Callable[[], Any]) -> tuple[bool, Any]:
    try:
        return True, fn()
    except Exception as exc:
        return False, exc


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def plan_target(step: Step, ctx: StepContext, name: str) -> TargetPlan:
    """Gather facts in one round trip and compare with the wanted state."""
    target: Target = ctx.targets[name]
    try:
        resources = step.resources(ctx, name)
        facts = target.gather([r.probe() for r in resources])
        changes = []
        for res, fact in zip(resources, facts, strict=True):
            change = res.check(target, fact)
            if change is not None:
                target.touched.add(res.key)
                changes.append(change)
        return TargetPlan(name, tuple(changes))
    except HostUnreachable as exc:
        return TargetPlan(name, error=_describe(exc), unreachable=True)
    except Exception as exc:  # a broken target must not stop the others
        return TargetPlan(name, error=_describe(exc))


def apply_target(step: Step, ctx: StepContext, name: str) -> TargetResult:
    """Apply changed resources in order, then verify that everything checks clean."""
    target: Target = ctx.targets[name]
    applied: list[Change] = []
    try:
        resources = step.resources(ctx, name)
        for res in resources:
            ctx.stop.check()
            change = res.check(target, target.probe(res.probe()))
            if change is None:
                continue
            target.touched.add(res.key)
            text = f"{name}: {change.action} {change.resource}"
            with ctx.ui.status(text, seconds=res.apply_timeout):
                res.apply(target)
            applied.append(change)
        target.touched.clear()
        facts = target.gather([r.probe() for r in resources])
        left = [
            c
            for r, f in zip(resources, facts, strict=True)
            if (c := r.check(target, f)) is not None
        ]
        if left:
            raise StepFailed(
                "not converged after apply: "
                + "; ".join(
                    f"{c.resource} ({c.action}{': ' + c.summary if c.summary else ''})"
                    for c in left
                )
            )
        step.verify(ctx, name)
    except HostUnreachable as exc:
        return TargetResult(name, Status.UNREACHABLE, tuple(applied), _describe(exc))
    except Interrupted as exc:
        return TargetResult(
            name, Status.FAILED, tuple(applied), f"{exc} after {len(applied)} change(s)"
        )
    except Exception as exc:
        return TargetResult(name, Status.FAILED, tuple(applied), _describe(exc))
    status = Status.CHANGED if applied else Status.OK
    return TargetResult(name, status, tuple(applied))


def run_step(step: Step, ctx: StepContext) -> StepResult:
    """The whole flow for one step; returns results (exit codes are the caller's business)."""
    t0 = time.monotonic()
    res = _run_step(step, ctx)
    trace.record(
        "step",
        t0,
        step=step.name,
        dry_run=res.dry_run,
        **{s.value: sum(r.status is s for r in res.results) for s in Status},
    )
    return res


def _run_step(step: Step, ctx: StepContext) -> StepResult:
    ui, stop = ctx.ui, ctx.stop
    stop.check()
    for target in ctx.targets.values():
        if isinstance(target, Host):
            target.stop = stop
    ui.step_title(step.name, step.title)
    names = step.target_names(ctx)
    with ui.status(f"{step.name}: gathering facts on {len(names)} target(s)"):
        planned = run_all(lambda n: plan_target(step, ctx, n), names, stop)
    if stop.requested:  # nothing was changed yet
        raise Interrupted(stop.signum, _interrupted(step, ctx, names, {}, set()))
    plans: list[TargetPlan] = [planned[n] for n in names]
    ui.show_plan(step.name, plans)

    broken = [p for p in plans if p.error]
    if broken and step.all_or_nothing:
        results = [
            TargetResult(
                p.target,
                Status.UNREACHABLE
                if p.unreachable
                else Status.FAILED
                if p.error
                else Status.SKIPPED,
                message=p.error or "not applied: step needs every target and another one failed",
            )
            for p in plans
        ]
        return StepResult(step.name, tuple(results), ctx.options.dry_run)

    if ctx.options.dry_run:
        results = [_plan_only(p) for p in plans]
        return StepResult(step.name, tuple(results), True)

    todo = [p.target for p in plans if p.changes and not p.error]
    if todo and ctx.options.guided:
        with stop.raising():  # Ctrl-C at the question ends the run like at a checkpoint
            wanted = ask_apply(step, ctx, todo)
        if not wanted:
            return StepResult(step.name, tuple(_skipped(p) for p in plans), False)
    if todo:
        question = step.checkpoint(ctx, plans)
        if question:
            with stop.raising():
                ui.checkpoint(question)
    started: set[str] = set()
    done: dict[str, TargetResult] = run_all(
        lambda n: apply_target(step, ctx, n),
        todo,
        stop,
        serial=step.serial,
        halt=_failed,
        started=started,
    )
    # nothing to change: still run the step's own verify (read-only)
    unchanged = [p.target for p in plans if not p.error and p.target not in todo]
    done.update(run_all(lambda n: _verify_only(step, ctx, n), unchanged, stop, started=started))
    if stop.requested:
        raise Interrupted(stop.signum, _interrupted(step, ctx, names, done, started))
    results = []
    for p in plans:
        if p.error:
            results.append(_plan_only(p))
        elif p.target in done:
            results.append(done[p.target])
        else:
            results.append(
                TargetResult(
                    p.target,
                    Status.SKIPPED,
                    p.changes,
                    "not applied: an earlier target of this one-at-a-time step failed",
                )
            )
    if not any(_failed(r) for r in results):
        try:
            with ui.status(f"{step.name}: verifying"):
                run_one(lambda: step.verify_all(ctx, [p.target for p in plans]), stop)
        except Interrupted as exc:
            exc.partial = StepResult(step.name, tuple(results), False)
            raise
        except Exception as exc:
            results = [
                TargetResult(r.target, Status.FAILED, r.changes, _describe(exc)) for r in results
            ]
    return StepResult(step.name, tuple(results), False)


def ask_apply(step: Step, ctx: StepContext, todo: Sequence[str]) -> bool:
    """The guided rhythm: apply (True), skip (False) or quit (StepQuit)."""
    from .plangroup import host_ranges

    answer = ctx.ui.choose(
        f"{step.name}: apply these changes on {host_ranges(todo)}",
        ("apply", "skip", "quit"),
        "apply",
    )
    if answer == "quit":
        raise StepQuit(f"quit at step {step.name}; a re-run resumes here (--from {step.name})")
    return answer == "apply"


def _skipped(p: TargetPlan) -> TargetResult:
    if p.changes and not p.error:
        return TargetResult(p.target, Status.SKIPPED, p.changes, "skipped by the operator")
    return _plan_only(p)


def _interrupted(
    step: Step,
    ctx: StepContext,
    names: Sequence[str],
    done: dict[str, TargetResult],
    started: set[str],
) -> StepResult:
    """What an interrupted step had done: finished targets as they ended, the others flagged."""

    def row(n: str) -> TargetResult:
        if n in done:
            return done[n]
        if n in started:
            return TargetResult(
                n, Status.FAILED, message="interrupted: abandoned while running (a re-run resumes)"
            )
        return TargetResult(n, Status.SKIPPED, message="interrupted: not started")

    return StepResult(step.name, tuple(row(n) for n in names), ctx.options.dry_run)


def _plan_only(p: TargetPlan) -> TargetResult:
    if p.unreachable:
        return TargetResult(p.target, Status.UNREACHABLE, message=p.error)
    if p.error:
        return TargetResult(p.target, Status.FAILED, message=p.error)
    return TargetResult(p.target, Status.CHANGED if p.changes else Status.OK, p.changes)


def _verify_only(step: Step, ctx: StepContext, name: str) -> TargetResult:
    try:
        step.verify(ctx, name)
    except HostUnreachable as exc:
        return TargetResult(name, Status.UNREACHABLE, message=_describe(exc))
    except Exception as exc:
        return TargetResult(name, Status.FAILED, message=_describe(exc))
    return TargetResult(name, Status.OK)
