"""The steps' waits (all `runbook.core.waiting`): each ends at the first look that finds what it
waits for, and at its deadline fails with its own message. A scripted host answers the step's
commands; the waits run on the fake clock, so the deadlines are the real ones and no test sleeps.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import RunOptions, StepContext, StepFailed
from runbook.core.remote import Host, Result
from runbook.inventory import Inventory, load_inventory
from runbook.render.k8sfiles import ADMIN_CONF, APISERVER_MANIFEST
from runbook.status.lbstatus import addr_probe
from runbook.steps import insecure_api
from runbook.steps._k8s import KUBECTL, Cluster
from runbook.steps.heartbeat import HB_STANDBY, HeartbeatService, HeartbeatStep
from runbook.steps.init import InitStep
from runbook.steps.join import JoinStep
from tests.conftest import FakeClock

REPO = Path(__file__).resolve().parents[2]
OK = Result("", "", 0)


class Scripted(Host):
    """Answers each command with `answer(cmd)`; counts the calls per command."""

    def __init__(self, name: str, answer: Callable[[str], Result]) -> None:
        super().__init__(name)
        self.answer = answer
        self.calls: list[str] = []

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        self.calls.append(cmd)
        return self.answer(cmd)


def after(looks: int, then: Result, before: Result) -> Callable[[], Result]:
    """`before` for the first `looks` calls, `then` from there on."""
    seen = [0]

    def answer() -> Result:
        seen[0] += 1
        return before if seen[0] <= looks else then

    return answer


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(REPO / "hosts.yaml")


def context(inv: Inventory, *hosts: Host) -> tuple[StepContext, io.StringIO]:
    out = io.StringIO()
    masker = Masker()
    ui = Ui(make_console(masker, file=out, width=200), masker, assume_yes=True, interactive=False)
    ctx = StepContext(inventory=inv, ui=ui, options=RunOptions(yes=True))
    ctx.targets.update({h.name: h for h in hosts})
    return ctx, out


# -- init: the API answers /readyz through the VIP ---------------------------------------------
def readyz_host(readyz: Callable[[], Result]) -> Scripted:
    def answer(cmd: str) -> Result:
        if cmd.startswith("grep -q -- --advertise-address=") and APISERVER_MANIFEST in cmd:
            return OK
        assert cmd == f"{KUBECTL} get --raw=/readyz", cmd
        return readyz()

    return Scripted("k8scontrol01", answer)


def test_init_verify_returns_when_readyz_says_ok(inv: Inventory, fake_clock: FakeClock) -> None:
    host = readyz_host(after(2, Result("ok\n", "", 0), Result("", "connection refused", 1)))
    ctx, out = context(inv, host)
    InitStep().verify(ctx, "k8scontrol01")
    assert fake_clock.slept == [2, 2]
    assert "waiting for the API to answer /readyz through" in out.getvalue()


def test_init_verify_fails_after_its_deadline_with_the_last_answer(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    host = readyz_host(lambda: Result("", "dial tcp 10.143.0.50:6443: connection refused", 1))
    ctx, _ = context(inv, host)
    endpoint = inv.control_plane_endpoint
    with pytest.raises(StepFailed) as err:
        InitStep().verify(ctx, "k8scontrol01")
    assert str(err.value) == (
        f"the API does not answer /readyz through {endpoint} after 180 s: "
        "dial tcp 10.143.0.50:6443: connection refused"
    )
    assert sum(fake_clock.slept) == 180


# -- join and the nodes: `kubectl get nodes` through the first control plane ------------------
def nodes_json(ready: dict[str, bool]) -> str:
    status = {True: "True", False: "False"}
    items = [
        {
            "metadata": {"name": n},
            "status": {"conditions": [{"type": "Ready", "status": status[r]}]},
        }
        for n, r in ready.items()
    ]
    return json.dumps({"items": items})


def cluster_host(nodes: Callable[[], dict[str, bool]]) -> Scripted:
    def answer(cmd: str) -> Result:
        if cmd == f"test -f {ADMIN_CONF}":
            return OK
        assert cmd == f"{KUBECTL} get nodes -o json", cmd
        return Result(nodes_json(nodes()), "", 0)

    return Scripted("k8scontrol01", answer)


def listings(*answers: dict[str, bool]) -> Callable[[], dict[str, bool]]:
    """One answer per `kubectl get nodes`, the last one repeated."""
    seen = [0]

    def nodes() -> dict[str, bool]:
        seen[0] += 1
        return answers[min(seen[0], len(answers)) - 1]

    return nodes


def test_join_verify_waits_for_the_node_to_be_listed(inv: Inventory, fake_clock: FakeClock) -> None:
    first = {"k8scontrol01": True}
    host = cluster_host(listings(first, first, {**first, "k8snode01": False}))
    ctx, _ = context(inv, host)
    JoinStep("worker").verify(ctx, "k8snode01")
    # the run's list (1), then a refresh every 2 s until it is there (2, 3)
    assert fake_clock.slept == [2]
    assert len([c for c in host.calls if "get nodes" in c]) == 3


def test_join_verify_fails_when_the_node_never_shows(inv: Inventory, fake_clock: FakeClock) -> None:
    ctx, _ = context(inv, cluster_host(lambda: {"k8scontrol01": True}))
    with pytest.raises(StepFailed, match=r"^k8snode01 joined but is not in `kubectl get nodes`$"):
        JoinStep("worker").verify(ctx, "k8snode01")
    assert sum(fake_clock.slept) == 120


def test_wait_ready_names_the_nodes_still_not_ready(inv: Inventory, fake_clock: FakeClock) -> None:
    ctx, out = context(inv, cluster_host(lambda: {"a": True, "b": False}))
    with pytest.raises(StepFailed, match=r"^not Ready after 60 s: b, c$"):
        Cluster.of(ctx).wait_ready(["a", "b", "c"], timeout=60, what="the nodes")
    assert sum(fake_clock.slept) == 60
    assert "waiting for the nodes, until" in out.getvalue()


def test_wait_ready_returns_the_nodes_once_all_are_ready(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    host = cluster_host(listings({"a": False}, {"a": False}, {"a": True, "b": True}))
    ctx, _ = context(inv, host)
    nodes = Cluster.of(ctx).wait_ready(["a", "b"], timeout=60, what="the nodes")
    assert sorted(nodes) == ["a", "b"] and fake_clock.slept == [2, 2]


# -- heartbeat: the daemon runs; a planned hand-over -----------------------------------------
def test_heartbeat_verify_waits_for_cl_status(inv: Inventory, fake_clock: FakeClock) -> None:
    hb = after(2, OK, Result("", "", 1))
    ctx, _ = context(inv, Scripted("k8slb01", lambda cmd: hb()))
    HeartbeatStep().verify(ctx, "k8slb01")
    assert fake_clock.slept == [1, 1]


def test_heartbeat_verify_fails_when_it_never_runs(inv: Inventory, fake_clock: FakeClock) -> None:
    ctx, _ = context(inv, Scripted("k8slb01", lambda cmd: Result("", "", 1)))
    with pytest.raises(StepFailed, match=r"^k8slb01: heartbeat is not running \(cl_status"):
        HeartbeatStep().verify(ctx, "k8slb01")
    assert sum(fake_clock.slept) == 30


class VipPair:
    """Who holds the VIP; hb_standby hands it to the peer after `takes` more looks (never: -1)."""

    def __init__(self, inv: Inventory, takes: int) -> None:
        self.inv, self.takes, self.holder = inv, takes, "k8slb01"
        self.standby = False

    def host(self, name: str) -> Scripted:
        lb = self.inv.load_balancer

        def answer(cmd: str) -> Result:
            if cmd == HB_STANDBY:
                self.standby = True
                self.holder = ""  # released; the peer takes it when Heartbeat says so
                return OK
            assert cmd == addr_probe(lb.interface), cmd
            if self.standby and name == "k8slb02" and self.takes >= 0:
                if self.takes == 0:
                    self.holder = "k8slb02"
                self.takes -= 1
            vip = f"3: {lb.interface}    inet {lb.vip}/32 scope global {lb.interface}\n"
            return Result(vip if self.holder == name else "", "", 0)

        return Scripted(name, answer)


def test_hand_over_ends_when_the_peer_holds_the_vip(inv: Inventory, fake_clock: FakeClock) -> None:
    pair = VipPair(inv, takes=3)
    lb1, lb2 = pair.host("k8slb01"), pair.host("k8slb02")
    ctx, _ = context(inv, lb1, lb2)
    HeartbeatService(["k8slb02"], ctx)._hand_over(lb1)
    assert pair.holder == "k8slb02" and fake_clock.slept == [0.5] * 3


def test_hand_over_refuses_the_restart_when_the_peer_never_takes_it(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    pair = VipPair(inv, takes=-1)
    lb1, lb2 = pair.host("k8slb01"), pair.host("k8slb02")
    ctx, _ = context(inv, lb1, lb2)
    with pytest.raises(StepFailed) as err:
        HeartbeatService(["k8slb02"], ctx)._hand_over(lb1)
    assert str(err.value) == (
        "k8slb01: the peer did not take the VIP within 30 s after hb_standby; "
        "Heartbeat not restarted"
    )
    assert sum(fake_clock.slept) == 30


# -- insecure API: the ServiceAccount's token ------------------------------------------------
def token_host(secret: Callable[[], Result]) -> Scripted:
    def answer(cmd: str) -> Result:
        assert cmd.startswith(f"{KUBECTL} -n ") and " get secret " in cmd, cmd
        return secret()

    return Scripted("k8scontrol01", answer)


def test_the_token_is_waited_for_until_the_controller_fills_it(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    b64 = "c2VjcmV0LXRva2Vu"  # "secret-token"
    host = token_host(after(2, Result(b64, "", 0), Result("", "", 0)))
    ctx, _ = context(inv, host)
    assert insecure_api.sa_token(ctx, wait=True) == "secret-token"
    assert fake_clock.slept == [1, 1]
    assert insecure_api.sa_token(ctx, wait=True) == "secret-token" and len(host.calls) == 3
    assert ctx.ui.masker.mask("secret-token") != "secret-token"


def test_no_token_without_waiting_or_after_the_deadline(
    inv: Inventory, fake_clock: FakeClock
) -> None:
    host = token_host(lambda: Result("", "NotFound", 1))
    ctx, _ = context(inv, host)
    assert insecure_api.sa_token(ctx, wait=False) == ""
    assert len(host.calls) == 1 and fake_clock.slept == []
    assert insecure_api.sa_token(ctx, wait=True) == ""
    assert sum(fake_clock.slept) == insecure_api.TOKEN_WAIT_S


def test_wait_api_returns_the_last_answer_at_its_deadline(fake_clock: FakeClock) -> None:
    host = Scripted("k8scontrol01", lambda cmd: Result("Bad Gateway\n502", "", 0))
    assert insecure_api.wait_api(host, "http://10.143.0.2:6080/api", 20) == "HTTP 502: Bad Gateway"
    assert sum(fake_clock.slept) == 20
    fine = after(1, Result('{"kind":"APIVersions"}\n200', "", 0), Result("\n000", "refused", 7))
    host = Scripted("k8scontrol01", lambda cmd: fine())
    fake_clock.slept.clear()
    assert insecure_api.wait_api(host, "http://10.143.0.2:6080/api", 20) == ""
    assert fake_clock.slept == [1]
