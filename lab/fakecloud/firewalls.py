"""Firewalls of the simulated API: validation like Hetzner's, and which servers each one covers.

A firewall is applied to servers directly (`type: server`) or through a label selector (`type:
label_selector`); the selector's servers are worked out again after every change (a server whose
labels change joins or leaves at once), and each server's `public_net.firewalls` lists the
firewalls that cover it. The lab's internet namespace filters by that (lab/sdn.py).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from lab.fakecloud import inputs, shapes
from lab.fakecloud.errors import ApiError, invalid_field
from lab.fakecloud.state import JSON, allocate_id

PROTOCOLS = ("tcp", "udp", "icmp", "esp", "gre")
MAX_CIDRS = 100
MAX_RULES = 50
RULE_FIELDS = {"direction", "protocol", "port", "source_ips", "destination_ips", "description"}


def _cidr(value: Any, field: str) -> str:
    """A CIDR block with empty host bits; IPv6 in its canonical form (RFC 5952)."""
    if not isinstance(value, str) or "/" not in value:
        raise invalid_field(field, f"{value!r} is not a CIDR block")
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as exc:
        raise invalid_field(field, f"{value!r} is not a valid CIDR block: {exc}") from exc


def _port(value: Any) -> str:
    if not isinstance(value, str):
        raise invalid_field("rules.port", "must be a string")
    low, dash, high = value.partition("-")
    if not low.isdigit() or (dash and not high.isdigit()):
        raise invalid_field("rules.port", f"invalid port {value!r}")
    lo, hi = int(low), int(high) if dash else int(low)
    if not 1 <= lo <= hi <= 65535:
        raise invalid_field("rules.port", f"invalid port range {value!r}")
    return value


def check_rules(raw: Any) -> list[JSON]:
    """Validate a `rules` list; answer it in the response shape (both IP lists present)."""
    if not isinstance(raw, list) or not all(isinstance(r, dict) for r in raw):
        raise invalid_field("rules", "must be a list of rule objects")
    if len(raw) > MAX_RULES:
        raise invalid_field("rules", f"at most {MAX_RULES} rules")
    out: list[JSON] = []
    for r in raw:
        unknown = set(r) - RULE_FIELDS
        if unknown:
            raise invalid_field(f"rules.{sorted(unknown)[0]}", "unknown field")
        direction = r.get("direction")
        if direction not in ("in", "out"):
            raise invalid_field("rules.direction", "must be 'in' or 'out'")
        protocol = r.get("protocol")
        if protocol not in PROTOCOLS:
            raise invalid_field("rules.protocol", f"must be one of {', '.join(PROTOCOLS)}")
        port = r.get("port")
        if protocol in ("tcp", "udp"):
            if port is None:
                raise invalid_field("rules.port", f"port is required for protocol {protocol}")
            port = _port(port)
        elif port is not None:
            raise invalid_field("rules.port", f"port is not allowed for protocol {protocol}")
        ips_field, other = ("source_ips", "destination_ips")
        if direction == "out":
            ips_field, other = other, ips_field
        ips = r.get(ips_field)
        if not isinstance(ips, list) or not ips:
            raise invalid_field(f"rules.{ips_field}", f"required for direction {direction}")
        if r.get(other):
            raise invalid_field(f"rules.{other}", f"not allowed for direction {direction}")
        if len(ips) > MAX_CIDRS:
            raise invalid_field(f"rules.{ips_field}", f"at most {MAX_CIDRS} CIDR blocks")
        cidrs = [_cidr(ip, f"rules.{ips_field}") for ip in ips]
        description = r.get("description")
        if description is not None and (not isinstance(description, str) or len(description) > 255):
            raise invalid_field("rules.description", "must be a string of at most 255 characters")
        out.append(
            {
                "direction": direction,
                "protocol": protocol,
                "port": port,
                "source_ips": cidrs if direction == "in" else [],
                "destination_ips": cidrs if direction == "out" else [],
                "description": description,
            }
        )
    return out


def _resource(raw: Any, field: str, state: JSON) -> JSON:
    """`{type: server, server: {id}}` or `{type: label_selector, label_selector: {selector}}`."""
    if not isinstance(raw, dict):
        raise invalid_field(field, "must be a list of resource objects")
    kind = raw.get("type")
    if kind == "server":
        sid = (raw.get("server") or {}).get("id") if isinstance(raw.get("server"), dict) else None
        if isinstance(sid, bool) or not isinstance(sid, int):
            raise invalid_field(f"{field}.server.id", "Missing required field")
        if not any(s["id"] == sid for s in state["servers"]):
            raise ApiError("firewall_resource_not_found", f"server with ID '{sid}' not found")
        return {"type": "server", "server": {"id": sid}}
    if kind == "label_selector":
        sel = raw.get("label_selector")
        selector = sel.get("selector") if isinstance(sel, dict) else None
        if not isinstance(selector, str) or not selector.strip():
            raise invalid_field(f"{field}.label_selector.selector", "Missing required field")
        inputs.label_selector(selector)  # invalid selectors are refused here
        return {"type": "label_selector", "label_selector": {"selector": selector}}
    raise invalid_field(f"{field}.type", "must be 'server' or 'label_selector'")


def check_resources(raw: Any, field: str, state: JSON) -> list[JSON]:
    if not isinstance(raw, list):
        raise invalid_field(field, "must be a list of resource objects")
    return [_resource(r, field, state) for r in raw]


def _same(a: JSON, b: JSON) -> bool:
    if a["type"] != b["type"]:
        return False
    if a["type"] == "server":
        return bool(a["server"]["id"] == b["server"]["id"])
    return bool(a["label_selector"]["selector"] == b["label_selector"]["selector"])


def applied_entry(fw: JSON, res: JSON) -> JSON | None:
    return next((e for e in fw["applied_to"] if _same(e, res)), None)


def create(state: JSON, body: dict[str, Any]) -> tuple[JSON, list[JSON]]:
    """POST /firewalls: the firewall (synchronous) and the resources to apply it to."""
    name = inputs.req_str(body, "name")
    if not name.strip() or len(name) > 128:
        raise invalid_field("name", "must be 1 to 128 characters")
    if any(f["name"] == name for f in state["firewalls"]):
        raise ApiError("uniqueness_error", "name is already used", {"fields": [{"name": "name"}]})
    labels = inputs.labels(body)
    rules = check_rules(body.get("rules") or [])
    apply_to = check_resources(body.get("apply_to") or [], "apply_to", state)
    fw = shapes.firewall(allocate_id(state), name, labels, rules)
    state["firewalls"].append(fw)
    return fw, apply_to


def update(fw: JSON, state: JSON, body: dict[str, Any]) -> None:
    """PUT /firewalls/{id}: name and labels."""
    name = inputs.opt_str(body, "name")
    if name is not None:
        if not name.strip() or len(name) > 128:
            raise invalid_field("name", "must be 1 to 128 characters")
        if any(f["name"] == name and f["id"] != fw["id"] for f in state["firewalls"]):
            raise ApiError(
                "uniqueness_error", "name is already used", {"fields": [{"name": "name"}]}
            )
        fw["name"] = name
    if "labels" in body:
        fw["labels"] = inputs.labels(body)


def delete(fw: JSON, state: JSON) -> None:
    if fw["applied_to"]:
        raise ApiError("resource_in_use", "firewall is still applied to resources")
    state["firewalls"].remove(fw)
    refresh(state)


def apply_effect(state: JSON, fw: JSON, op: str, args: dict[str, Any]) -> None:
    """A succeeded firewall action: new rules, or resources added or removed."""
    if op == "fw_rules":
        fw["rules"] = list(args["rules"])
    elif op == "fw_apply":
        for res in args["resources"]:
            if applied_entry(fw, res) is None:
                fw["applied_to"].append(dict(res))
    elif op == "fw_remove":
        fw["applied_to"] = [
            e for e in fw["applied_to"] if not any(_same(e, r) for r in args["resources"])
        ]
    else:
        raise ValueError(f"unknown firewall operation {op!r}")
    refresh(state)


def refresh(state: JSON) -> None:
    """Recompute which servers each firewall covers (label selectors follow server labels)."""
    covering: dict[int, list[int]] = {s["id"]: [] for s in state["servers"]}
    for fw in state["firewalls"]:
        for entry in fw["applied_to"]:
            if entry["type"] == "server":
                ids = [entry["server"]["id"]]
            else:
                match = inputs.label_selector(entry["label_selector"]["selector"])
                ids = [s["id"] for s in state["servers"] if match(s["labels"])]
                entry["applied_to_resources"] = [
                    {"type": "server", "server": {"id": i}} for i in ids
                ]
            for sid in ids:
                if sid in covering and fw["id"] not in covering[sid]:
                    covering[sid].append(fw["id"])
    for srv in state["servers"]:
        srv["public_net"]["firewalls"] = [
            {"id": fid, "status": "applied"} for fid in covering[srv["id"]]
        ]


def server_rules(state: JSON) -> dict[int, list[JSON] | None]:
    """Per server id: the inbound rules of every firewall covering it; None: no firewall."""
    by_id = {f["id"]: f for f in state.get("firewalls", [])}
    out: dict[int, list[JSON] | None] = {}
    for srv in state.get("servers", []):
        fws = [by_id[f["id"]] for f in srv["public_net"].get("firewalls", []) if f["id"] in by_id]
        out[srv["id"]] = (
            None if not fws else [r for f in fws for r in f["rules"] if r["direction"] == "in"]
        )
    return out
