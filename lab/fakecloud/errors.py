"""Hetzner's error envelope and its code → HTTP status table (documented + operation codes)."""

from __future__ import annotations

from typing import Any

STATUS_BY_CODE: dict[str, int] = {
    "json_error": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "uniqueness_error": 409,
    "conflict": 409,
    "invalid_input": 422,
    "server_already_attached": 422,
    "server_not_attached_to_network": 422,
    "ip_not_available": 422,
    "no_subnet_available": 422,
    "networks_overlap": 422,
    "firewall_already_applied": 422,
    "firewall_already_removed": 422,
    "firewall_resource_not_found": 422,
    "resource_in_use": 422,
    "locked": 423,
    "rate_limit_exceeded": 429,
    "server_error": 500,
    "bad_gateway": 502,
    "unavailable": 503,
    "timeout": 504,
}

DEFAULT_MESSAGES: dict[str, str] = {
    "json_error": "Invalid JSON",
    "unauthorized": "unable to authenticate",
    "forbidden": "insufficient permissions for this request",
    "not_found": "resource not found",
    "conflict": "the resource has changed, please retry",
    "locked": "resource is locked by another action",
    "rate_limit_exceeded": "limit of requests per hour reached",
    "server_error": "internal server error",
    "bad_gateway": "bad gateway",
    "unavailable": "service is currently unavailable",
    "timeout": "request timed out",
}


class ApiError(Exception):
    """An error answer; raised anywhere in request handling, rendered by the HTTP layer."""

    def __init__(self, code: str, message: str | None = None, details: Any = None) -> None:
        self.code = code
        self.message = message or DEFAULT_MESSAGES.get(code, code.replace("_", " "))
        self.details = {} if details is None else details
        super().__init__(f"{code}: {self.message}")

    @property
    def status(self) -> int:
        return STATUS_BY_CODE.get(self.code, 500)

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def invalid_field(name: str, message: str) -> ApiError:
    """invalid_input naming the field, shaped like Hetzner's `details.fields`."""
    return ApiError(
        "invalid_input",
        f"invalid input in field '{name}'",
        {"fields": [{"name": name, "messages": [message]}]},
    )


def not_found(kind: str, rid: object) -> ApiError:
    return ApiError("not_found", f"{kind} with ID '{rid}' not found", {"resource": kind})
