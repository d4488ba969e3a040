"""Raw HTTP behaviour: error envelope, auth, rate limit, faults, admin endpoints, call log."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import pytest

from lab.fakecloud.errors import STATUS_BY_CODE
from tests.fakecloud.conftest import Env, MakeEnv


def server_id(env: Env, name: str) -> int:
    return int(env.call("GET", f"/servers?name={name}").body["servers"][0]["id"])


def make_net(env: Env) -> int:
    body = {
        "name": "k8s",
        "ip_range": "10.143.0.0/16",
        "subnets": [{"type": "cloud", "network_zone": "eu-central", "ip_range": "10.143.0.0/24"}],
    }
    r = env.call("POST", "/networks", body)
    assert r.status == 201
    return int(r.body["network"]["id"])


def test_error_envelope_json_error_and_invalid_input(env: Env) -> None:
    lb = server_id(env, "k8slb01")
    bad_json = env.call("POST", f"/servers/{lb}/actions/attach_to_network", raw=b"{not json")
    assert bad_json.status == 400 and bad_json.body["error"]["code"] == "json_error"
    not_object = env.call("POST", "/networks", raw=b"[1, 2]")
    assert not_object.body["error"]["code"] == "json_error"
    wrong_type = env.call("POST", f"/servers/{lb}/actions/attach_to_network", {"network": "k8s"})
    assert wrong_type.status == 422
    assert wrong_type.body["error"]["code"] == "invalid_input"
    assert wrong_type.body["error"]["details"]["fields"][0]["name"] == "network"
    missing = env.call("POST", "/networks", {"ip_range": "10.0.0.0/16"})
    assert missing.body["error"]["details"]["fields"] == [
        {"name": "name", "messages": ["Missing required field"]}
    ]
    net = make_net(env)
    aliases = env.call(
        "POST",
        f"/servers/{lb}/actions/attach_to_network",
        {"network": net, "ip": "10.143.0.5", "alias_ips": "10.143.0.50"},
    )
    assert aliases.body["error"]["details"]["fields"][0]["name"] == "alias_ips"
    assert env.call("GET", "/servers/abc").status == 422
    assert env.call("GET", "/servers/424242").body["error"]["code"] == "not_found"
    assert env.call("GET", "/nothing").status == 404
    assert env.call("GET", "/servers?label_selector=a%3D%3D%3Db").status == 422


def test_auth_required_and_token_compared(env: Env) -> None:
    for token in (None, "wrong", env.token + "x", env.token[:-1]):
        r = env.call("GET", "/servers", token=token)
        assert r.status == 401, token
        assert r.body["error"]["code"] == "unauthorized"
        assert "RateLimit-Limit" in r.headers
    assert env.call("GET", "/servers").status == 200
    assert env.call("GET", "/_lab/state", token="wrong").status == 401


def test_rate_limit_headers_and_429(make_env: MakeEnv) -> None:
    env = make_env(rate_limit=3, rate_refill_per_s=0.01)
    seen = []
    for _ in range(3):
        r = env.call("GET", "/servers")
        assert r.status == 200
        seen.append(int(r.headers["RateLimit-Remaining"]))
        assert r.headers["RateLimit-Limit"] == "3"
    assert seen == [2, 1, 0]
    limited = env.call("GET", "/servers")
    assert limited.status == 429 and limited.body["error"]["code"] == "rate_limit_exceeded"
    assert limited.headers["RateLimit-Remaining"] == "0"
    assert int(limited.headers["RateLimit-Reset"]) > time.time() + 60  # 0.01/s: ~300 s to full


def test_rate_limit_refills(make_env: MakeEnv) -> None:
    env = make_env(rate_limit=2, rate_refill_per_s=20.0)
    statuses = [env.call("GET", "/servers").status for _ in range(3)]
    assert statuses[:2] == [200, 200]
    time.sleep(0.12)  # 20 tokens/s: two tokens back
    assert env.call("GET", "/servers").status == 200


def test_fault_latency(env: Env) -> None:
    t0 = time.monotonic()
    env.call("GET", "/servers")
    base = time.monotonic() - t0
    assert env.call("POST", "/_lab/faults", {"latency": 0.3}).status == 200
    t0 = time.monotonic()
    assert env.call("GET", "/servers").status == 200
    slow = time.monotonic() - t0
    assert 0.3 <= slow < 0.3 + base + 0.5
    t0 = time.monotonic()
    assert env.call("GET", "/_lab/state").status == 200  # admin endpoints are not slowed
    assert time.monotonic() - t0 < 0.3
    env.call("DELETE", "/_lab/faults")
    t0 = time.monotonic()
    env.call("GET", "/servers")
    assert time.monotonic() - t0 < 0.3


@pytest.mark.parametrize(
    "code", ["rate_limit_exceeded", "locked", "unavailable", "server_error", "timeout", "conflict"]
)
def test_fault_fail_next_then_recover(env: Env, code: str) -> None:
    r = env.call("POST", "/_lab/faults", {"fail_next": 2, "code": code})
    assert r.body["faults"]["fail_next"] == 2
    for _ in range(2):
        failed = env.call("GET", "/servers")
        assert failed.status == STATUS_BY_CODE[code]
        assert failed.body["error"]["code"] == code
    assert env.call("GET", "/servers").status == 200
    assert env.call("GET", "/_lab/faults").body["faults"]["fail_next"] == 0


def test_fault_bad_settings_rejected(env: Env) -> None:
    assert env.call("POST", "/_lab/faults", {"code": "no_such_code"}).status == 422
    assert env.call("POST", "/_lab/faults", {"latency": "slow"}).status == 422
    assert env.call("POST", "/_lab/faults", {"bogus": 1}).status == 422
    assert env.call("GET", "/_lab/faults").body["faults"]["fail_code"] == "unavailable"


def test_outage_closes_connections_then_recovers(env: Env) -> None:
    env.call("POST", "/_lab/faults", {"outage": 0.4})
    t0 = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        env.call("GET", "/servers")
    assert env.call("GET", "/_lab/state").status == 200  # the admin side stays up
    while time.monotonic() - t0 < 0.45:
        time.sleep(0.05)
    assert env.call("GET", "/servers").status == 200
    assert any(c["status"] is None for c in env.call("GET", "/_lab/calls").body["calls"])


def test_outage_hang_and_503_modes(env: Env) -> None:
    env.call("POST", "/_lab/faults", {"outage": 5, "outage_mode": "hang"})
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        env.call("GET", "/servers", timeout=0.3)
    assert 0.3 <= time.monotonic() - t0 < 1.0
    env.call("POST", "/_lab/faults", {"outage": 5, "outage_mode": "503"})
    r = env.call("GET", "/servers")
    assert r.status == 503 and r.body["error"]["code"] == "unavailable"
    env.call("DELETE", "/_lab/faults")
    assert env.call("GET", "/servers").status == 200


def test_a_call_made_during_a_hung_outage_is_never_answered_even_after_it_ends(env: Env) -> None:
    """As behind a real hung endpoint: a call in flight waits for its own timeout, even when the
    outage ends meanwhile (the lab used to close it then, which hid the failover script's
    per-call timeout); a call made after the outage is answered at once."""
    env.call("POST", "/_lab/faults", {"outage": 0.5, "outage_mode": "hang"})
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        env.call("GET", "/servers", timeout=2.0)
    assert time.monotonic() - t0 >= 2.0  # not 0.5 s, when the outage ended
    t1 = time.monotonic()
    assert env.call("GET", "/servers", timeout=2.0).status == 200
    assert time.monotonic() - t1 < 1.0


def test_fail_actions_end_in_error(env: Env) -> None:
    env.call("POST", "/_lab/faults", {"fail_actions": 1})
    fip = env.call("GET", "/floating_ips?name=k8s-api").body["floating_ips"][0]["id"]
    lb = server_id(env, "k8slb01")
    action = env.call("POST", f"/floating_ips/{fip}/actions/assign", {"server": lb}).body["action"]
    assert env.cloud.wait_idle(2)
    done = env.call("GET", f"/actions/{action['id']}").body["action"]
    assert done["status"] == "error" and done["error"]["code"] == "action_failed"
    assert env.call("GET", f"/floating_ips/{fip}").body["floating_ip"]["server"] is None


def test_slow_actions_run_as_long_as_injected_until_cleared(env: Env) -> None:
    """Hetzner's actions take seconds: `action_seconds` makes every action started from then on
    run that long; clearing the faults restores the server's own time."""
    fip = env.call("GET", "/floating_ips?name=k8s-api").body["floating_ips"][0]["id"]
    lb1, lb2 = server_id(env, "k8slb01"), server_id(env, "k8slb02")
    r = env.call("POST", "/_lab/faults", {"action_seconds": 0.8})
    assert r.body["faults"]["action_seconds"] == 0.8
    t0 = time.monotonic()
    action = env.call("POST", f"/floating_ips/{fip}/actions/assign", {"server": lb1}).body["action"]
    assert env.call("GET", f"/actions/{action['id']}").body["action"]["status"] == "running"
    assert env.cloud.wait_idle(5)
    assert time.monotonic() - t0 >= 0.8
    assert env.call("DELETE", "/_lab/faults").body["faults"]["action_seconds"] is None
    t0 = time.monotonic()
    env.call("POST", f"/floating_ips/{fip}/actions/assign", {"server": lb2})
    assert env.cloud.wait_idle(5)
    assert time.monotonic() - t0 < 0.8
    assert env.call("POST", "/_lab/faults", {"action_seconds": -1}).status == 422


