"""Inventory tests: the good hosts.yaml loads; each bad inventory (one mutation of it per rule)
is refused with the exact key path and a reason; all problems are reported at once."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from runbook.inventory import (
    Inventory,
    InventoryError,
    Problem,
    SSHEndpoint,
    load_inventory,
    netcheck,
    parse_endpoint,
    parse_inventory,
    rules,
    select_hosts,
    summary_facts,
    summary_rows,
)

REPO_HOSTS = Path(__file__).resolve().parents[1] / "hosts.yaml"
Mutation = Callable[[dict[str, Any]], None]


def good() -> dict[str, Any]:
    return yaml.safe_load(REPO_HOSTS.read_text(encoding="utf-8"))


def _walk(data: dict[str, Any], dotted: str) -> tuple[dict[str, Any], str]:
    *parents, last = dotted.split(".")
    for part in parents:
        data = data[part]
    return data, last


def set_(dotted: str, value: Any) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        parent, last = _walk(data, dotted)
        parent[last] = value

    return mutate


def drop(dotted: str) -> Mutation:
    def mutate(data: dict[str, Any]) -> None:
        parent, last = _walk(data, dotted)
        del parent[last]

    return mutate


def write(tmp_path: Path, data: Any, name: str = "hosts.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_mutated(tmp_path: Path, *mutations: Mutation) -> Inventory:
    data = good()
    for mutate in mutations:
        mutate(data)
    return load_inventory(write(tmp_path, data))


def problems_of(tmp_path: Path, *mutations: Mutation) -> list[Problem]:
    with pytest.raises(InventoryError) as info:
        load_mutated(tmp_path, *mutations)
    return info.value.problems


@dataclass(frozen=True)
class Bad:
    id: str
    mutations: tuple[Mutation, ...]
    key: str
    fragment: str
    others: tuple[str, ...] = ()  # further keys the same mutation must also report


def bad(
    id: str, key: str, fragment: str, *mutations: Mutation, others: tuple[str, ...] = ()
) -> Any:
    return pytest.param(Bad(id, mutations, key, fragment, others), id=id)


H = "hosts"
INF, NAN = float("inf"), float("nan")
LB = "load_balancer"
HB = "load_balancer.heartbeat"
K8S = "kubernetes"
NET = "hcloud.network"

BAD = [
    # --- structure and types (pydantic) ---
    bad("unknown-section", "bogus", "unknown key", set_("bogus", 1)),
    bad("missing-section", "kubernetes", "required key is missing", drop("kubernetes")),
    bad(
        "missing-key",
        f"{H}.k8node01.address",
        "required key is missing",
        drop(f"{H}.k8node01.address"),
    ),
    bad(
        "typo-key",
        f"{H}.k8node01.adress",
        "did you mean 'address'",
        set_(f"{H}.k8node01.adress", "x.skgm.de"),
    ),
    bad("typo-nested", f"{HB}.keepalvie", "did you mean 'keepalive'", set_(f"{HB}.keepalvie", 1)),
    bad("port-string", "ssh.port", "valid integer", set_("ssh.port", "22")),
    bad(
        "proxy-command-quote",
        "ssh.proxy_command",
        "cannot be parsed as a command: No closing quotation",
        set_("ssh.proxy_command", "ssh -W %h:%p 'bastion"),
    ),
    bad("proxy-command-empty", "ssh.proxy_command", "is empty", set_("ssh.proxy_command", " ")),
    bad(
        "proxy-command-nul",
        "ssh.proxy_command",
        "contains control characters",
        set_("ssh.proxy_command", "nc %h %p\0"),
    ),
    bad("port-range", "ssh.port", "less than or equal to 65535", set_("ssh.port", 70000)),
    bad(
        "bad-ip",
        f"{H}.k8node01.private_ip",
        "not a valid IPv4 address",
        set_(f"{H}.k8node01.private_ip", "10.143.0.300"),
    ),
    bad("ip-as-number", f"{LB}.vip", "as a string", set_(f"{LB}.vip", 5)),
    bad(
        "host-bits",
        f"{NET}.subnet",
        "host bits set; the range is 10.143.0.0/24",
        set_(f"{NET}.subnet", "10.143.0.9/24"),
    ),
    bad(
        "unknown-role",
        f"{H}.k8node01.role",
        "'master' is not allowed",
        set_(f"{H}.k8node01.role", "master"),
    ),
    bad(
        "upper-case-host",
        f"{H}.K8sNode03",
        "use 'k8snode03'",
        set_(f"{H}.K8sNode03", {"role": "worker", "private_ip": "10.143.0.9", "address": "n3"}),
    ),
    bad(
        "invalid-host",
        f"{H}.-node",
        "not a valid host name",
        set_(f"{H}.-node", {"role": "worker", "private_ip": "10.143.0.9", "address": "n3"}),
    ),
    bad(
        "long-host",
        f"{H}.{'n' * 64}",
        "longer than 63",
        set_(f"{H}.{'n' * 64}", {"role": "worker", "private_ip": "10.143.0.9", "address": "n"}),
    ),
    bad(
        "host-name-key",
        f"{H}.k8node01.name",
        "its key under hosts",
        set_(f"{H}.k8node01.name", "other"),
    ),
    bad("version-float", f"{K8S}.version", "quote the version", set_(f"{K8S}.version", 1.3)),
    bad("version-format", f"{K8S}.version", '"1.NN"', set_(f"{K8S}.version", "v1.36")),
    bad("version-old", f"{K8S}.version", "needs 1.31", set_(f"{K8S}.version", "1.29")),
    bad("auth-crc", f"{HB}.auth", "not authentication", set_(f"{HB}.auth", "crc")),
    bad("hb-logfile-etc", f"{HB}.logfile", "under /var/log/", set_(f"{HB}.logfile", "/etc/passwd")),
    bad("hb-logfile-up", f"{HB}.logfile", "no '..'", set_(f"{HB}.logfile", "/var/log/../etc/x")),
    bad("hb-logfile-dir", f"{HB}.logfile", "must be a file", set_(f"{HB}.logfile", "/var/log/")),
    bad("hb-logfile-glob", f"{HB}.logfile", "globs", set_(f"{HB}.logfile", "/var/log/ha*")),
    bad("hb-logfile-hash", f"{HB}.logfile", "comments", set_(f"{HB}.logfile", "/var/log/a#b")),
    bad("cni", f"{K8S}.cni", "'cilium' is not allowed", set_(f"{K8S}.cni", "cilium")),
    bad("endpoint", "hcloud.endpoint", "not an http(s) URL", set_("hcloud.endpoint", "api")),
    bad(
        "token-env",
        "hcloud.token_env",
        "environment variable name",
        set_("hcloud.token_env", "HCLOUD-TOKEN"),
    ),
    bad(
        "gateway-syntax",
        f"{H}.k8node01.gateway",
        "port must be a number",
        set_(f"{H}.k8node01.gateway", "root@bastion:ssh"),
    ),
    bad(
        "address-option",
        f"{H}.k8node01.address",
        "not a DNS name",
        set_(f"{H}.k8node01.address", "-oProxyCommand=x"),
    ),
    bad("interface", f"{LB}.interface", "interface name", set_(f"{LB}.interface", "ens10/x")),
    bad("bool-string", f"{HB}.auto_failback", "valid boolean", set_(f"{HB}.auto_failback", "no")),
    # --- addresses in the network ---
    bad(
        "ip-outside-subnet",
        f"{H}.k8node01.private_ip",
        "outside the subnet 10.143.0.0/24",
        set_(f"{H}.k8node01.private_ip", "10.143.1.7"),
    ),
    bad(
        "ip-gateway",
        f"{H}.k8node01.private_ip",
        "gateway of subnet",
        set_(f"{H}.k8node01.private_ip", "10.143.0.1"),
    ),
    bad(
        "ip-broadcast",
        f"{H}.k8node01.private_ip",
        "broadcast address",
        set_(f"{H}.k8node01.private_ip", "10.143.0.255"),
    ),
    bad("vip-outside", f"{LB}.vip", "outside the subnet", set_(f"{LB}.vip", "10.143.5.50")),
    bad("vip-host", f"{LB}.vip", "private_ip of k8slb01", set_(f"{LB}.vip", "10.143.0.5")),
    bad("vip-gateway", f"{LB}.vip", "gateway of subnet", set_(f"{LB}.vip", "10.143.0.1")),
    bad("vip-network", f"{LB}.vip", "network address", set_(f"{LB}.vip", "10.143.0.0")),
    bad("vip-broadcast", f"{LB}.vip", "broadcast address", set_(f"{LB}.vip", "10.143.0.255")),
    bad(
        "subnet-outside",
        f"{NET}.subnet",
        "not inside the network ip_range",
        set_(f"{NET}.subnet", "10.144.0.0/24"),
        others=(
            *(
                f"{H}.{n}.private_ip"
                for n in (
                    "k8scontrol01",
                    "k8scontrol02",
                    "k8scontrol03",
                    "k8slb01",
                    "k8slb02",
                    "k8node01",
                    "k8node02",
                )
            ),
            f"{LB}.vip",
        ),
    ),
    bad(
        "network-public",
        f"{NET}.ip_range",
        "RFC 1918",
        set_(f"{NET}.ip_range", "100.64.0.0/16"),
        set_(f"{NET}.subnet", "100.64.0.0/24"),
        *(
            set_(f"{H}.{n}.private_ip", f"100.64.0.{i}")
            for i, n in enumerate(
                (
                    "k8scontrol01",
                    "k8scontrol02",
                    "k8scontrol03",
                    "k8slb01",
                    "k8slb02",
                    "k8node01",
                    "k8node02",
                ),
                start=2,
            )
        ),
        set_(f"{LB}.vip", "100.64.0.50"),
    ),
    bad(
        "dup-private",
        f"{H}.k8node02.private_ip",
        "also the private_ip of k8node01",
        set_(f"{H}.k8node02.private_ip", "10.143.0.7"),
    ),
    bad(
        "dup-public",
        f"{H}.k8slb02.public_ip",
        "also the public_ip of k8slb01",
        set_(f"{H}.k8slb02.public_ip", "198.51.100.5"),
    ),
    bad(
        "dup-address",
        f"{H}.k8node02.address",
        "also the address of k8node01",
        set_(f"{H}.k8node02.address", "K8NODE01.skgm.de"),
    ),
    bad(
        "public-private",
        f"{H}.k8slb01.public_ip",
        "private RFC 1918",
        set_(f"{H}.k8slb01.public_ip", "192.168.1.5"),
    ),
    bad(
        "fip-host-public",
        f"{LB}.floating_ip.address",
        "public_ip of k8slb01",
        set_(f"{H}.k8slb01.public_ip", "116.202.6.21"),
        set_(f"{K8S}.cert_sans", ["116.202.6.21"]),
    ),
    bad(
        "fip-private",
        f"{LB}.floating_ip.address",
        "not a public one",
        set_(f"{LB}.floating_ip.address", "10.143.0.60"),
        set_(f"{K8S}.cert_sans", ["10.143.0.60", "api.k8s.skgm.de"]),
    ),
    # --- the routing trap: network / pod / service overlaps ---
    bad(
        "overlap-net-pod",
        f"{K8S}.pod_subnet",
        "network ip_range 10.143.0.0/16 overlaps pod_subnet 10.143.128.0/17: every host routes",
        set_(f"{K8S}.pod_subnet", "10.143.128.0/17"),
    ),
    bad(
        "overlap-net-svc",
        f"{K8S}.service_subnet",
        "network ip_range 10.143.0.0/16 overlaps service_subnet 10.143.128.0/17",
        set_(f"{K8S}.service_subnet", "10.143.128.0/17"),
    ),
    bad(
        "overlap-pod-svc",
        f"{K8S}.service_subnet",
        "pod_subnet 10.144.0.0/16 overlaps service_subnet 10.144.128.0/17",
        set_(f"{K8S}.service_subnet", "10.144.128.0/17"),
    ),
    bad(
        "svc-too-big",
        f"{K8S}.service_subnet",
        "larger than a /12",
        set_(f"{K8S}.service_subnet", "172.0.0.0/8"),
    ),
    bad(
        "pod-too-small",
        f"{K8S}.pod_subnet",
        "smaller than one node's /24",
        set_(f"{K8S}.pod_subnet", "10.144.0.0/26"),
    ),
    bad(
        "pod-capacity",
        f"{K8S}.pod_subnet",
        "holds 4 node ranges",
        set_(f"{K8S}.pod_subnet", "10.144.0.0/22"),
    ),
    # --- heartbeat ---
    bad(
        "deadtime",
        f"{HB}.deadtime",
        "Heartbeat refuses to start",
        set_(f"{HB}.keepalive", 1),
        set_(f"{HB}.deadtime", 2),
    ),
    bad("initdead", f"{HB}.initdead", "at least deadtime 3", set_(f"{HB}.initdead", 2)),
    bad(
        "warntime",
        f"{HB}.warntime",
        "between keepalive 0.25 and deadtime 3",
        set_(f"{HB}.warntime", 3),
    ),
    bad("keepalive-zero", f"{HB}.keepalive", "from 0.1 to 600 seconds", set_(f"{HB}.keepalive", 0)),
    bad(
        "keepalive-50ms",
        f"{HB}.keepalive",
        "from 0.1 to 600 seconds",
        set_(f"{HB}.keepalive", 0.05),
    ),
    bad(
        "deadtime-fraction",
        f"{HB}.deadtime",
        "more than 2 × keepalive (0.75), at least 2",
        set_(f"{HB}.keepalive", 0.75),
        set_(f"{HB}.deadtime", 1),
    ),
    bad(
        "warntime-fraction",
        f"{HB}.warntime",
        "between keepalive 0.5 and deadtime 3",
        set_(f"{HB}.keepalive", 0.5),
        set_(f"{HB}.warntime", 3),
    ),
    # --- roles ---
    bad(
        "primary-not-lb",
        f"{LB}.primary",
        "k8scontrol01 is a control-plane host, not an lb host",
        set_(f"{LB}.primary", "k8scontrol01"),
    ),
    bad(
        "primary-unknown",
        f"{LB}.primary",
        "k8slb09 is not a host of the inventory",
        set_(f"{LB}.primary", "k8slb09"),
    ),
    bad("one-lb", H, "1 lb host (k8slb01)", drop(f"{H}.k8slb02")),
    bad(
        "three-lbs",
        H,
        "exactly two nodes",
        set_(
            f"{H}.k8slb03",
            {
                "role": "lb",
                "private_ip": "10.143.0.9",
                "address": "k8slb03.skgm.de",
                "public_ip": "198.51.100.9",
            },
        ),
    ),
    bad(
        "no-control-plane",
        H,
        "no host has role control-plane",
        drop(f"{H}.k8scontrol01"),
        drop(f"{H}.k8scontrol02"),
        drop(f"{H}.k8scontrol03"),
    ),
    bad(
        "same-interfaces",
        f"{LB}.public_interface",
        "also the private interface",
        set_(f"{LB}.public_interface", "ens10"),
    ),
    bad(
        "insecure-port",
        f"{LB}.insecure_api.port",
        "API server's port",
        set_(f"{LB}.insecure_api", {"port": 6443}),
    ),
    bad(
        "gateway-self",
        f"{H}.k8node01.gateway",
        "its own jump host",
        set_(f"{H}.k8node01.gateway", "k8node01"),
    ),
    bad(
        "gateway-loop",
        f"{H}.k8node01.gateway",
        "loop: k8node01 → k8node02 → k8node01",
        set_(f"{H}.k8node01.gateway", "k8node02"),
        set_(f"{H}.k8node02.gateway", "k8node01"),
        others=(f"{H}.k8node02.gateway",),
    ),
    # --- finite upper bounds on every time and count (issue: .inf passed, 1e9 hung) ---
    *(
        bad(f"bound-{key}-{value}", key, f"must be from {rng}", set_(key, value))
        for key, rng, values in (
            ("ssh.connect_timeout", "0.1 to 300 seconds", (INF, NAN, 1e9, 0)),
            ("hcloud.timeout", "0.1 to 300 seconds", (INF, 301)),
            ("hcloud.failover_deadline", "1 to 3600 seconds", (INF, 1e6)),
            ("hcloud.retry_deadline", "1 to 3600 seconds", (INF, 0.5)),
            (f"{HB}.deadtime", "1 to 600 seconds", (10**9,)),
            (f"{HB}.warntime", "1 to 600 seconds", (10**6,)),
            (f"{HB}.initdead", "1 to 3600 seconds", (10**9,)),
            (f"{LB}.reassert_interval", "1 to 3600 seconds", (10**9, 0)),
            (f"{K8S}.etcd.election_timeout_ms", "10 to 60000 milliseconds", (10**12,)),
            (f"{K8S}.etcd.heartbeat_interval_ms", "10 to 60000 milliseconds", (1,)),
        )
        for value in values
    ),
    bad(
        "too-many-labels",
        f"{H}.k8node01.labels",
        "at most 64 items",
        set_(f"{H}.k8node01.labels", {f"l{i}": "x" for i in range(65)}),
    ),
    bad(
        "too-many-sans",
        f"{K8S}.cert_sans",
        "at most 64 items",
        set_(f"{K8S}.cert_sans", [f"n{i}.example.com" for i in range(65)]),
    ),
    bad(
        "too-many-hosts",
        H,
        "at most 100",
        *(
            set_(f"{H}.w{i}", {"role": "worker", "private_ip": f"10.143.0.{i}", "address": "w"})
            for i in range(100, 200)
        ),
    ),
    bad(
        "etcd",
        f"{K8S}.etcd.election_timeout_ms",
        "less than 5 × heartbeat_interval_ms",
        set_(f"{K8S}.etcd.election_timeout_ms", 1000),
    ),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("case", BAD)
def test_bad_inventory_is_refused_with_key_and_reason(tmp_path: Path, case: Bad) -> None:
    problems = problems_of(tmp_path, *case.mutations)
    assert {p.key for p in problems} == {case.key, *case.others}, problems
    reasons = [p.reason for p in problems if p.key == case.key]
    assert any(case.fragment in r for r in reasons), reasons
    assert all(p.file == str(tmp_path / "hosts.yaml") for p in problems)


WARN = [
    (
        "even-control-planes",
        H,
        "4 control-plane hosts",
        set_(
            f"{H}.k8scontrol04",
            {
                "role": "control-plane",
                "private_ip": "10.143.0.9",
                "address": "k8scontrol04.skgm.de",
            },
        ),
    ),
    (
        "insecure-on",
        f"{LB}.insecure_api.enabled",
        "unauthenticated",
        set_(f"{LB}.insecure_api", {"enabled": True}),
    ),
    ("initdead-short", f"{HB}.initdead", "at least 10 s", set_(f"{HB}.initdead", 5)),
    (
        "allow-all",
        f"{LB}.public_allow[0]",
        "whole internet",
        set_(f"{LB}.public_allow", ["0.0.0.0/0"]),
    ),
]


@pytest.mark.parametrize(
    ("key", "fragment", "mutation"), [w[1:] for w in WARN], ids=[w[0] for w in WARN]
)
def test_warnings_do_not_fail(tmp_path: Path, key: str, fragment: str, mutation: Mutation) -> None:
    inv = load_mutated(tmp_path, mutation)
    new = [w for w in inv.warnings if w.key != API_NAME_IN_DOMAIN]  # the post's own (below)
    assert [w.key for w in new] == [key]
    assert fragment in new[0].reason


API_NAME_IN_DOMAIN = f"{K8S}.api_dns_name"


def test_api_name_inside_the_cluster_domain_is_a_warning(tmp_path: Path) -> None:
    """The post's api.k8s.skgm.de inside dns_domain k8s.skgm.de: CoreDNS answers NXDOMAIN."""
    (w,) = load_inventory(REPO_HOSTS).warnings
    assert w.key == API_NAME_IN_DOMAIN
    assert "api.k8s.skgm.de lies inside dns_domain k8s.skgm.de" in w.reason
    assert "CoreDNS hosts entry" in w.reason
    outside = load_mutated(tmp_path, set_(f"{K8S}.dns_domain", "cluster.local"))
    assert outside.warnings == ()
    apex = load_mutated(tmp_path, set_(f"{K8S}.api_dns_name", "k8s.skgm.de"))
    assert API_NAME_IN_DOMAIN in [w.key for w in apex.warnings]  # CoreDNS owns the apex too
    lookalike = load_mutated(tmp_path, set_(f"{K8S}.api_dns_name", "api.xk8s.skgm.de"))
    assert API_NAME_IN_DOMAIN not in [w.key for w in lookalike.warnings]


