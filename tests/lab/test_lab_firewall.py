"""Cloud firewalls in the lab, enforced by the internet namespace (nftables): after the
walkthrough (which runs `inv firewall` right after `network`), every server's public IP and the
floating IP are scanned from the stranger (198.51.100.10, outside every allow-list), the client
(203.0.113.200, in load_balancer.public_allow) and the operator (203.0.113.201, the admin
network). Only the pairs the inventory allows get through; Heartbeat still runs over the public
path; a re-run changes nothing; an admin network removed from the inventory loses its rule.

TCP verdicts: "reached" = the connection was accepted or refused (a RST came back: the packet got
past the firewall), "filtered" = no answer within the timeout (Hetzner drops silently). UDP
cannot tell that way (nothing answers Heartbeat's port), so a sniffer on the target's `eth0`
(AF_PACKET, in the host's network namespace) reports whether a datagram with a unique payload
arrived.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys

import pytest
import yaml

from lab import netns, scenarios, topology
from tests.lab.test_k8s_walkthrough import cli, cluster, inventory  # noqa: F401 - fixture

from .helpers import recap

pytestmark = pytest.mark.lab
TCP_PORTS = (22, 2379, 2380, 6443, 10250, 10257, 10259, 30000, 30005, 30010)
OP, CLIENT, STRANGER = topology.OP_NS, topology.CLIENT_NS, topology.STRANGER_NS

SCAN = r"""
import json, socket, sys, concurrent.futures as cf
def one(t):
    ip, port = t
    s = socket.socket(); s.settimeout(float(sys.argv[2]))
    try:
        s.connect((ip, port)); return ip, port, "reached"
    except ConnectionRefusedError:
        return ip, port, "reached"
    except OSError:
        return ip, port, "filtered"
    finally:
        s.close()
with cf.ThreadPoolExecutor(64) as pool:
    print(json.dumps([list(r) for r in pool.map(one, json.loads(sys.argv[1]))]))
"""

SNIFF = r"""
import socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
s.bind(("eth0", 0)); s.settimeout(0.2)
print("ready", flush=True)
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end:
    try:
        pkt = s.recv(65535)
    except socket.timeout:
        continue
    if sys.argv[1].encode() in pkt:
        print("arrived"); break
else:
    print("dropped")
"""

SEND = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
if sys.argv[4]:
    s.bind((sys.argv[4], 0))
for _ in range(3):
    s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))
"""


Verdicts = dict[tuple[str, int], str]


def scan(ns: str, targets: list[tuple[str, int]], timeout: float = 1.5) -> Verdicts:
    argv = [sys.executable, "-c", SCAN, json.dumps(targets), str(timeout)]
    r = netns.ns_exec(ns, argv, timeout=120)
    assert r.returncode == 0, r.stderr
    return {(ip, port): verdict for ip, port, verdict in json.loads(r.stdout)}


