"""Facts from the cloud (runbook/cloud/discover.py): public IPs and interface names of the LBs read
from the simulated Hetzner API (the real hcloud client, schema-checked) and the hosts' `ip link`;
given values verified, a mismatch names both values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hcloud.networks import NetworkSubnet

from runbook.cloud.api import CloudTarget
from runbook.cloud.discover import (
    PENDING_NIC,
    DiscoveryFailed,
    discover,
    parse_links,
)
from runbook.core.console import Masker, Ui, make_console
from runbook.core.remote import Result
from runbook.inventory import Inventory, load_inventory
from tests.fakecloud.conftest import Env

REPO = Path(__file__).resolve().parents[2]


def inventory(tmp_path: Path, **lb: Any) -> Inventory:
    """hosts.yaml with the LBs' public_ip and both interface names left out (then `lb` set)."""
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    for name in ("k8slb01", "k8slb02"):
        data["hosts"][name].pop("public_ip")
    data["load_balancer"].pop("interface")
    data["load_balancer"].pop("public_interface")
    data["load_balancer"].update(lb)
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_inventory(path)


class Links:
    """A host answering `ip -o link show; echo ---; ip -o -4 addr show` (read-only)."""

    def __init__(self, nics: dict[str, tuple[str, str]]) -> None:
        self.nics = nics  # name -> (mac, ipv4)
        self.asked: list[str] = []

    os_release = "debian|12|Debian GNU/Linux 12 (bookworm)"

    def query(self, cmd: str, **_: Any) -> Result:
        self.asked.append(cmd)
        if "os-release" in cmd:
            return Result(self.os_release + "\n", "", 0)
        links = [
            "1: lo: <LOOPBACK,UP> mtu 65536 qdisc noqueue\\    link/loopback 00:00:00:00:00:00"
        ]
        addrs = ["1: lo    inet 127.0.0.1/8 scope host lo"]
        for i, (name, (mac, ip)) in enumerate(self.nics.items(), start=2):
            links.append(
                f"{i}: {name}@if{i + 7}: <BROADCAST,MULTICAST,UP> mtu 1450 qdisc noqueue state UP"
                f" mode DEFAULT group default qlen 1000\\    link/ether {mac} brd ff:ff:ff:ff:ff:ff"
            )
            if ip:
                addrs.append(f"{i}: {name}    inet {ip}/32 scope global {name}")
        return Result("\n".join([*links, "---", *addrs]) + "\n", "", 0)


def Cloud(env: Env) -> CloudTarget:
    """The runbook's own cloud target (its retrier included) on the simulated API."""
    return CloudTarget(env.client())


@pytest.fixture
def attached(env: Env) -> dict[str, str]:
    """Network k8s with both LBs attached; their private NICs' MACs as the API reports them."""
    cl = env.client()
    net = cl.networks.create(
        name="k8s",
        ip_range="10.143.0.0/16",
        subnets=[NetworkSubnet(type="cloud", ip_range="10.143.0.0/24", network_zone="eu-central")],
    )
    macs = {}
    for name, ip in (("k8slb01", "10.143.0.5"), ("k8slb02", "10.143.0.6")):
        srv = cl.servers.get_by_name(name)
        cl.servers.attach_to_network(srv, net, ip=ip).wait_until_finished(max_retries=100)
        pn = cl.servers.get_by_name(name).private_net[0]
        macs[name] = pn.mac_address
    return macs


def quiet_ui() -> tuple[Ui, Any]:
    import io

    out = io.StringIO()
    masker = Masker()
    return Ui(make_console(masker, file=out, width=100), masker), out


def hosts_with(macs: dict[str, str], iface: str = "enp7s0", **override: Any) -> dict[str, Links]:
    public = {"k8slb01": "203.0.113.5", "k8slb02": "203.0.113.6"}
    out = {}
    for name, mac in macs.items():
        out[name] = Links({"eth0": ("96:00:00:aa:bb:0" + name[-1], public[name]), iface: (mac, "")})
    out.update(override)
    return out


def test_parse_links_finds_macs_and_addresses() -> None:
    lf = parse_links(Links({"ens10": ("86:00:00:00:00:0A", "10.143.0.5")}).query("").stdout)
    assert lf.macs == {"lo": "00:00:00:00:00:00", "ens10": "86:00:00:00:00:0a"}
    assert lf.with_mac("86:00:00:00:00:0A") == "ens10" and lf.with_addr("10.143.0.5") == "ens10"


def test_left_out_facts_are_read_from_the_api_and_the_hosts(
    tmp_path: Path, env: Env, attached: dict[str, str]
) -> None:
    inv = inventory(tmp_path)
    assert inv.load_balancer.interface == "" and inv.host("k8slb01").public_ip is None
    ui, out = quiet_ui()
    got = discover(inv, ui, hosts_with(attached), cloud=Cloud(env))
    assert got.load_balancer.interface == "enp7s0"  # the NIC with the API's MAC, not a default
    assert got.load_balancer.public_interface == "eth0"
    assert str(got.host("k8slb01").public_ip) == "203.0.113.5"
    assert str(got.host("k8slb02").public_ip) == "203.0.113.6"
    assert "load_balancer.interface: enp7s0 (found from the API)" in out.getvalue()
    assert all(m.startswith("86:00:00:") for m in attached.values())


