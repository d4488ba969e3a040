"""Hetzner Cloud operations through `hcloud`, shaped like resources so they appear in the plan.

The cloud is one more target (`CLOUD`) of a step: its resources read with the client during
check and write only in apply. A dry-run CloudTarget refuses writes like a dry-run Host.

Retries: the hcloud client already retries rate limits, conflicts, timeouts and 502/504 (up to
5 times with backoff); wrapping those again multiplied them (~90 s instead of 60 on a steady
429). Only what hcloud does not retry is retried here: `locked` (an action is still running),
`unavailable`/503 and a refused connection (the API is down), with a progress line and a total
deadline (`hcloud.retry_deadline`) that spans consecutive calls while the API stays down.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import requests
from hcloud import APIException, Client
from hcloud.networks import NetworkSubnet

from ..core.interrupt import StopFlag
from ..core.plan import CLOUD, Change
from ..core.remote import DryRunViolation, Fact
from ..core.resources import Resource
from ..core.target import Target

if TYPE_CHECKING:
    from ..core.console import Ui
    from ..inventory import Inventory

T = TypeVar("T")
# error codes hcloud does not retry itself and that pass: a running action, maintenance
RETRY_CODES: frozenset[str | int] = frozenset({"locked", "unavailable", 503})


class CloudTokenMissing(Exception):
    """The inventory's token variable is not set (exit 2)."""


class CloudError(RuntimeError):
    """A cloud precondition does not hold (e.g. a server that does not exist)."""


class CloudTarget:
    """The Hetzner project as a target: reads any time, writes only outside dry-run."""

    name = CLOUD

    def __init__(
        self,
        client: Client,
        *,
        dry_run: bool = False,
        ui: Ui | None = None,
        retry_seconds: float = 60,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        stop: StopFlag | None = None,
    ) -> None:
        self.client = client
        self.dry_run = dry_run
        self.ui = ui
        self.touched: set[str] = set()
        self.retrier = Retrier(
            retry_seconds,
            clock=clock,
            sleep=sleep,
            say=ui.warn if ui is not None else None,
            stop=stop,
        )

    @classmethod
    def from_inventory(
        cls,
        inv: Inventory,
        *,
        dry_run: bool,
        ui: Ui | None = None,
        environ: dict[str, str] | None = None,
        stop: StopFlag | None = None,
    ) -> CloudTarget:
        from ..inventory import InventoryError

        try:
            token = inv.token(os.environ if environ is None else environ)
        except InventoryError as exc:
            raise CloudTokenMissing("; ".join(str(p) for p in exc.problems)) from None
        if ui is not None:
            ui.masker.register(token)
        client = Client(
            token=token,
            api_endpoint=inv.hcloud.endpoint,
            application_name="hetzner-ha-runbook",
            timeout=inv.hcloud.timeout,
            poll_interval=0.2,
        )
        return cls(
            client, dry_run=dry_run, ui=ui, retry_seconds=inv.hcloud.retry_deadline, stop=stop
        )

    def gather(self, probes: Sequence[str | None]) -> list[Fact | None]:
        return [None] * len(probes)

    def probe(self, snippet: str | None) -> Fact | None:
        return None

    def close(self) -> None:
        """Nothing to release (requests session is closed with the process)."""

    def write(self, what: str, fn: Callable[[], T]) -> T:
        """Run a mutating API call: refused in dry-run, logged, retried on transient errors."""
        if self.dry_run:
            raise DryRunViolation(f"hcloud: refused in --dry-run: {what}")
        if self.ui is not None:
            self.ui.command(CLOUD, what, mutating=True)
        return self.retrier.call(fn)

    def token_may_write(self, server_name: str) -> bool | None:
        """Whether the token may write. Hetzner's tokens are Read or Read & Write, and only a
        write tells which: this one sets a server's name to the name it has (`PUT
        /servers/{id}`), which changes nothing; a Read token's answer is 403 forbidden. None:
        no server of that name (the step that needs it says so). Refused in dry-run, like
        every write. Any other failure (the API down, another error) is CloudUnavailable."""
        try:
            srv = self.retrier.call(lambda: self.client.servers.get_by_name(server_name))
            if srv is None:
                return None
            self.write(
                f"server {server_name}: name unchanged (may the token write?)",
                lambda: self.client.servers.update(srv, name=srv.name),
            )
        except APIException as exc:
            if exc.code == "forbidden":
                return False
            raise CloudUnavailable(f"{exc.code}: {exc.message}") from exc
        except requests.RequestException as exc:
            raise CloudUnavailable(str(exc)) from exc
        return True

    # -- read helpers --------------------------------------------------------------------
    def server(self, name: str) -> Any:
        srv = self.retrier.call(lambda: self.client.servers.get_by_name(name))
        if srv is None:
            raise CloudError(f"server {name} not found in the Hetzner project (create it first)")
        return srv

    def network(self, name: str) -> Any:
        return self.retrier.call(lambda: self.client.networks.get_by_name(name))

    def floating_ip(self, name: str) -> Any:
        fip = self.retrier.call(lambda: self.client.floating_ips.get_by_name(name))
        if fip is None:
            raise CloudError(
                f"floating IP {name} not found in the Hetzner project (order it first)"
            )
        return fip


