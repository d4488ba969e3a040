"""What the LB pair spends of the project's API rate limit: at rest, and per failover.

Hetzner allows a project 3600 API requests an hour (a bucket that refills one a second), shared
with everything else using its tokens (the runbook, a cloud controller manager, a CSI driver).
The pair's failover script, its re-assert timer and its watchdog call the API; this counts what
the simulated API answered them, from its call log (the harness reads the lab's state from the
API's state file, not through the API, so nothing of its own is counted):

1. the pair at rest for `--rest` seconds (the re-assert timers of both LBs, the watchdogs);
2. a planned hand-over (`hb_standby` on the holder) and the `--window` seconds after it (the new
   holder's start, the old one's stop and its follow of the routing);
3. a dead holder (both its links down 10 s) and the `--window` seconds after the fault began;
4. the same with each API action taking `--slow-actions` seconds (Hetzner's take seconds; the
   lab's 0.2 s), where the alias add waits for the old holder's removal.

    python -m bench.apibudget --name apibudget
"""

from __future__ import annotations

import argparse
import os
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import REPO, Lab, console, lab_session, save, table
from lab import campaign, faults, invariants, netns, scenarios


def count(since: float, until: float) -> dict[str, Any]:
    """The API's public calls in [since, until): in all, by method and status, and by what
    they ask (the path with its IDs and query values as N)."""
    calls = [c for c in scenarios.api_calls(since) if c["time"] < until]
    kinds = Counter(f"{c['method']} {c['status']}" for c in calls)
    paths = Counter(
        f"{c['method']} {re.sub(r'=[^&]*', '=N', re.sub(r'/[0-9]+', '/N', c['path']))}"
        for c in calls
    )
    return {
        "calls": len(calls),
        "by_kind": dict(sorted(kinds.items())),
        "by_path": dict(paths.most_common()),
    }


def rested() -> None:
    scenarios.wait_for("the pair at rest", invariants.quiet, timeout=180, step=1)


def at_rest(seconds: float) -> dict[str, Any]:
    rested()
    since = time.time()
    time.sleep(seconds)
    out = count(since, time.time())
    out["per_hour"] = round(out["calls"] * 3600 / seconds)
    return out


def hand_over(window: float) -> dict[str, Any]:
    rested()
    h = scenarios.holder()
    since = time.time()
    netns.host_exec(h, [campaign.HB_STANDBY], check=False, timeout=60)
    time.sleep(max(0.0, since + window - time.time()))
    return {"from": h, **count(since, since + window)}


def dead_holder(window: float, action_s: float | None = None) -> dict[str, Any]:
    rested()
    h = scenarios.holder()
    slow = {} if action_s is None else {"action_seconds": action_s}
    since = time.time()
    with scenarios.api_fault(**slow), faults.links_down(h, ("ens10", "eth0")):
        time.sleep(20.0 if action_s else 10.0)
    time.sleep(max(0.0, since + window - time.time()))
    return {"from": h, "action_s": action_s or 0.2, **count(since, since + window)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rest", type=float, default=300.0, help="seconds the pair rests, counted")
    ap.add_argument("--window", type=float, default=120.0, help="seconds counted per failover")
    ap.add_argument(
        "--slow-actions", type=float, default=3.0, help="seconds per API action in case 4"
    )
    ap.add_argument("--state", type=Path, default=Path("/var/lib/rblab-bench"), help="lab state")
    ap.add_argument("--name", default="apibudget", help="results file (bench/results/NAME.json)")
    args = ap.parse_args()
    lab = Lab(args.state, REPO / "lab" / "hosts.yaml")
    with lab_session(lab):
        os.environ.update(RBLAB_STATE=str(lab.state), RBLAB_TOPOLOGY=str(lab.topology))
        inv = scenarios.inv_runner()
        setup = {"lab.up": lab.fresh(), **scenarios.lb_tier(inv)}
        result = {
            "at rest": at_rest(args.rest),
            "planned hand-over": hand_over(args.window),
            "dead holder": dead_holder(args.window),
            "dead holder, slow actions": dead_holder(args.window, args.slow_actions),
        }
    table(
        f"API calls of the LB pair (limit: 3600 an hour); windows of {args.window:g} s",
        ["case", "calls", "by method and status"],
        [
            (k, v["calls"], ", ".join(f"{n}: {c}" for n, c in v["by_kind"].items()))
            for k, v in result.items()
        ],
    )
    console.print(f"at rest: {result['at rest']['per_hour']} calls an hour")
    save(args.name, {"setup_s": setup, "rest_s": args.rest, "window_s": args.window, **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
