"""Step 4 — heartbeat: identical ha.cf, one shared authkey, haresources, the failover script.

Both LBs must get the same configuration, so the step is all-or-nothing. Nodes are changed one
at a time, the standby first and the VIP holder last: restarting the holder moves the VIP once
(to the already-updated standby) instead of twice.
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time
from collections.abc import Sequence

from ..engine import Step, StepContext, StepFailed
from ..lbfiles import (
    FAILOVER_ENV_PATH,
    REASSERT_SERVICE_PATH,
    REASSERT_TIMER_PATH,
    WATCHDOG_SERVICE_PATH,
    RenderedFile,
    failover_files,
    heartbeat_files,
    watchdog_files,
)
from ..lbstatus import addr_probe, has_vip
from ..remote import HostUnreachable
from ..resources import SECRET_MARKER, File, Resource, Service, SystemdReload
from ._select import hosts_with

_AUTHKEY = re.compile(r"^\s*1\s+(?:sha1|md5)\s+(\S+)\s*$", re.M)
_lock = threading.Lock()


def as_file(rf: RenderedFile) -> File:
    return File(rf.path, rf.content, mode=rf.mode, owner=rf.owner, group=rf.group, secret=rf.secret)


def shared_authkey(ctx: StepContext) -> str:
    """The pair's Heartbeat key: kept from the hosts when one exists, else generated once.

    When the nodes disagree the primary's key wins (the plan shows the other authkeys change).
    """
    with _lock:
        if "authkey" in ctx.extra:
            return str(ctx.extra["authkey"])
        if ctx.extra.get("render"):
            ctx.extra["authkey"] = SECRET_MARKER
            return SECRET_MARKER
        found: dict[str, str] = {}
        for h in ctx.inventory.hosts_with_role("lb"):
            target = ctx.targets.get(h.name)
            if target is None:
                continue
            try:
                raw = target.read_file("/etc/ha.d/authkeys")
            except HostUnreachable:
                continue
            m = _AUTHKEY.search(raw.decode(errors="replace")) if raw else None
            if m:
                found[h.name] = m.group(1)
        primary = ctx.inventory.load_balancer.primary
        key = found.get(primary) or next(iter(found.values()), "") or secrets.token_hex(32)
        ctx.ui.masker.register(key)
        ctx.extra["authkey"] = key
        return key


def api_token(ctx: StepContext) -> str:
    if ctx.extra.get("render"):
        return SECRET_MARKER
    token = ctx.inventory.token(os.environ)
    ctx.ui.masker.register(token)
    return token


def holds_vip(ctx: StepContext, name: str) -> bool:
    target = ctx.targets.get(name)
    if target is None:
        return False
    inv = ctx.inventory
    try:
        out = target.query(addr_probe(inv.load_balancer.interface), ok_codes=None).stdout
    except HostUnreachable:
        return False
    return has_vip(inv, out)


class HeartbeatStep(Step):
    name = "heartbeat"
    title = "Heartbeat pair: ha.cf, authkeys, haresources, hcloud-failover, re-assert, watchdog"
    all_or_nothing = True
    serial = True

    def target_names(self, ctx: StepContext) -> list[str]:
        names = hosts_with(ctx, "lb")
        if ctx.extra.get("render"):
            return names
        # standby first, holder last (stable otherwise: inventory order)
        return sorted(names, key=lambda n: holds_vip(ctx, n))

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        inv = ctx.inventory
        hb = [as_file(f) for f in heartbeat_files(inv, target, authkey=shared_authkey(ctx))]
        fo = [as_file(f) for f in failover_files(inv, target, token=api_token(ctx))]
        wd = [as_file(f) for f in watchdog_files(inv, target)]
        units = [f.key for f in (*fo, *wd) if f.path.startswith("/etc/systemd/")]
        env_key = next(f.key for f in fo if f.path == FAILOVER_ENV_PATH)
        return [
            *hb,
            *fo,
            *wd,
            SystemdReload(units),
            Service("heartbeat", watch=[f.key for f in hb], on_change="restart"),
            Service(
                "hcloud-reassert.timer",
                watch=[f"file:{REASSERT_TIMER_PATH}", f"file:{REASSERT_SERVICE_PATH}", env_key],
                on_change="restart",
            ),
            Service(
                "haproxy-watchdog",
                watch=[f.key for f in wd if f.path != WATCHDOG_SERVICE_PATH]
                + [f"file:{WATCHDOG_SERVICE_PATH}"],
                on_change="restart",
            ),
        ]

    def verify(self, ctx: StepContext, target: str) -> None:
        host = ctx.targets[target]
        deadline = time.monotonic() + 30
        while host.query("cl_status hbstatus", ok_codes=None).exited != 0:
            if time.monotonic() > deadline:
                raise StepFailed(f"{target}: heartbeat is not running (cl_status hbstatus)")
            time.sleep(1)

    def verify_all(self, ctx: StepContext, targets: Sequence[str]) -> None:
        """Exactly one node holds the VIP, and each node sees its peer active."""
        hb = ctx.inventory.load_balancer.heartbeat
        lbs = [h.name for h in ctx.inventory.hosts_with_role("lb")]
        wait = hb.effective_initdead + hb.deadtime + 15
        deadline = time.monotonic() + wait
        problem = ""
        with ctx.ui.waiting("the LB pair to settle (one VIP holder, each peer active)", wait):
            while time.monotonic() < deadline:
                holders = [n for n in lbs if holds_vip(ctx, n)]
                peers_ok = all(self._sees_peers(ctx, n, lbs) for n in lbs if n in ctx.targets)
                if len(holders) == 1 and peers_ok:
                    ctx.ui.print(f"heartbeat pair up: {holders[0]} holds the VIP", style="green")
                    return
                problem = f"VIP holders: {holders or 'none'}; peers seen active: {peers_ok}"
                time.sleep(1)
        raise StepFailed(f"the pair did not settle within {wait} s: {problem}")

    @staticmethod
    def _sees_peers(ctx: StepContext, name: str, lbs: Sequence[str]) -> bool:
        host = ctx.targets[name]
        for peer in lbs:
            if peer == name:
                continue
            out = host.query(f"cl_status nodestatus {peer}", ok_codes=None).stdout.strip()
            if out != "active":
                return False
        return True
