"""`inv lb.status`'s facts of one LB (runbook/status/lbstatus.py): Heartbeat's view of the
resource group beside the addresses, so a hand-over under way or a wedged Heartbeat shows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from runbook.core.remote import Fact, Host, Result
from runbook.inventory import Inventory, load_inventory
from runbook.status import lbstatus

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(REPO / "hosts.yaml")


class Lb(Host):
    """Answers lb.status's probe batch: Heartbeat running with `rsc`, the VIP if `holds`."""

    def __init__(
        self, name: str, inv: Inventory, rsc: str | None, holds: bool, masters: int = 1
    ) -> None:
        super().__init__(name)
        self.inv, self.rsc, self.holds, self.masters = inv, rsc, holds, masters
        self.probes: list[str | None] = []

    def gather(self, probes: Sequence[str | None]) -> list[Fact | None]:
        self.probes = list(probes)
        lb = self.inv.load_balancer
        hb = "active\n" if self.rsc is None else f"active\nhb-running\nrsc={self.rsc}\n"
        hb += f"masters={self.masters}\n"
        priv = f"2: ens10    inet {lb.vip}/32 scope global ens10\n" if self.holds else ""
        return [Fact(a, 0) for a in (hb, priv, "", "active", "")]

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        raise AssertionError(f"lb.status only gathers: {cmd}")


def test_the_heartbeat_probe_asks_for_the_resource_status_too(inv: Inventory) -> None:
    host = Lb("k8slb01", inv, "all", True)
    lbstatus.node_status(inv, host)
    assert host.probes[0] is not None and "cl_status rscstatus" in host.probes[0]


@pytest.mark.parametrize(
    ("name", "rsc", "word"),
    [
        ("k8slb01", "all", "held"),
        ("k8slb01", "local", "held"),  # the primary: the group is its own ("local")
        ("k8slb02", "local", "not held"),  # the other LB: its zero own resources
        ("k8slb02", "foreign", "held"),
        ("k8slb01", "none", "not held"),
        ("k8slb01", "transition", "transition"),
        ("k8slb01", None, "?"),  # Heartbeat not running: not asked
    ],
)
def test_the_group_column_says_what_heartbeat_gives_the_node(
    inv: Inventory, name: str, rsc: str | None, word: str
) -> None:
    node = lbstatus.node_status(inv, Lb(name, inv, rsc, True))
    assert lbstatus.group_word(inv, node) == word


def test_a_transition_and_a_group_without_the_vip_are_warned_about(inv: Inventory) -> None:
    def nodes(a: tuple[str, bool], b: tuple[str, bool]) -> list[lbstatus.LbNode]:
        return [
            lbstatus.node_status(inv, Lb("k8slb01", inv, *a)),
            lbstatus.node_status(inv, Lb("k8slb02", inv, *b)),
        ]

    assert lbstatus.heartbeat_warnings(inv, nodes(("all", True), ("none", False))) == []
    stuck = lbstatus.heartbeat_warnings(inv, nodes(("transition", True), ("none", False)))
    assert len(stuck) == 1 and stuck[0].startswith(
        "k8slb01: Heartbeat's resource status is 'transition'"
    )
    deferred = lbstatus.heartbeat_warnings(inv, nodes(("all", False), ("none", True)))
    assert deferred == [
        "Heartbeat gives k8slb01 the group, but k8slb01 does not hold the VIP (a hand-over to the "
        "node that serves is due; run again in a few seconds)"
    ]
    both = lbstatus.heartbeat_warnings(inv, nodes(("all", True), ("foreign", False)))
    assert both[0] == "Heartbeat gives the group to 2 LBs (k8slb01, k8slb02)"


def test_more_than_one_heartbeat_on_a_node_is_warned_about(inv: Inventory) -> None:
    """Official CI (stop 46): two Heartbeats on k8slb02, each dropping the other's messages as
    replays; `lb.status` said only that k8slb02 did not see its peer. The probe counts the
    masters (`HEARTBEAT_MASTERS`) and more than one is a warning."""
    host = Lb("k8slb02", inv, "none", False, masters=2)
    node = lbstatus.node_status(inv, host)
    assert host.probes[0] is not None and lbstatus.HEARTBEAT_MASTERS in host.probes[0]
    one = lbstatus.node_status(inv, Lb("k8slb01", inv, "all", True))
    (warning,) = lbstatus.heartbeat_warnings(inv, [one, node])
    assert warning.startswith("k8slb02: 2 Heartbeats run there; each drops the other's messages")
