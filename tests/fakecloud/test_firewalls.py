"""Firewalls and server labels in the simulated API, through the real hcloud client (every answer
schema-checked against the OpenAPI document by the fixtures)."""

from __future__ import annotations

import pytest
from hcloud import APIException
from hcloud.firewalls import FirewallResource, FirewallResourceLabelSelector, FirewallRule

from lab.fakecloud.firewalls import server_rules
from tests.fakecloud.conftest import Env

SSH = FirewallRule("in", "tcp", ["192.0.2.0/24"], port="22", description="ssh")
ICMP = FirewallRule("in", "icmp", ["0.0.0.0/0", "::/0"])


def _selector(sel: str) -> FirewallResource:
    return FirewallResource(
        type="label_selector", label_selector=FirewallResourceLabelSelector(selector=sel)
    )


def _wait(actions: list) -> None:  # type: ignore[type-arg]
    for a in actions:
        a.wait_until_finished(max_retries=200)


def test_create_set_rules_apply_by_selector_and_server_labels(env: Env) -> None:
    cl = env.client()
    created = cl.firewalls.create(name="skgm-lb", rules=[SSH], labels={"cluster": "skgm"})
    fw = created.firewall
    assert [r.port for r in fw.rules] == ["22"] and fw.applied_to == []
    assert cl.firewalls.get_all(label_selector="cluster=skgm")[0].id == fw.id
    assert cl.firewalls.get_by_name("skgm-lb").id == fw.id
    _wait(cl.firewalls.set_rules(fw, [SSH, ICMP]))
    fw = cl.firewalls.get_by_id(fw.id)
    assert [(r.protocol, r.port, r.source_ips) for r in fw.rules] == [
        ("tcp", "22", ["192.0.2.0/24"]),
        ("icmp", None, ["0.0.0.0/0", "::/0"]),
    ]
    _wait(cl.firewalls.apply_to_resources(fw, [_selector("rb/role=lb")]))
    fw = cl.firewalls.get_by_id(fw.id)
    (entry,) = fw.applied_to
    assert entry.label_selector.selector == "rb/role=lb"
    assert not entry.applied_to_resources  # no server carries the label yet
    lb1 = cl.servers.get_by_name("k8slb01")
    cl.servers.update(lb1, labels={**lb1.labels, "rb/role": "lb"})
    lb1 = cl.servers.get_by_name("k8slb01")
    assert lb1.labels["rb/role"] == "lb" and lb1.labels["cluster"] == "skgm"
    assert [f.firewall.id for f in lb1.public_net.firewalls] == [fw.id]
    assert lb1.public_net.firewalls[0].status == "applied"
    fw = cl.firewalls.get_by_id(fw.id)
    assert [r.server.id for r in fw.applied_to[0].applied_to_resources] == [lb1.id]
    rules = server_rules(env.cloud.snapshot())
    assert [r["port"] for r in rules[lb1.id] or []] == ["22", None]
    assert rules[cl.servers.get_by_name("k8slb02").id] is None  # no firewall: None, not []
    # a server that loses the label leaves the selector at once
    cl.servers.update(lb1, labels={"cluster": "skgm"})
    assert cl.servers.get_by_name("k8slb01").public_net.firewalls == []


def test_remove_delete_and_errors(env: Env) -> None:
    cl = env.client()
    fw = cl.firewalls.create(name="fw", rules=[SSH]).firewall
    sel = _selector("role=lb")
    _wait(cl.firewalls.apply_to_resources(fw, [sel]))
    with pytest.raises(APIException) as again:
        cl.firewalls.apply_to_resources(fw, [sel])
    assert again.value.code == "firewall_already_applied"
    with pytest.raises(APIException) as in_use:
        cl.firewalls.delete(fw)
    assert in_use.value.code == "resource_in_use"
    _wait(cl.firewalls.remove_from_resources(fw, [sel]))
    with pytest.raises(APIException) as gone:
        cl.firewalls.remove_from_resources(fw, [sel])
    assert gone.value.code == "firewall_already_removed"
    assert cl.firewalls.delete(fw) is True
    assert cl.firewalls.get_all() == []
    with pytest.raises(APIException) as dup:
        cl.firewalls.create(name="x", rules=[SSH])
        cl.firewalls.create(name="x")
    assert dup.value.code == "uniqueness_error"


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"direction": "in", "protocol": "tcp", "source_ips": ["0.0.0.0/0"]}, "rules.port"),
        (
            {"direction": "in", "protocol": "icmp", "port": "1", "source_ips": ["0.0.0.0/0"]},
            "rules.port",
        ),
        (
            {"direction": "in", "protocol": "tcp", "port": "22", "source_ips": []},
            "rules.source_ips",
        ),
        (
            {"direction": "in", "protocol": "tcp", "port": "22", "source_ips": ["10.0.0.1/8"]},
            "rules.source_ips",
        ),
        (
            {"direction": "in", "protocol": "tcp", "port": "70000", "source_ips": ["0.0.0.0/0"]},
            "rules.port",
        ),
        ({"direction": "in", "protocol": "sctp", "source_ips": ["0.0.0.0/0"]}, "rules.protocol"),
    ],
)
def test_rules_are_validated_like_hetzner(env: Env, rule: dict[str, object], field: str) -> None:
    r = env.call("POST", "/firewalls", {"name": "bad", "rules": [rule]})
    assert r.status == 422, r.body
    assert r.body["error"]["details"]["fields"][0]["name"] == field


def test_raw_endpoints_and_actions(env: Env) -> None:
    sid = int(env.call("GET", "/servers?name=k8slb01").body["servers"][0]["id"])
    r = env.call(
        "POST",
        "/firewalls",
        {"name": "direct", "apply_to": [{"type": "server", "server": {"id": sid}}]},
    )
    assert r.status == 201 and r.body["actions"][0]["command"] == "apply_firewall"
    fid = r.body["firewall"]["id"]
    assert env.cloud.wait_idle()
    assert env.call("GET", f"/firewalls/{fid}/actions").body["actions"][0]["status"] == "success"
    srv = env.call("GET", f"/servers/{sid}").body["server"]
    assert srv["public_net"]["firewalls"] == [{"id": fid, "status": "applied"}]
    bad = env.call(
        "POST",
        f"/firewalls/{fid}/actions/apply_to_resources",
        {"apply_to": [{"type": "label_selector", "label_selector": {"selector": "a==="}}]},
    )
    assert bad.status == 422
    assert env.call("PUT", f"/firewalls/{fid}", {"labels": {"k": "v"}}).body["firewall"][
        "labels"
    ] == {"k": "v"}
    assert env.call("PUT", "/networks/1", {"name": "x"}).status in (404, 405)
    assert env.call("DELETE", f"/firewalls/{fid}").status == 422  # still applied
