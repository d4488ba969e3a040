"""Field types of the inventory: names, addresses, ranges, ports, with operator-facing reasons.

Each type refuses what would break later on a host (an address starting with "-" would become an
ssh option, an upper-case node name breaks Heartbeat) and says why in words an operator can act on.
"""

from __future__ import annotations

import math
import re
import reprlib
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network, ip_network
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"^{_LABEL}$")
_DNS_NAME_RE = re.compile(rf"^{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?$")
_K8S_NAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_IFACE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$")
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VERSION_RE = re.compile(r"^1\.(\d{2})$")
MIN_MINOR = 31  # kubeadm.k8s.io/v1beta4, which the runbook renders, arrived in 1.31


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 2, 4, 4, 40, 40


def show(value: object) -> str:
    """A short repr for messages: bounded work and length whatever the input (an inventory
    value can be a megabyte string or an alias-expanded tree)."""
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class SSHEndpoint:
    """A jump host given as ``[user@]host[:port]`` (user/port fall back to the ``ssh`` section)."""

    host: str
    user: str | None = None
    port: int | None = None


def is_hostname(name: str) -> bool:
    """RFC 1123 label, lower-case, at most 63 characters (Heartbeat and Kubernetes need this)."""
    return bool(_HOSTNAME_RE.match(name))


def is_dns_name(name: str) -> bool:
    return len(name) <= 253 and bool(_DNS_NAME_RE.match(name))


def parse_endpoint(text: str) -> SSHEndpoint:
    """Parse ``[user@]host[:port]``; raises ValueError with the reason."""
    user, _, hostport = text.rpartition("@")
    host, sep, port_text = hostport.partition(":")
    if user.startswith("-") or (user and not re.match(r"^[A-Za-z0-9_.][A-Za-z0-9_.-]*$", user)):
        raise ValueError(f"{show(text)}: bad user name")
    if not (is_dns_name(host) or _is_ipv4(host)):
        raise ValueError(f"{show(text)}: expected [user@]host[:port] or a host of the inventory")
    port = None
    if sep:
        if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{show(text)}: the port must be a number from 1 to 65535")
        port = int(port_text)
    return SSHEndpoint(host=host, user=user or None, port=port)


def _is_ipv4(text: str) -> bool:
    try:
        IPv4Address(text)
    except ValueError:
        return False
    return True


def _ip_before(value: Any) -> Any:
    """Refuse numbers: ``ipaddress`` would read the YAML integer 5 as 0.0.0.5."""
    if isinstance(value, str | IPv4Address):
        return value
    raise ValueError(f"write the address as a string such as 10.143.0.50 (got {show(value)})")


def _net_before(value: Any) -> Any:
    """Explain host bits (10.143.0.5/16) instead of pydantic's bare 'not a valid network'."""
    if isinstance(value, IPv4Network):
        return value
    if not isinstance(value, str):
        raise ValueError(f"write the range as a string such as 10.143.0.0/16 (got {show(value)})")
    try:
        loose = ip_network(value, strict=False)
    except ValueError:
        raise ValueError(f"{show(value)} is not an IPv4 range such as 10.143.0.0/16") from None
    if str(loose) != value and loose.version == 4 and "/" in value:
        raise ValueError(f"{value} has host bits set; the range is {loose}")
    return value


def _any_net_before(value: Any) -> Any:
    """An IPv4 or IPv6 range in CIDR form (firewall sources); host bits are explained."""
    if isinstance(value, IPv4Network | IPv6Network):
        return value
    if not isinstance(value, str):
        raise ValueError(f"write the range as a string such as 192.0.2.0/24 (got {show(value)})")
    try:
        loose = ip_network(value, strict=False)
    except ValueError:
        raise ValueError(
            f"{show(value)} is not an IPv4 or IPv6 range such as 192.0.2.0/24 or 2001:db8::/32"
        ) from None
    if "/" not in value:
        raise ValueError(f"{show(value)}: write the range with its prefix, e.g. {loose}")
    try:
        ip_network(value, strict=True)
    except ValueError:
        raise ValueError(f"{value} has host bits set; the range is {loose}") from None
    return value


