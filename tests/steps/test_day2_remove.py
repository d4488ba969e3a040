"""`cluster.remove` as data: what is left to do is read from the cluster (a re-run of a finished
removal changes nothing), and a control plane is not removed when the started etcd members left
would be no quorum, nor when it is the last member."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import RunOptions, StepContext, StepFailed
from runbook.core.remote import Fact, Host, Result
from runbook.core.resources import Packages
from runbook.inventory import load_inventory
from runbook.render.k8sfiles import ADMIN_CONF
from runbook.steps._k8s import KUBECTL
from runbook.steps.remove import Removed, RemoveToolsStep
from runbook.tools import etcdcli

ROOT = Path(__file__).resolve().parents[2]
IPS = {"k8scontrol01": "10.143.0.2", "k8scontrol02": "10.143.0.3", "k8scontrol03": "10.143.0.4"}


class Door(Host):
    """A control plane answering kubectl/etcdctl from a small model."""

    def __init__(self, name: str, nodes: dict[str, bool], members: list[str], up: set[str]):
        super().__init__(name, dry_run=True)
        self.nodes, self.members, self.up = nodes, members, up
        self.etcdctl = True  # etcd-client installed

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        if cmd == f"test -f {ADMIN_CONF}":
            return Result("", "", 0)
        if cmd == etcdcli.HAS_ETCDCTL:
            return Result("", "", 0 if self.etcdctl else 1)
        if "etcdctl" in cmd and not self.etcdctl:
            return Result("", "bash: line 1: etcdctl: command not found", 127)
        if cmd == f"{KUBECTL} get nodes -o json":
            items = [
                {"metadata": {"name": n}, "spec": {"unschedulable": c}, "status": {}}
                for n, c in self.nodes.items()
            ]
            return Result(json.dumps({"items": items}), "", 0)
        if cmd == etcdcli.etcdctl("member", "list", "-w", "json"):
            ms = [{"name": m, "ID": f"id-{m}"} for m in self.members]
            return Result(json.dumps({"members": ms}), "", 0)
        if "endpoint health" in cmd:
            ip = cmd.split("--endpoints=https://")[1].split(":")[0]
            ok = any(IPS[n] == ip for n in self.up)
            return Result("", "" if ok else "context deadline exceeded", 0 if ok else 1)
        raise AssertionError(f"unscripted: {cmd}")


def context(door: Door, dry_run: bool = True) -> StepContext:
    inv = load_inventory(ROOT / "hosts.yaml")
    masker = Masker()
    ui = Ui(make_console(masker, file=io.StringIO(), width=120), masker, assume_yes=True)
    ctx = StepContext(inventory=inv, ui=ui, options=RunOptions(dry_run=dry_run))
    ctx.targets[door.name] = door
    return ctx


def test_a_finished_removal_changes_nothing() -> None:
    door = Door("k8scontrol01", {"k8scontrol01": False}, ["k8scontrol01", "k8scontrol02"], set())
    res = Removed(context(door), "k8scontrol03")
    assert res.check(Host("k8scontrol03"), Fact("0", 0)) is None


def test_what_is_left_is_planned_in_order() -> None:
    cps = list(IPS)
    door = Door("k8scontrol01", dict.fromkeys(cps, False), cps, set(cps))
    change = Removed(context(door), "k8scontrol03").check(Host("k8scontrol03"), Fact("3", 0))
    assert change is not None
    assert change.summary == (
        "cordon + drain (--ignore-daemonsets), out of HAProxy's rotation; etcdctl member remove; "
        "kubeadm reset -f; kubectl delete node"
    )
    # a run that stopped after the reset: only the node object is left
    door.members, door.nodes["k8scontrol03"] = cps[:2], True
    change = Removed(context(door), "k8scontrol03").check(Host("k8scontrol03"), Fact("0", 0))
    assert change is not None and change.summary == "kubectl delete node"


def test_quorum_is_kept() -> None:
    cps = list(IPS)
    # k8scontrol03 is down: removing k8scontrol02 leaves {01, 03} with one started member
    door = Door("k8scontrol01", dict.fromkeys(cps, False), cps, {"k8scontrol01", "k8scontrol02"})
    with pytest.raises(
        StepFailed, match=r"would break etcd's quorum: of the 2 members left only 1"
    ):
        Removed(context(door), "k8scontrol02").check(Host("k8scontrol02"), Fact("3", 0))
    # the down member itself may go: {01, 02} are both started
    change = Removed(context(door), "k8scontrol03").check(Host("k8scontrol03"), Fact("3", 0))
    assert change is not None


def test_a_worker_has_no_etcd_step() -> None:
    door = Door("k8scontrol01", {"k8node01": False}, list(IPS), set(IPS))
    change = Removed(context(door), "k8node01").check(Host("k8node01"), Fact("1", 0))
    assert change is not None and "etcd" not in change.summary and "HAProxy" not in change.summary


def test_the_removal_of_a_control_plane_installs_etcdctl_where_it_runs_it_first() -> None:
    """CI (stop 46): on a cluster never backed up, `cluster.remove` of a control plane failed
    with "etcdctl: command not found" on the control plane that runs etcdctl (only the backup
    and restore steps installed etcd-client). The task's first step installs it there."""
    cps = list(IPS)
    door = Door("k8scontrol01", dict.fromkeys(cps, False), cps, set(cps))
    ctx = context(door)
    tools = RemoveToolsStep("k8scontrol03")
    assert tools.target_names(ctx) == ["k8scontrol01"]
    (pkgs,) = tools.resources(ctx, "k8scontrol01")
    assert isinstance(pkgs, Packages) and list(pkgs.names) == [etcdcli.PACKAGE]
    # a worker has no etcd member: nothing to install
    assert RemoveToolsStep("k8node01").target_names(ctx) == []


def test_a_dry_run_before_etcdctl_is_installed_plans_the_member_removal_unread() -> None:
    cps = list(IPS)
    door = Door("k8scontrol01", dict.fromkeys(cps, False), cps, set(cps))
    door.etcdctl = False
    change = Removed(context(door), "k8scontrol03").check(Host("k8scontrol03"), Fact("3", 0))
    assert change is not None
    assert "etcdctl member remove if a member" in change.summary
    assert f"once {etcdcli.PACKAGE} is installed" in change.summary


def test_a_real_run_without_etcdctl_says_so_not_command_not_found() -> None:
    cps = list(IPS)
    door = Door("k8scontrol01", dict.fromkeys(cps, False), cps, set(cps))
    door.etcdctl = False
    with pytest.raises(StepFailed, match=r"k8scontrol01: etcdctl is not installed \(`etcd-client`"):
        Removed(context(door, dry_run=False), "k8scontrol03").check(
            Host("k8scontrol03"), Fact("3", 0)
        )
