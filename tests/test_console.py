"""Console rendering at a fixed width, secret masking, checkpoints."""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Iterator

import pytest

from runbook.core.console import MASK, CheckpointDeclined, Masker, NeedsPerson, Ui, make_console
from runbook.core.plan import Change, Status, StepResult, TargetPlan, TargetResult

SECRET = "hc-TOKEN-1234567890abcdef"


def ui_at(width: int = 80, **kw: object) -> tuple[Ui, io.StringIO]:
    out = io.StringIO()
    masker = Masker()
    masker.register(SECRET)
    return Ui(make_console(masker, file=out, width=width), masker, **kw), out  # type: ignore[arg-type]


def test_plan_tree_with_diff() -> None:
    ui, out = ui_at()
    ui.show_plan(
        "haproxy",
        [
            TargetPlan(
                "k8slb01",
                (
                    Change(
                        "file:/etc/haproxy/haproxy.cfg",
                        "update",
                        "",
                        "--- a\n+++ b\n-bind :6443\n+bind 10.143.0.50:6443\n",
                    ),
                ),
            ),
            TargetPlan("k8slb02"),
            TargetPlan("k8slb03", error="connection refused", unreachable=True),
        ],
    )
    text = out.getvalue()
    assert "plan: haproxy" in text
    assert "k8slb01: 1 change(s)" in text
    assert "update file:/etc/haproxy/haproxy.cfg" in text
    assert "+bind 10.143.0.50:6443" in text
    assert "k8slb02: ok (no changes)" in text
    assert "k8slb03: UNREACHABLE: connection refused" in text


def test_masking_everywhere() -> None:
    ui, out = ui_at(width=40)
    b64 = base64.b64encode(SECRET.encode()).decode().rstrip("=")
    ui.print(f"token is {SECRET}")
    ui.show_plan(
        "lb",
        [
            TargetPlan(
                "h",
                (
                    Change(
                        "file:/etc/env",
                        "create",
                        f"x {SECRET}",
                        f"+HCLOUD_TOKEN={SECRET}\n+B64={b64}\n",
                    ),
                ),
            )
        ],
    )
    ui.table("t", ["k"], [[SECRET]])
    ui.error(f"failed with {SECRET}")
    ui.recap([StepResult("lb", (TargetResult("h", Status.FAILED, (), f"bad {SECRET}"),))])
    ui.console.print(f"raw rich print {SECRET}")  # even below the Ui
    text = out.getvalue()
    assert SECRET not in text and b64 not in text
    # narrow width must not let a wrapped secret through in pieces
    assert SECRET[:12] not in "".join(text.split())
    assert MASK in text


def test_short_values_are_not_registered() -> None:
    m = Masker()
    m.register("ab")
    assert m.mask("abc ab") == "abc ab"


def test_recap_line_and_counts() -> None:
    ui, out = ui_at(width=120)
    line = ui.recap(
        [
            StepResult(
                "heartbeat",
                (
                    TargetResult("k8slb01", Status.CHANGED, (Change("f", "create"),)),
                    TargetResult("k8slb02", Status.OK),
                ),
            ),
            StepResult("haproxy", (TargetResult("k8slb01", Status.UNREACHABLE, (), "timeout"),)),
        ]
    )
    assert line == "recap: ok=1 changed=1 failed=0 unreachable=1 skipped=0"
    assert out.getvalue().rstrip().endswith(line)


def test_checkpoint_yes() -> None:
    ui, out = ui_at(assume_yes=True, interactive=False)
    ui.checkpoint("Reboot k8slb01 now?")
    assert "Reboot k8slb01 now?" in out.getvalue() and "--yes" in out.getvalue()


def test_checkpoint_no_tty_fails_at_once_printing_the_question() -> None:
    ui, out = ui_at(interactive=False)
    with pytest.raises(NeedsPerson) as exc:
        ui.checkpoint("Create the DNS record api.k8s.skgm.de -> 116.202.6.21?")
    assert "--yes" in str(exc.value)
    assert "Create the DNS record" in out.getvalue()


@pytest.mark.parametrize(
    ("answer", "ok"), [("y\n", True), ("yes\n", True), ("\n", False), ("n\n", False), ("", False)]
)
def test_checkpoint_tty_answers(answer: str, ok: bool) -> None:
    ui, _ = ui_at(interactive=True, stdin=io.StringIO(answer))
    if ok:
        ui.checkpoint("Proceed?")
    else:
        with pytest.raises(CheckpointDeclined):
            ui.checkpoint("Proceed?")