def test_a_given_interface_with_another_mac_is_refused_naming_both(
    tmp_path: Path, env: Env, attached: dict[str, str]
) -> None:
    inv = inventory(tmp_path, interface="ens10")
    ui, _ = quiet_ui()
    hosts = hosts_with(attached, iface="enp7s0")
    hosts["k8slb01"].nics["ens10"] = ("52:54:00:12:34:56", "")
    with pytest.raises(DiscoveryFailed) as exc:
        discover(inv, ui, hosts, cloud=Cloud(env))
    msg = "; ".join(exc.value.problems)
    assert "the inventory says ens10 (MAC 52:54:00:12:34:56 on k8slb01)" in msg
    assert f"the API's private NIC is enp7s0 ({attached['k8slb01']})" in msg


def test_no_nic_with_the_api_mac_is_refused(
    tmp_path: Path, env: Env, attached: dict[str, str]
) -> None:
    ui, _ = quiet_ui()
    wrong = {n: "86:00:00:ff:ff:ff" for n in attached}
    with pytest.raises(DiscoveryFailed, match="no interface on k8slb01 has the MAC the API gives"):
        discover(inventory(tmp_path), ui, hosts_with(wrong), cloud=Cloud(env))


def test_a_given_public_ip_differing_from_the_api_is_refused(
    tmp_path: Path, env: Env, attached: dict[str, str]
) -> None:
    data = inventory(tmp_path)
    lb1 = data.host("k8slb01").model_copy(update={"public_ip": "203.0.113.99"})
    inv = data.model_copy(update={"hosts": {**data.hosts, "k8slb01": lb1}})
    ui, _ = quiet_ui()
    with pytest.raises(DiscoveryFailed) as exc:
        discover(inv, ui, hosts_with(attached), cloud=Cloud(env))
    assert "hosts.k8slb01.public_ip: the inventory says 203.0.113.99, the API says 203.0.113.5" in (
        exc.value.problems
    )


def test_given_values_that_agree_pass_and_lbs_that_differ_are_refused(
    tmp_path: Path, env: Env, attached: dict[str, str]
) -> None:
    ui, _ = quiet_ui()
    inv = inventory(tmp_path, interface="enp7s0", public_interface="eth0")
    assert discover(inv, ui, hosts_with(attached), cloud=Cloud(env)).load_balancer.interface == (
        "enp7s0"
    )
    mixed = hosts_with(attached)
    mixed["k8slb02"] = hosts_with(attached, iface="ens10")["k8slb02"]
    with pytest.raises(DiscoveryFailed, match="the LBs differ"):
        discover(inventory(tmp_path), ui, mixed, cloud=Cloud(env))


def test_not_attached_yet_is_pending_in_a_dry_run_and_refused_otherwise(
    tmp_path: Path, env: Env
) -> None:
    ui, _ = quiet_ui()
    nomac = {"k8slb01": "02:00:00:00:00:01", "k8slb02": "02:00:00:00:00:02"}
    got = discover(inventory(tmp_path), ui, hosts_with(nomac), cloud=Cloud(env), pending_ok=True)
    assert got.load_balancer.interface == PENDING_NIC
    assert got.load_balancer.public_interface == "eth0"
    with pytest.raises(DiscoveryFailed, match="not attached to network k8s: run `inv network`"):
        discover(inventory(tmp_path), ui, hosts_with(nomac), cloud=Cloud(env))


def test_without_a_token_left_out_facts_are_refused_naming_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HCLOUD_TOKEN", raising=False)
    ui, _ = quiet_ui()
    with pytest.raises(DiscoveryFailed, match="HCLOUD_TOKEN"):
        discover(inventory(tmp_path), ui, {})


class Down:
    def query(self, cmd: str, **_: Any) -> Result:
        from runbook.core.remote import HostUnreachable

        raise HostUnreachable("k8snode01: connection refused")


def test_online_checks_name_every_disagreement(
    tmp_path: Path, env: Env, attached: dict[str, str]
) -> None:
    from runbook.status.onlinecheck import cloud_checks, exit_code, host_checks

    inv = inventory(tmp_path)
    cloud = Cloud(env)
    before = len(env.checked)
    checks = {(c.what, c.target): c for c in cloud_checks(inv, cloud)}
    assert checks[("network", "k8s")].ok is True
    assert checks[("server", "k8slb01")].detail == "public 203.0.113.5, private 10.143.0.5"
    assert checks[("server", "k8scontrol01")].detail.endswith("not attached yet")
    assert checks[("server", "k8scontrol02")].ok is False  # not in the project
    fip = checks[("floating IP", "k8s-api")]
    assert fip.ok is False and "API 203.0.113.100, inventory" in fip.detail
    hosts: dict[str, Any] = {**hosts_with(attached), "k8node01": Down()}
    old = Links({})
    old.os_release = "debian|11|Debian GNU/Linux 11 (bullseye)"
    hosts["k8scontrol01"] = old
    hc = {(c.what, c.target): c for c in host_checks(inv, hosts, cloud)}
    assert hc[("ssh", "k8slb01")].ok and hc[("OS release", "k8slb01")].ok
    assert (
        hc[("ssh", "k8node01")].ok is False
        and "connection refused" in hc[("ssh", "k8node01")].detail
    )
    assert hc[("OS release", "k8scontrol01")].ok is False
    assert hc[("interfaces", "LBs")].detail == "private enp7s0, public eth0"
    assert exit_code(list(hc.values())) == 1  # hosts only: not the inventory's fault
    assert exit_code([*checks.values(), *hc.values()]) == 2
    # read-only: nothing but GETs reached the API
    calls = env.checked[before:]
    assert calls and {method for method, _, _ in calls} == {"GET"}
