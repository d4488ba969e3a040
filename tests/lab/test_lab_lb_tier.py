"""The LB tier on the lab through the real CLI: converge, idempotency, failover with measured
outages, API faults during failover, secrets never leaked.

Measurements are appended to <lab state>/measurements.json (the README quotes them).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import labstate, netns, probe, scenarios, topology
from runbook.inventory import load_inventory
from runbook.render import lbfiles
from tests import fifowrites

from .helpers import measure, recap

pytestmark = pytest.mark.lab
OUTPUTS: list[str] = []
DEADTIME = scenarios.DEADTIME


token = scenarios.token
cli = scenarios.inv_runner(OUTPUTS)
holders, holder, other = scenarios.holders, scenarios.holder, scenarios.other


@pytest.fixture(scope="module")
def lb_tier(lab_up: dict[str, float]) -> dict[str, float]:
    scenarios.REPAIRS.clear()  # this module's own (`test_no_scenario_left_the_pair_broken`)
    t = scenarios.lb_tier(cli)
    for k, v in t.items():
        measure(f"first run {k} (s)", v)
    return t


def test_second_run_changes_nothing(lb_tier: dict[str, float]) -> None:
    for args in scenarios.LB_TIER_RUNS:
        t0 = time.monotonic()
        r = cli(*args, "--yes")
        measure(f"second run {args[0]} (s)", time.monotonic() - t0)
        rc = recap(r.stdout)
        assert rc["changed"] == 0 and rc["failed"] == 0, r.stdout


def test_dry_run_changes_nothing_and_shows_diffs(lb_tier: dict[str, float]) -> None:
    cfg = "/etc/haproxy/haproxy.cfg"
    netns.host_exec("k8slb02", ["sh", "-c", f"echo '# local edit' >> {cfg}"])
    before = netns.host_exec("k8slb02", ["cat", cfg]).stdout
    r = cli("lb.haproxy", "--dry-run")
    assert "-# local edit" in r.stdout and "dry-run" in r.stdout
    assert netns.host_exec("k8slb02", ["cat", cfg]).stdout == before
    r = cli("lb.haproxy", "--yes")
    assert recap(r.stdout)["changed"] == 1
    assert "# local edit" not in netns.host_exec("k8slb02", ["cat", cfg]).stdout
    # the replaced version is kept under the runbook's backup directory, not beside the file
    backup = netns.host_exec("k8slb02", ["cat", f"/var/backups/runbook{cfg}"]).stdout
    assert backup == before
    assert netns.host_exec("k8slb02", ["test", "-e", f"{cfg}.rb-bak"], check=False).returncode


def test_old_copies_of_secrets_are_removed_without_a_restart(lb_tier: dict[str, float]) -> None:
    """An earlier runbook kept `<file>.rb-bak` beside the files it replaced, the Heartbeat key
    and the API token's env file included: the heartbeat step removes those copies (shown in
    the plan), restarts nothing, and never makes a copy of a secret itself."""
    secrets = ("/etc/ha.d/authkeys", "/etc/hcloud-failover.env")
    pid = {}
    for h in ("k8slb01", "k8slb02"):
        for f in secrets:
            netns.host_exec(h, ["cp", "-p", f, f"{f}.rb-bak"])
        pid[h] = netns.host_exec(h, ["cat", "/var/run/heartbeat.pid"]).stdout.strip()
    r = cli("lb.heartbeat", "--yes")
    rc = recap(r.stdout)
    assert rc["changed"] == 2 and rc["failed"] == 0, r.stdout
    assert "old backup copies of secret files" in r.stdout and "restart" not in r.stdout
    for h in ("k8slb01", "k8slb02"):
        found = netns.host_exec(
            h,
            ["sh", "-c", "ls /etc/ha.d/authkeys.rb-bak /etc/hcloud-failover.env.rb-bak "
             "/var/backups/runbook/etc/ha.d/authkeys /var/backups/runbook/etc/hcloud-failover.env"],
            check=False,
        ).stdout.split()  # fmt: skip
        assert found == [], (h, found)
        assert netns.host_exec(h, ["cat", "/var/run/heartbeat.pid"]).stdout.strip() == pid[h]
    assert recap(cli("lb.heartbeat", "--yes").stdout)["changed"] == 0


def test_lb_status_is_healthy(lb_tier: dict[str, float]) -> None:
    r = cli("lb.status")
    assert "healthy" in r.stdout and holder() in r.stdout
    # Heartbeat's view beside the addresses: the holder's row says its Heartbeat gives it the
    # group (cl_status rscstatus), the other's that it does not, and nothing is in transition
    cells = [[c.strip() for c in ln.strip("│ ").split("│")] for ln in r.stdout.splitlines()]
    rows = {c[0]: c for c in cells if c[0] in ("k8slb01", "k8slb02") and len(c) > 2}
    assert set(rows) == {"k8slb01", "k8slb02"}, r.stdout
    for name, row in rows.items():
        assert row[2] == ("held" if name == holder() else "not held"), r.stdout
    # (the lab's inventory draws a warning of its own: api_dns_name inside dns_domain)
    hb_warnings = [ln for ln in r.stdout.splitlines() if "warning:" in ln and "Heartbeat" in ln]
    assert "transition" not in r.stdout and hb_warnings == [], r.stdout


def test_heartbeat_runs_with_the_inventorys_timings(lb_tier: dict[str, float]) -> None:
    """What Heartbeat itself reports (`cl_status hbparameter`) is what the inventory says: a
    sub-second keepalive written as milliseconds is read as such, not dropped or truncated to a
    whole second (Heartbeat would then wait up to 4 × longer for its own takeover chain)."""
    hb = load_inventory(labstate.paths().root / "hosts.yaml").load_balancer.heartbeat
    want = {
        "keepalive": lbfiles.heartbeat_time(hb.keepalive),
        "deadtime": lbfiles.heartbeat_time(hb.deadtime),
        "warntime": lbfiles.heartbeat_time(hb.effective_warntime),
    }
    for lb in scenarios.LBS:
        got = {
            p: netns.host_exec(lb, ["cl_status", "hbparameter", "-p", p]).stdout.strip()
            for p in want
        }
        assert got == want, lb


def test_heartbeats_scripts_send_each_message_in_one_write(lb_tier: dict[str, float]) -> None:
    """On each LB, `ha_clustermsg` as Heartbeat's scripts get it from the installed
    /etc/ha.d/shellfuncs (the package's file with the step's line) writes a message whose body
    comes slowly in one write: another writer's message can no longer land inside it and make
    Heartbeat drop both ("NV failure (msgfromsteam)", a stalled takeover; official CI of
    stop 47)."""
    for lb in scenarios.LBS:
        out = netns.host_exec(lb, ["python3", "-c", fifowrites.PROGRAM]).stdout
        assert fifowrites.reads(out) == [fifowrites.MESSAGE], (lb, out)


def test_the_watchdog_runs_with_a_raised_cpu_share(lb_tier: dict[str, float]) -> None:
    """On each LB the watchdog's session (its answer to a pause: the re-assert run) is at
    autogroup nice -10; the lab's services run in sessions of their own, as under systemd, so
    Heartbeat's session, and this look's, keep the default."""
    look = (  # Heartbeat writes its PID file "%10d": `read` drops the padding
        'read -r hb < /var/run/heartbeat.pid; echo "heartbeat $(cat /proc/"$hb"/autogroup)"; '
        'for p in /proc/[0-9]*; do tr "\\0" " " < "$p"/cmdline 2>/dev/null | '
        'grep -q "^/bin/sh /usr/local/sbin/haproxy-watchdo[g]" && '
        'echo "watchdog $(cat "$p"/autogroup)"; done; '
        'echo "look $(cat /proc/self/autogroup)"'
    )
    for lb in ("k8slb01", "k8slb02"):
        out = netns.host_exec(lb, ["sh", "-c", look]).stdout
        seen: dict[str, list[list[str]]] = {}
        for ln in out.splitlines():
            label, *rest = ln.split()
            seen.setdefault(label, []).append(rest)
        # "/autogroup-N nice V" per process
        assert seen.get("watchdog") and {g[-1] for g in seen["watchdog"]} == {"-10"}, (lb, out)
        assert [g[-1] if g else "" for g in seen.get("heartbeat", [])] == ["0"], (lb, out)
        # per session. A process of the boot's default group reads an empty file (the kernel
        # prints only real autogroups): so does this look when the test runner itself was started
        # without a session of its own, as by a CI service (official CI of 6bac9b6)
        look_group = seen["look"][0][0] if seen["look"][0] else "(the default group)"
        assert look_group != seen["watchdog"][0][0], (lb, out)


def test_vip_and_floating_ip_serve(lb_tier: dict[str, float]) -> None:
    topo = topology.load()
    assert probe.probe(topo.vip, 6443, read=False, host="k8scontrol01", count=3).ok == 3
    assert probe.probe(topo.floating_ip, 6443, read=False, count=3).ok == 3


@pytest.mark.parametrize(
    "mode",
    [
        "stop",
        "kill",
        "linkdown",
    ],
)
def test_failover_drill(lb_tier: dict[str, float], mode: str) -> None:
    out = scenarios.drill(cli, mode)
    assert out.failed_over, out
    for target, seconds in out.outages.items():
        measure(f"drill {mode} {target} failover outage (s)", seconds)
        # target (issue 4): deadtime + 1 s. Met by stop and kill; a dead link adds Heartbeat's
        # detection (its first API call comes 3.0-3.5 s after the cut) to the API moves
        # (~0.65 s): bench 3.4-4.8 s, more under CI load. The README explains the bound; this
        # one guards against regressions
        bound = DEADTIME + (1 if mode != "linkdown" else 3)
        assert seconds <= bound, (mode, out)
    for name, seconds in out.extra.items():
        if name == "takeover":  # when the peer held both addresses: not an outage
            measure(f"drill {mode} peer held both addresses after (s)", seconds)
            continue
        measure(f"drill {mode} {name} outage (s)", seconds)
        if mode != "linkdown":
            assert seconds <= DEADTIME + 1, out


def test_private_partition_no_failover_then_heal(lb_tier: dict[str, float]) -> None:
    out = scenarios.partition_heal()
    measure("private partition + heal: VIP outage (s)", out.outages["vip"])
    assert out.failed_over is False, out  # the public path keeps the pair together
    assert out.outages["vip"] < 2, out


@pytest.mark.parametrize("code", ["rate_limit_exceeded", "locked", "unavailable"])
def test_failover_with_api_faults(lb_tier: dict[str, float], code: str) -> None:
    out = scenarios.api_faults(cli, code)
    assert out.failed_over, out
    for target, seconds in out.outages.items():
        measure(f"drill stop with 3x {code} {target} outage (s)", seconds)
        assert seconds <= DEADTIME + 4, out


def test_failover_while_api_is_down_recovers(lb_tier: dict[str, float]) -> None:
    out = scenarios.api_down(20)
    measure("API down 20 s during failover: VIP back after (s)", out.outages["vip back after"])
    assert out.failed_over, out


def test_dead_haproxy_on_holder(lb_tier: dict[str, float]) -> None:
    out = scenarios.dead_haproxy()
    measure("dead haproxy on holder: VIP outage (s)", out.outages["vip"])
    # haproxy cannot restart (its config is refused): the watchdog hands over with hb_standby,
    # and the peer serves within the 10 s
    assert out.failed_over, out
    assert out.outages["vip"] <= 10, out


def test_concurrent_service_starts_leave_one_daemon(lb_tier: dict[str, float]) -> None:
    """The lab's systemctl runs one job per unit at a time and `start` of an active unit does
    nothing, as systemd does: racing starts (watchdog, Restart=, an operator) must not leave a
    second haproxy behind that keeps serving after the first one dies."""
    standby = other(holder())
    netns.host_exec(
        standby,
        [
            "sh",
            "-c",
            "systemctl restart haproxy & systemctl start haproxy & "
            "systemctl --no-block restart haproxy & systemctl start haproxy & wait",
        ],
    )
    # the --no-block job runs detached (as systemd queues it): wait until no haproxy job runs
    netns.host_exec(
        standby,
        [
            "sh",
            "-c",
            "sleep 1; n=0; while [ $n -lt 600 ]; do "
            "flock -n /run/rblab/jobs/haproxy.service.lock true && sleep 0.5 && "
            "flock -n /run/rblab/jobs/haproxy.service.lock true && exit 0; "
            "n=$((n+1)); sleep 0.1; done; exit 1",
        ],
        timeout=120,
    )
    # parent of every live haproxy process (a stopped master the init has not reaped yet is a
    # zombie, state Z: dead, not serving, so not counted)
    parents = netns.host_exec(
        standby,
        [
            "sh",
            "-c",
            'for p in /proc/[0-9]*; do [ "$(cat $p/comm 2>/dev/null)" = haproxy ] && '
            "awk '/^State:/ {s=$2} /^PPid:/ {pp=$2} END {if (s != \"Z\") print pp}' "
            "$p/status; done",
        ],
        check=False,
    ).stdout.split()
    assert parents.count("1") == 1, parents  # one master (its workers have it as parent)
    assert netns.host_exec(standby, ["systemctl", "is-active", "haproxy"]).stdout.strip() == (
        "active"
    )


def test_token_never_leaks(lb_tier: dict[str, float]) -> None:
    tok = token()
    for h in ("k8slb01", "k8slb02", "k8scontrol01"):
        r = netns.host_exec(
            h, ["sh", "-c", f"grep -rlF -- {tok[:24]!s} /etc /var/log 2>/dev/null"], check=False
        )
        files = set(r.stdout.split())
        assert files <= {"/etc/hcloud-failover.env"}, (h, files)
        mode = netns.host_exec(
            h, ["stat", "-c", "%a %U", "/etc/hcloud-failover.env"], check=False
        ).stdout.strip()
        assert h == "k8scontrol01" or mode == "600 root"
    for out in OUTPUTS:
        assert tok not in out
    cmdlines = subprocess.run(
        ["sh", "-c", "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '"],
        capture_output=True,
        text=True,
    ).stdout
    assert tok not in cmdlines


def _argv_holding(secrets: set[bytes]) -> list[str]:
    """The /proc/<pid>/cmdline files that hold one of `secrets`. A process that ends while
    /proc is read is skipped, not an error (CI 68: a `ProcessLookupError` from the glob ended
    the sampler thread, and with it the check, silently)."""
    hits: list[str] = []
    with os.scandir("/proc") as entries:
        pids = [e.name for e in entries if e.name.isdigit()]
    for pid in pids:
        try:
            argv = Path("/proc", pid, "cmdline").read_bytes()
        except OSError:
            continue
        if any(secret in argv for secret in secrets):
            hits.append(f"/proc/{pid}/cmdline")
    return hits


@pytest.fixture(autouse=True)
def _sample_argv_during_tests() -> Iterator[None]:
    """Sample every process's argv while each test runs (failovers included): no token, the
    current one nor any the test rotated away from. The sampler failing is the test failing."""
    stop = threading.Event()
    found: list[str] = []
    died: list[BaseException] = []
    samples = [0]
    secrets: set[bytes] = set()

    def sample() -> None:
        try:
            while not stop.wait(0.05):
                if labstate.paths().token.exists():
                    secrets.add(token().encode())
                secrets.discard(b"")
                if secrets:
                    found.extend(_argv_holding(secrets))
                    samples[0] += 1
        except BaseException as exc:  # reported by the fixture after the test
            died.append(exc)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    yield
    stop.set()
    t.join()
    assert not died, f"the argv sampler died: {died[0]!r}"
    assert not found, f"token in argv of {sorted(set(found))}"
    assert not secrets or samples[0] > 0, "the argv sampler never sampled"


def test_no_scenario_left_the_pair_broken(lb_tier: dict[str, float]) -> None:
    """Each scenario starts from a pair at rest; one that did not come to rest within 90 s was
    repaired (`inv lb.setup --yes`) so the scenarios after it are measured from a healthy pair.
    Such a repair is a failure of the scenario before it, reported here once: before, a pair
    left broken failed every later scenario (CI on 0e98735: 9 in a row, 90 s each)."""
    scenarios.no_repairs(cli)
