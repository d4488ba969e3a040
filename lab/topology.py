"""The lab's topology, read from lab/hosts.yaml (the same file the runbook uses as its inventory).

Why one file: the runbook is proven against exactly the hosts and addresses the lab builds, so the
lab builds from the inventory instead of keeping a second list.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HOSTS_YAML = Path(__file__).with_name("hosts.yaml")

# Namespace names (all prefixed rbl-, so `down` can tell ours apart). Interface names stay < 16
# chars.
ROUTER_NS = "rbl-router"
INET_NS = "rbl-inet"
CLIENT_NS = "rbl-client"
OP_NS = "rbl-op"
STRANGER_NS = "rbl-stranger"
PUBLIC_GATEWAY = "203.0.113.1"
CLIENT_IP = "203.0.113.200"
OP_IP = "203.0.113.201"
STRANGER_IP = "198.51.100.10"  # outside every allow-list of lab/hosts.yaml
# the lab's outside clients: namespace → its only address (routed by rbl-inet, never filtered
# on their side)
OUTSIDE = {CLIENT_NS: CLIENT_IP, OP_NS: OP_IP, STRANGER_NS: STRANGER_IP}
API_IP = "203.0.113.254"
API_ADMIN_PORT = 8780


def host_ns(name: str) -> str:
    return f"rbl-{name}"


def router_link(name: str) -> str:
    """Router-side end of a host's ens10 veth."""
    return f"r-{name}"[:15]


def inet_link(name: str) -> str:
    """Inet-side end of a host's (or client/op namespace's) eth0 veth."""
    return f"i-{name}"[:15]


@dataclass(frozen=True)
class LabHost:
    name: str
    role: str
    private_ip: str
    public_ip: str


@dataclass(frozen=True)
class Topology:
    hosts: tuple[LabHost, ...]
    vip: str
    floating_ip_name: str
    floating_ip: str
    floating_ip_ptr: str
    network_name: str
    ip_range: str
    subnet: str
    zone: str
    inventory: Path
    k8s_version: str | None = None
    #: Heartbeat's own log file on the LBs (`load_balancer.heartbeat.logfile`), None when unset
    heartbeat_log: str | None = None
    #: the haresources home node of the resource group (`load_balancer.primary`)
    primary: str | None = None

    def host(self, name: str) -> LabHost:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no lab host {name!r} (hosts: {', '.join(self.names)})")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hosts)

    @property
    def gateway(self) -> str:
        """The subnet's first address, like Hetzner's network gateway."""
        return str(next(ipaddress.ip_network(self.subnet).hosts()))


def default_path() -> Path:
    """$RBLAB_TOPOLOGY (another inventory, e.g. bench/'s 25-host lab) or lab/hosts.yaml."""
    return Path(os.environ.get("RBLAB_TOPOLOGY") or HOSTS_YAML)


def load(path: Path | None = None) -> Topology:
    path = path or default_path()
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    lb = data["load_balancer"]
    net = data["hcloud"]["network"]
    hosts = tuple(
        LabHost(
            name=str(name),
            role=str(h["role"]),
            private_ip=str(h["private_ip"]),
            public_ip=str(h["public_ip"]),
        )
        for name, h in data["hosts"].items()
    )
    return Topology(
        hosts=hosts,
        vip=str(lb["vip"]),
        floating_ip_name=str(lb["floating_ip"]["name"]),
        floating_ip=str(lb["floating_ip"]["address"]),
        floating_ip_ptr=str(lb["floating_ip"].get("dns_ptr", "")),
        network_name=str(net["name"]),
        ip_range=str(net["ip_range"]),
        subnet=str(net["subnet"]),
        zone=str(net["zone"]),
        inventory=path,
        k8s_version=str(data.get("kubernetes", {}).get("version", "")) or None,
        heartbeat_log=(lb.get("heartbeat") or {}).get("logfile"),
        primary=str(lb["primary"]) if lb.get("primary") else None,
    )
