"""What a run of the resource script costs before it does anything: a takeover runs it twice on
its critical path (Heartbeat's `status`, then `start`). Compares the script run as a file (Python
compiles its 2400 lines each time) with the launcher that imports it from its checked-hash
compiled copy, as the heartbeat step installs them. Times, for each form, RUNS runs of

- `status` on a node that does not hold the VIP (the taker's, just before its `start`): the
  env file read and checked, one `ip addr show`; nothing leaves the machine;
- a usage error: loading the script alone.

    python -m bench.scriptstart [--runs 60] [--cpu-hogs 2]

Target (ours): the launcher's `status` at most 75 % of the script's (median). No lab needed.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, save, table, verdict
from runbook.core.resources import PythonBytecode
from runbook.inventory import load_inventory
from runbook.render import lbfiles

TARGET = 0.75
PYTHON = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable


def install_launcher(directory: Path) -> tuple[Path, Path]:
    """The launcher (executable) and the module it imports (`lib/`, not compiled yet) under
    `directory`, as the heartbeat step installs them; its HCLOUD_FAILOVER_LIB is `lib/`."""
    lib = directory / "lib"
    lib.mkdir()
    module = lib / "hcloud_failover.py"
    module.write_text(lbfiles.failover_script())
    launcher = directory / "hcloud-failover"
    launcher.write_text(lbfiles.failover_launcher())
    launcher.chmod(0o755)
    return launcher, module


def _install(tmp: Path) -> tuple[Path, Path, dict[str, str]]:
    """The script as a file, and the launcher with its module compiled as the step does it."""
    inv = load_inventory(REPO / "hosts.yaml")
    name = inv.hosts_with_role("lb")[1].name
    script = tmp / "script" / "hcloud-failover"
    script.parent.mkdir()
    script.write_text(lbfiles.failover_script())
    launcher, module = install_launcher(tmp)
    subprocess.run(["sh", "-c", PythonBytecode(str(module)).compile_command()], check=True)
    env_file = tmp / "hcloud-failover.env"
    env_file.touch(mode=0o600)
    env_file.write_text(lbfiles.failover_env(inv, name, token="bench-not-a-token"))
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HCLOUD_FAILOVER_ENV": str(env_file),
        "HCLOUD_FAILOVER_LIB": str(module.parent),
        "HCLOUD_FAILOVER_LOCK": str(tmp / "lock"),
    }
    return script, launcher, env


def _times(argv: list[str], env: dict[str, str], runs: int, code: int) -> list[float]:
    out = []
    for _ in range(runs):
        began = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
        out.append((time.perf_counter() - began) * 1000)
        if done.returncode != code:
            raise SystemExit(f"{argv}: exit {done.returncode}, not {code}: {done.stderr[-300:]}")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=60, help="runs of each form and action")
    ap.add_argument("--cpu-hogs", type=int, default=0, help="busy loops beside (a busy machine)")
    args = ap.parse_args()
    hogs = [subprocess.Popen([PYTHON, "-c", "while True: pass"]) for _ in range(args.cpu_hogs)]
    rows, data = [], {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            script, launcher, env = _install(Path(tmp))
            forms = {
                "script": [PYTHON, "-IS", str(script)],
                "launcher": [PYTHON, "-IS", str(launcher)],
            }
            for action, code in (("status", 3), ("usage error", 2)):
                arg = "status" if action == "status" else "bogus"
                for form, argv in forms.items():
                    ms = _times([*argv, arg], env, args.runs, code)
                    ms.sort()
                    med, p90 = statistics.median(ms), ms[int(len(ms) * 0.9)]
                    data[f"{form} {action}"] = {"median_ms": round(med, 1), "p90_ms": round(p90, 1)}
                    rows.append(
                        (f"{form}: {action}", round(med, 1), round(p90, 1), round(ms[-1], 1))
                    )
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    ratio = data["launcher status"]["median_ms"] / data["script status"]["median_ms"]
    ok = ratio <= TARGET
    table(
        f"the resource script's start-up, {args.runs} runs each, {args.cpu_hogs} busy loops",
        ["form: action", "median ms", "p90 ms", "max ms"],
        rows,
    )
    table(
        "target",
        ["measure", "value", "target", ""],
        [
            ("launcher / script, status median", round(ratio, 2), f"≤ {TARGET:g}", verdict(ok)),
        ],
    )
    save(
        "scriptstart" + (f"-hogs{args.cpu_hogs}" if args.cpu_hogs else ""),
        {
            "runs": args.runs,
            "cpu_hogs": args.cpu_hogs,
            "python": PYTHON,
            "ratio": round(ratio, 2),
            "times": data,
        },
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
