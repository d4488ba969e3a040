"""Network namespaces, veths and static routes of the lab; entering hosts (`host_exec`).

Why like this: Hetzner's private network is routed, not switched. Each host's `ens10` holds a /32
and reaches everything in the network range through the subnet gateway (.1, onlink); a router
namespace forwards by one /32 route per attached server and alias IP (`lab.sdn` keeps those in step
with the simulated API). The public side is built the same way around `rbl-inet`. Every veth is
created with both ends already inside lab namespaces, so no lab address or route ever exists in the
root namespace.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import labstate
from lab.topology import (
    API_IP,
    INET_NS,
    OUTSIDE,
    PUBLIC_GATEWAY,
    ROUTER_NS,
    Topology,
    host_ns,
    inet_link,
    router_link,
)

NETNS_DIR = Path("/run/netns")
HOST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
}
INSTALL_SCRIPT = Path(__file__).with_name("install-machine.sh")


def ensure_machine() -> None:
    """Machine-level installs (openssh-server without a running sshd, nc, dpkg-dev); run before
    hosts
    exist."""
    subprocess.run(["bash", str(INSTALL_SCRIPT)], check=True)


def run(
    *argv: str, check: bool = True, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), check=check, text=True, capture_output=True, input=input)


def ip_batch(ns: str | None, commands: Sequence[str]) -> None:
    """Many `ip` commands in one process (fast); raises with ip's message on the first failure."""
    if not commands:
        return
    argv = ["ip", *(("-n", ns) if ns else ()), "-batch", "-"]
    r = subprocess.run(argv, input="\n".join(commands) + "\n", text=True, capture_output=True)
    if r.returncode != 0:
        raise RuntimeError(f"ip -n {ns} -batch failed: {r.stderr.strip()}\n" + "\n".join(commands))


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def lab_netns() -> list[str]:
    """Lab network namespaces that exist now (ours are all prefixed rbl-)."""
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith("rbl-"))


def add_netns(name: str, record: labstate.Record, *, forward: bool = False) -> None:
    run("ip", "netns", "add", name)
    record.add_netns(name)
    sysctls = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"]
    if forward:
        sysctls += [
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ]
    run("ip", "netns", "exec", name, "sysctl", "-qw", *sysctls)
    ip_batch(name, ["link set lo up"])


def veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    """A veth pair created directly inside two lab namespaces (never in the root namespace)."""
    run(
        "ip",
        "link",
        "add",
        name_a,
        "netns",
        ns_a,
        "type",
        "veth",
        "peer",
        "name",
        name_b,
        "netns",
        ns_b,
    )
    ip_batch(ns_a, [f"link set {name_a} up"])
    ip_batch(ns_b, [f"link set {name_b} up"])


def public_base(ns: str, address: str) -> list[str]:
    """eth0 commands of a host/client/op namespace: its /32 and a default route via the inet
    gateway."""
    return [
        f"address replace {address}/32 dev eth0",
        f"route replace default via {PUBLIC_GATEWAY} dev eth0 onlink",
    ]


def build_network(topo: Topology, record: labstate.Record) -> None:
    """Create every lab namespace and link. Fails if one exists (callers check for stale state
    first)."""
    add_netns(ROUTER_NS, record, forward=True)
    add_netns(INET_NS, record, forward=True)
    # gateway addresses live on lo (no dummy module on every kernel); ARP answers for them on every
    # link
    ip_batch(
        INET_NS, [f"address add {PUBLIC_GATEWAY}/32 dev lo", f"address add {API_IP}/32 dev lo"]
    )
    inet_routes: list[str] = []
    for name, address in OUTSIDE.items():
        add_netns(name, record)
        short = name.removeprefix("rbl-")
        veth(name, "eth0", INET_NS, inet_link(short))
        ip_batch(name, public_base(name, address))
        inet_routes.append(f"route replace {address}/32 dev {inet_link(short)}")
    for h in topo.hosts:
        ns = host_ns(h.name)
        add_netns(ns, record)
        veth(ns, "ens10", ROUTER_NS, router_link(h.name))
        veth(ns, "eth0", INET_NS, inet_link(h.name))
        ip_batch(ns, public_base(ns, h.public_ip))
        inet_routes.append(f"route replace {h.public_ip}/32 dev {inet_link(h.name)}")
    ip_batch(INET_NS, inet_routes)


def reset_host_network(topo: Topology, name: str) -> None:
    """What a reboot does to a host's interfaces: addresses added at run time (a VIP, a floating IP)
    are gone; the static public side comes back; the private side follows the API state again
    (lab.sdn)."""
    ns = host_ns(name)
    ip_batch(
        ns,
        [
            "address flush dev ens10",
            "address flush dev eth0",
            "route flush dev ens10",
            *public_base(ns, topo.host(name).public_ip),
        ],
    )


def delete_netns(name: str) -> None:
    run("ip", "netns", "delete", name, check=False)


def netns_pids(name: str) -> list[int]:
    r = run("ip", "netns", "pids", name, check=False)
    return [int(x) for x in r.stdout.split()]


def init_pid(name: str) -> int:
    """Root-namespace PID of a host's init (its PID namespace's PID 1), from the supervisor's
    record."""
    f = labstate.paths().init_pid_file(name)
    try:
        pid, start = (int(x) for x in f.read_text().split()[:2])
    except (OSError, ValueError) as e:
        raise RuntimeError(
            f"host {name} is not running (no init record {f}); run `inv lab.up`"
        ) from e
    if labstate.proc_starttime(pid) != start:
        raise RuntimeError(f"host {name}: init {pid} is gone (rebooting?)")
    return pid


def host_argv(name: str, argv: Sequence[str]) -> list[str]:
    """nsenter into all namespaces of the host's init (net, uts, mount, pid, ...), root and cwd
    included."""
    return ["nsenter", "-t", str(init_pid(name)), "-a", "--", *argv]


def host_exec(
    name: str,
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float | None = 120,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `argv` on lab host `name` (like an SSH session, without SSH) with a clean environment.

    The process lives in the host's PID namespace: it sees only the host's processes, and whatever
    it leaves running is reaped by the host's init and ended with the host."""
    return subprocess.run(
        host_argv(name, argv),
        check=check,
        text=True,
        capture_output=True,
        timeout=timeout,
        input=input,
        env=HOST_ENV,
        close_fds=True,
    )


@dataclass
class HostProc:
    """A background process on a lab host: `nsenter` (root ns) and the command it forked (host PID
    ns)."""

    popen: subprocess.Popen[bytes]
    pid: int | None  # root-namespace PID of the command itself

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the command (nsenter does not forward signals), then reap nsenter."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            if self.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
            self.popen.kill()
            self.popen.wait()


def host_spawn(name: str, argv: Sequence[str], **kw: Any) -> HostProc:
    """Start `argv` on a host in the background; it also ends when the host reboots or the lab goes
    down."""
    popen = subprocess.Popen(host_argv(name, argv), env=HOST_ENV, close_fds=True, **kw)
    pid = None
    for _ in range(200):
        try:
            kids = Path(f"/proc/{popen.pid}/task/{popen.pid}/children").read_text().split()
        except OSError:
            break
        if kids:
            pid = int(kids[0])
            break
        time.sleep(0.01)
    return HostProc(popen, pid)


def ns_exec(ns: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    """Run in a plain lab network namespace (rbl-client, rbl-op, rbl-router ...)."""
    return subprocess.run(["ip", "netns", "exec", ns, *argv], text=True, capture_output=True, **kw)
