"""Heartbeat's FIFO race, counted: how many messages two writers that meet in Heartbeat's FIFO
lose, with resource-agents' own `ha_clustermsg` and with the heartbeat step's line.

A takeover makes two writers at once: `mach_down` (a shell script: `ha_clustermsg`) and the
child acquiring the node's group (Heartbeat's C code: one write). The reader here parses the
FIFO as Heartbeat's does (`>>>`, name=value lines, `<<<`; a line without `=` inside a message
drops it: "NV failure (msgfromsteam)"). Writer A sends RUNS messages with `ha_clustermsg` from
a heredoc, as mach_down does; writer B sends a message with one write(2) every 0-4 ms (seeded)
for as long as A runs. No lab needed: resource-agents is downloaded with apt and extracted.

    python -m bench.fiforace [--runs 400] [--cpu-hogs 2]

Target (ours): no message lost with the step's line.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.common import save, table, verdict
from runbook.steps.heartbeat import clustermsg_line

OCF_SOURCE = "\n. /usr/lib/ocf/"  # the package's shellfuncs sources its OCF library from here
A_BODY = "t=resource\nrsc_hold=foreign\ninfo=mach_down\n"  # mach_down's message
B_BODY = "t=ip-request-resp\nipaddr=hcloud-failover\nweown=yes\nok=OK\n"  # a one-write message
WRITER_A = """. "$SHELLFUNCS"
i=0
while [ "$i" -lt "$RUNS" ]; do
ha_clustermsg <<-!MSG
	t=resource
	rsc_hold=foreign
	info=mach_down
	!MSG
i=$((i + 1))
done
"""


def extract_agents(directory: Path) -> Path:
    """resource-agents downloaded with apt and extracted into `directory`; its root."""
    subprocess.run(["apt-get", "download", "resource-agents"], cwd=directory, check=True)
    deb = next(directory.glob("resource-agents_*.deb"))
    root = directory / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def shellfuncs(root: Path, out: Path, *, ours: bool) -> Path:
    """The package's shellfuncs (its OCF library from `root`), with the step's line if `ours`."""
    text = (
        (root / "etc/ha.d/shellfuncs").read_text().replace(OCF_SOURCE, f"\n. {root}/usr/lib/ocf/")
    )
    if ours:
        text = clustermsg_line().edited(text)
    out.write_text(text)
    return out


def read_messages(fifo: Path, got: dict[str, int]) -> None:
    """Heartbeat's reading of its FIFO: whole messages counted by their `t=`, the rest dropped."""
    with open(fifo, encoding="utf-8") as f:  # a FIFO: blocks until a writer opens it
        fields: list[str] | None = None
        for raw in f:
            line = raw.rstrip("\n")
            if line == ">>>" and fields is None:
                fields = []
            elif line == ">>>":  # not name=value: this message is dropped, and the next one
                got["nv_failures"] += 1  # whose start it was (its lines are skipped to a `>>>`)
                fields = None
            elif line == "<<<":
                if fields and all("=" in x for x in fields):
                    kind = fields[0]
                    got[kind] = got.get(kind, 0) + 1
                fields = None
            elif fields is not None:
                fields.append(line)


def race(sf: Path, root: Path, runs: int, tmp: Path, seed: int) -> dict[str, int]:
    """Both writers at once into one FIFO; what the reader got whole."""
    fifo = tmp / f"fifo-{sf.name}"
    os.mkfifo(fifo)
    got: dict[str, int] = {"nv_failures": 0}
    reader = threading.Thread(target=read_messages, args=(fifo, got))
    reader.start()
    keep = os.open(fifo, os.O_WRONLY)  # one writer open throughout: no EOF between the others
    env = {**os.environ, "SHELLFUNCS": str(sf), "RUNS": str(runs), "HA_FIFO": str(fifo)}
    env["OCF_ROOT"] = str(root / "usr/lib/ocf")
    a = subprocess.Popen(["sh", "-c", WRITER_A], env=env)
    message = f">>>\n{B_BODY}<<<\n".encode()
    rng = random.Random(seed)
    sent = 0
    while a.poll() is None:  # the C writer: one write(2) each, at random moments meanwhile
        os.write(keep, message)
        sent += 1
        time.sleep(rng.uniform(0, 0.004))
    if a.returncode != 0:
        raise SystemExit(f"writer A failed (exit {a.returncode})")
    os.close(keep)
    reader.join(timeout=60)
    got["sent_one_write"] = sent
    return got


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument(
        "--runs",
        type=int,
        default=400,
        help="messages the shell writer sends (the one-write writer sends while it runs)",
    )
    ap.add_argument("--seed", type=int, default=1, help="the one-write writer's pauses")
    ap.add_argument("--cpu-hogs", type=int, default=0, help="busy loops beside (a busy machine)")
    args = ap.parse_args()
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.cpu_hogs)
    ]
    rows, data = [], {}
    try:
        with tempfile.TemporaryDirectory() as name:
            tmp = Path(name)
            root = extract_agents(tmp)
            for ours in (False, True):
                label = "the step's line" if ours else "the package's ha_clustermsg"
                sf = shellfuncs(root, tmp / ("ours" if ours else "package"), ours=ours)
                got = race(sf, root, args.runs, tmp, args.seed)
                lost_a = args.runs - got.get("t=resource", 0)
                lost_b = got["sent_one_write"] - got.get("t=ip-request-resp", 0)
                data[label] = {"lost_shell": lost_a, "lost_one_write": lost_b, **got}
                rows.append(
                    (label, args.runs, got["sent_one_write"], lost_a, lost_b, got["nv_failures"])
                )
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    ours_lost = data["the step's line"]["lost_shell"] + data["the step's line"]["lost_one_write"]
    ok = ours_lost == 0
    table(
        f"two writers meeting in a FIFO, {args.cpu_hogs} busy loops",
        [
            "ha_clustermsg",
            "sent (shell)",
            "sent (one write)",
            "lost (shell)",
            "lost (one write)",
            "NV failures",
        ],
        rows,
    )
    table(
        "target", ["measure", "value", "target", ""], [("lost, ours", ours_lost, "0", verdict(ok))]
    )
    save(
        "fiforace" + (f"-hogs{args.cpu_hogs}" if args.cpu_hogs else ""),
        {"runs": args.runs, "cpu_hogs": args.cpu_hogs, "results": data},
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