def test_good_hosts_yaml_carries_the_posts_cluster() -> None:
    inv = load_inventory(REPO_HOSTS)
    assert [w.key for w in inv.warnings] == [API_NAME_IN_DOMAIN]
    assert {h.name: str(h.private_ip) for h in inv.hosts.values()} == {
        "k8scontrol01": "10.143.0.2",
        "k8scontrol02": "10.143.0.3",
        "k8scontrol03": "10.143.0.4",
        "k8slb01": "10.143.0.5",
        "k8slb02": "10.143.0.6",
        "k8node01": "10.143.0.7",
        "k8node02": "10.143.0.8",
    }
    assert all(h.address == f"{h.name}.skgm.de" for h in inv.hosts.values())
    lb, k8s = inv.load_balancer, inv.kubernetes
    assert lb.vip == IPv4Address("10.143.0.50") and lb.primary == "k8slb01"
    assert lb.floating_ip.address == IPv4Address("116.202.6.21")
    assert lb.floating_ip.dns_ptr == "api.k8s.skgm.de"
    assert inv.hcloud.network.ip_range == IPv4Network("10.143.0.0/16")
    assert inv.hcloud.network.subnet == IPv4Network("10.143.0.0/24")
    assert k8s.pod_subnet == IPv4Network("10.144.0.0/16")
    assert k8s.service_subnet == IPv4Network("10.145.0.0/16")
    assert k8s.cert_sans == ("116.202.6.21", "api.k8s.skgm.de")
    assert (k8s.version, k8s.minor, k8s.cni, k8s.dns_domain) == ("1.36", 36, "weave", "k8s.skgm.de")
    assert k8s.admin_user == "skgm-admin-user"
    assert [h.name for h in inv.hosts_with_role("lb")] == ["k8slb01", "k8slb02"]
    assert inv.first_control_plane.name == "k8scontrol01"
    assert inv.control_plane_endpoint == "10.143.0.50:6443"
    hb = lb.heartbeat
    assert (hb.keepalive, hb.deadtime, hb.effective_warntime, hb.effective_initdead) == (
        0.25,
        3,
        1,
        10,
    )