def udp_arrives(src_ns: str, dst_host: str, port: int, *, bind: str = "") -> bool:
    """Send 3 datagrams from `src_ns` (from address `bind`) to `dst_host`'s public IP; True when
    the sniffer on its eth0 saw one."""
    nonce = "rbfw-" + secrets.token_hex(8)
    sniffer = subprocess.Popen(
        ["ip", "netns", "exec", f"rbl-{dst_host}", sys.executable, "-c", SNIFF, nonce, "3"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert sniffer.stdout is not None and sniffer.stdout.readline().strip() == "ready"
        dst = topology.load().host(dst_host).public_ip
        sent = netns.ns_exec(
            src_ns, [sys.executable, "-c", SEND, dst, str(port), nonce, bind], timeout=30
        )
        assert sent.returncode == 0, sent.stderr
        out, _ = sniffer.communicate(timeout=30)
    finally:
        if sniffer.poll() is None:
            sniffer.kill()
            sniffer.wait()
    return out.strip() == "arrived"


def expected(src: str, ip: str, port: int, lbs: set[str]) -> str:
    """The README table: SSH only from the admin network; 6443 on the LBs and the floating IP
    from public_allow (203.0.113.0/24: the client and the operator); nothing else."""
    if port == 22 and src == OP:
        return "reached"
    if port == 6443 and ip in lbs and src in (OP, CLIENT):
        return "reached"
    return "filtered"


def test_only_the_allowed_pairs_get_through(cluster: dict[str, float]) -> None:  # noqa: F811
    topo = topology.load()
    lbs = {h.public_ip for h in topo.hosts if h.role == "lb"} | {topo.floating_ip}
    ips = [h.public_ip for h in topo.hosts] + [topo.floating_ip]
    targets = [(ip, p) for ip in ips for p in TCP_PORTS]
    wrong = []
    for src in (STRANGER, CLIENT, OP):
        got = scan(src, targets)
        for (ip, port), verdict in sorted(got.items()):
            want = expected(src, ip, port, lbs)
            if verdict != want:
                wrong.append(f"{src} → {ip}:{port}: {verdict}, want {want}")
    assert not wrong, "\n".join(wrong)


def test_the_floating_ips_api_answers_the_allowed_client_only(cluster: dict[str, float]) -> None:  # noqa: F811
    url = f"https://{topology.load().floating_ip}:6443/readyz"
    curl = ["curl", "-sk", "--max-time", "3", url]
    ok = netns.ns_exec(CLIENT, curl, timeout=30)
    assert ok.returncode == 0 and ok.stdout == "ok", ok.stderr
    refused = netns.ns_exec(STRANGER, curl, timeout=30)
    assert refused.returncode == 28, (refused.returncode, refused.stdout)  # 28: timed out


def test_heartbeat_udp_only_from_the_peer_lb(cluster: dict[str, float]) -> None:  # noqa: F811
    topo = topology.load()
    for dst, peer in (("k8slb01", "k8slb02"), ("k8slb02", "k8slb01")):
        assert udp_arrives(f"rbl-{peer}", dst, 694, bind=topo.host(peer).public_ip)
        assert not udp_arrives(STRANGER, dst, 694)
        assert not udp_arrives(CLIENT, dst, 694)
    lb2 = topo.host("k8slb02").public_ip
    assert not udp_arrives("rbl-k8slb02", "k8scontrol01", 694, bind=lb2)  # not a CP rule


def test_apiserver_listens_on_its_private_ip_only(cluster: dict[str, float]) -> None:  # noqa: F811
    topo = topology.load()
    for h in topo.hosts:
        if h.role != "control-plane":
            continue
        r = netns.host_exec(h.name, ["ss", "-Hltn", "sport = :6443"])
        local = {line.split()[3] for line in r.stdout.splitlines()}
        assert local == {f"{h.private_ip}:6443"}, (h.name, r.stdout)


def test_heartbeat_keeps_the_pair_over_the_public_path_and_fails_over(
    cluster: dict[str, float],  # noqa: F811
) -> None:
    # private link between the LBs cut: heartbeats cross the firewalls on the public path, so
    # neither side takes over (a dropped UDP 694 would make both hold the VIP)
    held = scenarios.partition_heal(hold=8.0)
    assert held.failed_over is False, held
    run = scenarios.inv_runner(inventory=inventory())
    moved = scenarios.drill(run, "stop")
    assert moved.failed_over, moved
    assert all(s <= scenarios.DEADTIME + 1 for s in moved.outages.values()), moved


def test_rerun_changes_nothing_and_a_removed_network_loses_its_rule(
    cluster: dict[str, float],  # noqa: F811
) -> None:
    again = cli("firewall", "--yes")
    assert recap(again.stdout)["changed"] == 0, again.stdout
    topo = topology.load()
    ssh = [(h.public_ip, 22) for h in topo.hosts]
    base = inventory()
    data = yaml.safe_load(base.read_text())
    data["firewall"]["admin_networks"] = ["203.0.113.201/32", "203.0.113.200/32"]
    wider = base.with_name("hosts-fw-client.yaml")
    wider.write_text(yaml.safe_dump(data, sort_keys=False))
    run_wider = scenarios.inv_runner(inventory=wider)
    try:
        out = run_wider("firewall", "--yes").stdout
        assert recap(out)["changed"] == 1, out
        assert set(scan(CLIENT, ssh).values()) == {"reached"}
    finally:
        back = cli("firewall", "--yes").stdout  # the inventory as it is: the client's rule goes
    assert recap(back)["changed"] == 1, back
    assert set(scan(CLIENT, ssh).values()) == {"filtered"}
    assert set(scan(OP, ssh).values()) == {"reached"}


def test_status_shows_the_firewalls(cluster: dict[str, float]) -> None:  # noqa: F811
    r = cli("status", check=False)
    assert "cloud firewalls" in r.stdout, r.stdout
    for name in ("skgm-lb", "skgm-control-plane", "skgm-worker"):
        assert name in r.stdout
    assert "no cloud firewall applied" not in r.stdout
