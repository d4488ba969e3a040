"""Heartbeat's keepalive against a dead holder's failover: an A/B on one lab.

The campaign's fault `holder-links-down-10s` (the VIP holder's links down 10 s, probes on the VIP
and the floating IP) runs `--runs` times; the keepalive on both LBs takes the values of `--arms`
in turn, two runs each (so each value gets both takeover paths: the home node's and the other's),
with the deadtime left as the inventory says (3 s). Each switch edits the `keepalive` line of
`ha.cf` on both LBs and restarts Heartbeat, the standby first, then waits for the pair to rest.

Why: Heartbeat declares a peer dead `deadtime` after its last packet, but its own takeover chain
(`mach_down`, `ResourceManager`, its messages to the master) waits for the master's main loop to
wake up, and with the peer gone the loop wakes mostly to send its own keepalives. A shorter
keepalive wakes it more often; the deadtime, and so the detection's worst case, stays.

    python -m bench.keepalive --arms 1,250ms --runs 20 --name keepalive-ab
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
from pathlib import Path
from typing import Any

from bench.common import REPO, Lab, console, lab_session, save, table
from lab import campaign, invariants, netns, scenarios

FAULT = "holder-links-down-10s"


def set_keepalive(value: str) -> None:
    """`keepalive VALUE` in ha.cf on both LBs, Heartbeat restarted (standby first), then rest."""
    holder = scenarios.holder(timeout=90)
    for lb in (scenarios.other(holder), holder):
        netns.host_exec(
            lb,
            [
                "sh",
                "-c",
                f"sed -i 's/^keepalive .*/keepalive {value}/' /etc/ha.d/ha.cf"
                " && systemctl restart heartbeat",
            ],
        )
        scenarios.wait_for("the pair at rest", invariants.quiet, timeout=180, step=1)
    for lb in scenarios.LBS:
        got = netns.host_exec(lb, ["cl_status", "hbparameter", "-p", "keepalive"]).stdout.strip()
        if got != value:
            raise AssertionError(f"{lb}: Heartbeat runs with keepalive {got}, not {value}")


def ab(inv: scenarios.Inv, arms: list[str], runs: int) -> list[dict[str, Any]]:
    installed = campaign.prepare()
    rows: list[dict[str, Any]] = []
    try:
        for i in range(runs):
            arm = arms[(i // 2) % len(arms)]
            if i % 2 == 0:
                set_keepalive(arm)
            res = campaign.run_fault(campaign.CATALOGUE[FAULT], inv, random.Random(i))
            taker = scenarios.other(str(res.notes.get("host")))
            took = res.notes.get("takeovers", {}).get(taker, {})
            row = {
                "keepalive": arm,
                "measured": res.measured,
                "taker": taker,
                "start": took.get("start"),
                "routed": took.get("routed"),
                "checks": res.checks,
            }
            rows.append(row)
            console.print(f"run {i + 1}/{runs}: {row}")
    finally:
        campaign.cleanup(installed)
    return rows


def summary(rows: list[dict[str, Any]], arms: list[str]) -> dict[str, Any]:
    out = {}
    for arm in arms:
        mine = [r for r in rows if r["keepalive"] == arm]
        if not mine:
            continue
        outages = [float(r["measured"]) for r in mine]
        starts = [float(r["start"]) for r in mine if r["start"] is not None]
        out[arm] = {
            "runs": len(mine),
            "outage_median": round(statistics.median(outages), 2),
            "outage_max": max(outages),
            "over_4s": sum(o > 4.0 for o in outages),
            "start_median": round(statistics.median(starts), 2) if starts else None,
            "start_min": min(starts) if starts else None,
            "start_max": max(starts) if starts else None,
        }
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arms", default="1,250ms", help="keepalive values as ha.cf writes them")
    ap.add_argument("--runs", type=int, default=20, help="links-down faults in all")
    ap.add_argument("--state", type=Path, default=Path("/var/lib/rblab-bench"), help="lab state")
    ap.add_argument("--name", default="keepalive-ab", help="results file (bench/results/NAME.json)")
    args = ap.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    lab = Lab(args.state, REPO / "lab" / "hosts.yaml")
    with lab_session(lab):
        os.environ.update(RBLAB_STATE=str(lab.state), RBLAB_TOPOLOGY=str(lab.topology))
        inv = scenarios.inv_runner()
        setup = {"lab.up": lab.fresh(), **scenarios.lb_tier(inv)}
        rows = ab(inv, arms, args.runs)
    result = summary(rows, arms)
    table(
        f"{FAULT}: keepalive A/B on one lab (deadtime 3 s)",
        ["keepalive", "runs", "outage median", "max", "over 4 s", "start median", "start max"],
        [
            (
                k,
                v["runs"],
                v["outage_median"],
                v["outage_max"],
                v["over_4s"],
                v["start_median"],
                v["start_max"],
            )
            for k, v in result.items()
        ],
    )
    save(args.name, {"setup_s": setup, "fault": FAULT, "summary": result, "runs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
