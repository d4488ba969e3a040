"""Request input checks (body fields, query parameters, label selectors) with Hetzner's errors."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lab.fakecloud.errors import ApiError, invalid_field

MAX_PER_PAGE = 50
DEFAULT_PER_PAGE = 25


def parse_body(raw: bytes) -> dict[str, Any]:
    """A JSON object body; anything else is json_error like the real API."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError("json_error", f"Invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ApiError("json_error", "request body must be a JSON object")
    return data


def req_int(body: dict[str, Any], name: str, *, nullable: bool = False) -> int | None:
    if name not in body:
        raise invalid_field(name, "Missing required field")
    return opt_int(body, name, nullable=nullable)


def opt_int(body: dict[str, Any], name: str, *, nullable: bool = True) -> int | None:
    value = body.get(name)
    if value is None:
        if name in body and not nullable:
            raise invalid_field(name, "must not be null")
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_field(name, "must be an integer")
    return value


def req_str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if name not in body:
        raise invalid_field(name, "Missing required field")
    if not isinstance(value, str):
        raise invalid_field(name, "must be a string")
    return value


def opt_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid_field(name, "must be a string")
    return value


def str_list(body: dict[str, Any], name: str, *, required: bool) -> list[str] | None:
    if name not in body or body[name] is None:
        if required:
            raise invalid_field(name, "Missing required field")
        return None
    value = body[name]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid_field(name, "must be a list of strings")
    return list(value)


def ipv4(value: str, field: str) -> ipaddress.IPv4Address:
    try:
        return ipaddress.IPv4Address(value)
    except ValueError as exc:
        raise invalid_field(field, f"'{value}' is not a valid IPv4 address") from exc


def ipv4_net(value: str, field: str) -> ipaddress.IPv4Network:
    try:
        return ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise invalid_field(field, f"'{value}' is not a valid IPv4 network in CIDR form") from exc


def labels(body: dict[str, Any], name: str = "labels") -> dict[str, str]:
    value = body.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise invalid_field(name, "must be an object of string keys and string values")
    return dict(value)


def query_int(query: dict[str, list[str]], name: str, default: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        return int(values[-1])
    except ValueError as exc:
        raise invalid_field(name, "must be an integer") from exc


def paginate(
    items: list[dict[str, Any]], query: dict[str, list[str]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Slice a list the way Hetzner does and build `meta` (per_page is capped at 50)."""
    page = query_int(query, "page", 1)
    per_page = query_int(query, "per_page", DEFAULT_PER_PAGE)
    if page < 1:
        raise invalid_field("page", "must be 1 or greater")
    if per_page < 1:
        raise invalid_field("per_page", "must be 1 or greater")
    per_page = min(per_page, MAX_PER_PAGE)
    total = len(items)
    last = max(1, -(-total // per_page))
    chunk = items[(page - 1) * per_page : page * per_page]
    meta = {
        "pagination": {
            "page": page,
            "per_page": per_page,
            "previous_page": page - 1 if page > 1 else None,
            "next_page": page + 1 if page < last else None,
            "last_page": last,
            "total_entries": total,
        }
    }
    return chunk, meta


_TERM = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9._/-]+)\s*"
    r"(?:(?P<op>==|!=|=)\s*(?P<val>[A-Za-z0-9._-]*)"
    r"|\s+(?P<setop>in|notin)\s*\((?P<set>[^)]*)\))?\s*$"
)

Matcher = Callable[[dict[str, str]], bool]


def _split_selector(selector: str) -> list[str]:
    """Split on commas that are not inside `( ... )` sets."""
    parts: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p for p in parts if p.strip()]


@dataclass(frozen=True)
class _Term:
    """One selector term; `op` is one of =, !=, exists, absent, in, notin."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        value = labels.get(self.key)
        if self.op == "exists":
            return self.key in labels
        if self.op == "absent":
            return self.key not in labels
        if self.op in ("=", "in"):
            return value in self.values
        return value not in self.values  # != and notin


def label_selector(selector: str) -> Matcher:
    """Compile Hetzner's label selector.

    Terms: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, joined by commas.
    """
    terms: list[_Term] = []
    for term in _split_selector(selector):
        m = _TERM.match(term)
        if m is None or (m["neg"] and (m["op"] or m["setop"])):
            raise invalid_field("label_selector", f"invalid label selector term '{term.strip()}'")
        key = m["key"]
        if m["neg"]:
            terms.append(_Term(key, "absent"))
        elif m["op"]:
            terms.append(_Term(key, "=" if m["op"] in ("=", "==") else "!=", frozenset([m["val"]])))
        elif m["setop"]:
            values = frozenset(x.strip() for x in m["set"].split(",") if x.strip())
            terms.append(_Term(key, m["setop"], values))
        else:
            terms.append(_Term(key, "exists"))
    return lambda lb: all(t.matches(lb) for t in terms)
