"""Scale: the 7-host lab against 2 LBs + 3 control planes + 20 workers, in one run.

Both labs converge from fresh (`walkthrough --yes`), then re-run as a no-op; the ratios of the
no-op re-run and of the prepare step tell whether hosts are handled in parallel (target: the
25-host no-op re-run <= 1.5 x the 7-host one).

    python -m bench.scale [--workers 20]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bench.common import Lab, console, lab_session, save, table, verdict
from bench.converge import converge, report, topology

RATIO_TARGET = 1.5


def step_seconds(res: dict[str, Any], run: str, step: str) -> float:
    return sum(s["seconds"] for s in res[run]["steps"] if s["step"] == step)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=20, help="workers in the big lab (default 20)")
    ap.add_argument(
        "--state", type=Path, default=Path("/var/lib/rblab-bench"), help="lab state dir"
    )
    args = ap.parse_args()
    results = {}
    for workers in (2, args.workers):
        lab = Lab(args.state, topology(args.state, workers))
        with lab_session(lab):
            res = converge(lab)
        report(res)
        results[res["hosts"]] = res
    small, big = (results[k] for k in sorted(results))
    rows = []
    ratios = {}
    for label, run, step in (
        ("no-op re-run (wall)", "noop", None),
        ("no-op prepare step", "noop", "prepare"),
        ("fresh converge (wall)", "converge", None),
        ("fresh prepare step", "converge", "prepare"),
    ):
        a = small[run]["seconds"] if step is None else step_seconds(small, run, step)
        b = big[run]["seconds"] if step is None else step_seconds(big, run, step)
        ratios[label] = round(b / a, 2)
        rows.append((label, a, b, b / a))
    table(
        f"scale: {small['hosts']} vs {big['hosts']} hosts (seconds)",
        ["measure", f"{small['hosts']} hosts", f"{big['hosts']} hosts", "ratio"],
        rows,
    )
    ok = ratios["no-op re-run (wall)"] <= RATIO_TARGET
    console.print(
        f"no-op ratio {ratios['no-op re-run (wall)']:.2f} (target <= {RATIO_TARGET}): {verdict(ok)}"
    )
    save("scale", {"ratios": ratios, "small": small, "big": big})
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