@pytest.mark.bad_input
def test_the_posts_routing_trap_is_explained_with_both_ranges(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path, set_(f"{NET}.ip_range", "10.0.0.0/8"), set_(f"{K8S}.pod_subnet", "10.32.0.0/12")
    )
    pod = next(p for p in problems if p.key == "kubernetes.pod_subnet")
    assert pod.reason.startswith(
        "network ip_range 10.0.0.0/8 overlaps pod_subnet 10.32.0.0/12: every host routes all of "
        "10.0.0.0/8 to the Hetzner gateway"
    )
    assert "CoreDNS CrashLoop" in pod.reason
    suggestion = re.search(r"e\.g\. pod_subnet (\S+)$", pod.reason)
    assert suggestion, pod.reason
    suggested = IPv4Network(suggestion.group(1))
    assert not suggested.overlaps(IPv4Network("10.0.0.0/8"))
    assert not suggested.overlaps(IPv4Network("10.145.0.0/16"))


@pytest.mark.bad_input
def test_all_problems_of_a_file_are_listed_at_once(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        set_("ssh.port", "22"),  # type error in one section ...
        set_(f"{HB}.auth", "crc"),  # ... and in the load_balancer section ...
        set_(f"{HB}.keepalive", 1),
        set_(f"{HB}.deadtime", 2),  # ... do not hide its semantic problems
        set_(f"{K8S}.version", "1.2"),
        set_(f"{NET}.ip_range", "10.0.0.0/8"),
        set_(f"{K8S}.pod_subnet", "10.32.0.0/12"),
        set_(f"{H}.k8node02.role", "master"),
        set_(f"{H}.k8node01.private_ip", "10.143.0.5"),
        set_(f"{H}.k8node01.adress", "x"),  # the host fails and is still checked
    )
    keys = [p.key for p in problems]
    assert set(keys) >= {
        "ssh.port",
        f"{HB}.auth",
        f"{HB}.deadtime",
        f"{K8S}.version",
        f"{K8S}.pod_subnet",
        f"{K8S}.service_subnet",
        f"{H}.k8node02.role",
        f"{H}.k8node01.private_ip",
        f"{H}.k8node01.adress",
    }
    text = str(InventoryError(problems))
    assert f"{tmp_path / 'hosts.yaml'}: ssh.port: " in text
    assert len(text.splitlines()) == len(problems)