def test_a_busy_server_answers_locked_until_the_clouds_own_action_ends(env: Env) -> None:
    """A backup or snapshot on Hetzner locks the server: its actions answer 423 `locked` until
    that action ends. `/_lab/busy` starts one (`create_image`, changes nothing the lab routes);
    another server is not affected; bad input is refused."""
    net = make_net(env)
    lb1, lb2 = server_id(env, "k8slb01"), server_id(env, "k8slb02")
    for sid, ip in ((lb1, "10.143.0.5"), (lb2, "10.143.0.6")):
        env.call("POST", f"/servers/{sid}/actions/attach_to_network", {"network": net, "ip": ip})
    assert env.cloud.wait_idle(5)

    def lb01() -> dict[str, Any]:
        return next(s for s in env.cloud.snapshot()["servers"] if s["id"] == lb1)

    before = lb01()
    r = env.call("POST", "/_lab/busy", {"server": "k8slb01", "seconds": 0.8})
    assert r.status == 201 and r.body["action"]["command"] == "create_image"
    aid = r.body["action"]["id"]
    assert env.call("GET", f"/actions/{aid}").body["action"]["status"] == "running"
    assert lb01()["locked"] is True
    alias = {"network": net, "alias_ips": ["10.143.0.50"]}
    locked = env.call("POST", f"/servers/{lb1}/actions/change_alias_ips", alias)
    assert locked.status == 423 and locked.body["error"]["code"] == "locked"
    assert env.call("POST", f"/servers/{lb2}/actions/change_alias_ips", alias).status == 201
    assert env.call("POST", "/_lab/busy", {"server": "k8slb01", "seconds": 1}).status == 423
    assert env.cloud.wait_idle(5)
    assert env.call("GET", f"/actions/{aid}").body["action"]["status"] == "success"
    assert lb01() == before  # nothing changed, the lock is gone
    taken = env.call("POST", f"/servers/{lb1}/actions/change_alias_ips", alias)
    assert taken.status == 422  # unlocked: now judged (the VIP is lb2's)
    for bad in (
        {"server": "nope", "seconds": 1},
        {"server": "k8slb01", "seconds": 0},
        {"server": "k8slb01"},
        {"server": "k8slb01", "seconds": 1, "x": 1},
    ):
        assert env.call("POST", "/_lab/busy", bad).status in (404, 422), bad


