"""The mutating operations: validate a request like Hetzner does, and later apply its effect.

Validation happens when the request arrives (errors are answered at once); the effect is applied
when the action succeeds (see model.py). IPs named by actions still running count as taken, so
two concurrent requests can never both get the same address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from lab.fakecloud import firewalls, inputs, shapes
from lab.fakecloud.errors import ApiError, invalid_field, not_found
from lab.fakecloud.state import JSON, allocate_id

KINDS = {
    "servers": "server",
    "networks": "network",
    "floating_ips": "floating_ip",
    "firewalls": "firewall",
}
_PRIVATE = [ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]


@dataclass(frozen=True)
class Plan:
    """A validated action, ready to be started: what it is called, touches, locks and does."""

    command: str
    resources: list[tuple[str, int]]
    lock: tuple[str, int]
    op: str
    args: dict[str, Any]


def find(state: JSON, collection: str, rid: int) -> JSON:
    for item in state[collection]:
        if item["id"] == rid:
            return item
    raise not_found(KINDS[collection], rid)


def _by_name(items: list[JSON], name: str) -> JSON | None:
    return next((i for i in items if i["name"] == name), None)


def _subnets(network: JSON) -> list[ipaddress.IPv4Network]:
    return [ipaddress.IPv4Network(s["ip_range"]) for s in network["subnets"]]


def _taken(state: JSON, nid: int, *, skip_aliases_of: int | None = None) -> set[str]:
    """Every IP of network `nid` held by a server or reserved by a running action."""
    taken: set[str] = set()
    for srv in state["servers"]:
        for pn in srv["private_net"]:
            if pn["network"] == nid:
                taken.add(pn["ip"])
                if srv["id"] != skip_aliases_of:
                    taken.update(pn["alias_ips"])
    for p in state["pending"]:
        if p["args"].get("network") == nid:
            taken.update(p["args"].get("reserve", []))
    return taken


def _check_ip(network: JSON, value: str, field: str) -> str:
    """Inside a subnet of the network and not one of the reserved addresses."""
    ip = inputs.ipv4(value, field)
    gateway = ipaddress.IPv4Address(shapes.network_gateway(network["ip_range"]))
    for sub in _subnets(network):
        if ip in sub:
            if ip in (sub.network_address, sub.broadcast_address, gateway):
                raise ApiError("ip_not_available", f"IP {ip} is reserved in subnet {sub}")
            return str(ip)
    raise invalid_field(field, f"IP {ip} is not inside a subnet of network {network['id']}")


def _check_aliases(network: JSON, aliases: list[str], primary: str, taken: set[str]) -> list[str]:
    result = [_check_ip(network, a, "alias_ips") for a in aliases]
    if len(set(result)) != len(result):
        raise invalid_field("alias_ips", "alias IPs must be unique")
    for ip in result:
        if ip == primary or ip in taken:
            raise ApiError("ip_not_available", f"The provided Network IP {ip} is not available")
    return result


def _attached(server: JSON, nid: int) -> JSON | None:
    return next((pn for pn in server["private_net"] if pn["network"] == nid), None)


def _body_network(state: JSON, body: dict[str, Any]) -> JSON:
    nid = inputs.req_int(body, "network")
    return find(state, "networks", int(nid or 0))


def plan_attach(state: JSON, server: JSON, body: dict[str, Any]) -> Plan:
    network = _body_network(state, body)
    nid = network["id"]
    pending = any(
        p["op"] == "attach" and p["args"]["server"] == server["id"] for p in state["pending"]
    )
    if _attached(server, nid) is not None or pending:
        raise ApiError("server_already_attached", "The server is already attached to the network")
    zone = server["location"]["network_zone"]
    if not any(s["network_zone"] == zone for s in network["subnets"]):
        raise ApiError("no_subnet_available", f"network has no subnet in network zone {zone}")
    taken = _taken(state, nid)
    ip_value = inputs.opt_str(body, "ip")
    if ip_value is not None:
        ip = _check_ip(network, ip_value, "ip")
        if ip in taken:
            raise ApiError("ip_not_available", f"The provided Network IP {ip} is not available")
    else:
        ip = _first_free(network, zone, inputs.opt_str(body, "ip_range"), taken)
    aliases = _check_aliases(
        network, inputs.str_list(body, "alias_ips", required=False) or [], ip, taken
    )
    args = {"server": server["id"], "network": nid, "ip": ip, "alias_ips": aliases}
    args["reserve"] = [ip, *aliases]
    return Plan(
        "attach_to_network",
        [("server", server["id"]), ("network", nid)],
        ("server", server["id"]),
        "attach",
        args,
    )


def _first_free(network: JSON, zone: str, ip_range: str | None, taken: set[str]) -> str:
    gateway = ipaddress.IPv4Address(shapes.network_gateway(network["ip_range"]))
    subs = [s for s in network["subnets"] if s["network_zone"] == zone]
    if ip_range is not None:
        subs = [s for s in subs if s["ip_range"] == ip_range]
        if not subs:
            raise invalid_field("ip_range", f"no subnet {ip_range} in network {network['id']}")
    for s in subs:
        for host in ipaddress.IPv4Network(s["ip_range"]).hosts():
            if host != gateway and str(host) not in taken:
                return str(host)
    raise ApiError("no_subnet_available", "No Subnet or IP is available for the Server")


def plan_detach(state: JSON, server: JSON, body: dict[str, Any]) -> Plan:
    network = _body_network(state, body)
    if _attached(server, network["id"]) is None:
        raise ApiError(
            "server_not_attached_to_network", "The server is not attached to the network"
        )
    return Plan(
        "detach_from_network",
        [("server", server["id"]), ("network", network["id"])],
        ("server", server["id"]),
        "detach",
        {"server": server["id"], "network": network["id"]},
    )


def plan_alias(state: JSON, server: JSON, body: dict[str, Any]) -> Plan:
    network = _body_network(state, body)
    aliases_in = inputs.str_list(body, "alias_ips", required=True) or []
    pn = _attached(server, network["id"])
    if pn is None:
        raise ApiError(
            "server_not_attached_to_network", "The server is not attached to the network"
        )
    taken = _taken(state, network["id"], skip_aliases_of=server["id"])
    aliases = _check_aliases(network, aliases_in, pn["ip"], taken)
    args = {"server": server["id"], "network": network["id"], "alias_ips": aliases}
    args["reserve"] = list(aliases)
    return Plan(
        "change_alias_ips",
        [("server", server["id"]), ("network", network["id"])],
        ("server", server["id"]),
        "alias",
        args,
    )


def plan_assign(state: JSON, fip: JSON, body: dict[str, Any]) -> Plan:
    sid = inputs.req_int(body, "server")
    server = find(state, "servers", int(sid or 0))
    if server["location"]["network_zone"] != fip["home_location"]["network_zone"]:
        raise invalid_field("server", "server is in another network zone than the Floating IP")
    return Plan(
        "assign_floating_ip",
        [("floating_ip", fip["id"]), ("server", server["id"])],
        ("floating_ip", fip["id"]),
        "assign",
        {"floating_ip": fip["id"], "server": server["id"]},
    )


def plan_unassign(state: JSON, fip: JSON, body: dict[str, Any]) -> Plan:
    resources = [("floating_ip", fip["id"])]
    if fip["server"] is not None:
        resources.append(("server", fip["server"]))
    return Plan(
        "unassign_floating_ip",
        resources,
        ("floating_ip", fip["id"]),
        "unassign",
        {"floating_ip": fip["id"]},
    )


def plan_dns_ptr(state: JSON, fip: JSON, body: dict[str, Any]) -> Plan:
    ip = inputs.req_str(body, "ip")
    if "dns_ptr" not in body:
        raise invalid_field("dns_ptr", "Missing required field")
    ptr = inputs.opt_str(body, "dns_ptr")
    if ip != fip["ip"]:
        raise invalid_field("ip", f"IP {ip} does not belong to this Floating IP")
    return Plan(
        "change_dns_ptr",
        [("floating_ip", fip["id"])],
        ("floating_ip", fip["id"]),
        "dns_ptr",
        {"floating_ip": fip["id"], "ip": ip, "dns_ptr": ptr},
    )


def _subnet_from(
    body: dict[str, Any], net_range: ipaddress.IPv4Network, existing: list[Any]
) -> JSON:
    """Validate one subnet request (`type`, `network_zone`, optional `ip_range`)."""
    stype = inputs.req_str(body, "type")
    if stype not in ("cloud", "server"):
        raise invalid_field("type", f"subnet type {stype!r} is not supported (cloud, server)")
    zone = inputs.req_str(body, "network_zone")
    if zone not in shapes.NETWORK_ZONES:
        raise invalid_field("network_zone", f"unknown network zone {zone!r}")
    value = inputs.opt_str(body, "ip_range")
    if value is None:
        sub = next(
            (
                c
                for c in net_range.subnets(new_prefix=max(24, net_range.prefixlen))
                if not any(c.overlaps(e) for e in existing)
            ),
            None,
        )
        if sub is None:
            raise ApiError("invalid_input", "no free /24 left in the network's ip_range")
    else:
        sub = inputs.ipv4_net(value, "ip_range")
        if not sub.subnet_of(net_range):
            raise invalid_field(
                "ip_range", f"subnet {sub} is not inside the network range {net_range}"
            )
        if sub.prefixlen > 30:
            raise invalid_field("ip_range", "subnets must be /30 or larger")
        if any(sub.overlaps(e) for e in existing):
            raise invalid_field("ip_range", f"subnet {sub} overlaps an existing subnet")
    result = shapes.subnet(str(sub), zone, str(net_range))
    result["type"] = stype
    return result


def create_network(state: JSON, body: dict[str, Any]) -> JSON:
    """POST /networks: synchronous in the real API too (no action in the answer)."""
    name = inputs.req_str(body, "name")
    if not name.strip():
        raise invalid_field("name", "must not be empty")
    net_range = inputs.ipv4_net(inputs.req_str(body, "ip_range"), "ip_range")
    if not any(net_range.subnet_of(p) for p in _PRIVATE):
        raise invalid_field("ip_range", "must be inside a private range of RFC 1918")
    if net_range.prefixlen > 24:
        raise invalid_field("ip_range", "the network must be /24 or larger")
    labels = inputs.labels(body)
    subnets_in = body.get("subnets") or []
    if not isinstance(subnets_in, list) or not all(isinstance(s, dict) for s in subnets_in):
        raise invalid_field("subnets", "must be a list of subnet objects")
    routes = body.get("routes") or []
    if not isinstance(routes, list) or not all(
        isinstance(r, dict)
        and isinstance(r.get("destination"), str)
        and isinstance(r.get("gateway"), str)
        for r in routes
    ):
        raise invalid_field("routes", "must be a list of {destination, gateway}")
    if _by_name(state["networks"], name) is not None:
        raise ApiError("uniqueness_error", "name is already used", {"fields": [{"name": "name"}]})
    subnets: list[JSON] = []
    for s in subnets_in:
        existing = [ipaddress.IPv4Network(x["ip_range"]) for x in subnets]
        subnets.append(_subnet_from(s, net_range, existing))
    net = shapes.network(allocate_id(state), name, str(net_range), labels)
    net["subnets"] = subnets
    net["routes"] = [{"destination": r["destination"], "gateway": r["gateway"]} for r in routes]
    state["networks"].append(net)
    return net


def plan_add_subnet(state: JSON, network: JSON, body: dict[str, Any]) -> Plan:
    sub = _subnet_from(body, ipaddress.IPv4Network(network["ip_range"]), _subnets(network))
    return Plan(
        "add_subnet",
        [("network", network["id"])],
        ("network", network["id"]),
        "add_subnet",
        {"network_id": network["id"], "subnet": sub},
    )


def apply(state: JSON, op: str, args: dict[str, Any]) -> None:
    """Make a succeeded action's change real in the state."""
    if op in ("attach", "detach", "alias"):
        server = find(state, "servers", args["server"])
        network = find(state, "networks", args["network"])
        if op == "attach":
            server["private_net"].append(
                {
                    "network": network["id"],
                    "ip": args["ip"],
                    "alias_ips": list(args["alias_ips"]),
                    "mac_address": shapes.mac_address(server["id"], network["id"]),
                }
            )
            if server["id"] not in network["servers"]:
                network["servers"].append(server["id"])
        elif op == "detach":
            server["private_net"] = [
                p for p in server["private_net"] if p["network"] != network["id"]
            ]
            network["servers"] = [s for s in network["servers"] if s != server["id"]]
        else:
            pn = _attached(server, network["id"])
            if pn is not None:
                pn["alias_ips"] = list(args["alias_ips"])
    elif op in ("assign", "unassign"):
        fip = find(state, "floating_ips", args["floating_ip"])
        for srv in state["servers"]:
            fips = srv["public_net"]["floating_ips"]
            if fip["id"] in fips:
                fips.remove(fip["id"])
        fip["server"] = args.get("server")
        if fip["server"] is not None:
            find(state, "servers", fip["server"])["public_net"]["floating_ips"].append(fip["id"])
    elif op == "dns_ptr":
        fip = find(state, "floating_ips", args["floating_ip"])
        ptr = args["dns_ptr"] if args["dns_ptr"] is not None else shapes.default_ptr(args["ip"])
        fip["dns_ptr"] = [e for e in fip["dns_ptr"] if e["ip"] != args["ip"]]
        fip["dns_ptr"].append({"ip": args["ip"], "dns_ptr": ptr})
    elif op == "add_subnet":
        find(state, "networks", args["network_id"])["subnets"].append(dict(args["subnet"]))
    elif op.startswith("fw_"):
        firewalls.apply_effect(state, find(state, "firewalls", args["firewall"]), op, args)
    elif op == "none":  # an action that changes nothing the lab models (`FakeCloud.busy`)
        pass
    else:
        raise ValueError(f"unknown operation {op!r}")


