"""bench.failover keeps the pair's logs of a run that missed: over its target, or a drill
without its takeover (CI 54's dead holder that was not taken over was read from nothing)."""

from __future__ import annotations

import pytest

from bench.failover import missed
from lab.scenarios import Outcome


@pytest.mark.parametrize(
    ("name", "outages", "failed_over", "want"),
    [
        ("linkdown", {"vip": 3.9, "fip": 3.8}, True, False),
        ("linkdown", {"vip": 3.9, "fip": 3.8}, False, True),  # the peer never took over
        ("linkdown", {"vip": 10.2, "fip": 10.3}, True, True),
        ("kill", {"vip": 0.1, "fip": 0.0}, False, True),
        ("partition-heal", {"vip": 0.0, "fip": 0.0}, False, False),  # no failover is its point
        ("partition-heal", {"vip": 2.5, "fip": 0.0}, False, True),
    ],
)
def test_a_run_over_its_target_or_without_its_takeover_is_kept_with_the_pairs_logs(
    name: str, outages: dict[str, float], failed_over: bool, want: bool
) -> None:
    target = 2.0 if name == "partition-heal" else 4.0
    assert missed(name, Outcome(f"drill {name}", outages, {}, failed_over), target) is want
