"""Grouped plans and recaps (runbook/core/plangroup.py), tables fitted to 80 columns (screen.py)."""

from __future__ import annotations

import io
import re

import pytest

from runbook.core.console import Masker, Ui, make_console
from runbook.core.plan import Change, Status, StepResult, TargetPlan, TargetResult
from runbook.core.plangroup import group_plans, host_ranges

K8S = ["k8scontrol01", "k8scontrol02", "k8scontrol03", "k8snode01", "k8snode02"]
LBS = ["k8slb01", "k8slb02"]
HOSTS = [*K8S[:3], *LBS, *K8S[3:]]
CONTAINERD_DIFF = "--- a (host)\n+++ a (wanted)\n@@ -0,0 +1,3 @@\n+version = 3\n+[x]\n+  y = 1\n"


def ui_at(width: int, **kw: object) -> tuple[Ui, io.StringIO]:
    out = io.StringIO()
    masker = Masker()
    return Ui(make_console(masker, file=out, width=width), masker, **kw), out  # type: ignore[arg-type]


def fresh_prepare() -> list[TargetPlan]:
    """The shape of `prepare` on 7 fresh hosts: shared lines, k8s-only changes, one that differs."""
    plans = []
    for h in HOSTS:
        changes = [
            Change(f"line:/etc/hosts:^10.143.0.{i}", "replace", f"/etc/hosts: 10.143.0.{i} {n}")
            for i, n in enumerate(HOSTS, start=2)
        ]
        changes.append(Change("hostname", "set", f"hostname {h}", f"--- h\n+++ h\n+{h}\n"))
        changes.append(Change("upgrade", "upgrade", "7 package(s) upgradable"))
        if h in K8S:
            changes += [
                Change("packages:containerd", "install", "install containerd"),
                Change("file:/etc/containerd/config.toml", "create", "mode 644", CONTAINERD_DIFF),
                Change("service:containerd", "enable+start", ""),
            ]
        else:
            changes.append(Change("packages:haproxy,heartbeat", "install", "install haproxy"))
        plans.append(TargetPlan(h, tuple(changes)))
    return plans


@pytest.mark.parametrize(
    ("names", "text"),
    [
        (["k8scontrol01", "k8scontrol02", "k8scontrol03"], "k8scontrol01-03"),
        (
            ["k8scontrol01", "k8snode01", "k8scontrol03", "k8snode02"],
            "k8scontrol01, k8scontrol03, k8snode01-02",
        ),
        (["hcloud"], "hcloud"),
        (["lb9", "lb10", "lb11"], "lb9, lb10-11"),
        (["k8slb02", "k8slb01", "k8slb02"], "k8slb01-02"),
        (["a1", "a2", "a4", "a5", "a6"], "a1-2, a4-6"),
    ],
)
def test_host_ranges(names: list[str], text: str) -> None:
    assert host_ranges(names) == text


def test_changes_shared_by_hosts_are_grouped_by_host_set() -> None:
    groups = group_plans(fresh_prepare())
    assert [g.hosts for g in groups] == [
        tuple(HOSTS),
        tuple(h for h in HOSTS if h in K8S),
        tuple(LBS),
    ]
    shared = {c.resource: c for c in groups[0].changes}
    assert len(shared["line:/etc/hosts:^10.143.0.2"].variants) == 1
    # the hostname differs per host: one resource, seven variants, each naming its host
    assert [v.hosts for v in shared["hostname"].variants] == [(h,) for h in HOSTS]


@pytest.mark.parametrize("width", [80, 120])
def test_grouped_plan_is_short_and_names_every_host_and_change(width: int) -> None:
    plans = fresh_prepare()
    ui, out = ui_at(width)
    ui.show_plan("prepare", plans)
    text = out.getvalue()
    per_host, per_out = ui_at(width, verbose=True)
    per_host.show_plan("prepare", plans)
    assert len(text.splitlines()) * 2 < len(per_out.getvalue().splitlines())
    assert "k8scontrol01-03, k8slb01-02, k8snode01-02: 9 change(s)" in text
    assert "k8scontrol01-03, k8snode01-02: 3 change(s)" in text
    assert "k8slb01-02: 1 change(s)" in text
    assert "set hostname (differs per host)" in text
    for h in HOSTS:
        assert re.search(rf"{h}: hostname {h}$", text, re.M), h
    for plan in plans:
        for ch in plan.changes:
            assert f"{ch.action} {ch.resource}" in text or ch.resource == "hostname"
    assert text.count("+version = 3") == 1  # one diff shown once for five hosts
    assert max(len(line) for line in text.splitlines()) <= width


def test_errors_stay_per_target_and_unchanged_hosts_share_a_line() -> None:
    ui, out = ui_at(80)
    ui.show_plan(
        "lb",
        [
            TargetPlan("k8slb01", (Change("file:/x", "update", "", "-a\n+b\n"),)),
            TargetPlan("k8slb02", error="connection refused", unreachable=True),
            TargetPlan("k8scontrol01"),
            TargetPlan("k8scontrol02"),
        ],
    )
    text = out.getvalue()
    assert "k8slb02: UNREACHABLE: connection refused" in text
    assert "k8scontrol01-02: ok (no changes)" in text
    assert "k8slb01: 1 change(s)" in text


