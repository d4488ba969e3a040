"""`lab.netlink`: the addresses of a namespace over rtnetlink, as `ip` lists them."""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess

import pytest

from lab import netlink


def test_the_addresses_of_this_namespace_are_the_ones_ip_lists() -> None:
    if os.geteuid() != 0:
        pytest.fail("setns needs root (the lab and CI run as root)")
    listed = subprocess.run(
        ["ip", "-4", "-o", "addr", "show"], check=True, capture_output=True, text=True
    ).stdout
    expected = set(re.findall(r"\binet (\d+\.\d+\.\d+\.\d+)/", listed))
    assert expected  # at least 127.0.0.1
    assert netlink.ipv4_addresses("/proc/self/ns/net") == expected


def _msg(kind: int, body: bytes) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), kind, 0, 1, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def _addr(ip: str, *, local: bool) -> bytes:
    attr_kind = netlink.IFA_LOCAL if local else netlink.IFA_ADDRESS
    attr = struct.pack("=HH", 8, attr_kind) + socket.inet_aton(ip)
    return _msg(netlink.RTM_NEWADDR, struct.pack("=BBBBI", socket.AF_INET, 32, 0, 0, 2) + attr)


def test_a_dump_in_parts_and_its_end() -> None:
    part1 = _addr("10.143.0.50", local=True) + _addr("203.0.113.100", local=False)
    assert netlink.parse_addresses(part1) == ({"10.143.0.50", "203.0.113.100"}, False)
    assert netlink.parse_addresses(_msg(netlink.NLMSG_DONE, b"\0" * 4)) == (set(), True)


def test_an_error_answer_raises() -> None:
    with pytest.raises(OSError, match="RTM_GETADDR"):
        netlink.parse_addresses(_msg(netlink.NLMSG_ERROR, struct.pack("=i", -1) + b"\0" * 16))
