"""The nftables table the lab's internet namespace gets from the API state (lab.labfirewall)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from lab.fakecloud.firewalls import refresh
from lab.labfirewall import ruleset
from tests.fakecloud.conftest import DEFAULT_FIPS, DEFAULT_SERVERS


def state() -> dict:  # type: ignore[type-arg]
    servers = [
        {
            "id": i,
            "name": s.name,
            "labels": dict(s.labels),
            "public_net": {"ipv4": {"ip": s.public_ipv4}, "firewalls": []},
        }
        for i, s in enumerate(DEFAULT_SERVERS, start=1)
    ]
    fip = {"id": 99, "ip": DEFAULT_FIPS[0].ip, "server": 2}  # on k8slb01
    rules = [
        {"direction": "in", "protocol": "tcp", "port": "22", "source_ips": ["192.0.2.0/24"]},
        {"direction": "in", "protocol": "icmp", "port": None, "source_ips": ["0.0.0.0/0", "::/0"]},
        {"direction": "in", "protocol": "udp", "port": "694", "source_ips": ["203.0.113.6/32"]},
        {"direction": "in", "protocol": "tcp", "port": "80", "source_ips": ["2001:db8::/32"]},
        {"direction": "out", "protocol": "tcp", "port": "25", "source_ips": []},
    ]
    fw = {
        "id": 50,
        "name": "lb",
        "rules": rules,
        "applied_to": [{"type": "label_selector", "label_selector": {"selector": "role=lb"}}],
    }
    st = {"servers": servers, "floating_ips": [fip], "firewalls": [fw]}
    refresh(st)
    return st


def test_ruleset_filters_covered_servers_and_their_floating_ip_only() -> None:
    text = ruleset(state(), {s.name for s in DEFAULT_SERVERS})
    assert "ip daddr 203.0.113.5 jump srv_k8slb01" in text
    assert "ip daddr 203.0.113.100 jump srv_k8slb01" in text  # the floating IP follows
    assert "ip daddr 203.0.113.6 jump srv_k8slb02" in text
    assert "203.0.113.2 " not in text and "203.0.113.7 " not in text  # no firewall: open
    assert "ip saddr { 192.0.2.0/24 } tcp dport 22 accept" in text
    assert "ip protocol icmp accept" in text and "saddr { 0.0.0.0/0" not in text
    assert "ip saddr { 203.0.113.6/32 } udp dport 694 accept" in text
    assert "dport 80" not in text and "dport 25" not in text  # IPv6-only, outbound
    assert text.count("counter drop") == 2
    assert "ct state established,related accept" in text


def test_no_firewall_no_filter() -> None:
    st = state()
    st["firewalls"] = []
    refresh(st)
    assert " jump " not in ruleset(st, {s.name for s in DEFAULT_SERVERS})


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None or shutil.which("unshare") is None,
    reason="needs root and nftables (lab/install-machine.sh) to let nft check the syntax",
)
def test_nft_accepts_the_ruleset() -> None:
    text = ruleset(state(), {s.name for s in DEFAULT_SERVERS})
    r = subprocess.run(
        ["unshare", "--net", "nft", "-c", "-f", "-"], input=text, text=True, capture_output=True
    )
    assert r.returncode == 0, r.stderr
