"""Builders for resource objects in the Hetzner API's own response shapes.

The state file stores every resource exactly as the API returns it (see the lab contract), so the
objects built here must validate against `openapi/hcloud.json`. The catalogue values (locations,
data centres, the server type, the image) are plausible copies of Hetzner's public ones; the lab
only needs them to have the right shape.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from typing import Any

JSON = dict[str, Any]

_LOCATIONS: dict[str, tuple[int, str, str, str, float, float, str]] = {
    # name: (id, description, country, city, latitude, longitude, network_zone)
    "fsn1": (1, "Falkenstein DC Park 1", "DE", "Falkenstein", 50.47612, 12.370071, "eu-central"),
    "nbg1": (2, "Nuremberg DC Park 1", "DE", "Nuremberg", 49.452102, 11.076665, "eu-central"),
    "hel1": (3, "Helsinki DC Park 1", "FI", "Helsinki", 60.169855, 24.938379, "eu-central"),
    "ash": (4, "Ashburn, VA", "US", "Ashburn, VA", 39.045821, -77.487073, "us-east"),
    "hil": (5, "Hillsboro, OR", "US", "Hillsboro, OR", 45.54222, -122.951924, "us-west"),
    "sin": (6, "Singapore", "SG", "Singapore", 1.283333, 103.833333, "ap-southeast"),
}
_DATACENTERS: dict[str, tuple[int, str]] = {
    "fsn1": (4, "fsn1-dc14"),
    "nbg1": (2, "nbg1-dc3"),
    "hel1": (3, "hel1-dc2"),
    "ash": (5, "ash-dc1"),
    "hil": (6, "hil-dc1"),
    "sin": (7, "sin-dc1"),
}
NETWORK_ZONES = frozenset(v[6] for v in _LOCATIONS.values())
_SERVER_TYPE_ID = 104
_IMAGE_ID = 114690387


def now_iso() -> str:
    """Timestamps as the API writes them (RFC 3339, UTC offset spelled out)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def known_location(name: str) -> bool:
    return name in _LOCATIONS


def location(name: str) -> JSON:
    """A Location object; unknown names are rejected by the seed before they get here."""
    lid, desc, country, city, lat, lon, zone = _LOCATIONS[name]
    return {
        "id": lid,
        "name": name,
        "description": desc,
        "country": country,
        "city": city,
        "latitude": lat,
        "longitude": lon,
        "network_zone": zone,
    }


def datacenter(loc: str) -> JSON:
    did, name = _DATACENTERS[loc]
    return {
        "id": did,
        "name": name,
        "description": f"{loc.upper()} virtual DC",
        "location": location(loc),
        "server_types": {
            "available": [_SERVER_TYPE_ID],
            "available_for_migration": [_SERVER_TYPE_ID],
            "supported": [_SERVER_TYPE_ID],
        },
    }


def server_type() -> JSON:
    return {
        "id": _SERVER_TYPE_ID,
        "name": "cx22",
        "description": "CX22",
        "category": "cost_optimized",
        "architecture": "x86",
        "cores": 2,
        "cpu_type": "shared",
        "deprecated": False,
        "deprecation": None,
        "disk": 40,
        "memory": 4.0,
        "storage_type": "local",
        "locations": [
            {"id": v[0], "name": k, "deprecation": None, "available": True, "recommended": True}
            for k, v in _LOCATIONS.items()
        ],
        "prices": [],
    }


def image(created: str) -> JSON:
    return {
        "id": _IMAGE_ID,
        "type": "system",
        "status": "available",
        "name": "debian-12",
        "description": "Debian 12",
        "image_size": None,
        "disk_size": 5,
        "created": created,
        "created_from": None,
        "bound_to": None,
        "os_flavor": "debian",
        "os_version": "12",
        "rapid_deploy": True,
        "protection": {"delete": False},
        "deprecated": None,
        "deleted": None,
        "labels": {},
        "architecture": "x86",
    }


def default_ptr(ip: str) -> str:
    """Hetzner's default reverse DNS name for an IPv4 address."""
    rev = ".".join(reversed(ip.split(".")))
    return f"static.{rev}.clients.your-server.de"


def server(
    sid: int, name: str, public_ipv4: str, labels: dict[str, str], loc: str, primary_ip_id: int
) -> JSON:
    """A running server with no private network and no floating IP."""
    created = now_iso()
    return {
        "id": sid,
        "name": name,
        "status": "running",
        "created": created,
        "public_net": {
            "ipv4": {
                "id": primary_ip_id,
                "ip": public_ipv4,
                "blocked": False,
                "dns_ptr": default_ptr(public_ipv4),
            },
            "ipv6": None,
            "floating_ips": [],
            "firewalls": [],
        },
        "private_net": [],
        "server_type": server_type(),
        "datacenter": datacenter(loc),
        "location": location(loc),
        "image": image(created),
        "iso": None,
        "rescue_enabled": False,
        "locked": False,
        "backup_window": None,
        "outgoing_traffic": 0,
        "ingoing_traffic": 0,
        "included_traffic": 21990232555520,
        "protection": {"delete": False, "rebuild": False},
        "labels": dict(labels),
        "volumes": [],
        "load_balancers": [],
        "primary_disk_size": 40,
        "placement_group": None,
    }


def floating_ip(fid: int, name: str, ip: str, home_location: str) -> JSON:
    return {
        "id": fid,
        "name": name,
        "description": None,
        "ip": ip,
        "type": "ipv4",
        "server": None,
        "dns_ptr": [{"ip": ip, "dns_ptr": default_ptr(ip)}],
        "home_location": location(home_location),
        "blocked": False,
        "protection": {"delete": False},
        "labels": {},
        "created": now_iso(),
    }


def network_gateway(ip_range: str) -> str:
    """Hetzner's gateway for every subnet: the first host address of the network's range."""
    return str(ipaddress.ip_network(ip_range).network_address + 1)


def network(nid: int, name: str, ip_range: str, labels: dict[str, str]) -> JSON:
    return {
        "id": nid,
        "name": name,
        "ip_range": ip_range,
        "subnets": [],
        "routes": [],
        "servers": [],
        "load_balancers": [],
        "protection": {"delete": False},
        "labels": dict(labels),
        "created": now_iso(),
        "expose_routes_to_vswitch": False,
    }


def subnet(ip_range: str, zone: str, network_range: str) -> JSON:
    return {
        "type": "cloud",
        "ip_range": ip_range,
        "network_zone": zone,
        "gateway": network_gateway(network_range),
        "vswitch_id": None,
    }


def mac_address(server_id: int, network_id: int) -> str:
    """Stable per (server, network), in the 86:00:00 prefix Hetzner uses for private NICs."""
    n = (server_id * 7919 + network_id) & 0xFFFFFF
    return "86:00:00:" + ":".join(f"{(n >> s) & 0xFF:02x}" for s in (16, 8, 0))


def action(aid: int, command: str, resources: list[tuple[str, int]]) -> JSON:
    return {
        "id": aid,
        "command": command,
        "status": "running",
        "progress": 0,
        "started": now_iso(),
        "finished": None,
        "resources": [{"id": rid, "type": rtype} for rtype, rid in resources],
        "error": None,
    }


def firewall(fid: int, name: str, labels: dict[str, str], rules: list[JSON]) -> JSON:
    return {
        "id": fid,
        "name": name,
        "labels": dict(labels),
        "created": now_iso(),
        "rules": list(rules),
        "applied_to": [],
    }
