"""The procedure's steps, registered once: name, number, roles, class, what a run connects to.

The walkthrough runs `PROCEDURE` in order; a step task (`inv prepare`, `inv lb.setup`, …) runs a
few of its entries; `inv render` asks the entries that write files. HAProxy (5) comes before
Heartbeat (4): HAProxy is configured before anything (the watchdog on the VIP holder) starts it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..core.engine import Step
from ..inventory import Inventory
from .admin_user import AdminUserStep
from .certs import CertsStep
from .cni import CniStep
from .firewall import FirewallStep
from .haproxy import HaproxyStep
from .heartbeat import HeartbeatStep
from .init import InitStep
from .insecure_api import InsecureApiStep
from .join import JoinStep
from .lb import LbStep
from .network import NetworkStep
from .prepare import PrepareStep
from .reboot import RebootStep


@dataclass(frozen=True)
class StepEntry:
    """One procedure step as the tasks and the walkthrough know it."""

    name: str
    """The walkthrough's name for it (`--from`, `--only`)."""
    number: int
    """The procedure's step number (docs/procedure.md)."""
    cls: type[Step]
    args: tuple[Any, ...] = ()
    roles: tuple[str, ...] | None = None
    """The hosts `--host` may name (None: any host)."""
    cloud: bool = False
    """Talks to the Hetzner API."""
    hosts: bool = True
    """Connects to hosts (the network step only talks to the API)."""
    first_cp: bool = False
    """Also talks to the first control plane without it being a target (join credentials,
    kubectl)."""
    renders: bool = True
    """May write files to hosts (`inv render` asks it)."""
    token_writes: bool = False
    """Needs an API token that may write: it writes through the API, or it deploys the token
    the failover moves the addresses with."""

    def make(self) -> Step:
        return self.cls(*self.args)


PREPARE = StepEntry("prepare", 1, PrepareStep)
REBOOT = StepEntry("reboot", 1, RebootStep, renders=False)
NETWORK = StepEntry(
    "network", 2, NetworkStep, cloud=True, hosts=False, renders=False, token_writes=True
)
# before anything listens (lb, heartbeat …)
FIREWALL = StepEntry("firewall", 2, FirewallStep, cloud=True, renders=False, token_writes=True)
LB = StepEntry("lb", 3, LbStep, roles=("lb",), cloud=True, token_writes=True)
HAPROXY = StepEntry("haproxy", 5, HaproxyStep, roles=("lb",))
HEARTBEAT = StepEntry("heartbeat", 4, HeartbeatStep, roles=("lb",), token_writes=True)
INIT = StepEntry("init", 6, InitStep, roles=("control-plane",))
JOIN = StepEntry("join", 7, JoinStep, ("control-plane",), roles=("control-plane",), first_cp=True)
JOIN_WORKERS = StepEntry("join-workers", 7, JoinStep, ("worker",), roles=("worker",), first_cp=True)
CNI = StepEntry("cni", 8, CniStep, roles=("control-plane",))
ADMIN_USER = StepEntry("admin-user", 9, AdminUserStep, roles=("control-plane",))
# optional: off unless enabled
INSECURE_API = StepEntry(
    "insecure-api", 9, InsecureApiStep, roles=("control-plane", "lb"), first_cp=True
)
CERTS = StepEntry("certs", 10, CertsStep, roles=("control-plane",))

PROCEDURE: tuple[StepEntry, ...] = (
    PREPARE,
    REBOOT,
    NETWORK,
    FIREWALL,
    LB,
    HAPROXY,
    HEARTBEAT,
    INIT,
    JOIN,
    JOIN_WORKERS,
    CNI,
    ADMIN_USER,
    INSECURE_API,
    CERTS,
)
"""Every step, in the order the walkthrough runs them."""


@dataclass(frozen=True)
class Scope:
    """What a run of some entries needs: whose `--host` names are allowed, what it connects to."""

    roles: tuple[str, ...] | None
    cloud: bool
    hosts: bool
    first_cp: bool
    token_writes: bool = False

    def also_connect(self, inv: Inventory) -> list[str]:
        """Hosts the steps talk to without being targets."""
        return [inv.first_control_plane.name] if self.first_cp else []


def scope(entries: Sequence[StepEntry]) -> Scope:
    """The union of the entries' needs (any entry open to every host: every host)."""
    roles: tuple[str, ...] | None = ()
    for e in entries:
        roles = None if roles is None or e.roles is None else (*roles, *e.roles)
    return Scope(
        roles=None if roles is None else tuple(dict.fromkeys(roles)),
        cloud=any(e.cloud for e in entries),
        hosts=any(e.hosts for e in entries),
        first_cp=any(e.first_cp for e in entries),
        token_writes=any(e.token_writes for e in entries),
    )


def rendering_steps() -> list[Step]:
    """Instances of every step that may write files to hosts, in the procedure's order."""
    return [e.make() for e in PROCEDURE if e.renders]
