"""Step 4 — heartbeat: identical ha.cf, one shared authkey, haresources, the failover script.

Both LBs must get the same configuration, so the step is all-or-nothing. A converge run must never
cause a failover by itself (issue 11, invariant I4), so Heartbeat is touched only as far as a
change needs it:
- a mode/owner fix (e.g. authkeys 0644 → 0600) changes nothing Heartbeat has loaded: no action;
- neither does new content that Heartbeat reads the same (a comment, a blank line, spaces at a
  line's end): the file is rewritten, Heartbeat is left alone (a reload re-executes it, a
  stir the pair does not need);
- new ha.cf or authkeys content is what Heartbeat re-reads on reload (`heartbeat -r`, it keeps
  its resources): reload;
- the resource script, its env file and the message function Heartbeat's shell scripts take
  from /etc/ha.d/shellfuncs (`ha_clustermsg`, made to write each message at once) are read on
  every call: no action;
- only new haresources content needs a restart; on the VIP holder that restart comes after a
  checkpoint and a planned hand-over (`hb_standby`, then wait until the peer holds the VIP).
Nodes are changed one at a time, the standby first and the holder last. On a fresh pair (nobody
holds the VIP yet) there is nothing to hand over and both nodes are configured in parallel.

Verification repairs what it can instead of only reporting it: nobody holding the VIP while both
Heartbeats run → the primary (or the first live LB) is asked to take over (`hb_takeover`); the
holder then re-asserts the cloud routing (`hcloud-failover reassert`: no API write when right).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change, TargetPlan
from ..core.remote import NO_ANSWER, Fact, Host, HostUnreachable
from ..core.resources import (
    SECRET_MARKER,
    File,
    LineInFile,
    PythonBytecode,
    Resource,
    RestoredFile,
    Service,
    SystemdReload,
    file_text,
    secret_backups_absent,
)
from ..core.waiting import now, wait_until
from ..render.lbfiles import (
    AUTHKEYS_PATH,
    CLUSTERMSG_MATCH,
    FAILOVER_ENV_PATH,
    FAILOVER_MODULE_PATH,
    FAILOVER_SCRIPT_PATH,
    HA_CF_PATH,
    HARESOURCES_PATH,
    HEARTBEAT_PID_PATH,
    MANAGED_MARK,
    REASSERT_SERVICE_PATH,
    REASSERT_TIMER_PATH,
    SHELLFUNCS_PATH,
    WATCHDOG_SERVICE_PATH,
    RenderedFile,
    clustermsg_override,
    failover_files,
    heartbeat_files,
    logrotate_files,
    package_logrotate_rule,
    watchdog_files,
)
from ..status.lbstatus import HEARTBEAT_MASTERS, RSCSTATUS, owns_group
from ._select import holds_vip, hosts_with

HEARTBEAT_BIN = "/usr/libexec/heartbeat/heartbeat"
HB_STANDBY = "/usr/share/heartbeat/hb_standby"
HB_TAKEOVER = "/usr/share/heartbeat/hb_takeover"
HANDOVER_WAIT_S = 30.0  # how long a planned hand-over may take before the restart is refused
RESTART_ON = (HARESOURCES_PATH,)  # read only when Heartbeat starts
RELOAD_ON = (HA_CF_PATH, AUTHKEYS_PATH)  # re-read by `heartbeat -r`, resources kept

_AUTHKEY = re.compile(r"^\s*1\s+(?:sha1|md5)\s+(\S+)\s*$", re.M)


def as_file(rf: RenderedFile) -> File:
    return File(rf.path, rf.content, mode=rf.mode, owner=rf.owner, group=rf.group, secret=rf.secret)


def _restored(rf: RenderedFile) -> RestoredFile:
    return RestoredFile(
        rf.path, rf.content, mode=rf.mode, owner=rf.owner, group=rf.group, mark=MANAGED_MARK
    )


def clustermsg_line() -> LineInFile:
    """resource-agents' `ha_clustermsg` defined again at the end of its shellfuncs, writing each
    message to Heartbeat's FIFO at once (:func:`~runbook.render.lbfiles.clustermsg_override`)."""
    return LineInFile(SHELLFUNCS_PATH, clustermsg_override(), CLUSTERMSG_MATCH)


