"""Step 1's OS upgrade and reboots, shared with day-2 `patch`: the upgrade check (package lists
refreshed once per run), the reboot that waits until the host is back and ready by role, and the
reboot order (`RebootStep`: LBs first with the VIP holder last, then control planes, then workers).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change, TargetPlan
from ..core.remote import NO_ANSWER, CommandFailed, Fact, Host, HostUnreachable
from ..core.resources import Resource
from ..core.waiting import pause, wait_until
from ..inventory import API_PORT
from ..render.k8sfiles import APISERVER_MANIFEST, KUBELET_CONF
from ._select import holds_vip, hosts_with

REBOOT_MARKER = "/run/runbook-reboot-pending"
LISTS_STAMP = "/run/runbook-apt-lists"
"""Holds the id of the run that last refreshed the package lists (tmpfs: gone after a reboot)."""
APT_LOCK_WAIT = "-o DPkg::Lock::Timeout=300"
"""apt waits for a lock an earlier (e.g. interrupted and abandoned) apt run still holds."""
ROLE_ORDER = {"lb": 0, "control-plane": 1, "worker": 2}


def refresh_lists_once(run_id: str, *, stamp: str = LISTS_STAMP) -> str:
    """Shell: `apt-get update` unless this run (`run_id`) already refreshed the lists on this host;
    prints `lists: refreshed|fresh|update-failed: <why>` (one line)."""
    q, st = shlex.quote(run_id), shlex.quote(stamp)
    return (
        f'if [ "$(cat {st} 2>/dev/null)" = {q} ]; then echo "lists: fresh"; '
        f"elif __out=$(apt-get update -q {APT_LOCK_WAIT} 2>&1); then echo {q} > {st}; "
        'echo "lists: refreshed"; '
        'else echo "lists: update-failed: $(printf %s "$__out" | tail -n 1)"; fi'
    )


@dataclass
class Upgraded(Resource[Host]):
    """No pending package upgrades (`apt-get -s upgrade` simulates: read-only).

    `run_id` set (a real run): the probe first refreshes the package lists, once per host per
    run, so the check reads current lists and nothing later in the run updates them again.
    Empty (--dry-run): the lists are read as they are (a dry-run changes nothing, caches too).
    """

    apply_timeout: ClassVar[float | None] = 3600  # apt-get upgrade

    run_id: str = ""

    @property
    def key(self) -> str:
        return "upgrade"

    def probe(self) -> str:
        refresh = f"{refresh_lists_once(self.run_id)}; " if self.run_id else ""
        return f"{refresh}apt-get -s -o Debug::NoLocking=1 upgrade 2>/dev/null | grep -c '^Inst '"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        lines = (fact.stdout if fact else "").strip().splitlines()
        if lines and lines[0].startswith("lists: update-failed"):
            raise CommandFailed(host.name, "apt-get update", 100, lines[0].split(": ", 2)[-1])
        count = lines[-1].strip() if lines and not lines[-1].startswith("lists:") else "0"
        n = int(count or "0")
        if not n:
            return None
        return Change(
            self.key,
            "upgrade",
            f"{n} package(s) upgradable (a reboot the upgrade requires is asked for afterwards)",
        )

    def apply(self, host: Host) -> None:
        host.run(
            f"DEBIAN_FRONTEND=noninteractive apt-get -y -q {APT_LOCK_WAIT} "
            "-o Dpkg::Options::=--force-confold upgrade",
            timeout=3600,
        )


ReadyCheck = Callable[[Host], str | None]
"""After a reboot: None when the host is back in service, else what it still waits for."""


@dataclass
class Rebooted(Resource[Host]):
    """Reboot when /var/run/reboot-required exists; wait until SSH is back (fresh /run) and
    `ready` says the host serves again (Heartbeat pair settled, apiserver ready, …)."""

    wait_seconds: float = 600
    ready: ReadyCheck | None = None
    poll: float = 2.0

    @property
    def key(self) -> str:
        return "reboot"

    def probe(self) -> str:
        return "test -e /var/run/reboot-required && cat /var/run/reboot-required.pkgs"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        if fact is None or fact.rc != 0:
            return None
        pkgs = " ".join(fact.stdout.split()[:6])
        return Change(self.key, "reboot", f"required by {pkgs or 'an upgrade'}")

    def apply(self, host: Host) -> None:
        host.run(
            f"touch {REBOOT_MARKER}; (sleep 1; systemctl reboot || reboot) "
            ">/dev/null 2>&1 </dev/null &"
        )
        host.close()
        # the reboot begins a second after the command: the first look comes one poll later
        pause(self.poll)
        back = False
        waiting: str | None = None

        def in_service() -> bool:
            nonlocal back, waiting
            back = back or self._back(host)
            try:
                waiting = self.ready(host) if back and self.ready else None
            except NO_ANSWER as exc:
                host.close()  # a host just back may drop or stall a connection: look again
                waiting = str(exc)
            return back and not waiting

        def failure() -> Exception:
            if not back:
                return HostUnreachable(
                    f"{host.name}: not back {self.wait_seconds:.0f} s after the reboot"
                )
            return StepFailed(
                f"{host.name}: back after the reboot, but not ready within "
                f"{self.wait_seconds:.0f} s: {waiting}"
            )

        wait_until(
            in_service,
            seconds=max(0.0, self.wait_seconds - self.poll),
            interval=self.poll,
            failure=failure,
        )

    @staticmethod
    def _back(host: Host) -> bool:
        """SSH answers and /run is fresh (the marker is gone): the host rebooted. A look that
        cannot connect, or whose command hangs, is "not back yet" (CI: the first look after
        the reboot command connected while the host went down, and its command hung for the
        20 s timeout, which failed the step)."""
        try:
            return host.query(f"test -e {REBOOT_MARKER}", ok_codes=None, timeout=20).exited != 0
        except NO_ANSWER:
            host.close()
            return False


def run_id(ctx: StepContext, target: str) -> str:
    """The run's id on a real run (one Host object per host per run); "" in --dry-run/render."""
    host = ctx.targets.get(target)
    if ctx.options.dry_run or host is None or getattr(host, "dry_run", True):
        return ""
    return str(host.run_id)


