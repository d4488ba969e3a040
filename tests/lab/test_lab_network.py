"""Lab network: routed like Hetzner's; alias IP and floating IP routes follow the simulated API."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator

import pytest
from hcloud import Client
from hcloud.networks.domain import NetworkSubnet

from lab import labstate, netns, probe, sdn, topology

from .helpers import inet_dev, router_dev, wait_for

pytestmark = pytest.mark.lab
PORT = 7001
ATTACH = {"k8scontrol01": "10.143.0.2", "k8slb01": "10.143.0.5", "k8slb02": "10.143.0.6"}


@pytest.fixture(scope="module")
def cloud(lab_up: dict[str, float]) -> Client:
    """The real hcloud client against the lab API; network k8s, control01 + LBs attached."""
    token = labstate.paths().token.read_text().strip()
    c = Client(token=token, api_endpoint="http://127.0.0.1:8780/v1", timeout=10, poll_interval=0.2)
    topo = topology.load()
    net = c.networks.get_by_name(topo.network_name) or c.networks.create(
        name=topo.network_name,
        ip_range=topo.ip_range,
        subnets=[NetworkSubnet(type="cloud", ip_range=topo.subnet, network_zone=topo.zone)],
    )
    for name, ip in ATTACH.items():
        srv = c.servers.get_by_name(name)
        assert srv is not None
        if not srv.private_net:
            c.servers.attach_to_network(srv, net, ip=ip).wait_until_finished(max_retries=50)
    return c


@pytest.fixture(scope="module")
def responders(lab_up: dict[str, float]) -> Iterator[None]:
    """Both LBs hold the VIP and the floating IP locally and answer with their hostname (as both
    HAProxies
    bind the VIP): only the routing decides who gets the traffic."""
    topo = topology.load()
    procs = []
    for h in ("k8slb01", "k8slb02"):
        for addr in (topo.vip, topo.floating_ip):
            netns.host_exec(h, ["ip", "addr", "replace", f"{addr}/32", "dev", "lo"])
        procs.append(netns.host_spawn(h, probe.responder_argv(PORT)))
    yield
    for p in procs:
        p.stop()
    for h in ("k8slb01", "k8slb02"):
        for addr in (topo.vip, topo.floating_ip):
            netns.host_exec(h, ["ip", "addr", "del", f"{addr}/32", "dev", "lo"], check=False)


def set_alias(c: Client, holder: str) -> float:
    """Move the VIP the way the runbook's failover does (clear the old holder, then set the new
    one)."""
    vip = topology.load().vip
    net = c.networks.get_by_name(topology.load().network_name)
    t0 = time.monotonic()
    for name in ("k8slb01", "k8slb02"):
        if name != holder:
            c.servers.change_alias_ips(c.servers.get_by_name(name), net, []).wait_until_finished(50)
    c.servers.change_alias_ips(c.servers.get_by_name(holder), net, [vip]).wait_until_finished(50)
    return time.monotonic() - t0


def test_attached_hosts_are_routed_unattached_are_not(cloud: Client) -> None:
    assert router_dev("10.143.0.5") == "r-k8slb01"
    r = netns.host_exec("k8slb01", ["ip", "route", "show", "dev", "ens10"]).stdout
    assert "10.143.0.0/16 via 10.143.0.1" in r and "onlink" in r
    assert router_dev("10.143.0.8") is None  # k8node02: not attached per the API
    assert (
        netns.host_exec("k8node02", ["ip", "-4", "addr", "show", "dev", "ens10"]).stdout.strip()
        == ""
    )
    res = probe.probe("10.143.0.6", 22, host="k8scontrol01", count=1, timeout=1)
    assert res.ok == 1 and res.answers[0].startswith("SSH-2.0")


HOST_API_CALL = """
import json, sys, urllib.request
req = urllib.request.Request("http://203.0.113.254/v1/floating_ips",
                             headers={"Authorization": "Bearer " + sys.stdin.read().strip()})
