"""Failover: every failover scenario of the LB issue, repeated; median and max outage.

A fresh lab gets the LB tier (prepare on the LBs, network, lb.setup) through the real CLI, then
each scenario of `lab/scenarios.py` runs `--runs` times (outages seen by a TCP connect every
100 ms on VIP:6443 from k8scontrol01 and on the floating IP from the lab's client namespace).

    python -m bench.failover [--runs 10] [--only stop --only kill ...]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import REPO, Lab, console, lab_session, median_max, save, table, verdict
from lab import invariants, scenarios

DEADTIME = scenarios.DEADTIME
# name -> (run it, target in seconds for every measured number, what the target is)
Scenario = tuple[Callable[[scenarios.Inv], scenarios.Outcome], float, str]
SCENARIOS: dict[str, Scenario] = {
    "stop": (lambda inv: scenarios.drill(inv, "stop", 8), DEADTIME + 1, "deadtime + 1 s"),
    "kill": (lambda inv: scenarios.drill(inv, "kill", 8), DEADTIME + 1, "deadtime + 1 s"),
    "linkdown": (lambda inv: scenarios.drill(inv, "linkdown"), DEADTIME + 1, "deadtime + 1 s"),
    "stop-api-0.3s": (
        lambda inv: scenarios.api_latency(inv, "stop"),
        DEADTIME + 1,
        "deadtime + 1 s",
    ),
    "kill-api-0.3s": (
        lambda inv: scenarios.api_latency(inv, "kill"),
        DEADTIME + 1,
        "deadtime + 1 s",
    ),
    "linkdown-api-0.3s": (
        lambda inv: scenarios.api_latency(inv, "linkdown"),
        DEADTIME + 1,
        "deadtime + 1 s",
    ),
    "partition-heal": (lambda inv: scenarios.partition_heal(), 2.0, "no failover, < 2 s"),
    "api-3x429": (
        lambda inv: scenarios.api_faults(inv, "rate_limit_exceeded"),
        DEADTIME + 4,
        "serves again (bound deadtime + 4 s)",
    ),
    "api-3x-locked": (
        lambda inv: scenarios.api_faults(inv, "locked"),
        DEADTIME + 4,
        "serves again (bound deadtime + 4 s)",
    ),
    "api-3x503": (
        lambda inv: scenarios.api_faults(inv, "unavailable"),
        DEADTIME + 4,
        "serves again (bound deadtime + 4 s)",
    ),
    "api-down-20s": (
        lambda inv: scenarios.api_down(20),
        30.0,
        "serves again once the API is back",
    ),
    "dead-haproxy": (lambda inv: scenarios.dead_haproxy(), 10.0, "back within 10 s"),
}


def lb_tier(lab: Lab, inv: scenarios.Inv) -> dict[str, float]:
    """A fresh lab with the LB tier set up; the seconds each part took."""
    return {"lab.up": lab.fresh(), **scenarios.lb_tier(inv)}


def missed(name: str, out: scenarios.Outcome, target: float) -> bool:
    """A run to keep the pair's logs of: over its target, or a drill without the takeover it
    is for (a linkdown drill counts the peer's takeover during the cut)."""
    over = any(v > target for v in out.outages.values())
    return over or (name in ("stop", "kill", "linkdown") and not out.failed_over)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="runs per scenario (default 10)")
    ap.add_argument(
        "--only", action="append", choices=sorted(SCENARIOS), help="run only these (repeatable)"
    )
    ap.add_argument(
        "--state", type=Path, default=Path("/var/lib/rblab-bench"), help="lab state dir"
    )
    args = ap.parse_args()
    names = args.only or list(SCENARIOS)
    lab = Lab(args.state, REPO / "lab" / "hosts.yaml")
    runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with lab_session(lab):
        # lab/scenarios reads the lab's state dir and topology from the environment
        os.environ.update(RBLAB_STATE=str(lab.state), RBLAB_TOPOLOGY=str(lab.topology))
        inv = scenarios.inv_runner()
        setup = lb_tier(lab, inv)
        console.print(f"LB tier ready: {setup}")
        for i in range(args.runs):
            for name in names:
                t0, began = time.monotonic(), time.time()
                out = SCENARIOS[name][0](inv)
                record: dict[str, Any] = {
                    "outages": out.outages,
                    "extra": out.extra,
                    "failed_over": out.failed_over,
                }
                console.print(
                    f"run {i + 1}/{args.runs} {name}: {out.outages} "
                    f"failed_over={out.failed_over} ({time.monotonic() - t0:.0f} s)"
                )
                if missed(name, out, SCENARIOS[name][1]):
                    # kept with the result: the next run changes the pair, and a rare miss
                    # (CI 54: a dead holder not taken over) is read from this alone
                    record["pair"] = invariants.describe(lines=400, since=began, began="the run")
                    console.print("\n".join(record["pair"]), markup=False, highlight=False)
                runs[name].append(record)
    rows, summary, all_ok = [], {}, True
    for name in names:
        _, target, meaning = SCENARIOS[name]
        keys = sorted({k for r in runs[name] for k in r["outages"]})
        for k in keys:
            values = [r["outages"][k] for r in runs[name] if k in r["outages"]]
            med, mx = median_max(values)
            # linkdown: after the heal Heartbeat settles on either node, so only the failover
            # window counts there
            expect = False if name == "partition-heal" else None if "linkdown" in name else True
            moved = expect is None or all(r["failed_over"] is expect for r in runs[name])
            ok = mx <= target and moved
            all_ok &= ok
            summary[f"{name} {k}"] = {"median": med, "max": mx, "n": len(values), "ok": ok}
            rows.append((f"{name} ({k})", len(values), med, mx, f"{meaning}", verdict(ok)))
    table(
        "failover outage (s) per scenario",
        ["scenario (measured)", "runs", "median", "max", "target", ""],
        rows,
    )
    name = "failover" if not args.only else "failover-" + "-".join(names)
    save(name, {"setup_s": setup, "summary": summary, "runs": runs})
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
