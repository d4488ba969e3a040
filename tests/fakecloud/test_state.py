"""State: on_change timing, persistence across restarts, seeding, atomic writes."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from lab.fakecloud.state import SeedFloatingIP, SeedServer, load_state, seed
from tests.fakecloud.conftest import Env, MakeEnv


class Recorder:
    """An on_change hook that remembers when it ran and what it saw."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, dict[str, Any]]] = []
        self.event = threading.Event()

    def __call__(self, state: dict[str, Any]) -> None:
        self.calls.append((time.monotonic(), state))
        self.event.set()


def ids(env: Env) -> tuple[int, int, int]:
    fip = env.call("GET", "/floating_ips?name=k8s-api").body["floating_ips"][0]["id"]
    lb1 = env.call("GET", "/servers?name=k8slb01").body["servers"][0]["id"]
    lb2 = env.call("GET", "/servers?name=k8slb02").body["servers"][0]["id"]
    return fip, lb1, lb2


def test_on_change_fires_when_the_assign_action_completes(make_env: MakeEnv) -> None:
    rec = Recorder()
    env = make_env(action_seconds=0.3, on_change=rec)
    fip, lb1, _ = ids(env)
    t0 = time.monotonic()
    r = env.call("POST", f"/floating_ips/{fip}/actions/assign", {"server": lb1})
    assert r.status == 201 and r.body["action"]["status"] == "running"
    assert env.call("GET", f"/floating_ips/{fip}").body["floating_ip"]["server"] is None
    time.sleep(0.1)
    assert rec.calls == []  # not before action_seconds
    assert rec.event.wait(2)
    when, state = rec.calls[0]
    assert when - t0 >= 0.3
    assert next(f for f in state["floating_ips"] if f["id"] == fip)["server"] == lb1
    action = next(a for a in state["actions"] if a["id"] == r.body["action"]["id"])
    assert action["status"] == "running"  # success is reported only after the hook returned
    assert env.cloud.wait_idle(2)
    assert env.call("GET", f"/actions/{action['id']}").body["action"]["status"] == "success"


def _network(env: Env) -> int:
    body = {
        "name": "k8s",
        "ip_range": "10.143.0.0/16",
        "subnets": [{"type": "cloud", "network_zone": "eu-central", "ip_range": "10.143.0.0/24"}],
    }
    return int(env.call("POST", "/networks", body).body["network"]["id"])


def test_on_change_sees_alias_move(make_env: MakeEnv) -> None:
    rec = Recorder()
    env = make_env(action_seconds=0.05, on_change=rec)
    _, lb1, lb2 = ids(env)
    net = _network(env)
    assert len(rec.calls) == 1  # network creation is a completed change too
    for sid, ip in ((lb1, "10.143.0.5"), (lb2, "10.143.0.6")):
        env.call("POST", f"/servers/{sid}/actions/attach_to_network", {"network": net, "ip": ip})
    assert env.cloud.wait_idle(2)
    env.call(
        "POST",
        f"/servers/{lb1}/actions/change_alias_ips",
        {"network": net, "alias_ips": ["10.143.0.50"]},
    )
    assert env.cloud.wait_idle(2)
    env.call("POST", f"/servers/{lb1}/actions/change_alias_ips", {"network": net, "alias_ips": []})
    assert env.cloud.wait_idle(2)
    env.call(
        "POST",
        f"/servers/{lb2}/actions/change_alias_ips",
        {"network": net, "alias_ips": ["10.143.0.50"]},
    )
    assert env.cloud.wait_idle(2)

    def holders(state: dict[str, Any]) -> list[str]:
        return [
            s["name"]
            for s in state["servers"]
            if any("10.143.0.50" in p["alias_ips"] for p in s["private_net"])
        ]

    assert [holders(s) for _, s in rec.calls[-3:]] == [["k8slb01"], [], ["k8slb02"]]


