"""bench.chaos's busy machine: the CPU hogs run while the block runs, each in its own session,
and are gone (reaped, by their PIDs) when it ends, also when it ends with an error."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bench.chaos import blame_repair, cpu_hogs


def _state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def test_the_hogs_run_in_their_own_sessions_and_end_with_the_block() -> None:
    with cpu_hogs(2) as pids:
        assert len(pids) == 2
        for pid in pids:
            # alive: a hog that has just exec'd may be in "D" reading the interpreter from disk
            # (CI on 44995d8); not a zombie, not stopped, not gone
            assert _state(pid) not in (None, "Z", "X", "T", "t")
            assert os.getsid(pid) == pid  # a session of its own: its own autogroup
    assert [_state(pid) for pid in pids] == [None, None]  # killed and reaped


def test_the_hogs_end_when_the_block_fails() -> None:
    with pytest.raises(RuntimeError), cpu_hogs(1) as pids:
        raise RuntimeError("a fault run failed")
    assert _state(pids[0]) is None


def test_no_hogs_by_default() -> None:
    with cpu_hogs(0) as pids:
        assert pids == []


def test_a_fault_that_left_the_pair_broken_fails_not_the_one_after_it() -> None:
    """The next fault's repair is the previous fault's failure: it fails "left at rest"."""
    first = {"name": "a", "run": 1, "checks": {"I1": True}, "notes": {}}
    second = {"name": "b", "run": 1, "checks": {"I1": True}, "notes": {}}
    results = [first]
    blame_repair(results, second)  # b found the pair at rest
    assert first["checks"] == {"I1": True}
    results.append(second)
    third = {"name": "c", "checks": {"I1": True}, "notes": {"repaired_before": ["lb.setup"]}}
    blame_repair(results, third)
    assert second["checks"] == {"I1": True, "left at rest": False}
    assert second["notes"]["left_broken"] == ["lb.setup"]
    assert third["checks"] == {"I1": True} and first["checks"] == {"I1": True}
    blame_repair([], third)  # the first fault of a run has nobody to blame


def test_a_result_names_the_code_it_ran(tmp_path: Path) -> None:
    """Stop 38's diagnostic runs had the lab change uncommitted, and their files named the commit
    before it; a `git archive` recorded an empty commit."""
    from bench.common import describe_commit

    assert describe_commit(tmp_path) == "not a git checkout"
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    rev = subprocess.run(
        [*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    (tmp_path / "notes.txt").write_text("untracked: not the code\n")
    assert describe_commit(tmp_path) == rev
    (tmp_path / "a.py").write_text("x = 2\n")
    assert describe_commit(tmp_path) == rev + "+changes"


def test_stored_results_are_remeasured_with_split_outages_merged() -> None:
    """`bench.remeasure`: a stored run whose failover outage was split by one answer (stop 38's
    links-down-s38 run 1: reported 3.3 s) counts as one outage from the fault's begin."""
    from bench.remeasure import remeasure, windows

    vip = "https://10.143.0.50:6443/readyz from x: 433/474 ok; outages: 1.1s+3.30s, 4.5s+0.50s"
    fip = "https://203.0.113.100:6443/readyz from y: 436/474 connects ok; outages: 1.1s+3.30s"
    assert windows(vip) == [(1.1, 1.1 + 3.3), (4.5, 5.0)]
    row = {
        "metric": "longest outage",
        "marks": {"begin": 1.04, "end": 11.07},
        "notes": {"probes": {"vip": vip, "fip": fip}},
    }
    assert remeasure(row) == 3.9  # from the first failure (1.1) to the answer after the last (5.0)
    assert remeasure({**row, "metric": "failed requests"}) is None
    # stored before stop 40 as "longest outage"; the loss fault is judged without the merge now
    assert remeasure({**row, "name": "private-loss-30pct-60s"}) is None
    assert remeasure({**row, "name": "holder-links-down-10s"}) == 3.9
