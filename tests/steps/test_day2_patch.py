"""`inv patch` as data: a host with nothing pending is left alone (a re-run changes nothing),
pending upgrades or a pending reboot are planned with what happens around them by role, and the
order is prepare's reboot order (standby LB, VIP holder, control planes, workers)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import RunOptions, StepContext
from runbook.core.remote import Fact, Host, Result
from runbook.inventory import load_inventory
from runbook.status.lbstatus import addr_probe
from runbook.steps.patch import Patched, PatchStep
from runbook.steps.reboot import Rebooted, Upgraded

ROOT = Path(__file__).resolve().parents[2]


class Scripted(Host):
    def __init__(self, name: str, *, upgradable: int = 0, reboot: bool = False, vip: str = ""):
        super().__init__(name, dry_run=True)
        self.upgradable, self.reboot, self.vip = upgradable, reboot, vip

    def gather(self, probes):  # type: ignore[no-untyped-def]
        out = []
        for p in probes:
            if p is None:
                out.append(None)
            elif "apt-get -s" in p:
                out.append(Fact(str(self.upgradable), 0))
            elif "reboot-required" in p:
                out.append(Fact("rblab-kernel-update", 0) if self.reboot else Fact("", 1))
            else:
                raise AssertionError(p)
        return out

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        if cmd == addr_probe("ens10"):
            return Result(
                f"3: ens10    inet {self.vip}/32 scope global ens10\n" if self.vip else "", "", 0
            )
        raise AssertionError(cmd)


def context(hosts: list[Scripted]) -> StepContext:
    inv = load_inventory(ROOT / "hosts.yaml")
    masker = Masker()
    ui = Ui(make_console(masker, file=io.StringIO(), width=120), masker, assume_yes=True)
    ctx = StepContext(inventory=inv, ui=ui, options=RunOptions(dry_run=True))
    ctx.targets.update({h.name: h for h in hosts})
    return ctx


@pytest.mark.parametrize(
    ("name", "upgradable", "reboot", "want"),
    [
        ("k8node01", 0, False, None),
        ("k8node01", 3, False, "3 package(s) upgradable"),
        ("k8node01", 0, True, "reboot"),
        ("k8scontrol02", 1, False, "out of HAProxy's rotation"),
        ("k8slb02", 1, False, "the VIP handed to the peer first"),
    ],
)
def test_patched_check(name: str, upgradable: int, reboot: bool, want: str | None) -> None:
    host = Scripted(name, upgradable=upgradable, reboot=reboot)
    ctx = context([host])
    res = Patched(ctx, name, Upgraded(), Rebooted())
    change = res.check(host, None)
    if want is None:
        assert change is None
    else:
        assert change is not None and want in change.summary
        assert "held packages stay held" in change.summary


def test_order_is_standby_lb_holder_then_control_planes_then_workers() -> None:
    vip = "10.143.0.50"
    hosts = [Scripted(n) for n in load_inventory(ROOT / "hosts.yaml").hosts]
    for h in hosts:
        h.vip = vip if h.name == "k8slb01" else ""
    ctx = context(hosts)
    assert PatchStep().target_names(ctx) == [
        "k8slb02",
        "k8slb01",
        "k8scontrol01",
        "k8scontrol02",
        "k8scontrol03",
        "k8node01",
        "k8node02",
    ]
