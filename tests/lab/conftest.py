"""Lab tests: one lab per session (own state dir), built by `lab.up` and removed by `lab.down`."""

from __future__ import annotations

import os
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from .helpers import wipe_hosts

TEST_STATE = Path(os.environ.get("RBLAB_TEST_STATE", "/var/lib/rblab-test"))


def _down_dead_labs() -> None:
    """Remove what an interrupted session left (a lab whose processes are gone); never touch a live
    lab of the default state dir (namespace names are global: only one lab at a time)."""
    from lab import control, labstate

    for state in (TEST_STATE, Path(labstate.DEFAULT_STATE)):
        record = labstate.Record.load(state / "lab-record.json")
        if any(r.alive() for r in record.procs):
            pytest.fail(
                f"a lab of {state} is running (another session?): "
                f"`RBLAB_STATE={state} inv lab.down`"
            )
    for state in (TEST_STATE, Path(labstate.DEFAULT_STATE)):
        os.environ["RBLAB_STATE"] = str(state)
        control.down()
    os.environ["RBLAB_STATE"] = str(TEST_STATE)


@pytest.fixture(scope="session")
def lab_up() -> Iterator[dict[str, float]]:
    """Bring the lab up once (fresh host layers, cached apt debs kept) and down at the end."""
    if os.geteuid() != 0:
        pytest.skip("lab tests need root (network, mount and PID namespaces)")
    os.environ["RBLAB_STATE"] = str(TEST_STATE)
    from lab import control, netns

    if netns.lab_netns():
        _down_dead_labs()
    running = netns.lab_netns()
    if running:
        pytest.fail(f"another lab is running ({', '.join(running)}): `inv lab.down` it first")
    wipe_hosts(TEST_STATE)
    t0 = time.monotonic()
    res = control.up()
    timings = {"up": time.monotonic() - t0, "up_internal": res.seconds}
    yield timings
    control.down()


# The lab's own tests run first (they leave the hosts as they found them), the runbook's tiers after
# them, and the teardown checks last.
ORDER = {
    "test_lab_units.py": 0,
    "test_lab_hosts.py": 1,
    "test_lab_network.py": 2,
    # a jump from k8slb01 to k8scontrol01's public address: before the walkthrough's firewall
    "test_lab_ssh_config.py": 2,
    # needs a Kubernetes host the walkthrough (rank 5) has not prepared yet
    "test_k8s_containerd.py": 4,
    # uses the cluster the walkthrough module (rank 5) built, and must not build it itself
    "test_k8s_insecure_api.py": 6,
    "test_lab_firewall.py": 6,  # the same: scans the cluster the walkthrough built
    # day 2 changes the built cluster (restore, remove/re-join, reboots; the upgrade, last of
    # them, to the next minor): after the modules that expect it as the walkthrough left it
    "test_k8s_day2_backup.py": 7,
    "test_k8s_day2_certs.py": 7,
    "test_k8s_day2_patch.py": 7,
    "test_k8s_day2_remove.py": 7,
    "test_k8s_day2_upgrade.py": 7,
    # resets the lab to fresh hosts (twice): after every module that uses the built cluster
    "test_lab_ux.py": 8,
}
LAST = {"test_lab_zz_down.py"}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed lab test's report carries the LB pair as it was then: the addresses, the
    routing, Heartbeat's view and both LBs' Heartbeat logs from the test's start on. An
    intermittent failure is read from the CI log alone: the next test rebuilds or changes the
    lab (CI 54: a linkdown drill without a takeover, whose logs the later tests had replaced)."""
    report = yield
    if report.when == "call" and report.failed and _pair_is_up():
        report.sections.append(("the LB pair when the test failed", _pair_report(call.start)))
    return report


# each repair written (kept, so none is mistaken for a new one: `REPAIRS` is cleared per module)
_REPAIRS_SHOWN: list[object] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A lab test's failure, and a repair of a pair that did not come to rest (`REPAIRS`: the
    test that reports it runs at the module's end), are written to the terminal the moment they
    happen, not only in the summary at the end: a CI run cut short (a machine's session ended
    under it, CI 82) kept its dots and lost every failure's text."""
    from lab import scenarios

    texts = []
    if report.failed:
        sections = "\n".join(f"--- {title}\n{body}" for title, body in report.sections)
        texts.append(f"FAILED {report.nodeid} ({report.when}):\n{report.longreprtext}\n{sections}")
    for repair in scenarios.REPAIRS:
        if not any(repair is shown for shown in _REPAIRS_SHOWN):
            _REPAIRS_SHOWN.append(repair)
            texts.append(f"REPAIRED before the next fault (after {report.nodeid}):\n{repair}")
    reporter = _terminal()
    if not texts or reporter is None:
        return
    for text in texts:
        reporter.write_line("")
        reporter.write_line(text)
    reporter.flush()


_CONFIG: list[pytest.Config] = []


def pytest_configure(config: pytest.Config) -> None:
    _CONFIG.append(config)


def _terminal() -> Any:
    return _CONFIG[0].pluginmanager.get_plugin("terminalreporter") if _CONFIG else None


def _pair_is_up() -> bool:
    from lab import netns

    try:
        return bool(netns.lab_netns()) and os.environ.get("RBLAB_STATE") == str(TEST_STATE)
    except Exception:
        return False


def _pair_report(since: float) -> str:
    from lab import invariants

    try:
        return "\n".join(invariants.describe(lines=400, since=since, began="the test began"))
    except Exception as exc:  # the report is a help: its own failure must not hide the test's
        return f"(the pair could not be described: {exc!r})"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = Path(str(item.fspath)).name
        return 9 if name in LAST else ORDER.get(name, 5)

    items.sort(key=rank)
