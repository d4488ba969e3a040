"""The campaign's outage arithmetic (`lab/invariants.py`), on recorded probe results."""

from __future__ import annotations

from lab.invariants import down_after, longest
from lab.probe import Attempt, ProbeResult


def result(fails: list[float], oks: list[float]) -> ProbeResult:
    attempts = [Attempt(t, False, "TimeoutError") for t in fails]
    attempts += [Attempt(t, True, "HTTP/1.1 200 OK") for t in oks]
    return ProbeResult("probe", tuple(sorted(attempts, key=lambda a: a.at)))


def test_an_outage_that_begins_just_before_the_faults_mark_counts() -> None:
    """Lab (public link down 20 s): the floating IP failed from 1.04 s to 8.3 s, the fault's
    mark said 1.05 s, and the longest outage "since the fault began" came out as 0.2 s (the VIP
    probe's), because only windows starting at or after the mark counted."""
    fip = result([1.04 + 0.1 * i for i in range(73)], [0.9, 8.4, 8.5])
    assert longest(fip, 1.05) == 7.35


def test_windows_before_the_fault_or_after_until_do_not_count() -> None:
    r = result([0.2, 0.3, 5.0, 5.1], [0.1, 0.5, 4.0, 5.3, 9.0])
    assert longest(r, 1.0) == 0.3  # the 0.2-0.5 window ended before the fault
    assert longest(r, 1.0, until=4.5) == 0.0
    assert longest(r) == 0.3
    assert down_after(r, 5.05) == 0.25
