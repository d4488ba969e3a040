"""The IPv4 addresses of a lab namespace, read over rtnetlink in this process (no `ip` spawned).

Why: `invariants.StateSampler` times I1 (a resumed host's stale addresses coming off) to a
tenth of a second, on two cores the lab saturates in that very moment; two `ip -n` spawns per
look took 0.1-0.4 s there. A netlink socket opened inside the namespace (`setns` of this
thread, then back) answers an address dump from the kernel at once. Hand-written (~50 lines of
the stable rtnetlink ABI) rather than pyroute2: one read-only dump, no new dependency.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading

CLONE_NEWNET = 0x40000000
RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
_HDR = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefixlen, flags, scope, index
_ATTR = struct.Struct("=HH")  # rtattr: len, type

_libc = ctypes.CDLL(None, use_errno=True)
_seq = iter(range(1, 1 << 31))
_seq_lock = threading.Lock()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _socket_in(netns: str) -> socket.socket:
    """A NETLINK_ROUTE socket of `netns` (a path such as /run/netns/NAME): created while this
    thread is inside it; a socket keeps its namespace, the thread goes back at once."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        target = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
            finally:
                _setns(own)
        finally:
            os.close(target)
    finally:
        os.close(own)


def _attrs(data: bytes, start: int, end: int) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while start + _ATTR.size <= end:
        length, kind = _ATTR.unpack_from(data, start)
        if length < _ATTR.size:
            break
        out[kind] = data[start + _ATTR.size : start + length]
        start += (length + 3) & ~3
    return out


def parse_addresses(data: bytes) -> tuple[set[str], bool]:
    """(IPv4 addresses in one buffer of an RTM_GETADDR dump, whether the dump is done)."""
    found: set[str] = set()
    off = 0
    while off + _HDR.size <= len(data):
        length, kind, _flags, _seq_no, _pid = _HDR.unpack_from(data, off)
        if length < _HDR.size:
            break
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", data, off + _HDR.size)
            if code:
                raise OSError(-code, f"RTM_GETADDR: {os.strerror(-code)}")
        if kind == RTM_NEWADDR:
            family = data[off + _HDR.size]
            attrs = _attrs(data, off + _HDR.size + _IFADDR.size, off + length)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if family == socket.AF_INET and raw is not None and len(raw) == 4:
                found.add(socket.inet_ntoa(raw))
        off += (length + 3) & ~3
    return found, False


def ipv4_addresses(netns: str) -> set[str]:
    """Every IPv4 address configured in `netns` (as `ip -n NAME -4 addr show` lists them)."""
    with _seq_lock:
        seq = next(_seq)
    with _socket_in(netns) as sock:
        sock.settimeout(5)
        sock.bind((0, 0))
        body = _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)
        sock.send(
            _HDR.pack(_HDR.size + len(body), RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, seq, 0) + body
        )
        found: set[str] = set()
        while True:
            part, done = parse_addresses(sock.recv(1 << 16))
            found |= part
            if done:
                return found
