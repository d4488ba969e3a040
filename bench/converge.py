"""Converge and re-run: `inv walkthrough --yes` on a fresh lab, then a no-op re-run.

Reports wall time per step, SSH connections/commands/SFTP sessions per host (counted from the lab
hosts' sshd logs) and commands per host (from the runbook's trace), against the issue's targets:
no-op re-run <= 10 s and <= 2 SSH connections per host.

    python -m bench.converge [--workers 2] [--state /var/lib/rblab-bench]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from bench.common import REPO, Lab, Run, console, lab_session, run_inv, save, table, verdict

NOOP_TARGET_S = 10.0
CONNECTIONS_TARGET = 2
LAB_HOSTS = REPO / "lab" / "hosts.yaml"


def topology(state: Path, workers: int) -> Path:
    """lab/hosts.yaml, or a copy with k8node01..k8nodeNN (addresses continue the lab's plan)."""
    if workers == 2:
        return LAB_HOSTS
    data = yaml.safe_load(LAB_HOSTS.read_text())
    hosts = {k: v for k, v in data["hosts"].items() if v["role"] != "worker"}
    for i in range(1, workers + 1):
        priv, pub = f"10.143.0.{6 + i}", f"203.0.113.{15 + i}"
        hosts[f"k8node{i:02d}"] = {
            "role": "worker",
            "private_ip": priv,
            "public_ip": pub,
            "address": pub,
        }
    data["hosts"] = hosts
    state.mkdir(parents=True, exist_ok=True)
    out = state / f"topology-{len(hosts)}.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def run_summary(run: Run) -> dict[str, Any]:
    return {
        "seconds": round(run.seconds, 2),
        "recap": run.recap,
        "cpu_busy": run.cpu_busy,
        "steps": [
            {
                "step": s["step"],
                "seconds": s["seconds"],
                "changed": s.get("changed", 0),
                "command_seconds": s["command_seconds"],
            }
            for s in run.steps
        ],
        "ssh_per_host": run.sessions,
        "traced_commands_per_host": run.commands,
    }


def converge(lab: Lab) -> dict[str, Any]:
    n = len(lab.hosts())
    console.rule(f"converge: {n}-host lab ({lab.state})")
    up = lab.fresh()
    console.print(f"fresh lab up in {up:.1f} s; walkthrough --yes …")
    first = run_inv(lab, "walkthrough", "--yes")
    console.print(f"converged in {first.seconds:.1f} s ({first.recap}); no-op re-run …")
    noop = run_inv(lab, "walkthrough", "--yes")
    return {
        "hosts": n,
        "lab_up_s": round(up, 2),
        "converge": run_summary(first),
        "noop": run_summary(noop),
    }


def report(res: dict[str, Any]) -> bool:
    first, noop = res["converge"], res["noop"]
    rows = []
    noop_steps = {s["step"]: s for s in noop["steps"]}
    for s in first["steps"]:
        n = noop_steps.get(s["step"], {})
        rows.append(
            (
                s["step"],
                s["seconds"],
                s["changed"],
                n.get("seconds", "-"),
                n.get("command_seconds", "-"),
            )
        )
    rows.append(("total (wall, incl. connect)", first["seconds"], "", noop["seconds"], ""))
    table(
        f"{res['hosts']}-host lab: walkthrough --yes, seconds per step",
        ["step", "fresh converge", "changed targets", "no-op re-run", "no-op remote cmd-s"],
        rows,
    )
    console.print(
        f"machine CPU busy: {first['cpu_busy']:.0%} during the converge, "
        f"{noop['cpu_busy']:.0%} during the no-op re-run (all cores)"
    )
    host_rows = []
    for h, fs in first["ssh_per_host"].items():
        ns = noop["ssh_per_host"][h]
        host_rows.append(
            (
                h,
                fs["connections"],
                fs["commands"],
                fs["sftp"],
                ns["connections"],
                ns["commands"],
                noop["traced_commands_per_host"].get(h, 0),
            )
        )
    table(
        "SSH per host (sshd logs)",
        [
            "host",
            "conn (converge)",
            "cmds",
            "sftp",
            "conn (no-op)",
            "cmds (no-op)",
            "traced cmds (no-op)",
        ],
        host_rows,
    )
    max_conn = max(max(r[1], r[4]) for r in host_rows)
    ok_time = noop["seconds"] <= NOOP_TARGET_S
    ok_conn = max_conn <= CONNECTIONS_TARGET
    console.print(
        f"no-op re-run {noop['seconds']:.1f} s (target <= {NOOP_TARGET_S:g} s): "
        f"{verdict(ok_time)}; at most {max_conn} SSH connection(s) per host per run "
        f"(target <= {CONNECTIONS_TARGET}): {verdict(ok_conn)}; "
        f"no-op changed={noop['recap'].get('changed')}"
    )
    return ok_time and ok_conn and noop["recap"].get("changed") == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="workers in the lab (default 2)")
    ap.add_argument(
        "--state", type=Path, default=Path("/var/lib/rblab-bench"), help="lab state dir"
    )
    args = ap.parse_args()
    lab = Lab(args.state, topology(args.state, args.workers))
    with lab_session(lab):
        res = converge(lab)
    ok = report(res)
    save(f"converge-{res['hosts']}", res)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
