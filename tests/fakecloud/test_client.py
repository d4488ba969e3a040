"""The simulated API driven by the real `hcloud` client, as the runbook drives Hetzner."""

from __future__ import annotations

import pytest
from hcloud import APIException
from hcloud.networks import Network, NetworkSubnet
from hcloud.servers import Server

from lab.fakecloud.state import SeedServer
from tests.fakecloud.conftest import Env, MakeEnv

SUBNET = NetworkSubnet(type="cloud", ip_range="10.143.0.0/24", network_zone="eu-central")


def make_network(env: Env, name: str = "k8s") -> Network:
    return env.client().networks.create(name, "10.143.0.0/16", subnets=[SUBNET], labels={"a": "b"})


def attach(env: Env, server: str, net: Network, ip: str, aliases: list[str] | None = None) -> None:
    cl = env.client()
    srv = cl.servers.get_by_name(server)
    assert srv is not None
    cl.servers.attach_to_network(srv, net, ip=ip, alias_ips=aliases).wait_until_finished()


def aliases_of(env: Env, server: str) -> list[str]:
    srv = env.client().servers.get_by_name(server)
    assert srv is not None
    return list(srv.private_net[0].alias_ips)


def test_list_and_filter_servers(env: Env) -> None:
    cl = env.client()
    assert [s.name for s in cl.servers.get_all()] == [  # id order, as seeded
        "k8scontrol01",
        "k8slb01",
        "k8slb02",
        "k8node01",
    ]
    lb = cl.servers.get_by_name("k8slb01")
    assert lb is not None and lb.public_net.ipv4.ip == "203.0.113.5" and lb.status == "running"
    assert cl.servers.get_by_name("nope") is None
    by = {
        "role=lb": ["k8slb01", "k8slb02"],
        "role==lb,cluster=skgm": ["k8slb01", "k8slb02"],
        "role!=lb": ["k8scontrol01", "k8node01"],
        "cluster": ["k8scontrol01", "k8slb01", "k8slb02"],
        "!cluster": ["k8node01"],
        "role in (worker, control-plane)": ["k8scontrol01", "k8node01"],
        "role notin (lb)": ["k8scontrol01", "k8node01"],
    }
    for selector, names in by.items():
        got = sorted(s.name for s in cl.servers.get_all(label_selector=selector))
        assert got == sorted(names), selector
    assert cl.servers.get_by_id(lb.id).name == "k8slb01"


def test_pagination_across_more_than_50_servers(make_env: MakeEnv) -> None:
    servers = [SeedServer(f"srv{i:03d}", f"203.0.113.{i + 1}") for i in range(120)]
    env = make_env(servers=servers)
    assert [s.name for s in env.client().servers.get_all()] == [s.name for s in servers]
    r = env.call("GET", "/servers?page=3&per_page=50")
    assert [s["name"] for s in r.body["servers"]] == [f"srv{i:03d}" for i in range(100, 120)]
    assert r.body["meta"]["pagination"] == {
        "page": 3,
        "per_page": 50,
        "previous_page": 2,
        "next_page": None,
        "last_page": 3,
        "total_entries": 120,
    }
    capped = env.call("GET", "/servers?per_page=500")
    assert capped.body["meta"]["pagination"]["per_page"] == 50
    assert len(capped.body["servers"]) == 50
    assert len(env.call("GET", "/servers").body["servers"]) == 25  # Hetzner's default


def test_create_network_and_its_errors(env: Env) -> None:
    cl = env.client()
    net = make_network(env)
    assert net.ip_range == "10.143.0.0/16" and net.labels == {"a": "b"}
    assert [(s.ip_range, s.network_zone, s.gateway) for s in net.subnets] == [
        ("10.143.0.0/24", "eu-central", "10.143.0.1")
    ]
    assert cl.networks.get_by_name("k8s").id == net.id
    with pytest.raises(APIException) as dup:
        make_network(env)
    assert dup.value.code == "uniqueness_error"
    bad = {
        "public range": ("n1", "8.8.0.0/16", [SUBNET]),
        "not a CIDR": ("n2", "10.143.0.0/33", []),
        "host bits": ("n3", "10.143.0.1/16", []),
        "subnet outside": ("n4", "10.150.0.0/16", [SUBNET]),
        "too small": ("n5", "10.1.2.0/25", []),
    }
    for why, (name, rng, subnets) in bad.items():
        with pytest.raises(APIException) as err:
            cl.networks.create(name, rng, subnets=subnets)
        assert err.value.code == "invalid_input", why
        assert err.value.details["fields"][0]["name"] == "ip_range", why
    assert cl.networks.get_by_name("n1") is None


