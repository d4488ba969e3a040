"""Fault tools for lab hosts (the ones that work in this kernel, see lab/README.md): hang a whole
host (SIGSTOP of every process in its PID namespace, then SIGCONT), power-cycle it (SIGKILL of its
init: the supervisor boots it again), take a link down, and nftables rules inside a host's network
namespace for packet loss and one-way partitions (no `tc netem` here).

Every function acts only on the lab's own namespaces and on processes of a lab host's PID
namespace, found by that namespace's inode (never by name).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence

from lab import labstate, netns, topology

NFT_TABLE = "rblab_fault"


# ----- hang / resume ----------------------------------------------------------------------------
def _pid_ns(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def host_pids(host: str) -> list[int]:
    """Root-namespace PIDs of every process in `host`'s PID namespace (its init included)."""
    ns = _pid_ns(netns.init_pid(host))
    if ns is None:
        return []
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _pid_ns(int(entry)) == ns:
            out.append(int(entry))
    return out


def _signal_all(pids: list[int], sig: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def freeze(host: str) -> list[int]:
    """SIGSTOP every process of the host (a hung VM or a long hypervisor pause). Repeated until
    no new process shows up (one may fork between the listing and the signal). Returns the PIDs
    stopped, for `thaw`. The host's kernel side (TCP handshakes, ARP) keeps answering."""
    stopped: set[int] = set()
    for _ in range(5):
        new = [p for p in host_pids(host) if p not in stopped]
        if not new:
            break
        _signal_all(new, signal.SIGSTOP)
        stopped.update(new)
    return sorted(stopped)


def thaw(host: str, pids: list[int] | None = None) -> None:
    """SIGCONT the host's processes (those `freeze` stopped, and any other of the host)."""
    every = set(pids or [])
    with contextlib.suppress(RuntimeError):
        every.update(host_pids(host))
    _signal_all(sorted(every), signal.SIGCONT)


@contextlib.contextmanager
def frozen(host: str) -> Iterator[list[int]]:
    pids = freeze(host)
    try:
        yield pids
    finally:
        thaw(host, pids)


# ----- power ------------------------------------------------------------------------------------
def boot_count(host: str) -> int:
    """How often the supervisor has booted `host` (from its init record; 0 while it is down)."""
    try:
        return int(labstate.paths().init_pid_file(host).read_text().split()[2])
    except (OSError, ValueError, IndexError):
        return 0


def power_cycle(host: str) -> int:
    """Pull the plug: SIGKILL of the host's init ends its PID namespace at once (no shutdown
    scripts, Heartbeat says nothing to its peer); the supervisor boots it again. Returns the
    boot count before, for `wait_booted`."""
    before = boot_count(host)
    os.kill(netns.init_pid(host), signal.SIGKILL)
    return before


def wait_booted(host: str, after: int, timeout: float = 90) -> float:
    """Wait until the host booted again (boot count > `after`) and its sshd answers."""
    t0 = time.monotonic()
    while True:
        if boot_count(host) > after:
            r = netns.host_exec(host, ["sh", "-c", "ss -ltn | grep -q ':22 '"], check=False)
            if r.returncode == 0:
                return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{host} did not boot again within {timeout}s")
        time.sleep(0.5)


# ----- links and nftables -----------------------------------------------------------------------
def link(host: str, dev: str, up: bool) -> None:
    netns.run("ip", "-n", topology.host_ns(host), "link", "set", dev, "up" if up else "down")


@contextlib.contextmanager
def links_down(host: str, devs: Sequence[str]) -> Iterator[None]:
    """`devs` of `host` down for the body, then up again with every route the kernel dropped
    meanwhile put back (a link that goes down loses its routes; a cloud server's DHCP or
    networkd puts them back when it returns, and so must the lab, or the host loses its default
    route for good: no API, no packages)."""
    before = routes(host)
    try:
        for dev in devs:
            link(host, dev, False)
        yield
    finally:
        for dev in devs:
            link(host, dev, True)
        for route in sorted(before - routes(host), key=lambda r: r.startswith("default")):
            netns.run("ip", "-n", topology.host_ns(host), "route", "replace", *route.split())
        missing = sorted(before - routes(host))
        if missing:
            raise AssertionError(f"{host}: routes not restored after the link fault: {missing}")


def routes(host: str) -> set[str]:
    """The host's main routing table, one normalised `ip route` line per route."""
    out = subprocess.run(
        ["ip", "-n", topology.host_ns(host), "route", "show", "table", "main"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {" ".join(line.split()) for line in out.splitlines() if line.strip()}


def _in_ns(host: str) -> list[str]:
    return ["ip", "netns", "exec", topology.host_ns(host)]


def _nft(host: str, script: str) -> None:
    subprocess.run(
        [*_in_ns(host), "nft", "-f", "-"],
        input=script,
        text=True,
        check=True,
        capture_output=True,
    )


def clear_nft(host: str) -> None:
    subprocess.run(
        [*_in_ns(host), "nft", "delete", "table", "inet", NFT_TABLE],
        capture_output=True,
        check=False,
    )


def _table(rules: list[str]) -> str:
    body = "\n".join(f"    {r}" for r in rules)
    return (
        f"table inet {NFT_TABLE} {{\n"
        "  chain input {\n    type filter hook input priority -10; policy accept;\n"
        f"{body}\n  }}\n}}\n"
    )


def packet_loss(host: str, dev: str, percent: int) -> None:
    """Drop `percent` % of the packets `host` receives on `dev` (random, independent)."""
    clear_nft(host)
    _nft(host, _table([f'iifname "{dev}" numgen random mod 100 < {percent} drop']))


def drop_from(host: str, sources: list[str]) -> None:
    """One-way partition: `host` receives nothing from `sources` (it still sends to them)."""
    clear_nft(host)
    _nft(host, _table([f"ip saddr {s} drop" for s in sources]))
