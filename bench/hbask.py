"""Asking Heartbeat: how long `cl_status nodestatus PEER` takes, alone and through hb-ask.

Heartbeat 3.0.6 reads a query on a new API connection only when its main loop wakes up (a packet
from the peer, a timer); hb-ask wakes it with a connection to its register socket. A fresh lab
gets the LB tier through the real CLI; then, on each LB, `--asks` queries with each tool, one
after the other and alternating, each timed inside the host (`date +%s%N` around it):

- at rest: both Heartbeats up, packets from the peer on both links every keepalive;
- peer dead: the VIP holder's links down for the whole round (as in the campaign's fault
  `holder-links-down-10s`, but held): the survivor hears nothing from its peer, which is when a
  takeover asks Heartbeat most. Asked on the survivor once it holds the group.

No target: it reports where the time of a failover's checks goes (the resource script asks
`cl_status nodestatus PEER` before it moves anything, the watchdog several times a second).

With `--failover-runs N`, the campaign's fault `holder-links-down-10s` then runs N times on the
same lab, with hb-ask on (mode 0755) and off (0644: the resource script and the watchdog,
restarted, fall back to plain `cl_status`) in the order on, on, off, off, ... so each side gets
both takeover paths (the holder alternates). Same lab, same hour: the A/B the day-to-day spread
of this shared machine would otherwise hide.

    python -m bench.hbask [--asks 100] [--failover-runs 0] [--state /var/lib/rblab-bench]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
from pathlib import Path
from typing import Any

from bench.common import REPO, Lab, console, lab_session, save, table
from lab import campaign, faults, netns, scenarios

TOOLS = {"cl_status": "cl_status", "hb-ask": "/usr/local/sbin/hb-ask"}
# one query per line: "<tool> <ms>"; the two tools alternate, so both see the same moments
ROUND = """
for i in $(seq {asks}); do
  for t in {tools}; do
    s=$(date +%s%N); "$t" nodestatus {peer} >/dev/null 2>&1; e=$(date +%s%N)
    echo "$t $(( (e - s) / 1000 ))"
    sleep 0.05
  done
done
"""


def ask_round(host: str, peer: str, asks: int) -> dict[str, list[float]]:
    """`asks` timed queries per tool on `host` (ms)."""
    script = ROUND.format(asks=asks, tools=" ".join(TOOLS.values()), peer=peer)
    out = netns.host_exec(host, ["bash", "-c", script], timeout=600).stdout
    got: dict[str, list[float]] = {name: [] for name in TOOLS}
    by_path = {path: name for name, path in TOOLS.items()}
    for line in out.splitlines():
        path, micros = line.split()
        got[by_path[path]].append(int(micros) / 1000)
    return got


def stats(ms: list[float]) -> dict[str, float]:
    ordered = sorted(ms)
    return {
        "n": len(ms),
        "median_ms": round(statistics.median(ms), 1),
        "p90_ms": round(ordered[int(0.9 * (len(ms) - 1))], 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def set_hb_ask(on: bool) -> None:
    """hb-ask on or off on both LBs (its mode), the watchdog restarted to pick it up."""
    for lb in scenarios.LBS:
        mode = "0755" if on else "0644"
        netns.host_exec(
            lb,
            ["sh", "-c", f"chmod {mode} {TOOLS['hb-ask']} && systemctl restart haproxy-watchdog"],
        )


def failover_ab(inv: scenarios.Inv, runs: int) -> list[dict[str, Any]]:
    """`runs` links-down faults, hb-ask on, on, off, off, ...; each run's numbers."""
    installed = campaign.prepare()
    out = []
    try:
        for i in range(runs):
            on = (i // 2) % 2 == 0
            set_hb_ask(on)
            res = campaign.run_fault(
                campaign.CATALOGUE["holder-links-down-10s"], inv, random.Random(i)
            )
            taker = scenarios.other(str(res.notes.get("host")))
            took = res.notes.get("takeovers", {}).get(taker, {})
            row = {
                "hb_ask": on,
                "measured": res.measured,
                "taker": taker,
                "start": took.get("start"),
                "routed": took.get("routed"),
                "ok": all(res.checks.values()),
            }
            out.append(row)
            console.print(f"run {i + 1}/{runs}: {row}")
    finally:
        set_hb_ask(True)
        campaign.cleanup(installed)
    return out


def ab_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    summary = {}
    for label, on in (("hb-ask", True), ("cl_status", False)):
        mine = [r for r in rows if r["hb_ask"] is on]
        if not mine:
            continue
        outages = [float(r["measured"]) for r in mine]
        starts = [float(r["start"]) for r in mine if r["start"] is not None]
        summary[label] = {
            "runs": len(mine),
            "outage_median": round(statistics.median(outages), 2),
            "outage_max": max(outages),
            "over_4s": sum(o > 4.0 for o in outages),
            "start_median": round(statistics.median(starts), 2) if starts else None,
            "start_max": max(starts) if starts else None,
        }
    return summary


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--asks", type=int, default=100, help="queries per tool and round")
    ap.add_argument(
        "--state", type=Path, default=Path("/var/lib/rblab-bench"), help="lab state dir"
    )
    ap.add_argument("--name", default="hbask", help="results file name (bench/results/NAME.json)")
    ap.add_argument(
        "--failover-runs", type=int, default=0, help="links-down faults after the rounds (A/B)"
    )
    args = ap.parse_args()
    lab = Lab(args.state, REPO / "lab" / "hosts.yaml")
    rounds: dict[str, dict[str, list[float]]] = {}
    with lab_session(lab):
        os.environ.update(RBLAB_STATE=str(lab.state), RBLAB_TOPOLOGY=str(lab.topology))
        inv = scenarios.inv_runner()
        setup = {"lab.up": lab.fresh(), **scenarios.lb_tier(inv)}
        console.print(f"LB tier ready: {setup}")
        holder = scenarios.holder()
        survivor = scenarios.other(holder)
        for host in (holder, survivor):
            rounds[f"at rest, on {host}"] = ask_round(host, scenarios.other(host), args.asks)
        with faults.links_down(holder, ("ens10", "eth0")):
            took = scenarios.wait_for(
                f"{survivor} holding the VIP",
                lambda: survivor in scenarios.holders(),
                timeout=60,
            )
            console.print(f"{survivor} holds the VIP {took:.1f} s after the links went down")
            rounds[f"peer dead, on {survivor}"] = ask_round(survivor, holder, args.asks)
        failovers = failover_ab(inv, args.failover_runs) if args.failover_runs else []
    summary: dict[str, Any] = {}
    rows = []
    for label, got in rounds.items():
        summary[label] = {tool: stats(ms) for tool, ms in got.items()}
        for tool in TOOLS:
            s = summary[label][tool]
            rows.append((label, tool, s["n"], s["median_ms"], s["p90_ms"], s["max_ms"]))
    table(
        "cl_status nodestatus PEER, ms per query",
        ["round", "tool", "n", "median", "p90", "max"],
        rows,
    )
    result: dict[str, Any] = {"setup_s": setup, "asks": args.asks, "summary": summary}
    if failovers:
        result["failover_ab"] = {"summary": ab_summary(failovers), "runs": failovers}
        ab = result["failover_ab"]["summary"]
        table(
            "holder's links down, hb-ask on / off (same lab)",
            ["asking", "runs", "outage median", "max", "over 4 s", "fault → start median"],
            [
                (k, v["runs"], v["outage_median"], v["outage_max"], v["over_4s"], v["start_median"])
                for k, v in ab.items()
            ],
        )
    save(args.name, {**result, "rounds": rounds})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