def test_verbose_commands_are_masked() -> None:
    ui, out = ui_at(verbose=True)
    ui.command("k8slb01", f"echo {SECRET} | something", mutating=True)
    assert "[k8slb01] $" in out.getvalue() and SECRET not in out.getvalue()
    quiet, qout = ui_at(verbose=False)
    quiet.command("k8slb01", "ls", mutating=False)
    assert qout.getvalue() == ""


@pytest.mark.parametrize("answer", ["y\n", "n\n"])
def test_checkpoint_prints_its_text_once_and_shows_choices_and_default(answer: str) -> None:
    ui, out = ui_at(interactive=True, stdin=io.StringIO(answer))
    try:
        ui.checkpoint("Reboot k8slb01 now? It holds no VIP.")
    except CheckpointDeclined as exc:
        ui.error(str(exc))  # what the tasks print
        assert answer == "n\n"
    text = out.getvalue()
    assert text.count("Reboot k8slb01 now?") == 1
    assert "confirm? [y/N]" in text


def test_a_wait_says_what_for_and_until_when() -> None:
    import datetime
    import re

    ui, out = ui_at(interactive=False)
    with ui.waiting("the LB pair to settle", 23):
        pass
    m = re.search(
        r"waiting for the LB pair to settle, until (\d\d:\d\d:\d\d) \(at most 23 s\)",
        out.getvalue(),
    )
    assert m, out.getvalue()
    end = datetime.datetime.strptime(m.group(1), "%H:%M:%S").time()
    now = datetime.datetime.now()
    want = (now + datetime.timedelta(seconds=23)).time()
    span = abs(
        datetime.datetime.combine(now.date(), end) - datetime.datetime.combine(now.date(), want)
    )
    assert span.total_seconds() < 5 or span.total_seconds() > 86000  # (midnight wrap)


def test_the_walkthrough_progress_heads_the_step_title_on_one_line() -> None:
    """The walkthrough's progress and the step's title share one line (issue 14: a fresh
    walkthrough within 600 lines); the prefix is used once, the next title is plain."""
    ui, out = ui_at(80)
    ui.title_prefix = "walkthrough 1/14: step 1 (prepare), 0 s elapsed"
    ui.step_title("prepare", "hostname, /etc/hosts, upgrade")
    ui.step_title("network", "Hetzner private network")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "walkthrough 1/14: step 1 (prepare), 0 s elapsed — hostname, /etc/hosts" in lines[0]
    assert "network — Hetzner private network" in lines[1] and "walkthrough" not in lines[1]


def test_a_slow_apply_says_until_when(monkeypatch: pytest.MonkeyPatch) -> None:
    """issue 14, progress on long waits: an apt install's spinner names its deadline."""
    from runbook.core import engine
    from runbook.core.resources import Packages

    ui, _ = ui_at(80)
    shown: list[str] = []

    @contextlib.contextmanager
    def status(text: str, *, seconds: float | None = None) -> Iterator[None]:
        shown.append(f"{text} [{seconds}]")
        yield

    monkeypatch.setattr(ui, "status", status)

    class Host:
        def __init__(self) -> None:
            self.touched: set[str] = set()

        def probe(self, _snippet: object) -> None:
            return None

        def gather(self, probes: list[object]) -> list[None]:
            return [None for _ in probes]

    class Pkgs(Packages):
        def check(self, host: object, fact: object) -> Change | None:
            return None if self.done else Change(self.key, "install", "x")

        def apply(self, host: object) -> None:
            self.done = True

    res = Pkgs(["haproxy"])
    res.done = False

    class Step(engine.Step):
        name = "s"

        def target_names(self, ctx: object) -> list[str]:
            return ["h"]

        def resources(self, ctx: object, target: str) -> list[Pkgs]:
            return [res]

    ctx = engine.StepContext(inventory=None, ui=ui, options=engine.RunOptions())  # type: ignore[arg-type]
    ctx.targets["h"] = Host()
    engine.apply_target(Step(), ctx, "h")
    assert shown == ["h: install packages:haproxy [2400]"], shown
    assert Packages.apply_timeout == 2400