def recap_results() -> list[StepResult]:
    return [
        StepResult(
            "prepare",
            tuple(
                TargetResult(h, Status.CHANGED, (Change("r", "a"),) * (3 if h in K8S else 1))
                for h in HOSTS
            ),
        ),
        StepResult(
            "haproxy",
            (
                TargetResult("k8slb01", Status.OK),
                TargetResult(
                    "k8slb02",
                    Status.FAILED,
                    message="haproxy -c: config invalid near line 12 "
                    "(bind 10.143.0.50:6443 not available)",
                ),
            ),
        ),
    ]


@pytest.mark.parametrize("width", [80, 120])
def test_recap_groups_targets_and_fits(width: int) -> None:
    ui, out = ui_at(width)
    line = ui.recap(recap_results())
    text = out.getvalue()
    assert line == "recap: ok=1 changed=7 failed=1 unreachable=0 skipped=0"
    assert re.search(r"│ prepare +│ k8scontrol01-03,", text), text
    assert "k8slb01-02" in text
    assert max(len(x) for x in text.splitlines()) <= width
    for name in (
        "k8scontrol01-03,",
        "k8snode01-02",
        "k8slb01-02",
        "k8slb01",
        "k8slb02",
        "10.143.0.50:6443",
    ):
        assert re.search(rf"(^|[ │]){re.escape(name)}($|[ │])", text, re.M), name


def test_recap_verbose_is_one_row_per_target() -> None:
    ui, out = ui_at(120, verbose=True)
    ui.recap(recap_results())
    text = out.getvalue()
    for h in HOSTS:
        assert re.search(rf"│ {h} +│", text), h


def test_a_long_diff_is_clipped_unless_verbose() -> None:
    script = "".join(f"+line {i}\n" for i in range(600))
    diff = (
        "--- /usr/local/sbin/x (host)\n+++ /usr/local/sbin/x (wanted)\n@@ -0,0 +1,600 @@\n" + script
    )
    plans = [
        TargetPlan(h, (Change("file:/usr/local/sbin/x", "create", "mode 755", diff),)) for h in LBS
    ]
    ui, out = ui_at(80)
    ui.show_plan("heartbeat", plans)
    text = out.getvalue()
    # a new file's content: its headers and first five lines
    assert "+line 4" in text and "+line 5" not in text
    assert "… 595 more lines of the new content (--verbose shows all; inv render" in text
    assert len(text.splitlines()) < 30
    full, full_out = ui_at(80, verbose=True)
    full.show_plan("heartbeat", plans)
    assert full_out.getvalue().count("+line 599") == 2  # per host, whole
    short = "".join(f"+l{i}\n" for i in range(10))
    ui, out = ui_at(80)
    ui.show_plan("x", [TargetPlan("a", (Change("file:/y", "create", "", short),))])
    assert "+l9" in out.getvalue() and "more lines" not in out.getvalue()
    edit = "".join(f"-old{i}\n+new{i}\n" for i in range(30))
    ui, out = ui_at(80)
    ui.show_plan("x", [TargetPlan("a", (Change("file:/y", "replace", "", edit),))])
    text = out.getvalue()  # a change to a file keeps DIFF_LINES lines
    assert "+new7" in text and "-old8" not in text
    assert "… 44 more diff lines (--verbose shows all; inv render writes it)" in " ".join(
        text.split()
    )


def test_a_diff_differing_only_in_context_is_one_change_shown_without_context() -> None:
    def hosts_diff(me: str) -> str:
        return (
            "--- /etc/hosts (host)\n+++ /etc/hosts (wanted)\n@@ -1,4 +1,4 @@\n"
            f" 127.0.1.1 {me}\n-10.143.0.2 k8scontrol01\n+10.143.0.2\tk8scontrol01\n 10.143.0.3 x\n"
        )

    change = "line:/etc/hosts:^10.143.0.2"
    plans = [
        TargetPlan(h, (Change(change, "replace", "10.143.0.2 k8scontrol01", hosts_diff(h)),))
        for h in HOSTS
    ]
    plans[0] = TargetPlan(HOSTS[0], (*plans[0].changes, Change("x", "y", "", hosts_diff("z"))))
    ui, out = ui_at(80)
    ui.show_plan("prepare", plans)
    text = out.getvalue()
    assert "differs per host" not in text
    assert "k8scontrol01-03, k8slb01-02, k8snode01-02: 1 change(s)" in text
    assert text.count("-10.143.0.2 k8scontrol01") == 2  # once shared, once for the other change
    assert "127.0.1.1 k8scontrol01" not in text  # one host's context is not shown for all
    assert "127.0.1.1 z" in text  # a single host's diff keeps its context
    # a real difference (another added line) stays a variant per host
    plans = [
        TargetPlan("a", (Change(change, "replace", "s", hosts_diff("a")),)),
        TargetPlan("b", (Change(change, "replace", "s", hosts_diff("b") + "+extra\n"),)),
    ]
    ui, out = ui_at(80)
    ui.show_plan("prepare", plans)
    assert "(differs per host)" in out.getvalue() and "+extra" in out.getvalue()
