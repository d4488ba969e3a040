"""IPv4 address and range rules of the inventory, as pure functions over `ipaddress` values.

Kept apart from the pydantic models so each rule is a small function that returns a reason
(or ``None``) and can be tested on plain values. The inventory decides which key a reason
belongs to; nothing here knows about YAML or key paths.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

#: The private ranges of RFC 1918: Hetzner accepts only these as a network's ip_range.
RFC1918: tuple[IPv4Network, ...] = (
    IPv4Network("10.0.0.0/8"),
    IPv4Network("172.16.0.0/12"),
    IPv4Network("192.168.0.0/16"),
)

#: Hetzner's gateway of every server's public interface; the API refuses it in networks.
HETZNER_PUBLIC_GATEWAY = IPv4Address("172.31.1.1")

#: Kubernetes gives every node a /24 out of the pod subnet (kube-controller-manager default).
NODE_CIDR_PREFIX = 24

#: kubeadm refuses IPv4 service ranges larger than this (a /12 holds 2^20 addresses).
MAX_SERVICE_PREFIX = 12


def gateway_of(net: IPv4Network) -> IPv4Address:
    """The first usable address of a range: Hetzner's private gateway for it."""
    return net.network_address + 1


def reserved_in(subnet: IPv4Network) -> dict[IPv4Address, str]:
    """Addresses no host and no VIP may take, each with the reason it is taken."""
    # Hetzner reserves the first address of the network ip_range; inside the subnet that is
    # always the subnet's first address too, so the subnet's gateway entry covers it.
    reserved = {
        HETZNER_PUBLIC_GATEWAY: "Hetzner's public gateway, reserved in every network",
        subnet.network_address: f"the network address of subnet {subnet}",
        subnet.broadcast_address: f"the broadcast address of subnet {subnet}",
        gateway_of(subnet): f"the gateway of subnet {subnet} (its first address)",
    }
    return reserved


def private_range_problem(network: IPv4Network) -> str | None:
    """Hetzner networks must lie inside one RFC 1918 range."""
    if any(network.subnet_of(r) for r in RFC1918):
        return None
    ranges = ", ".join(str(r) for r in RFC1918)
    return f"{network} is not inside a private RFC 1918 range ({ranges}); Hetzner refuses it"


def subnet_problem(subnet: IPv4Network, network: IPv4Network) -> str | None:
    """The cloud subnet must lie inside the network range."""
    if subnet.subnet_of(network):
        return None
    return f"subnet {subnet} is not inside the network ip_range {network}"


def address_problem(
    ip: IPv4Address, *, subnet: IPv4Network, reserved: dict[IPv4Address, str]
) -> str | None:
    """A private address must be a usable address of the subnet."""
    if ip not in subnet:
        return f"{ip} is outside the subnet {subnet}"
    if ip in reserved:
        return f"{ip} is {reserved[ip]}"
    return None


def public_problem(ip: IPv4Address, *, network: IPv4Network | None) -> str | None:
    """A public address must be routable unicast, not a private or special address.

    Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) are accepted: the lab
    uses them as its "internet", and the example inventory uses them as placeholders.
    """
    if any(ip in r for r in RFC1918):
        return f"{ip} is a private RFC 1918 address, not a public one"
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified:
        return f"{ip} is a loopback, link-local, multicast or unspecified address"
    if ip.is_reserved or ip == IPv4Address("255.255.255.255"):
        return f"{ip} is a reserved address"
    if network is not None and ip in network:
        return f"{ip} is inside the private network {network}"
    return None


def _overlap_why(a_name: str, a: IPv4Network, b_name: str) -> str:
    """Why an overlap of the two named ranges breaks the cluster (the post's hardest lesson)."""
    if b_name == "pod_subnet":
        return (
            f"every host routes all of {a} to the Hetzner gateway, so pod traffic is sent to "
            "the cloud router and lost (the post's CoreDNS CrashLoop)"
        )
    if a_name == "network ip_range":
        return (
            f"every host routes all of {a} to the Hetzner gateway, and kube-proxy captures "
            "Service IPs on every node, so servers of the network whose addresses fall into "
            "the service range become unreachable from the cluster"
        )
    return (
        "a pod address could equal a Service IP; kube-proxy rewrites traffic to Service IPs, "
        "so such a pod is unreachable"
    )


def overlap_problem(
    a_name: str,
    a: IPv4Network,
    b_name: str,
    b: IPv4Network,
    *,
    taken: Iterable[IPv4Network],
) -> str | None:
    """Two ranges that must be disjoint; the reason names both and suggests a free range for b."""
    if not a.overlaps(b):
        return None
    taken_list = [a, *taken]
    suggestion = suggest_free(b.prefixlen, taken_list)
    hint = f"e.g. {b_name} {suggestion}" if suggestion else "shrink or move one of them"
    return (
        f"{a_name} {a} overlaps {b_name} {b}: {_overlap_why(a_name, a, b_name)}. "
        f"Choose ranges that do not overlap, {hint}"
    )


def suggest_free(prefixlen: int, taken: Iterable[IPv4Network]) -> IPv4Network | None:
    """First private range of the given size that overlaps none of `taken` (for hints only)."""
    taken_list = list(taken)
    for private in RFC1918:
        if prefixlen < private.prefixlen:
            continue
        # Walk candidates in steps; cap the walk so a hint never costs noticeable time.
        for count, candidate in enumerate(private.subnets(new_prefix=prefixlen)):
            if count > 4096:
                break
            if not any(candidate.overlaps(t) for t in taken_list):
                return candidate
    return None


def pod_capacity_problem(pod_subnet: IPv4Network, nodes: int) -> str | None:
    """The pod subnet must hold one /24 per Kubernetes node."""
    if pod_subnet.prefixlen > NODE_CIDR_PREFIX:
        return (
            f"{pod_subnet} is smaller than one node's /{NODE_CIDR_PREFIX}; "
            "Kubernetes gives every node a /24 out of the pod subnet"
        )
    capacity = 2 ** (NODE_CIDR_PREFIX - pod_subnet.prefixlen)
    if capacity < nodes:
        return (
            f"{pod_subnet} holds {capacity} node ranges of /{NODE_CIDR_PREFIX} "
            f"but the inventory has {nodes} Kubernetes nodes"
        )
    return None


def service_size_problem(service_subnet: IPv4Network) -> str | None:
    """kubeadm refuses service ranges larger than a /12."""
    if service_subnet.prefixlen < MAX_SERVICE_PREFIX:
        return (
            f"{service_subnet} is larger than a /{MAX_SERVICE_PREFIX}; "
            "kubeadm refuses such a service range"
        )
    return None
