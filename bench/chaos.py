"""Chaos: the fault campaign of issue 11 on a fresh lab with the LB tier, seeded and reproducible.

Every fault of `lab/campaign.py` (or those named with --only) runs while the issue's probes run (a
new TCP+TLS `GET /readyz` every 100 ms through the VIP from a control plane and through the
floating IP from outside) and is checked against the invariants I1–I4. `--random N` draws a
sequence of N faults from the catalogue with the seed instead (the same seed, the same sequence).

    python -m bench.chaos [--seed 11] [--only holder-hung-5s ...] [--random 8] [--runs 1]
"""

from __future__ import annotations

import argparse
import os
import random
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, Lab, console, lab_session, save, table, verdict
from lab import campaign, scenarios


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=11, help="seed of the random draws (default 11)")
    ap.add_argument(
        "--only",
        action="append",
        choices=sorted(campaign.CATALOGUE),
        help="run only these faults (repeatable; default: every fault once)",
    )
    ap.add_argument(
        "--random", type=int, default=0, metavar="N", help="draw N faults with the seed instead"
    )
    ap.add_argument("--runs", type=int, default=1, help="repeat the sequence (default 1)")
    ap.add_argument("--state", type=Path, default=Path("/var/lib/rblab-bench"), help="lab state")
    ap.add_argument("--name", default="", help="results file name (default chaos[-random]-<seed>)")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    pool = args.only or list(campaign.CATALOGUE)
    order = campaign.draw(rng, args.random, pool) if args.random else pool
    lab = Lab(args.state, REPO / "lab" / "hosts.yaml")
    results: list[dict[str, Any]] = []
    with lab_session(lab):
        os.environ.update(RBLAB_STATE=str(lab.state), RBLAB_TOPOLOGY=str(lab.topology))
        inv = scenarios.inv_runner()
        setup = {"lab.up": lab.fresh(), **scenarios.lb_tier(inv)}
        installed = campaign.prepare()
        console.print(f"LB tier ready: {setup}; /readyz stand-in on {installed}")
        try:
            for run in range(args.runs):
                for name in order:
                    t0 = time.monotonic()
                    res = campaign.run_fault(campaign.CATALOGUE[name], inv, rng)
                    row = res.row() | {"run": run + 1, "seconds": round(time.monotonic() - t0)}
                    results.append(row)
                    console.print(
                        f"run {run + 1} {name}: {res.metric} {res.measured:g} (bound "
                        f"{res.bound:g}), I1 after {res.settle_s}, moves {res.moves}, "
                        f"failed {res.failed}, checks {res.checks}"
                    )
        finally:
            campaign.cleanup(installed)
    rows = [
        (
            r["name"],
            r["metric"],
            r["measured"],
            r["bound"],
            "-" if r["settle_s"] is None else r["settle_s"],
            r["moves"],
            f"{r['failed']['vip']}/{r['failed']['fip']}",
            verdict(all(r["checks"].values())),
        )
        for r in results
    ]
    table(
        "fault campaign (I1 settle s, I2 measured vs bound, I3 moves, failed requests VIP/FIP)",
        ["fault", "I2 metric", "measured", "bound", "I1 s", "moves", "failed", ""],
        rows,
    )
    name = args.name or (f"chaos-random-{args.seed}" if args.random else f"chaos-{args.seed}")
    save(name, {"seed": args.seed, "order": order, "setup_s": setup, "results": results})
    return 0 if all(all(r["checks"].values()) for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