def content_key(path: str) -> str:
    """What a `ContentFile` marks in `host.touched` when its content (not only its mode) changes."""
    return f"content:{path}"


def ha_cf_reads(text: str) -> list[str]:
    """ha.cf as Heartbeat parses it: a `#` starts a comment anywhere on a line; blank lines and
    the spaces at a line's ends do not count."""
    return [kept for line in text.splitlines() if (kept := line.split("#", 1)[0].strip())]


def whole_line_reads(text: str) -> list[str]:
    """haresources and authkeys as Heartbeat parses them: a line that starts with `#` (after
    spaces) is a comment; blank lines and the spaces around a line do not count."""
    return [kept for line in text.splitlines() if (kept := line.strip()) and kept[0] != "#"]


READS = {
    HA_CF_PATH: ha_cf_reads,
    HARESOURCES_PATH: whole_line_reads,
    AUTHKEYS_PATH: whole_line_reads,
}


class ContentFile(File):
    """A File that tells content changes apart from mode/owner fixes (`content:PATH` touched), so
    a service can react to the first only. For Heartbeat's files (`READS`: what it takes from
    the text), new text that it reads the same (a comment) is no content change either."""

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        change = super().check(host, fact)
        if change is None or change.action == "chmod/chown":
            return change
        reads = READS.get(self.path)
        found = file_text(fact)
        if reads and found is not None and reads(found) == reads(self.content):
            note = "Heartbeat reads it the same (comments, blank lines): no reload or restart"
            summary = "; ".join(s for s in (change.summary, note) if s)
            return Change(change.resource, change.action, summary, change.diff)
        host.touched.add(content_key(self.path))
        return change


def as_content_file(rf: RenderedFile) -> ContentFile:
    return ContentFile(
        rf.path, rf.content, mode=rf.mode, owner=rf.owner, group=rf.group, secret=rf.secret
    )


def _vip_holders(ctx: StepContext) -> list[str]:
    return [n for n in hosts_with(ctx, "lb") if holds_vip(ctx, n)]


# A wedged Heartbeat (resource status "transition" for good) delays its shutdown "until current
# resource activity finishes", which never comes: `systemctl restart` hung in its stop (lab,
# bench with CPU hogs). SIGKILL first to the process group of the PID file's process (the
# service's session; its reader/writer children share the group), only when that process is
# named heartbeat, and of every other Heartbeat master: one the PID file does not name (a start
# that raced a Heartbeat whose PID file was gone) survives a restart and runs beside the new one,
# each dropping the other's messages as replays (official CI, stop 46). Its PID file is written
# "%10d" (`read` drops the padding)
END_WEDGED_HEARTBEAT = (
    f"{{ read -r pid < {HEARTBEAT_PID_PATH}; }} 2>/dev/null; "
    '[ -n "$pid" ] && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = heartbeat ] || pid=""; '
    f"pids=\"$pid $({HEARTBEAT_MASTERS} 2>/dev/null | tr '\\n' ' ')\"; "
    'for p in $pids; do kill -9 "-$p" 2>/dev/null || kill -9 "$p" 2>/dev/null; done; '
    # until the old masters are gone: a Heartbeat started while its PID exists exits ("already
    # running"; CI left the pair without Heartbeat on that node)
    'n=50; for p in $pids; do while [ -e /proc/"$p" ] && [ "$n" -gt 0 ]; do '
    "sleep 0.1; n=$((n - 1)); done; done"
)