def test_problem_str_names_file_key_and_reason() -> None:
    problem = Problem("hosts.yaml", "hosts.k8slb01.private_ip", "10.1.1.1 is outside the subnet")
    assert str(problem) == "hosts.yaml: hosts.k8slb01.private_ip: 10.1.1.1 is outside the subnet"


@pytest.mark.bad_input
def test_unparsable_yaml_gives_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text("cluster:\n  name: skgm\nhosts: [k8slb01\nssh: {}\n", encoding="utf-8")
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    [problem] = info.value.problems
    assert problem.key.startswith("line 4, column")
    assert problem.reason.startswith("invalid YAML: ")


@pytest.mark.bad_input
def test_duplicate_host_is_refused_and_other_problems_still_listed(tmp_path: Path) -> None:
    text = REPO_HOSTS.read_text(encoding="utf-8")
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if line.strip().startswith("k8slb01:"))
    lines.insert(first + 2, lines[first])  # k8slb01 listed twice
    text = (
        "\n".join(lines)
        .replace("deadtime: 3", "deadtime: 2")
        .replace("keepalive: 0.25", "keepalive: 1")
    )
    path = tmp_path / "hosts.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    by_key = {p.key: p.reason for p in info.value.problems}
    assert by_key["hosts.k8slb01"] == (
        f"listed twice (lines {first + 1} and {first + 3}); "
        "YAML would silently keep only the last one"
    )
    assert f"{HB}.deadtime" in by_key