def test_add_subnet(env: Env) -> None:
    cl = env.client()
    net = make_network(env)
    cl.networks.add_subnet(
        net, NetworkSubnet(type="cloud", ip_range="10.143.1.0/24", network_zone="eu-central")
    ).wait_until_finished()
    assert [s.ip_range for s in cl.networks.get_by_id(net.id).subnets] == [
        "10.143.0.0/24",
        "10.143.1.0/24",
    ]
    with pytest.raises(APIException) as err:
        cl.networks.add_subnet(net, SUBNET)
    assert err.value.code == "invalid_input"  # overlaps


def test_attach_with_fixed_ip_and_validation(env: Env) -> None:
    cl = env.client()
    net = make_network(env)
    attach(env, "k8slb01", net, "10.143.0.5", ["10.143.0.50"])
    lb = cl.servers.get_by_name("k8slb01")
    assert lb is not None
    pn = lb.private_net[0]
    assert (pn.network.id, pn.ip, pn.alias_ips) == (net.id, "10.143.0.5", ["10.143.0.50"])
    assert pn.mac_address.startswith("86:00:00:")
    assert [s.id for s in cl.networks.get_by_id(net.id).servers] == [lb.id]
    lb2 = cl.servers.get_by_name("k8slb02")
    cases = {
        "10.143.0.5": "ip_not_available",  # primary IP of lb01
        "10.143.0.50": "ip_not_available",  # alias of lb01
        "10.143.0.1": "ip_not_available",  # gateway
        "10.143.0.255": "ip_not_available",  # broadcast
        "10.143.5.5": "invalid_input",  # inside the network, outside every subnet
        "no-ip": "invalid_input",
    }
    for ip, code in cases.items():
        with pytest.raises(APIException) as err:
            cl.servers.attach_to_network(lb2, net, ip=ip)
        assert err.value.code == code, ip
    with pytest.raises(APIException) as again:
        cl.servers.attach_to_network(lb, net, ip="10.143.0.9")
    assert again.value.code == "server_already_attached"
    with pytest.raises(APIException) as missing:
        cl.servers.attach_to_network(lb2, Network(id=424242), ip="10.143.0.6")
    assert missing.value.code == "not_found"
    # without an IP the first free address is taken (.1 is the gateway, .5 is lb01's)
    cl.servers.attach_to_network(lb2, net).wait_until_finished()
    assert cl.servers.get_by_name("k8slb02").private_net[0].ip == "10.143.0.2"
    cl.servers.detach_from_network(lb2, net).wait_until_finished()
    assert cl.servers.get_by_name("k8slb02").private_net == []
    with pytest.raises(APIException) as detached:
        cl.servers.detach_from_network(lb2, net)
    assert detached.value.code == "server_not_attached_to_network"


def test_change_alias_ips_replaces_and_moves(env: Env) -> None:
    cl = env.client()
    net = make_network(env)
    attach(env, "k8slb01", net, "10.143.0.5")
    attach(env, "k8slb02", net, "10.143.0.6")
    lb1, lb2 = cl.servers.get_by_name("k8slb01"), cl.servers.get_by_name("k8slb02")
    assert lb1 is not None and lb2 is not None
    cl.servers.change_alias_ips(lb1, net, ["10.143.0.50", "10.143.0.51"]).wait_until_finished()
    assert aliases_of(env, "k8slb01") == ["10.143.0.50", "10.143.0.51"]
    cl.servers.change_alias_ips(lb1, net, ["10.143.0.51"]).wait_until_finished()
    assert aliases_of(env, "k8slb01") == ["10.143.0.51"]  # replaced, not added
    cl.servers.change_alias_ips(lb1, net, ["10.143.0.50"]).wait_until_finished()
    # the VIP is held by lb01: giving it to lb02 first is refused, as by Hetzner
    with pytest.raises(APIException) as held:
        cl.servers.change_alias_ips(lb2, net, ["10.143.0.50"])
    assert held.value.code == "ip_not_available"
    with pytest.raises(APIException) as own:
        cl.servers.change_alias_ips(lb2, net, ["10.143.0.6"])
    assert own.value.code == "ip_not_available"
    # the move: clear on the old holder, then set on the new one
    cl.servers.change_alias_ips(lb1, net, []).wait_until_finished()
    cl.servers.change_alias_ips(lb2, net, ["10.143.0.50"]).wait_until_finished()
    assert aliases_of(env, "k8slb01") == []
    assert aliases_of(env, "k8slb02") == ["10.143.0.50"]
    ctl = cl.servers.get_by_name("k8scontrol01")
    with pytest.raises(APIException) as unattached:
        cl.servers.change_alias_ips(ctl, net, ["10.143.0.60"])
    assert unattached.value.code == "server_not_attached_to_network"


