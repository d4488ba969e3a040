"""`inv lb.failover-drill`: fail the VIP holder, measure the outage a client sees, restore.

The probe runs on a non-LB host of the cluster (it reaches the private VIP and, over the public
network, the floating IP), opening a new TCP connection to each every 100 ms. The post's version
of this drill is "shut the primary down and count lost pings" (~5).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.console import Ui
from ..core.remote import Host
from ..core.waiting import now, pause, wait_until
from ..inventory import Inventory
from ..render.lbfiles import HEARTBEAT_PID_PATH
from .lbstatus import LbNode, collect, node_status

FILES = Path(__file__).resolve().parents[2] / "files"
PROBE_PATH = "/usr/local/lib/runbook/tcp-probe"
PROBE_OUT = "/run/runbook-drill.json"
HB_PID = HEARTBEAT_PID_PATH
MODES = ("stop", "kill", "linkdown")


class DrillError(RuntimeError):
    """The pair is not in a state where a drill makes sense."""


@dataclass(frozen=True)
class DrillResult:
    mode: str
    failed_node: str
    holder_after: str
    targets: dict[str, Any] = field(default_factory=dict)
    takeover_s: float | None = None  # when the peer held both addresses, after the failure

    def outage(self, target: str) -> float:
        return float(self.targets.get(target, {}).get("longest_outage_s", -1))


def holder_of(nodes: list[LbNode]) -> str:
    holders = [n.name for n in nodes if n.reachable and n.holds_vip]
    if len(holders) != 1:
        raise DrillError(
            f"expected exactly one LB holding the VIP, found {holders or 'none'}: "
            "run `inv lb.status` and `inv lb.setup` first"
        )
    return holders[0]


def fail_command(inv: Inventory, mode: str, seconds: float) -> str:
    """What the drill runs on the holder; linkdown restores itself (SSH goes down with it)."""
    lb = inv.load_balancer
    if mode == "stop":
        return "systemctl stop heartbeat"
    if mode == "kill":
        return f'kill -9 "$(cat {HB_PID})"'
    if mode == "linkdown":
        priv, pub = shlex.quote(lb.interface), shlex.quote(lb.public_interface)
        down = max(1.0, seconds / 2)
        script = (
            f"ip route save table main > /run/runbook-routes; "
            f"ip link set {priv} down; ip link set {pub} down; sleep {down:.1f}; "
            f"ip link set {pub} up; ip link set {priv} up; sleep 0.2; "
            "ip route restore < /run/runbook-routes 2>/dev/null; rm -f /run/runbook-routes"
        )
        return f"nohup sh -c {shlex.quote(script)} >/dev/null 2>&1 </dev/null &"
    raise DrillError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")


def restore_command(inv: Inventory, mode: str) -> str:
    """Bring the failed node back as the standby (auto_failback off: it stays standby)."""
    if mode == "stop":
        return "systemctl start heartbeat"
    if mode == "kill":
        # a SIGKILLed master leaves the addresses behind, and a restarted Heartbeat that finds
        # the peer owning the group does not remove them: do it before restarting
        lb = inv.load_balancer
        return (
            f"ip addr del {lb.vip}/32 dev {shlex.quote(lb.interface)} 2>/dev/null; "
            f"ip addr del {lb.floating_ip.address}/32 dev {shlex.quote(lb.public_interface)} "
            "2>/dev/null; systemctl restart heartbeat"
        )
    return "true"  # linkdown restores itself


def run_drill(
    inv: Inventory,
    lbs: Mapping[str, Host],
    probe_host: Host,
    ui: Ui,
    *,
    mode: str,
    seconds: float,
) -> DrillResult:
    """Checkpoint → probe → fail → wait → restore → report."""
    if mode not in MODES:
        raise DrillError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    holder = holder_of(collect(inv, lbs))
    lb = inv.load_balancer
    vip_t = f"{lb.vip}:6443"
    fip_t = f"{lb.floating_ip.address}:6443"
    ui.checkpoint(
        f"Fail {holder} ({mode}) now? The VIP {lb.vip} and the floating IP "
        f"{lb.floating_ip.address} should move to the peer; {probe_host.name} probes both for "
        f"{seconds:.0f} s."
    )
    probe_host.write_file(PROBE_PATH, (FILES / "tcp-probe").read_bytes(), mode=0o755, backup=False)
    args = " ".join(f"--target {shlex.quote(t)}" for t in (vip_t, fip_t))
    # the whole background job detaches from the session's stdout/stderr, or `run` would wait
    job = (
        f"{PROBE_PATH} {args} --duration {seconds:.1f} > {PROBE_OUT}.tmp && "
        f"mv {PROBE_OUT}.tmp {PROBE_OUT}"
    )
    probe_host.run(
        f"rm -f {PROBE_OUT}; nohup sh -c {shlex.quote(job)} >/dev/null 2>&1 </dev/null &"
    )
    pause(1.5)  # a baseline before the failure
    peer = next(n for n in lbs if n != holder)
    ui.print(f"failing {holder}: {mode}")
    lbs[holder].run(fail_command(inv, mode, seconds))
    failed_at = now()
    takeover: float | None = None
    try:
        with ui.wait(f"probing {vip_t} and {fip_t}", seconds) as bar:
            task = bar.add_task("probe", total=seconds)
            end = failed_at + seconds
            while now() < end:
                pause(0.5)
                if takeover is None and _holds_both(inv, lbs[peer]):
                    takeover = now() - failed_at
                bar.update(task, completed=seconds - (end - now()))
        data = _read_probe(probe_host, timeout=15)
    finally:  # whatever went wrong while measuring, the failed node comes back as the standby
        if mode == "linkdown":
            _wait_back(lbs[holder], timeout=seconds + 30)
        lbs[holder].run(restore_command(inv, mode))
    pause(1)
    after = collect(inv, lbs)
    holding = [n.name for n in after if n.holds_vip]
    res = DrillResult(mode, holder, ",".join(holding) or "none", data.get("targets", {}), takeover)
    deadtime = lb.heartbeat.deadtime
    ui.table(
        f"failover drill: {mode} on {holder}",
        ["target", "longest outage", "failed/attempts", f"target ≤ {deadtime + 1} s"],
        [
            (
                t,
                f"{res.outage(t):.2f} s",
                f"{v['failures']}/{v['attempts']}",
                "yes" if res.outage(t) <= deadtime + 1 else "NO",
            )
            for t, v in res.targets.items()
        ],
    )
    for t, v in res.targets.items():  # plain lines for scripts: longest and first window
        ui.print(f"outage: {t} {res.outage(t):.2f}")
        first = v.get("windows", [])[:1]
        if first and first[0][1] is not None:
            ui.print(f"first-outage: {t} {first[0][1] - first[0][0]:.2f}")
    if takeover is None:
        ui.print(
            f"{peer} did not take over the VIP and the floating IP while {holder} was "
            "failed: see `inv lb.status` and both LBs' Heartbeat logs",
            style="red",
        )
    else:  # a plain line for scripts too
        ui.print(f"takeover: {peer} {takeover:.1f}")
    ui.print(
        f"VIP now held by {res.holder_after}; {holder} restored ({restore_command(inv, mode)})"
    )
    return res


def _holds_both(inv: Inventory, host: Host) -> bool:
    """Whether `host` holds the VIP and the floating IP now (one round trip; unreachable: no)."""
    node = node_status(inv, host)
    return node.reachable and node.holds_vip and node.holds_fip


def _read_probe(host: Host, *, timeout: float) -> dict[str, Any]:
    raw = wait_until(
        lambda: host.read_file(PROBE_OUT) or b"",
        seconds=timeout,
        interval=0.5,
        failure=DrillError(f"{host.name}: the probe produced no result in {PROBE_OUT}"),
    )
    return dict(json.loads(raw))


def _wait_back(host: Host, *, timeout: float) -> None:
    from ..core.remote import NO_ANSWER

    def answers() -> bool:
        try:
            host.close()
            return host.query("true", ok_codes=None).exited == 0
        except NO_ANSWER:  # a link that came back may stall a look
            return False

    wait_until(
        answers,
        seconds=timeout,
        interval=1,
        failure=DrillError(f"{host.name}: not reachable {timeout:.0f} s after the link test"),
    )