@pytest.mark.bad_input
def test_duplicate_nested_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(
        REPO_HOSTS.read_text(encoding="utf-8").replace(
            "    keepalive: 0.25", "    keepalive: 0.25\n    keepalive: 0.25"
        ),
        encoding="utf-8",
    )
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert [p.key for p in info.value.problems] == [f"{HB}.keepalive"]


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("text", "key", "fragment"),
    [
        ("", "(top level)", "the file is empty"),
        ("- a\n- b\n", "(top level)", "expected a mapping"),
        ("a: 1\n---\nb: 2\n", "line 2, column 1", "invalid YAML"),
        ("kubernetes:\n  version: 1.30\n", "kubernetes.version", "1.30 would become 1.3"),
    ],
)
def test_yaml_shapes(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    matching = [p for p in info.value.problems if p.key == key]
    assert matching and fragment in matching[0].reason, info.value.problems


@pytest.mark.bad_input
def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InventoryError) as info:
        load_inventory(tmp_path / "nope.yaml")
    assert [(p.key, p.reason) for p in info.value.problems] == [
        ("(file)", "cannot read: No such file or directory")
    ]


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(REPO_HOSTS)


SECRET = "s3cr3tTOKENvalue0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMN"


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({}, "the environment variable HCLOUD_TOKEN is not set"),
        ({"HCLOUD_TOKEN": "  "}, "the environment variable HCLOUD_TOKEN is empty"),
        ({"HCLOUD_TOKEN": SECRET + "\n"}, "whitespace or control characters"),
        ({"OTHER": SECRET}, "is not set"),
    ],
)
def test_token_missing_or_bad(inv: Inventory, environ: dict[str, str], fragment: str) -> None:
    with pytest.raises(InventoryError) as info:
        inv.token(environ)
    [problem] = info.value.problems
    assert (problem.file, problem.key) == (str(REPO_HOSTS), "hcloud.token_env")
    assert fragment in problem.reason
    assert SECRET not in str(info.value) and SECRET not in repr(info.value.problems)