def test_floating_ip_assign_unassign_dns_ptr(env: Env) -> None:
    cl = env.client()
    fip = cl.floating_ips.get_by_name("k8s-api")
    assert fip is not None and fip.server is None and fip.ip == "203.0.113.100"
    lb1, lb2 = cl.servers.get_by_name("k8slb01"), cl.servers.get_by_name("k8slb02")
    assert lb1 is not None and lb2 is not None
    cl.floating_ips.assign(fip, lb1).wait_until_finished()
    assert cl.floating_ips.get_by_id(fip.id).server.id == lb1.id
    assert [f.id for f in cl.servers.get_by_id(lb1.id).public_net.floating_ips] == [fip.id]
    cl.floating_ips.assign(fip, lb2).wait_until_finished()  # while assigned elsewhere
    assert cl.floating_ips.get_by_id(fip.id).server.id == lb2.id
    assert cl.servers.get_by_id(lb1.id).public_net.floating_ips == []
    cl.floating_ips.change_dns_ptr(fip, "203.0.113.100", "api.k8s.skgm.de").wait_until_finished()
    assert cl.floating_ips.get_by_id(fip.id).dns_ptr == [
        {"ip": "203.0.113.100", "dns_ptr": "api.k8s.skgm.de"}
    ]
    with pytest.raises(APIException) as wrong_ip:
        cl.floating_ips.change_dns_ptr(fip, "203.0.113.101", "x.example")
    assert wrong_ip.value.code == "invalid_input"
    cl.floating_ips.unassign(fip).wait_until_finished()
    assert cl.floating_ips.get_by_id(fip.id).server is None
    assert cl.servers.get_by_id(lb2.id).public_net.floating_ips == []
    with pytest.raises(APIException) as nosrv:
        cl.floating_ips.assign(fip, Server(id=999999))
    assert nosrv.value.code == "not_found"


def test_actions_run_then_succeed(env: Env) -> None:
    cl = env.client()
    fip = cl.floating_ips.get_by_name("k8s-api")
    lb1 = cl.servers.get_by_name("k8slb01")
    action = cl.floating_ips.assign(fip, lb1)
    assert (action.status, action.progress, action.finished) == ("running", 0, None)
    assert action.command == "assign_floating_ip"
    assert {(r["type"], r["id"]) for r in action.resources} == {
        ("floating_ip", fip.id),
        ("server", lb1.id),
    }
    action.wait_until_finished()
    assert action.status == "success" and action.progress == 100 and action.finished
    assert cl.actions.get_by_id(action.id).status == "success"
    assert cl.floating_ips.actions.get_by_id(action.id).id == action.id
    assert [a.id for a in cl.servers.actions.get_list().actions] == [action.id]
    assert env.call("GET", f"/networks/actions/{action.id}").status == 404
    listed = cl.floating_ips.get_actions_list(fip).actions
    assert [a.id for a in listed] == [action.id]
    assert [a.id for a in cl.servers.get_actions_list(lb1).actions] == [action.id]
    r = env.call("GET", f"/actions?id={action.id}&id=999999")
    assert [a["id"] for a in r.body["actions"]] == [action.id]
    assert env.call("GET", "/actions").status == 422  # listing all actions was removed in 2025
    other = cl.servers.get_by_name("k8slb02")
    assert env.call("GET", f"/servers/{other.id}/actions/{action.id}").status == 404


def test_locked_while_an_action_runs(make_env: MakeEnv) -> None:
    env = make_env(action_seconds=0.3)
    cl = env.client()
    fip = cl.floating_ips.get_by_name("k8s-api")
    lb1, lb2 = cl.servers.get_by_name("k8slb01"), cl.servers.get_by_name("k8slb02")
    first = cl.floating_ips.assign(fip, lb1)
    with pytest.raises(APIException) as locked:
        cl.floating_ips.assign(fip, lb2)  # hcloud does not retry `locked`
    assert locked.value.code == "locked"
    assert cl.servers.get_by_id(lb1.id).locked is False  # the FIP is locked, not the server
    first.wait_until_finished()
    cl.floating_ips.assign(fip, lb2).wait_until_finished()
    assert cl.floating_ips.get_by_id(fip.id).server.id == lb2.id


def test_wrong_token_and_not_found(env: Env) -> None:
    with pytest.raises(APIException) as denied:
        env.client(token="wrong-token").servers.get_all()
    assert denied.value.code == "unauthorized"
    cl = env.client()
    for getter in (
        cl.servers.get_by_id,
        cl.networks.get_by_id,
        cl.floating_ips.get_by_id,
        cl.actions.get_by_id,
    ):
        with pytest.raises(APIException) as missing:
            getter(987654)
        assert missing.value.code == "not_found"


def test_every_call_was_schema_checked(env: Env) -> None:
    """The hook really runs: the client's calls are in the checked list."""
    env.client().servers.get_all()
    assert ("GET", "/v1/servers", 200) in env.checked