CLOUD_IS_A_TARGET: type[Target] = CloudTarget
"""mypy checks here that the cloud satisfies the engine's `Target` protocol."""


class CloudUnavailable(RuntimeError):
    """The API did not answer (or stayed locked) until the retry deadline; from the write-token
    probe also any other failure than the 403 it asks about."""


def retry_reason(exc: BaseException) -> str | None:
    """Why ``exc`` is worth retrying here (hcloud did not already), or None."""
    if isinstance(exc, APIException):
        return f"{exc.code}: {exc.message}" if exc.code in RETRY_CODES else None
    if isinstance(exc, requests.exceptions.Timeout):
        return None  # hcloud retried timeouts already
    if isinstance(exc, requests.exceptions.ConnectionError):
        return "connection failed"
    return None


class Retrier:
    """Calls with retries of what hcloud does not retry, until a deadline that spans calls.

    The deadline starts at the first failure and ends at the next success, so while the API
    stays down a whole run waits at most ``deadline`` seconds in total (later calls try once).
    The first failure of an outage is announced with the wall-clock time of the deadline.
    """

    def __init__(
        self,
        deadline: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        say: Callable[[str], None] | None = None,
        base: float = 0.5,
        cap: float = 5.0,
        slow_after: float = 5.0,
        stop: StopFlag | None = None,
    ) -> None:
        self.deadline = deadline
        self.stop = stop  # the run's interrupt flag: no retry starts after Ctrl-C
        self.clock, self.sleep, self.say = clock, sleep, say
        self.base, self.cap = base, cap
        self.slow_after = slow_after
        self._until: float | None = None  # end of the current outage's retries

    def call(self, fn: Callable[[], T]) -> T:
        attempt = 0
        while True:
            watch = self._watch()
            try:
                return self._succeeded(fn())
            except Exception as exc:
                reason = retry_reason(exc)
                if reason is None:
                    raise
            finally:
                if watch is not None:
                    watch.cancel()
            now = self.clock()
            if self._until is None:
                self._until = now + self.deadline
                self._announce(reason, self._until - now)
            if now >= self._until:
                raise CloudUnavailable(
                    f"the Hetzner API did not answer within hcloud.retry_deadline "
                    f"({self.deadline:g} s): {reason}"
                )
            attempt += 1
            delay = min(self.cap, self.base * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            self._pause(max(0.0, min(delay, self._until - now)))

    def _pause(self, seconds: float) -> None:
        """Sleep between retries; with a stop flag in short slices, ending the retries (with
        Interrupted) as soon as the run is stopped."""
        if self.stop is None:
            self.sleep(seconds)
            return
        end = self.clock() + seconds
        while True:
            self.stop.check()
            left = end - self.clock()
            if left <= 0:
                return
            self.sleep(min(left, 0.2))

    def _succeeded(self, result: T) -> T:
        self._until = None  # the API answers: a later outage gets a whole deadline again
        return result

    def _watch(self) -> threading.Timer | None:
        """Say so when one call runs longer than ``slow_after``: hcloud's own retries of
        timeouts and rate limits (up to 6 tries with backoff) are otherwise silent."""
        if self.say is None:
            return None
        timer = threading.Timer(
            self.slow_after,
            self.say,
            [
                f"hcloud: no answer from the API for {self.slow_after:g} s, still waiting "
                "(the hcloud client retries timeouts and rate limits itself)"
            ],
        )
        timer.daemon = True
        timer.start()
        return timer

    def _announce(self, reason: str, left: float) -> None:
        if self.say is None:
            return
        at = (datetime.now() + timedelta(seconds=left)).strftime("%H:%M:%S")
        self.say(f"hcloud: API not answering ({reason}), retrying until {at}")


def _private_net(server: Any, network_id: int) -> Any:
    for pn in server.private_net or []:
        if pn.network.id == network_id:
            return pn
    return None


def _wait(action: Any) -> None:
    action.wait_until_finished(max_retries=300)


@dataclass
class Network(Resource[CloudTarget]):
    """The private network with its cloud subnet."""

    name: str
    ip_range: str
    subnet: str
    zone: str

    @property
    def key(self) -> str:
        return f"network:{self.name}"

    def check(self, target: CloudTarget, fact: Fact | None) -> Change | None:
        net = target.network(self.name)
        if net is None:
            return Change(
                self.key, "create", f"{self.ip_range}, subnet {self.subnet} ({self.zone})"
            )
        if net.ip_range != self.ip_range:
            raise CloudError(
                f"network {self.name} exists with ip_range {net.ip_range}, the inventory says "
                f"{self.ip_range}: a network's range cannot be changed in place"
            )
        if not any(s.ip_range == self.subnet for s in net.subnets or []):
            return Change(self.key, "add subnet", f"{self.subnet} ({self.zone})")
        return None

    def apply(self, target: CloudTarget) -> None:
        net = target.network(self.name)
        sub = NetworkSubnet(ip_range=self.subnet, network_zone=self.zone, type="cloud")
        if net is None:
            target.write(
                f"create network {self.name}",
                lambda: target.client.networks.create(
                    name=self.name, ip_range=self.ip_range, subnets=[sub]
                ),
            )
        else:
            _wait(
                target.write(
                    f"add subnet {self.subnet}", lambda: target.client.networks.add_subnet(net, sub)
                )
            )


@dataclass
class ServerAttached(Resource[CloudTarget]):
    """A server attached to the network with its fixed private IP."""

    server: str
    network: str
    ip: str

    @property
    def key(self) -> str:
        return f"attach:{self.server}"

    def check(self, target: CloudTarget, fact: Fact | None) -> Change | None:
        srv = target.server(self.server)
        net = target.network(self.network)
        if net is None:
            return Change(self.key, "attach", f"{self.ip} (after the network is created)")
        pn = _private_net(srv, net.id)
        if pn is None:
            return Change(self.key, "attach", f"{self.server} → {self.network} as {self.ip}")
        if pn.ip != self.ip:
            raise CloudError(
                f"{self.server} is attached to {self.network} as {pn.ip}, the inventory says "
                f"{self.ip}; detaching changes its address: do it deliberately in the console"
            )
        return None

    def apply(self, target: CloudTarget) -> None:
        srv, net = target.server(self.server), target.network(self.network)
        _wait(
            target.write(
                f"attach {self.server} to {self.network} as {self.ip}",
                lambda: target.client.servers.attach_to_network(srv, net, ip=self.ip),
            )
        )


@dataclass
class AliasIPHeld(Resource[CloudTarget]):
    """The VIP is an alias IP of one of `holders`; if of none, it goes to `holders[0]`.

    After a failover the VIP legitimately sits on the other LB: re-running the step must not
    move it back (auto_failback off), so any holder counts as converged.
    """

    vip: str
    network: str
    holders: Sequence[str]

    @property
    def key(self) -> str:
        return f"alias-ip:{self.vip}"

    def _state(self, target: CloudTarget) -> tuple[Any, list[tuple[str, Any]]]:
        net = target.network(self.network)
        if net is None:
            raise CloudError(f"network {self.network} does not exist: run `inv network` first")
        who = []
        for name in self.holders:
            pn = _private_net(target.server(name), net.id)
            if pn is None:
                raise CloudError(f"{name} is not attached to {self.network}: run `inv network`")
            if self.vip in (pn.alias_ips or []):
                who.append((name, pn))
        return net, who

    def check(self, target: CloudTarget, fact: Fact | None) -> Change | None:
        _, who = self._state(target)
        if len(who) == 1:
            return None
        if not who:
            return Change(self.key, "assign", f"alias IP {self.vip} → {self.holders[0]}")
        return Change(self.key, "fix", f"{self.vip} on {len(who)} servers; keep {who[0][0]}")

    def apply(self, target: CloudTarget) -> None:
        net, who = self._state(target)
        if not who:
            srv = target.server(self.holders[0])
            pn = _private_net(srv, net.id)
            aliases = sorted({*(pn.alias_ips or []), self.vip})
            _wait(
                target.write(
                    f"change_alias_ips {self.holders[0]} {aliases}",
                    lambda: target.client.servers.change_alias_ips(srv, net, aliases),
                )
            )
            return
        for name, pn in who[1:]:
            srv = target.server(name)
            rest = [a for a in pn.alias_ips if a != self.vip]
            _wait(
                target.write(
                    f"change_alias_ips {name} {rest}",
                    partial(target.client.servers.change_alias_ips, srv, net, rest),
                )
            )


@dataclass
class FloatingIPHeld(Resource[CloudTarget]):
    """The floating IP is assigned to one of `holders`; unassigned or elsewhere → holders[0]."""

    name: str
    address: str
    holders: Sequence[str]

    @property
    def key(self) -> str:
        return f"floating-ip:{self.name}"

    def check(self, target: CloudTarget, fact: Fact | None) -> Change | None:
        fip = target.floating_ip(self.name)
        if fip.ip != self.address:
            raise CloudError(
                f"floating IP {self.name} is {fip.ip}, the inventory says {self.address}"
            )
        ids = {target.server(h).id: h for h in self.holders}
        if fip.server is not None and fip.server.id in ids:
            return None
        now = "unassigned" if fip.server is None else f"on server id {fip.server.id}"
        return Change(self.key, "assign", f"{self.address} ({now}) → {self.holders[0]}")

    def apply(self, target: CloudTarget) -> None:
        fip, srv = target.floating_ip(self.name), target.server(self.holders[0])
        _wait(
            target.write(
                f"assign floating IP {self.name} to {self.holders[0]}",
                lambda: target.client.floating_ips.assign(fip, srv),
            )
        )


@dataclass
class FloatingDnsPtr(Resource[CloudTarget]):
    """Reverse DNS of the floating IP."""

    name: str
    address: str
    dns_ptr: str

    @property
    def key(self) -> str:
        return f"dns-ptr:{self.address}"

    def check(self, target: CloudTarget, fact: Fact | None) -> Change | None:
        fip = target.floating_ip(self.name)
        current = {e["ip"]: e["dns_ptr"] for e in (fip.dns_ptr or [])}
        if current.get(self.address) == self.dns_ptr:
            return None
        return Change(
            self.key, "set", f"{self.address} PTR {current.get(self.address)} → {self.dns_ptr}"
        )

    def apply(self, target: CloudTarget) -> None:
        fip = target.floating_ip(self.name)
        _wait(
            target.write(
                f"change_dns_ptr {self.address} {self.dns_ptr}",
                lambda: target.client.floating_ips.change_dns_ptr(fip, self.address, self.dns_ptr),
            )
        )
