"""Check response bodies against the response schemas of lab/fakecloud/openapi/hcloud.json.

Finds the operation by concrete path + method (the most specific template wins: a literal
segment beats a `{param}`), takes the schema for the exact status or its `4xx`/`5xx` class, and
validates with the OpenAPI 3.0 dialect; `$ref`s resolve against the whole document.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

from openapi_schema_validator import OAS30Validator

DOC = Path(__file__).resolve().parents[2] / "lab" / "fakecloud" / "openapi" / "hcloud.json"


def _nullable_refs(node: Any) -> Any:
    """Read `{allOf: [$ref], nullable: true}` as "this object or null".

    That is how the document (generated from Hetzner's spec) marks nullable references, e.g.
    `server.iso`, `server.image`, `public_net.ipv6`, and the real API sends null there. A strict
    OAS 3.0.3 validator ignores `nullable` without a sibling `type`, so it would reject the real
    API's own answers; this rewrite states the intended meaning explicitly and changes nothing else.
    """
    if isinstance(node, list):
        return [_nullable_refs(x) for x in node]
    if not isinstance(node, dict):
        return node
    node = {k: _nullable_refs(v) for k, v in node.items()}
    if node.get("nullable") is True and "allOf" in node and "type" not in node:
        rest = {k: v for k, v in node.items() if k != "nullable"}
        return {"anyOf": [rest, {"enum": [None]}]}
    return node


@functools.cache
def _doc() -> dict[str, Any]:
    return _nullable_refs(json.loads(DOC.read_text(encoding="utf-8")))  # type: ignore[no-any-return]


@functools.cache
def _templates() -> list[tuple[re.Pattern[str], str, int]]:
    result = []
    for template in _doc()["paths"]:
        rx = "^" + re.sub(r"\{[^}]+\}", "[^/]+", template) + "$"
        result.append((re.compile(rx), template, template.count("{")))
    return result


def template_for(path: str) -> str:
    path = path.split("?", 1)[0]
    if path.startswith("/v1/"):
        path = path[3:]
    hits = [(n, t) for rx, t, n in _templates() if rx.match(path)]
    if not hits:
        raise LookupError(f"no OpenAPI path matches {path}")
    return min(hits)[1]


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    op = _doc()["paths"][template_for(path)].get(method.lower())
    if op is None:
        raise LookupError(f"{method} {path}: no such operation in the OpenAPI document")
    responses = op["responses"]
    resp = responses.get(str(status)) or responses.get(f"{str(status)[0]}xx")
    if resp is None:
        raise LookupError(f"{method} {path}: no response {status} documented")
    schema = resp["content"]["application/json"]["schema"]
    return {**schema, "components": _doc()["components"]}


def validate(path: str, method: str, status: int, body: Any) -> None:
    """Raise jsonschema.ValidationError if `body` is not what the real API would send."""
    schema = response_schema(path, method, status)
    OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER).validate(body)


def validate_error(body: Any) -> None:
    """The generic error envelope, for answers to paths the document does not have."""
    schema = {"$ref": "#/components/schemas/error_response", "components": _doc()["components"]}
    OAS30Validator(schema, format_checker=OAS30Validator.FORMAT_CHECKER).validate(body)
