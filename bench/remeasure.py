"""Re-measure stored campaign results with today's outage rule: `python -m bench.remeasure FILE…`.

A results file of `bench.chaos` keeps each probe's outage windows (its summary line: start and
length, to 0.1 and 0.01 s). The "longest outage" of a run is computed again from those with
`lab.invariants.merge_windows` (windows less than `SERVED_AGAIN_S` apart are one outage), so
results measured before that rule (stop 38) compare with new ones. Only the windows' rounding
(±0.05 s) separates this from a live measurement.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path
from typing import Any

from bench.common import console, table
from lab.campaign import CATALOGUE, DURING
from lab.invariants import longest_window, merge_windows

_WINDOW = re.compile(r"([0-9.]+)s\+([0-9.]+)s")


def windows(summary: str) -> list[tuple[float, float]]:
    """The outage windows of a probe's summary line ("…; outages: 1.1s+3.30s, 4.5s+0.50s")."""
    listed = summary.rsplit("outages:", 1)[-1]
    return [(float(a), float(a) + float(b)) for a, b in _WINDOW.findall(listed)]


def remeasure(row: dict[str, Any]) -> float | None:
    """The run's longest outage from its fault's begin, windows merged; None for other metrics,
    and for a fault now judged by another one (packet loss: the longest time without an
    answer, whose single answers are service, not part of one outage)."""
    fault = CATALOGUE.get(str(row.get("name")))
    if row.get("metric") != DURING or (fault is not None and fault.bounds.metric != DURING):
        return None
    begin = float(row["marks"].get("begin", 0.0))
    return max(
        (
            longest_window(merge_windows(windows(summary)), since=begin)
            for summary in row["notes"]["probes"].values()
        ),
        default=0.0,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="bench/results/*.json of bench.chaos")
    args = ap.parse_args()
    rows = []
    for path in args.files:
        results = json.loads(path.read_text())["results"]
        by_fault: dict[str, list[tuple[float, float, float]]] = {}
        for r in results:
            again = remeasure(r)
            if again is not None:
                by_fault.setdefault(r["name"], []).append((r["measured"], again, r["bound"]))
        for name, runs in by_fault.items():
            before = [b for b, _, _ in runs]
            after = [a for _, a, _ in runs]
            rows.append(
                (
                    path.name,
                    name,
                    len(runs),
                    f"{statistics.median(before):.2f} / {max(before):.2f}",
                    sum(b > bound for b, _, bound in runs),
                    f"{statistics.median(after):.2f} / {max(after):.2f}",
                    sum(a > bound for _, a, bound in runs),
                )
            )
    table(
        "longest outage as stored, and with windows < SERVED_AGAIN_S apart merged",
        ["file", "fault", "runs", "stored median / max", "over", "merged median / max", "over"],
        rows,
    )
    console.print("bounds are each fault's own (4 s for a dead holder)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