def _check(pattern: re.Pattern[str], what: str) -> Any:
    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{show(value)} is not {what}")
        return value

    return AfterValidator(check)


def _check_dns(value: str) -> str:
    if not is_dns_name(value):
        raise ValueError(f"{show(value)} is not a DNS name")
    return value


def _check_address(value: str) -> str:
    if not (is_dns_name(value) or _is_ipv4(value)):  # also refuses a leading "-" (ssh option)
        raise ValueError(f"{show(value)} is not a DNS name or IPv4 address")
    return value


def _check_san(value: str) -> str:
    if not (is_dns_name(value) or _is_ipv4(value)):
        raise ValueError(f"{show(value)} is neither an IPv4 address nor a DNS name")
    return value


def _check_url(value: str) -> str:
    if not re.match(r"^https?://[^\s/]+(/\S*)?$", value):
        raise ValueError(f"{show(value)} is not an http(s) URL")
    return value.rstrip("/")


def _check_fetch_url(value: str) -> str:
    if not re.match(r"^(https?://[^\s/]+(/\S*)?|file:/\S+)$", value):
        raise ValueError(f"{show(value)} is not an http(s) or file: URL")
    return value


IPv4 = Annotated[IPv4Address, BeforeValidator(_ip_before)]
Net = Annotated[IPv4Network, BeforeValidator(_net_before)]
AnyNet = Annotated[IPv4Network | IPv6Network, BeforeValidator(_any_net_before)]
Port = Annotated[int, Field(strict=True, ge=1, le=65535)]
StrictBool = Annotated[bool, Field(strict=True)]
Label = Annotated[str, _check(_HOSTNAME_RE, "a lower-case RFC 1123 label")]
K8sName = Annotated[str, _check(_K8S_NAME_RE, "a lower-case Kubernetes object name")]
Name = Annotated[str, _check(re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"), "a plain name")]
Iface = Annotated[str, _check(_IFACE_RE, "a network interface name (at most 15 characters)")]
#: an interface name, or "" (left out: found from the cloud at run time, runbook.cloud.discover)
OptIface = Annotated[
    str,
    _check(
        re.compile(f"{_IFACE_RE.pattern}|^$"), "a network interface name (at most 15 characters)"
    ),
]
DNSName = Annotated[str, AfterValidator(_check_dns)]
Url = Annotated[str, AfterValidator(_check_url)]
FetchUrl = Annotated[str, AfterValidator(_check_fetch_url)]  # http(s) or file: (local mirrors)
Zone = Annotated[str, _check(re.compile(r"^[a-z]+(-[a-z]+)+$"), "a network zone like eu-central")]
EnvName = Annotated[str, _check(_ENV_RE, "an environment variable name")]
Address = Annotated[str, AfterValidator(_check_address)]
SubjectAltName = Annotated[str, AfterValidator(_check_san)]


def _in_range(low: float, high: float, unit: str) -> Any:
    """A finite number from ``low`` to ``high``; the message names the allowed range."""

    def check(value: float) -> float:
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"must be from {low:g} to {high:g} {unit} (got {show(value)})")
        return value

    return AfterValidator(check)


# Every time and count has a finite upper bound: .inf or 1e9 would pass a bare "> 0" and then
# overflow (OverflowError, "timestamp too large") or hang a run for decades.
NetTimeout = Annotated[float, Field(strict=True), _in_range(0.1, 300, "seconds")]
Deadline = Annotated[float, Field(strict=True), _in_range(1, 3600, "seconds")]
HbSeconds = Annotated[int, Field(strict=True), _in_range(1, 600, "seconds")]
# Heartbeat's keepalive may be shorter than a second (ha.cf then says e.g. `250ms`): its main
# loop also wakes to send, so a short keepalive shortens how long its own takeover messages wait
HbKeepalive = Annotated[float, Field(strict=True), _in_range(0.1, 600, "seconds")]
Interval = Annotated[int, Field(strict=True), _in_range(1, 3600, "seconds")]
EtcdMillis = Annotated[int, Field(strict=True), _in_range(10, 60000, "milliseconds")]
MAX_HOSTS = 100  # a Hetzner network attaches at most 100 servers
MAX_LIST = 64  # entries of a list or a mapping such as labels, cert_sans, public_allow