def plan_set_rules(state: JSON, fw: JSON, body: dict[str, Any]) -> Plan:
    if "rules" not in body:
        raise invalid_field("rules", "Missing required field")
    rules = firewalls.check_rules(body["rules"])
    return Plan(
        "set_firewall_rules",
        [("firewall", fw["id"])],
        ("firewall", fw["id"]),
        "fw_rules",
        {"firewall": fw["id"], "rules": rules},
    )


def _fw_resources_plan(
    state: JSON, fw: JSON, body: dict[str, Any], field: str, *, apply: bool
) -> Plan:
    if field not in body:
        raise invalid_field(field, "Missing required field")
    resources = firewalls.check_resources(body[field], field, state)
    if not resources:
        raise invalid_field(field, "must not be empty")
    for res in resources:
        present = firewalls.applied_entry(fw, res) is not None
        if apply and present:
            raise ApiError("firewall_already_applied", "firewall is already applied to resource")
        if not apply and not present:
            raise ApiError("firewall_already_removed", "firewall is not applied to resource")
    servers = [("server", r["server"]["id"]) for r in resources if r["type"] == "server"]
    return Plan(
        "apply_firewall" if apply else "remove_firewall",
        [("firewall", fw["id"]), *servers],
        ("firewall", fw["id"]),
        "fw_apply" if apply else "fw_remove",
        {"firewall": fw["id"], "resources": resources},
    )


def plan_apply_firewall(state: JSON, fw: JSON, body: dict[str, Any]) -> Plan:
    return _fw_resources_plan(state, fw, body, "apply_to", apply=True)


def plan_remove_firewall(state: JSON, fw: JSON, body: dict[str, Any]) -> Plan:
    return _fw_resources_plan(state, fw, body, "remove_from", apply=False)


def update_server(state: JSON, server: JSON, body: dict[str, Any]) -> None:
    """PUT /servers/{id}: name and labels (synchronous); label selectors follow at once."""
    name = inputs.opt_str(body, "name")
    if name is not None:
        if not name.strip():
            raise invalid_field("name", "must not be empty")
        if any(s["name"] == name and s["id"] != server["id"] for s in state["servers"]):
            raise ApiError(
                "uniqueness_error", "name is already used", {"fields": [{"name": "name"}]}
            )
        server["name"] = name
    if "labels" in body:
        server["labels"] = inputs.labels(body)
    firewalls.refresh(state)