def test_call_log_and_state_never_hold_the_token(env: Env) -> None:
    net = make_net(env)
    lb = server_id(env, "k8slb01")
    env.call(
        "POST", f"/servers/{lb}/actions/attach_to_network", {"network": net, "ip": "10.143.0.5"}
    )
    env.call("GET", "/servers", token="wrong")
    assert env.cloud.wait_idle(2)
    calls = env.call("GET", "/_lab/calls").body["calls"]
    assert [(c["method"], c["path"], c["status"]) for c in calls[-3:]] == [
        ("GET", "/servers?name=k8slb01", 200),
        ("POST", f"/servers/{lb}/actions/attach_to_network", 201),
        ("GET", "/servers", 401),
    ]
    assert set(calls[0]) == {"time", "method", "path", "status", "duration"}
    assert env.token not in json.dumps(calls)
    assert env.token not in env.state_path.read_text()
    assert env.token not in json.dumps(env.call("GET", "/_lab/state").body)


def test_admin_endpoints_only_on_admin_listener(env: Env) -> None:
    from lab.fakecloud.server import Listener, start

    plain = start(env.cloud, [Listener("127.0.0.1", 0)])
    try:
        host, port = plain.addresses[0]
        conn = http.client.HTTPConnection(host, port, timeout=5)
        conn.request("GET", "/_lab/state", headers={"Authorization": f"Bearer {env.token}"})
        resp = conn.getresponse()
        assert resp.status == 404
        resp.read()
        conn.request("GET", "/v1/servers", headers={"Authorization": f"Bearer {env.token}"})
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        plain.stop(close_cloud=False)


def test_server_locked_while_its_action_runs(make_env: MakeEnv) -> None:
    env = make_env(action_seconds=0.3)
    net = make_net(env)
    lb = server_id(env, "k8slb01")
    attach = {"network": net, "ip": "10.143.0.5"}
    assert env.call("POST", f"/servers/{lb}/actions/attach_to_network", attach).status == 201
    assert env.call("GET", f"/servers/{lb}").body["server"]["locked"] is True
    second = env.call(
        "POST", f"/servers/{lb}/actions/change_alias_ips", {"network": net, "alias_ips": []}
    )
    assert second.status == 423 and second.body["error"]["code"] == "locked"
    # another server may claim neither the IP being attached nor anything else reserved
    other = server_id(env, "k8slb02")
    clash = env.call("POST", f"/servers/{other}/actions/attach_to_network", attach)
    assert clash.body["error"]["code"] == "ip_not_available"
    assert env.cloud.wait_idle(2)
    assert env.call("GET", f"/servers/{lb}").body["server"]["locked"] is False