def test_an_effect_does_not_wait_for_another_actions_hook(make_env: MakeEnv) -> None:
    """Hetzner applies an action on one resource whatever the lab does for another: the alias
    freed on the old holder must not wait until the lab has re-routed the floating IP (it did:
    the effect waited for the other action's slow `ip` calls, which stretched every failover)."""
    gate, blocked = threading.Event(), threading.Event()
    fip_id = 0

    def slow_router(state: dict[str, Any]) -> None:
        fip = next(f for f in state["floating_ips"] if f["id"] == fip_id)
        if fip["server"] is not None and not gate.is_set():
            blocked.set()
            gate.wait(5)  # the lab's `ip` calls for the floating IP, made very slow

    env = make_env(action_seconds=0.05, on_change=slow_router)
    fip_id, lb1, lb2 = ids(env)
    net = _network(env)
    env.call("POST", f"/servers/{lb2}/actions/attach_to_network", {"network": net})
    assert env.cloud.wait_idle(2)
    env.call("POST", f"/floating_ips/{fip_id}/actions/assign", {"server": lb1})
    assert blocked.wait(2)
    try:
        aid = env.call(
            "POST",
            f"/servers/{lb2}/actions/change_alias_ips",
            {"network": net, "alias_ips": ["10.143.0.50"]},
        ).body["action"]["id"]
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            srv = env.call("GET", f"/servers/{lb2}").body["server"]
            if srv["private_net"][0]["alias_ips"] == ["10.143.0.50"]:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the alias change waited for the floating IP's re-routing")
        # reported only once the lab re-routed for it, which waits its turn
        assert env.call("GET", f"/actions/{aid}").body["action"]["status"] == "running"
    finally:
        gate.set()
    assert env.cloud.wait_idle(2)
    assert env.call("GET", f"/actions/{aid}").body["action"]["status"] == "success"


def test_failing_hook_marks_the_action_failed(make_env: MakeEnv) -> None:
    def broken(state: dict[str, Any]) -> None:
        raise RuntimeError("router gone")

    env = make_env(on_change=broken)
    fip, lb1, _ = ids(env)
    aid = env.call("POST", f"/floating_ips/{fip}/actions/assign", {"server": lb1}).body["action"][
        "id"
    ]
    assert env.cloud.wait_idle(2)
    action = env.call("GET", f"/actions/{aid}").body["action"]
    assert action["status"] == "error" and "router gone" in action["error"]["message"]


def test_restart_keeps_state(env: Env) -> None:
    fip, lb1, _ = ids(env)
    env.call("POST", f"/floating_ips/{fip}/actions/assign", {"server": lb1})
    assert env.cloud.wait_idle(2)
    before = env.call("GET", "/servers").body
    env.restart()
    assert env.call("GET", f"/floating_ips/{fip}").body["floating_ip"]["server"] == lb1
    assert env.call("GET", "/servers").body == before
    assert env.call("GET", "/networks").body["networks"] == []


def test_restart_resumes_a_running_action(make_env: MakeEnv) -> None:
    env = make_env(action_seconds=0.3)
    fip, lb1, _ = ids(env)
    aid = env.call("POST", f"/floating_ips/{fip}/actions/assign", {"server": lb1}).body["action"][
        "id"
    ]
    env.restart()  # stops before the action completed
    assert env.call("GET", f"/actions/{aid}").body["action"]["status"] == "running"
    assert env.cloud.wait_idle(2)
    assert env.call("GET", f"/actions/{aid}").body["action"]["status"] == "success"
    assert env.call("GET", f"/floating_ips/{fip}").body["floating_ip"]["server"] == lb1


def test_state_file_is_written_atomically_and_in_api_shape(env: Env) -> None:
    fip, lb1, _ = ids(env)
    env.call("POST", f"/floating_ips/{fip}/actions/assign", {"server": lb1})
    assert env.cloud.wait_idle(2)
    on_disk = json.loads(env.state_path.read_text())
    assert on_disk["version"] == 1 and on_disk["next_id"] > 1000
    assert on_disk["servers"] == env.call("GET", "/servers").body["servers"]
    assert [p.name for p in env.state_path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_seed_is_idempotent_and_keeps_assignments(env: Env) -> None:
    fip, lb1, _ = ids(env)
    env.call("POST", f"/floating_ips/{fip}/actions/assign", {"server": lb1})
    assert env.cloud.wait_idle(2)
    env.running.stop()
    seed(
        env.state_path,
        servers=[SeedServer("k8slb01", "203.0.113.5"), SeedServer("new", "203.0.113.9")],
        floating_ips=[SeedFloatingIP("k8s-api", "203.0.113.100")],
    )
    state = load_state(env.state_path)
    assert [s["name"] for s in state["servers"]].count("k8slb01") == 1
    assert "new" in [s["name"] for s in state["servers"]]
    assert state["floating_ips"][0]["server"] == lb1
    env.restart()


def test_seed_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an IPv4"):
        seed(tmp_path / "s.json", servers=[SeedServer("a", "nope")], floating_ips=[])
    with pytest.raises(ValueError, match="location"):
        seed(
            tmp_path / "s.json",
            servers=[SeedServer("a", "203.0.113.1", location="mars")],
            floating_ips=[],
        )
    with pytest.raises(ValueError, match="already in use"):
        seed(
            tmp_path / "s.json",
            servers=[SeedServer("a", "203.0.113.1"), SeedServer("b", "203.0.113.1")],
            floating_ips=[],
        )
    assert not (tmp_path / "s.json").exists()