def test_token_present(inv: Inventory) -> None:
    assert inv.token({"HCLOUD_TOKEN": SECRET}) == SECRET


@pytest.mark.bad_input
def test_select_hosts_unknown_and_wrong_role_reported_together(inv: Inventory) -> None:
    with pytest.raises(InventoryError) as info:
        select_hosts(inv, ["k8node01", "k8sfoo"], roles=["lb"], task="lb.setup")
    assert [str(p) for p in info.value.problems] == [
        "--host: k8node01: is a worker; task lb.setup runs on lb hosts: k8slb01, k8slb02",
        "--host: k8sfoo: not in the inventory (known: k8scontrol01, k8scontrol02, k8scontrol03, "
        "k8slb01, k8slb02, k8node01, k8node02)",
    ]


def test_select_hosts_selection(inv: Inventory) -> None:
    def names(hosts: list[Any]) -> list[str]:
        return [h.name for h in hosts]

    assert names(select_hosts(inv, [], roles=["lb"], task="lb.setup")) == ["k8slb01", "k8slb02"]
    both = select_hosts(inv, ["k8slb02", "k8slb01", "k8slb02"], roles=["lb"], task="lb.setup")
    assert names(both) == ["k8slb01", "k8slb02"]  # inventory order, once each
    assert names(select_hosts(inv, ["k8node02"], roles=None, task="prepare")) == ["k8node02"]
    assert len(select_hosts(inv, [], roles=None, task="prepare")) == 7
    joinable = select_hosts(inv, [], roles=["control-plane", "worker"], task="cluster.join")
    assert names(joinable)[0] == "k8scontrol01" and "k8slb01" not in names(joinable)
    with pytest.raises(
        InventoryError,
        match=r"is a load balancer; task cluster\.join runs on control-plane or worker hosts",
    ):
        select_hosts(inv, ["k8slb01"], roles=["worker", "control-plane"], task="cluster.join")
    with pytest.raises(ValueError):
        select_hosts(inv, [], roles=["master"], task="x")