class RebootStep(Step):
    """Step 1's reboots, after the upgrade: planned from what the hosts say now (so a reboot the
    upgrade just made necessary is planned and asked like any other), always behind the
    checkpoint, one host at a time — the LBs first (the VIP holder last), then the control planes,
    then the workers — each back and ready before the next: never both LBs or two control planes
    (etcd quorum) down at once. A host that does not come back stops the step."""

    name = "reboot"
    title = "reboot where the upgrade requires it: one host at a time, each back and ready first"
    serial = True

    def __init__(self, *, poll: float = 2.0, wait_seconds: float = 600) -> None:
        self.poll, self.wait_seconds = poll, wait_seconds

    def target_names(self, ctx: StepContext) -> list[str]:
        names = hosts_with(ctx)
        holder = "" if ctx.run.render else vip_holder(ctx, hosts_with(ctx, "lb"))
        role = {n: ctx.inventory.hosts[n].role for n in names}
        return sorted(names, key=lambda n: (ROLE_ORDER.get(role[n], 3), n == holder))

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        ready = ready_check(ctx, target)
        return [Rebooted(wait_seconds=self.wait_seconds, ready=ready, poll=self.poll)]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        reboots = [p.target for p in plans if any(c.resource == "reboot" for c in p.changes)]
        if not reboots:
            return None
        return (
            f"Reboot {', '.join(reboots)} now, in this order, one at a time (each must come back "
            "and pass its checks before the next; a reboot of the VIP holder moves the VIP)?"
        )


def vip_holder(ctx: StepContext, lbs: Sequence[str]) -> str:
    """The LB holding the VIP now ("" if none or unknown): rebooted last, one hand-over only."""
    return next((n for n in lbs if holds_vip(ctx, n)), "")


def ready_check(ctx: StepContext, target: str) -> ReadyCheck:
    """What "back in service" means after a reboot, by role (only for what is set up already):
    LB — Heartbeat answers, sees its peer active and exactly one LB holds the VIP; control plane
    — the apiserver answers /readyz on its own private IP; worker — kubelet runs once joined."""
    inv = ctx.inventory
    spec = inv.hosts[target]
    if spec.role == "lb":
        peers = [h.name for h in inv.hosts_with_role("lb") if h.name != target]

        def lb_ready(host: Host) -> str | None:
            if host.query("test -f /etc/ha.d/ha.cf", ok_codes=None).exited != 0:
                return None  # Heartbeat not configured yet (first prepare)
            if host.query("cl_status hbstatus", ok_codes=None).exited != 0:
                return "Heartbeat is not running"
            for peer in peers:
                seen = host.query(f"cl_status nodestatus {shlex.quote(peer)}", ok_codes=None)
                if seen.stdout.strip() != "active":
                    return f"Heartbeat does not see {peer} active"
            if not all(p in ctx.targets for p in peers):
                return None  # a peer outside this run (--host): Heartbeat's view above must do
            holders = [n for n in (target, *peers) if holds_vip(ctx, n)]
            if len(holders) != 1:
                return f"VIP holders: {holders or 'none'} (want exactly one)"
            return None

        return lb_ready
    if spec.role == "control-plane":
        url = f"https://{spec.private_ip}:{API_PORT}/readyz"
        cmd = (
            f"test ! -f {APISERVER_MANIFEST} || "
            f"curl -sk --max-time 5 {shlex.quote(url)} | grep -qx ok"
        )

        def cp_ready(host: Host) -> str | None:
            if host.query(cmd, ok_codes=None, timeout=20).exited == 0:
                return None
            return f"the apiserver does not answer ok on {url}"

        return cp_ready

    def worker_ready(host: Host) -> str | None:
        cmd = f"test ! -f {KUBELET_CONF} || systemctl is-active -q kubelet"
        return None if host.query(cmd, ok_codes=None).exited == 0 else "kubelet is not active"

    return worker_ready