def test_sort(env: Env) -> None:
    names = [s["name"] for s in env.call("GET", "/servers?sort=name:desc").body["servers"]]
    assert names == sorted(names, reverse=True)
    assert env.call("GET", "/servers?sort=color").status == 422


def test_subnet_without_range_takes_the_first_free_24(env: Env) -> None:
    body = {
        "name": "auto",
        "ip_range": "10.150.0.0/16",
        "subnets": [{"type": "cloud", "network_zone": "eu-central", "ip_range": None}],
    }
    net = env.call("POST", "/networks", body).body["network"]
    assert [s["ip_range"] for s in net["subnets"]] == ["10.150.0.0/24"]
    r = env.call(
        "POST",
        f"/networks/{net['id']}/actions/add_subnet",
        {"type": "cloud", "network_zone": "eu-central"},
    )
    assert r.status == 201 and r.body["action"]["command"] == "add_subnet"
    assert env.cloud.wait_idle(2)
    got = env.call("GET", "/networks?name=auto").body["networks"][0]["subnets"]
    assert [s["ip_range"] for s in got] == ["10.150.0.0/24", "10.150.1.0/24"]
    wrong_zone = dict(body, name="z", subnets=[{"type": "cloud", "network_zone": "mars"}])
    assert env.call("POST", "/networks", wrong_zone).body["error"]["code"] == "invalid_input"


def test_token_rotation_revokes_the_old_token_at_once(env: Env) -> None:
    """The lab's API token rotation (campaign fault `token-rotated`): the old token gets 401 on
    every call from then on, the new one works, and no answer or log echoes either."""
    old, new = env.token, "n" * 40
    r = env.call("POST", "/_lab/token", {"token": new})
    assert r.status == 200 and new not in json.dumps(r.body) and old not in json.dumps(r.body)
    assert env.call("GET", "/servers", token=old).status == 401
    assert env.call("GET", "/servers", token=new).status == 200
    assert new not in json.dumps(env.call("GET", "/_lab/calls", token=new).body)
    env.token = new
    assert env.call("POST", "/_lab/token", {"token": "short"}).status == 422
    assert env.call("POST", "/_lab/token", {"token": "x" * 40, "extra": 1}).status == 422
    assert env.call("GET", "/servers").status == 200  # a refused rotation changes nothing


def test_a_read_token_reads_and_is_refused_every_write(env: Env) -> None:
    """Hetzner's tokens are Read or Read & Write: a Read token's writes (a PUT that changes
    nothing as well as an action) answer 403 forbidden and change nothing. Made without
    `revoke`, the old token stays valid beside it (a new one made before the old is deleted)."""
    old, reader = env.token, "r" * 40
    r = env.call("POST", "/_lab/token", {"token": reader, "read_only": True, "revoke": False})
    assert r.status == 200
    server = env.call("GET", "/servers", token=reader).body["servers"][0]
    put = env.call("PUT", f"/servers/{server['id']}", {"name": "renamed"}, token=reader)
    assert put.status == 403 and put.body["error"]["code"] == "forbidden"
    fip = env.call("GET", "/floating_ips", token=reader).body["floating_ips"][0]
    assign = f"/floating_ips/{fip['id']}/actions/assign"
    assert env.call("POST", assign, {"server": server["id"]}, token=reader).status == 403
    assert (
        env.call("GET", f"/servers/{server['id']}", token=old).body["server"]["name"]
        == (server["name"])
    )
    assert env.call("PUT", f"/servers/{server['id']}", {"name": server["name"]}).status == 200
    bad = {"token": "w" * 40, "read_only": "yes"}
    assert env.call("POST", "/_lab/token", bad).status == 422
    env.call("POST", "/_lab/token", {"token": "w" * 40})  # revokes both
    assert env.call("GET", "/servers", token=old).status == 401
    assert env.call("GET", "/servers", token=reader).status == 401


def test_a_call_is_in_the_log_once_its_answer_has_arrived(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log was written after the answer went out: a client that counted its calls right after
    the last answer could miss it (CI: 5 of 6 retries logged). A slow log makes that race sure."""
    add = env.cloud.calls.add

    def slow_add(call: Any) -> None:
        time.sleep(0.3)
        add(call)

    monkeypatch.setattr(env.cloud.calls, "add", slow_add)
    before = len(env.cloud.calls.dump())
    assert env.call("GET", "/servers").status == 200
    assert env.call("GET", "/servers", token="wrong").status == 401
    assert [c["status"] for c in env.cloud.calls.dump()[before:]] == [200, 401]