class HeartbeatService(Service):
    """Heartbeat enabled and running; on a config change: nothing, reload or (haresources only)
    restart, the holder's restart after a planned hand-over to its peer."""

    def __init__(self, peers: Sequence[str], ctx: StepContext) -> None:
        super().__init__("heartbeat", watch=[content_key(p) for p in (*RESTART_ON, *RELOAD_ON)])
        self.peers = list(peers)
        self.ctx = ctx

    def _wants(self, host: Host, fact: Fact | None) -> list[str]:
        enabled_s, _, active_s = (fact.stdout if fact else "").partition("|")
        todo = [] if enabled_s.strip() == "enabled" else ["enable"]
        if active_s.strip() != "active":
            return [*todo, "start"]
        if any(content_key(p) in host.touched for p in RESTART_ON):
            return [*todo, "restart"]
        if any(content_key(p) in host.touched for p in RELOAD_ON):
            return [*todo, "reload"]
        return todo

    def apply(self, host: Host) -> None:
        for action in self._wants(host, host.probe(self.probe())):
            if action == "reload":
                host.run(f"{HEARTBEAT_BIN} -r", timeout=60)
            elif action == "restart":
                self._hand_over(host)
                host.run("systemctl restart heartbeat", timeout=180)
            else:
                host.run(f"systemctl {action} heartbeat", timeout=120)
        host.touched.difference_update(self.watch)

    def _hand_over(self, host: Host) -> None:
        """On the VIP holder: hb_standby, then wait until a peer holds the VIP (else refuse)."""
        if not holds_vip(self.ctx, host.name):
            return
        self.ctx.ui.print(f"{host.name}: planned hand-over of the VIP before the restart")
        host.run(HB_STANDBY, timeout=60)
        wait_until(
            lambda: (
                not holds_vip(self.ctx, host.name)
                and any(holds_vip(self.ctx, p) for p in self.peers)
            ),
            seconds=HANDOVER_WAIT_S,
            interval=0.5,
            failure=(
                f"{host.name}: the peer did not take the VIP within {HANDOVER_WAIT_S:g} s "
                "after hb_standby; Heartbeat not restarted"
            ),
        )


@dataclass
class HeartbeatRun:
    """Per run: the pair's authkey (kept from the hosts or generated, once) and the LBs that
    held the VIP when the step was planned."""

    authkey: str | None = None
    vip_holders: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def shared_authkey(ctx: StepContext) -> str:
    """The pair's Heartbeat key: kept from the hosts when one exists, else generated once.

    When the nodes disagree the primary's key wins (the plan shows the other authkeys change).
    """
    state = ctx.run.of(HeartbeatRun)
    with state.lock:
        if state.authkey is not None:
            return state.authkey
        if ctx.run.render:
            state.authkey = SECRET_MARKER
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
        state.authkey = key
        return key


def api_token(ctx: StepContext) -> str:
    if ctx.run.render:
        return SECRET_MARKER
    token = ctx.inventory.token(os.environ)
    ctx.ui.masker.register(token)
    return token