def test_summary(inv: Inventory) -> None:
    rows = summary_rows(inv)
    assert rows[3] == (
        "k8slb01",
        "lb (primary)",
        "10.143.0.5",
        "198.51.100.5",
        "k8slb01.skgm.de",
        "",
    )
    assert rows[0][:3] == ("k8scontrol01", "control-plane", "10.143.0.2")
    facts = dict(summary_facts(inv))
    assert facts["VIP"].startswith("10.143.0.50 on ens10")
    assert facts["floating IP"].startswith("116.202.6.21 (k8s-api, PTR api.k8s.skgm.de)")
    assert facts["pod subnet"] == "10.144.0.0/16"
    assert facts["public allow-list"] == "empty: loopback only"


def test_paths_resolve_against_the_file_and_expand_home_lazily(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sub = tmp_path / "site"
    sub.mkdir()
    inv = load_inventory(write(sub, good()))
    assert inv.path == sub / "hosts.yaml"
    assert inv.base_dir == sub
    assert inv.known_hosts_path == sub / ".runbook" / "known_hosts"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert inv.identity_path == tmp_path / "home" / ".ssh" / "id_ed25519"


def test_inventory_is_frozen(inv: Inventory) -> None:
    with pytest.raises(ValidationError):
        inv.load_balancer.vip = IPv4Address("10.143.0.51")  # type: ignore[misc]


def test_gateways(tmp_path: Path) -> None:
    assert parse_endpoint("ops@bastion.skgm.de:2222") == SSHEndpoint("bastion.skgm.de", "ops", 2222)
    assert parse_endpoint("10.0.0.1") == SSHEndpoint("10.0.0.1")
    inv = load_mutated(
        tmp_path,
        set_(f"{H}.k8node01.gateway", "k8slb01"),
        set_(f"{H}.k8node02.gateway", "root@jump.skgm.de:22"),
    )
    assert inv.gateway_for(inv.host("k8node01")) == inv.host("k8slb01")
    assert inv.gateway_for(inv.host("k8node02")) == SSHEndpoint("jump.skgm.de", "root", 22)
    assert inv.gateway_for(inv.host("k8slb01")) is None


# --- no secrets in the example inventory ---------------------------------------------------

_SECRET_KEY = re.compile(r"(?i)^\s*[\w-]*(token|secret|password|passwd|key|auth)[\w-]*\s*:\s*(\S+)")
_LONG_RANDOM = re.compile(r"[A-Za-z0-9+/_=-]{32,}")
_ALLOWED = {"token_env": "HCLOUD_TOKEN", "auth": "sha1"}


def secret_looking(text: str) -> list[str]:
    found = []
    for line in text.splitlines():
        content = line.split("#", 1)[0]
        if "PRIVATE KEY" in line or _LONG_RANDOM.search(content):
            found.append(line)
            continue
        match = _SECRET_KEY.match(content)
        if match:
            key = content.split(":", 1)[0].strip()
            if _ALLOWED.get(key) != match.group(2):
                found.append(line)
    return found


def test_secret_detector_fires_on_planted_secrets() -> None:
    assert secret_looking(f"hcloud:\n  token: {SECRET[:20]}\n")
    assert secret_looking(f"x: {SECRET}\n")
    assert secret_looking("authkey: abc\n")
    assert not secret_looking("hcloud:\n  token_env: HCLOUD_TOKEN\n  auth: sha1\n")


def test_hosts_yaml_holds_no_secret() -> None:
    assert secret_looking(REPO_HOSTS.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    ("address", "fragment"),
    [
        ("203.0.113.14", None),  # the lab's "internet" (documentation range) is accepted
        ("198.51.100.5", None),
        ("116.202.6.21", None),
        ("172.20.0.1", "private RFC 1918"),
        ("127.0.0.1", "loopback"),
        ("169.254.1.1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
    ],
)
def test_public_addresses(address: str, fragment: str | None) -> None:
    reason = netcheck.public_problem(IPv4Address(address), network=None)
    assert reason is None if fragment is None else fragment in (reason or "")


def test_rule_bugs_are_not_swallowed_when_everything_validated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """AttributeError only means "field missing" for salvaged sections; otherwise it is a bug."""

    def broken(p: rules.Parts) -> Iterator[rules.Finding]:
        raise AttributeError("typo in a rule")
        yield  # pragma: no cover

    monkeypatch.setattr(rules, "_RULES", (broken,))
    with pytest.raises(AttributeError, match="typo in a rule"):
        parse_inventory(good(), path=REPO_HOSTS)


def test_kubernetes_package_repo_and_cni_manifest_url(tmp_path: Path) -> None:
    """Optional mirror keys: a signed mirror needs key_url; an unsigned one says trusted."""
    data = good()
    data["kubernetes"]["package_repo"] = {"url": "file:/run/labrepo", "trusted": True}
    data["kubernetes"]["cni_manifest_url"] = "file:///srv/weave.yaml"
    p = tmp_path / "ok.yaml"
    p.write_text(yaml.safe_dump(data))
    k8s = load_inventory(p).kubernetes
    assert k8s.package_repo is not None and k8s.package_repo.trusted
    assert k8s.cni_manifest_url == "file:///srv/weave.yaml"
    for repo, reason in (
        ({"url": "https://mirror.example/k8s"}, "key_url is required"),
        ({"url": "file:/x", "key_url": "file:/x/k", "trusted": True}, "exclude each other"),
        ({"url": "ftp://mirror", "trusted": True}, "not an http(s) or file: URL"),
    ):
        data["kubernetes"]["package_repo"] = repo
        p.write_text(yaml.safe_dump(data))
        with pytest.raises(InventoryError) as err:
            load_inventory(p)
        assert any(
            pr.key.startswith("kubernetes.package_repo") and reason in pr.reason
            for pr in err.value.problems
        ), err.value.problems


# --- hostile files: refused fast, with bounded memory, one clear problem, no traceback ---


def _alias_bomb(levels: int = 12) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def _merge_bomb(levels: int = 40) -> str:
    lines = ["m0: &m0 {a: 1, b: 2}"]
    lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], k{i}: 1}}" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