print(json.load(urllib.request.urlopen(req, timeout=5))["floating_ips"][0]["ip"])
"""


def test_hosts_reach_the_api_inside_the_lab_token_not_in_argv(cloud: Client) -> None:
    token = labstate.paths().token.read_text()
    r = netns.host_exec("k8slb02", ["python3", "-c", HOST_API_CALL], input=token)
    assert r.stdout.strip() == topology.load().floating_ip


def test_vip_route_and_traffic_follow_change_alias_ips(cloud: Client, responders: None) -> None:
    vip = topology.load().vip
    for holder in ("k8slb01", "k8slb02", "k8slb01"):
        took = set_alias(cloud, holder)
        assert router_dev(vip) == f"r-{holder}"
        res = probe.probe(vip, PORT, host="k8scontrol01", count=5)
        assert res.answers == (holder,) * 5, res.summary()
        print(f"VIP -> {holder}: API calls + route {took:.2f}s")
    # cleared everywhere: no route, no traffic (a failover without the API call loses traffic)
    net = cloud.networks.get_by_name(topology.load().network_name)
    cloud.servers.change_alias_ips(
        cloud.servers.get_by_name("k8slb01"), net, []
    ).wait_until_finished(50)
    assert router_dev(vip) is None
    assert probe.probe(vip, PORT, host="k8scontrol01", count=2).ok == 0


def test_floating_ip_follows_assign(cloud: Client, responders: None) -> None:
    topo = topology.load()
    fip = cloud.floating_ips.get_by_name(topo.floating_ip_name)
    assert fip is not None and fip.ip == topo.floating_ip
    for holder in ("k8slb02", "k8slb01"):
        cloud.floating_ips.assign(fip, cloud.servers.get_by_name(holder)).wait_until_finished(50)
        assert inet_dev(topo.floating_ip) == f"i-{holder}"
        res = probe.probe(topo.floating_ip, PORT, count=5)  # from rbl-client
        assert res.answers == (holder,) * 5, res.summary()
    cloud.floating_ips.unassign(fip).wait_until_finished(50)
    assert inet_dev(topo.floating_ip) is None
    assert probe.probe(topo.floating_ip, PORT, count=2).ok == 0


def test_probe_reports_outage_while_vip_moves(cloud: Client, responders: None) -> None:
    vip = topology.load().vip
    set_alias(cloud, "k8slb01")
    net = cloud.networks.get_by_name(topology.load().network_name)
    th, out = probe.background_probe(
        vip,
        PORT,
        host="k8scontrol01",
        duration=15.0,
        until=lambda r: r.answers[-1:] == ("k8slb02",),
    )
    time.sleep(0.8)
    cloud.servers.change_alias_ips(
        cloud.servers.get_by_name("k8slb01"), net, []
    ).wait_until_finished(50)
    time.sleep(0.8)
    cloud.servers.change_alias_ips(
        cloud.servers.get_by_name("k8slb02"), net, [vip]
    ).wait_until_finished(50)
    th.join()
    res = out[0]
    print(res.summary())
    assert len(res.outages) == 1 and 0.7 < res.outages[0].seconds < 5
    assert res.answers[0] == "k8slb01" and res.answers[-1] == "k8slb02"
    # leave no alias IP behind for the runbook's tests
    cloud.servers.change_alias_ips(
        cloud.servers.get_by_name("k8slb02"), net, []
    ).wait_until_finished(50)


def test_routing_trap_with_network_10_0_0_0_8(cloud: Client) -> None:
    """The post's lesson: every host routes the whole network range to the cloud gateway, so with
    10.0.0.0/8 a pod address from Weave's 10.32.0.0/12 goes to the gateway, which drops it."""
    pod = "10.32.0.5"
    real = json.loads(labstate.paths().cloud_state.read_text())
    netns.host_exec(
        "k8slb02", ["ip", "addr", "replace", f"{pod}/32", "dev", "lo"]
    )  # "a pod" on lb02
    try:
        trap = copy.deepcopy(real)
        for n in trap["networks"]:
            n["ip_range"] = "10.0.0.0/8"
        sdn.apply_state(trap)
        route = netns.host_exec("k8scontrol01", ["ip", "route", "get", pod]).stdout
        assert "via 10.143.0.1 dev ens10" in route  # captured by the cloud network route
        assert netns.host_exec(
            "k8scontrol01", ["ip", "route", "show", "dev", "ens10"]
        ).stdout.startswith("10.0.0.0/8 via 10.143.0.1")
        assert probe.probe(pod, 22, host="k8scontrol01", count=2, timeout=0.5).ok == 0  # lost
        sdn.apply_state(real)
        route = netns.host_exec("k8scontrol01", ["ip", "route", "get", pod]).stdout
        assert "ens10" not in route  # 10.143.0.0/16 does not capture pod addresses
    finally:
        sdn.apply_state(real)
        netns.host_exec("k8slb02", ["ip", "addr", "del", f"{pod}/32", "dev", "lo"], check=False)
    assert (
        "10.143.0.0/16 via 10.143.0.1"
        in netns.host_exec("k8scontrol01", ["ip", "route", "show", "dev", "ens10"]).stdout
    )


def test_private_route_returns_after_link_down_up(cloud: Client) -> None:
    """The kernel drops ens10's route with the link; the lab restores it like networkd would."""
    ns = topology.host_ns("k8slb02")
    netns.run("ip", "-n", ns, "link", "set", "ens10", "down")
    assert "10.143.0.0/16" not in netns.run("ip", "-n", ns, "route").stdout
    netns.run("ip", "-n", ns, "link", "set", "ens10", "up")
    took = wait_for(
        "route back",
        lambda: "10.143.0.0/16 via 10.143.0.1" in netns.run("ip", "-n", ns, "route").stdout,
        timeout=10,
    )
    print(f"private route back {took:.1f}s after link up")
    assert probe.probe("10.143.0.6", 22, host="k8scontrol01", count=1, timeout=1).ok == 1


def test_an_action_succeeds_while_a_servers_link_is_down(cloud: Client, responders: None) -> None:
    """Hetzner moves an alias IP off a server whose NIC is down (a dead holder) and reports
    success; the lab's re-routing failed on that host's `ip` calls and reported the failover's
    own actions as failed ("Nexthop device is not up")."""
    vip, ns = topology.load().vip, topology.host_ns("k8slb02")
    set_alias(cloud, "k8slb02")
    netns.run("ip", "-n", ns, "link", "set", "ens10", "down")
    try:
        set_alias(cloud, "k8slb01")  # wait_until_finished raises on an action that failed
        assert router_dev(vip) == "r-k8slb01"
        res = probe.probe(vip, PORT, host="k8scontrol01", count=3)
        assert res.answers == ("k8slb01",) * 3, res.summary()
    finally:
        netns.run("ip", "-n", ns, "link", "set", "ens10", "up")
    wait_for(
        "k8slb02's route back",
        lambda: "10.143.0.0/16 via 10.143.0.1" in netns.run("ip", "-n", ns, "route").stdout,
        timeout=10,
    )


def test_sdn_logs_route_moves(cloud: Client) -> None:
    log = labstate.paths().sdn_log.read_text()
    assert "rbl-router 10.143.0.50/32" in log and "-> r-k8slb02" in log
    wait_for("log has timestamps", lambda: log.splitlines()[-1][:4].isdigit(), timeout=1)