class _Lasting:
    """A condition that must hold `seconds` on end before it is acted on, and once only."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.since: float | None = None
        self.done = False

    def first_time_lasted(self, holds: bool, now: float) -> bool:
        if not holds:
            self.since = None
            return False
        if self.since is None:
            self.since = now
        if self.done or now - self.since < self.seconds:
            return False
        self.done = True
        return True


def age_command(pid_path: str = HEARTBEAT_PID_PATH) -> str:
    """Seconds the process in `pid_path` has run (nothing when there is none). Heartbeat writes
    its PID right-aligned ("       189"): `ps -p` refuses that as an "improper list"."""
    return f'ps -o etimes= -p "$(tr -dc 0-9 < {pid_path} 2>/dev/null)" 2>/dev/null'


class HeartbeatStep(Step):
    name = "heartbeat"
    title = "Heartbeat pair: ha.cf, authkeys, haresources, hcloud-failover, re-assert, watchdog"
    all_or_nothing = True
    serial = True

    def target_names(self, ctx: StepContext) -> list[str]:
        names = hosts_with(ctx, "lb")
        if ctx.run.render:
            return names
        holders = _vip_holders(ctx)
        ctx.run.of(HeartbeatRun).vip_holders = holders
        # a fresh pair (nobody holds the VIP yet) has nothing to hand over: both at once
        self.serial = bool(holders)
        # standby first, holder last (stable otherwise: inventory order)
        return sorted(names, key=lambda n: n in holders)

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        inv = ctx.inventory
        hb = [as_content_file(f) for f in heartbeat_files(inv, target, authkey=shared_authkey(ctx))]
        fo = [as_file(f) for f in failover_files(inv, target, token=api_token(ctx))]
        wd = [as_file(f) for f in watchdog_files(inv, target)]
        rotation: list[Resource] = [as_file(f) for f in logrotate_files(inv, target)] or [
            _restored(package_logrotate_rule())  # logfile unset: the package's rule, if ours
        ]  # no service reads it
        units = [f.key for f in (*fo, *wd) if f.path.startswith("/etc/systemd/")]
        env_key = next(f.key for f in fo if f.path == FAILOVER_ENV_PATH)
        peers = [n for n in (h.name for h in inv.hosts_with_role("lb")) if n != target]
        return [
            *hb,
            # read by each script Heartbeat runs: no restart, no reload
            clustermsg_line(),
            PythonBytecode(FAILOVER_MODULE_PATH, watch=f"file:{FAILOVER_MODULE_PATH}"),
            *fo,
            *wd,
            *rotation,
            SystemdReload(units),
            HeartbeatService(peers, ctx),
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
            *secret_backups_absent([*hb, *fo]),
        ]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        """A restart of the holder's Heartbeat moves the VIP: only after the operator agrees."""
        holders = ctx.run.of(HeartbeatRun).vip_holders
        restarts = [
            p.target
            for p in plans
            if p.target in holders
            and any(c.resource == "service:heartbeat" and "restart" in c.action for c in p.changes)
        ]
        if not restarts:
            return None
        return (
            f"Heartbeat on the VIP holder {', '.join(restarts)} must restart (haresources "
            "changed; Heartbeat reads it only at start). The runbook first hands the VIP over "
            "to the already-updated peer (hb_standby: a planned failover, about as long as "
            "`lb.failover-drill --mode stop`), then restarts it. Continue?"
        )

    def verify(self, ctx: StepContext, target: str) -> None:
        host = ctx.targets[target]
        wait_until(
            lambda: host.query("cl_status hbstatus", ok_codes=None).exited == 0,
            seconds=30,
            interval=1,
            failure=f"{target}: heartbeat is not running (cl_status hbstatus)",
        )

    def verify_all(self, ctx: StepContext, targets: Sequence[str]) -> None:
        """Exactly one node owns the resources (Heartbeat) and holds the VIP, each node sees its
        peer active, and the cloud routes the VIP and the floating IP to the owner. Repairs
        instead of only reporting: nobody owning → the primary (or the first live LB) takes
        over; a wrong route → re-asserted by the owner; addresses left on the other node (a
        release while the cloud still routed there) → taken off once the route has moved."""
        hb = ctx.inventory.load_balancer.heartbeat
        lbs = [h.name for h in ctx.inventory.hosts_with_role("lb")]
        # Heartbeat acquires the group only `initdead` after it starts: until both have run
        # past that (and a deadtime for the negotiation), nobody owning it is its start, not a
        # fault, and an hb_takeover then collides with the initial acquisition ("Other side is
        # in flux") and leaves the group in transition for good
        started_after = hb.effective_initdead + hb.deadtime
        # a node whose Heartbeat stays in "transition" (a lost hand-over or takeover message:
        # Heartbeat keeps it there for its hour-long standby timeout) cannot fail over; a
        # hand-over's own transition lasts seconds (one unanswered standby request: ~11 s)
        wedged_after = max(30.0, 3 * hb.deadtime)
        wait = started_after + 2 * hb.deadtime + 30 + wedged_after + started_after
        # nobody (or both) may own the group for a moment (a hand-over, a start, Heartbeat's
        # restart after "Both machines own our resources!"): act only when it lasts
        nobody = _Lasting(hb.deadtime + 2)
        both = _Lasting(hb.deadtime + 2)
        wedge = _Lasting(wedged_after)
        # more than one Heartbeat on a node (a self-restart's exec and fork overlap a moment)
        doubled = _Lasting(hb.deadtime)
        problem = ""

        def settled() -> bool:
            nonlocal problem
            masters = {n: self._masters(ctx, n) for n in lbs}
            twice = [n for n in lbs if len(masters[n]) > 1]
            if doubled.first_time_lasted(bool(twice), now()):
                self._end_doubled(ctx, {n: masters[n] for n in twice})
            if twice:
                problem = "more than one Heartbeat on " + ", ".join(
                    f"{n} (PIDs {' '.join(masters[n])})" for n in twice
                )
                return False
            status = {n: self._rscstatus(ctx, n) for n in lbs}
            owners = [n for n in lbs if owns_group(ctx.inventory, n, status[n])]
            busy = [n for n in lbs if status[n] == "transition"]
            peers_ok = all(self._sees_peers(ctx, n, lbs) for n in lbs if n in ctx.targets)

            if len(owners) == 1 and peers_ok and not busy and holds_vip(ctx, owners[0]):
                self._reassert(ctx, owners[0])
                for other in lbs:
                    if other != owners[0] and holds_vip(ctx, other):
                        self._reassert(ctx, other)  # follows the route: takes them off
                holders = [n for n in lbs if holds_vip(ctx, n)]
                if holders == owners:
                    ctx.ui.print(f"heartbeat pair up: {owners[0]} holds the VIP", style="green")
                    return True
            if len(owners) == 1 and peers_ok and not holds_vip(ctx, owners[0]):
                # the owner left the routing with a peer that serves (a pause or partition
                # ended, "deferred"): its reassert hands the group over, or takes it after all
                self._reassert(ctx, owners[0])
            problem = f"resource owners: {owners or 'none'}; peers seen active: {peers_ok}"
            if busy:
                problem += f"; in transition: {busy}"
            at = now()
            # a node in transition beside an owner that serves: restarting its Heartbeat is
            # safe (it holds nothing; the owner keeps the group); the holder's own is left to
            # the watchdog, which keeps the addresses while the cloud routes there
            stuck = [n for n in busy if n not in owners and not holds_vip(ctx, n)]
            # the owner's VIP is asked only when a node is stuck (a remote query each second)
            serving = bool(stuck) and len(owners) == 1 and peers_ok and holds_vip(ctx, owners[0])
            if wedge.first_time_lasted(serving, at):
                self._restart_wedged(ctx, stuck, wedged_after)
            started = peers_ok and all(
                self._running_for(ctx, n) >= started_after for n in lbs if n in ctx.targets
            )
            if nobody.first_time_lasted(started and not owners, at):
                self._take_over(ctx, lbs)
            if both.first_time_lasted(started and len(owners) > 1, at):
                self._stand_down(ctx, owners)
            return False

        wait_until(
            settled,
            seconds=wait,
            interval=1,
            failure=lambda: f"the pair did not settle within {wait} s: {problem}",
            ui=ctx.ui,
            what="the LB pair to settle (one VIP holder, each peer active)",
        )

    @staticmethod
    def _rscstatus(ctx: StepContext, name: str) -> str:
        """Heartbeat's resource status on this node (`cl_status rscstatus`: all, local,
        foreign, none, transition); "" when it cannot be asked."""
        host = ctx.targets.get(name)
        if host is None:
            return ""
        try:
            return host.query(RSCSTATUS, ok_codes=None).stdout.strip()
        except NO_ANSWER:  # a wedged Heartbeat may not answer at all
            return ""

    @staticmethod
    def _masters(ctx: StepContext, name: str) -> list[str]:
        """PIDs of the Heartbeat master processes on this node (one is the rule)."""
        host = ctx.targets.get(name)
        if host is None:
            return []
        try:
            return host.query(HEARTBEAT_MASTERS, ok_codes=None).stdout.split()
        except NO_ANSWER:
            return []

    @staticmethod
    def _end_doubled(ctx: StepContext, masters: dict[str, list[str]]) -> None:
        """More than one Heartbeat runs on a node: each drops the other's messages as replays
        (the older one its own too: "No local heartbeat. Forcing restart.", for good), and the
        pair never settles. End every one of them there and start one."""
        for name, pids in masters.items():
            HeartbeatStep._end_and_restart(
                ctx,
                name,
                f"{len(pids)} Heartbeats run there (PIDs {' '.join(pids)}), each dropping the "
                "other's messages as replays: ending them all and starting one",
            )

    @staticmethod
    def _restart_wedged(ctx: StepContext, names: Sequence[str], lasted: float) -> None:
        """Restart Heartbeat on nodes whose resource status has stayed "transition" for
        `lasted` s while the peer owns the group and holds the VIP: they hold nothing, so the
        restart moves nothing; the restarted Heartbeat joins as the standby. A wedged Heartbeat
        delays its own stop for good, so its processes are ended first (END_WEDGED_HEARTBEAT)."""
        for name in names:
            HeartbeatStep._end_and_restart(
                ctx,
                name,
                f"Heartbeat has been in transition for {lasted:g} s while the peer serves (a "
                "lost hand-over message): restarting it there",
            )

    @staticmethod
    def _end_and_restart(ctx: StepContext, name: str, why: str) -> None:
        """Say `why`, end every Heartbeat on `name` (END_WEDGED_HEARTBEAT) and restart it; a
        failure is said too (the settle loop reports what is left)."""
        ctx.ui.warn(f"{name}: {why}")
        try:
            ctx.targets[name].run(
                END_WEDGED_HEARTBEAT + "; systemctl restart heartbeat", timeout=180
            )
        except Exception as exc:
            ctx.ui.warn(f"{name}: restarting Heartbeat failed: {exc}")

    @staticmethod
    def _take_over(ctx: StepContext, lbs: Sequence[str]) -> None:
        """Both Heartbeats run and nobody holds the resources (e.g. both gave them up while the
        API was down): the primary, else the first LB by name, takes them."""
        primary = ctx.inventory.load_balancer.primary
        for name in [primary, *sorted(n for n in lbs if n != primary)]:
            host = ctx.targets.get(name)
            if host is None:
                continue
            ctx.ui.warn(f"nobody holds the VIP: asking {name} to take over (hb_takeover)")
            try:
                host.run(f"{HB_TAKEOVER} all", timeout=60)
                return
            except Exception as exc:  # the next LB may still do it
                ctx.ui.warn(f"{name}: hb_takeover failed: {exc}")

    @staticmethod
    def _stand_down(ctx: StepContext, owners: Sequence[str]) -> None:
        """Heartbeat on both nodes claims the group while each sees the other active (a split
        brain its own "Both machines own our resources!" restart did not end): keep the owner
        the cloud routes to (`hcloud-failover status` says running), else the primary, and
        ask the others to give the group up (hb_standby); their stop takes the addresses off
        once the cloud routes elsewhere."""
        primary = ctx.inventory.load_balancer.primary

        def routed_here(name: str) -> bool:
            try:
                res = ctx.targets[name].query(f"{FAILOVER_SCRIPT_PATH} status", ok_codes=None)
            except NO_ANSWER:
                return False
            return res.stdout.strip() == "running"

        routed = [n for n in owners if routed_here(n)]
        keep = (routed or ([primary] if primary in owners else sorted(owners)))[0]
        for name in owners:
            if name == keep:
                continue
            ctx.ui.warn(
                f"both load balancers own the resource group: {name} gives it up "
                f"(hb_standby), {keep} keeps it"
            )
            try:
                ctx.targets[name].run(HB_STANDBY, timeout=60)
            except Exception as exc:  # the settle loop reports what is left
                ctx.ui.warn(f"{name}: hb_standby failed: {exc}")

    @staticmethod
    def _reassert(ctx: StepContext, holder: str) -> None:
        """`hcloud-failover reassert` on a node with the VIP: the owner makes the cloud route
        both addresses to itself (no API write when that is already so), another node takes
        them off once the cloud routes them elsewhere; a failure is the step's failure."""
        host = ctx.targets.get(holder)
        if host is None:
            return
        res = host.run(f"{FAILOVER_SCRIPT_PATH} reassert", timeout=120, ok_codes=None)
        if res.exited != 0:
            raise StepFailed(
                f"{holder}: `hcloud-failover reassert` could not make the cloud's routing and the "
                f"local addresses agree: {res.stderr.strip()[-300:]}"
            )

    @staticmethod
    def _running_for(ctx: StepContext, name: str) -> float:
        """Seconds since this node's Heartbeat started (its PID file's process); infinite when
        that cannot be read (an unusual layout: judge by the other signs alone)."""
        out = ctx.targets[name].query(age_command(), ok_codes=None).stdout.strip()
        return float(out) if out.isdigit() else float("inf")

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