@pytest.mark.bad_input
@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (_alias_bomb(), "more than 50000 values once its aliases are expanded"),
        (_merge_bomb(), "more than 50000 values once its aliases are expanded"),
        ("a: &a [*a]\n", "a recursive alias"),
        ("[" * 20_000 + "]" * 20_000 + "\n", "nested more than 64 levels deep"),
        ("{a: " * 20_000 + "1" + "}" * 20_000 + "\n", "nested more than 64 levels deep"),
        ("- x\n" * 60_000, "more than 50000 values"),
    ],
    ids=["alias-bomb", "merge-bomb", "recursive", "brackets", "braces", "many"],
)
def test_hostile_yaml_is_refused_with_bounded_memory(
    tmp_path: Path, text: str, fragment: str
) -> None:
    import tracemalloc

    path = tmp_path / "hosts.yaml"
    path.write_text(text, encoding="utf-8")
    tracemalloc.start()
    try:
        with pytest.raises(InventoryError) as info:
            load_inventory(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, f"peak {peak} bytes"
    message = str(info.value)
    assert len(message) < 2000, message[:300]
    assert fragment in message, message


@pytest.mark.bad_input
def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    path.write_bytes(b"cluster: {name: \xff}\n")
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert str(info.value) == f"{path}: (file): not UTF-8 text (byte 16)"


@pytest.mark.bad_input
def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "hosts.yaml"
    with path.open("wb") as f:
        f.truncate(50 * 2**20)  # sparse: 50 MB of NULs that must never be read
    with pytest.raises(InventoryError) as info:
        load_inventory(path)
    assert info.value.problems == [
        Problem(str(path), "(file)", f"{50 * 2**20} bytes, more than the limit of 1048576 bytes")
    ]


@pytest.mark.bad_input
@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "directory"])
def test_only_regular_files_are_read(tmp_path: Path, kind: str) -> None:
    import os
    import threading

    if kind == "fifo":
        path = tmp_path / "hosts.yaml"
        os.mkfifo(path)
        expected = "not a regular file (it is a FIFO)"
    elif kind == "dev-zero":
        path, expected = Path("/dev/zero"), "not a regular file (it is a character device)"
    else:
        path, expected = tmp_path, "not a regular file (it is a directory)"
    outcome: list[BaseException] = []

    def load() -> None:
        try:
            load_inventory(path)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(30)  # a blocking open of a FIFO without a writer would never return
    assert not worker.is_alive(), "load_inventory blocked"
    assert isinstance(outcome[0], InventoryError), outcome
    assert [p.reason for p in outcome[0].problems] == [expected]


@pytest.mark.bad_input
def test_a_huge_value_is_not_echoed_whole(tmp_path: Path) -> None:
    huge = "x" * 200_000 + "!"
    problems = problems_of(tmp_path, set_("ssh.user", huge), set_(f"{H}.{'N' * 5000}", {}))
    text = "\n".join(str(p) for p in problems)
    assert "ssh.user" in text and "is not a plain name" in text
    assert len(text) < 3000, len(text)


def test_cert_sans_without_the_floating_ip_or_api_name_is_no_warning(tmp_path: Path) -> None:
    """The runbook always puts the floating IP, api_dns_name and the VIP into the certificate
    (`k8sfiles.cert_sans`), so an inventory that does not repeat them is not a problem."""
    from runbook.render import k8sfiles

    inv = load_mutated(tmp_path, set_(f"{K8S}.cert_sans", []))
    assert [w for w in inv.warnings if w.key.startswith("kubernetes.cert_sans")] == []
    assert {"116.202.6.21", "api.k8s.skgm.de", "10.143.0.50"} <= set(k8sfiles.cert_sans(inv))
