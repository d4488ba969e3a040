"""The LB tier on the lab through the real CLI: converge, idempotency, failover with measured
outages, API faults during failover, secrets never leaked.

Measurements are appended to <lab state>/measurements.json (the README quotes them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab import labstate, netns, probe, topology

from .helpers import wait_for

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
INV = str(Path(sys.executable).parent / "inv")
OUTPUTS: list[str] = []


def token() -> str:
    return labstate.paths().token.read_text().strip()


def cli(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = dict(
        os.environ,
        INVOKE_RUNBOOK_INVENTORY=str(labstate.paths().root / "hosts.yaml"),
        RBLAB_HCLOUD_TOKEN=token(),
        COLUMNS="160",
    )
    if not Path(env["INVOKE_RUNBOOK_INVENTORY"]).exists():
        env["INVOKE_RUNBOOK_INVENTORY"] = str(REPO / "lab" / "hosts.yaml")
    r = subprocess.run(
        [INV, "-r", str(REPO), *args],
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )
    OUTPUTS.append(r.stdout + r.stderr)
    if check:
        assert r.returncode == 0, (
            f"inv {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        )
    return r


def recap(out: str) -> dict[str, int]:
    m = re.findall(r"^recap: (.*)$", out, re.M)
    assert m, out
    return {k: int(v) for k, v in (kv.split("=") for kv in m[-1].split())}


def measure(name: str, value: float) -> None:
    path = labstate.paths().root / "measurements.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data.setdefault(name, []).append(round(value, 3))
    path.write_text(json.dumps(data, indent=1, sort_keys=True))


def holders() -> list[str]:
    vip = topology.load().vip
    out = []
    for h in ("k8slb01", "k8slb02"):
        addrs = netns.host_exec(h, ["ip", "-4", "-o", "addr", "show", "dev", "ens10"]).stdout
        if f" {vip}/" in addrs:
            out.append(h)
    return out


def holder() -> str:
    wait_for("exactly one VIP holder", lambda: len(holders()) == 1, timeout=45, step=0.5)
    return holders()[0]


def other(name: str) -> str:
    return "k8slb02" if name == "k8slb01" else "k8slb01"


@pytest.fixture(scope="module")
def lb_tier(lab_up: dict[str, float]) -> dict[str, float]:
    t = {}
    for args in (
        ("prepare", "--host", "k8slb01", "--host", "k8slb02"),
        ("network",),
        ("lb.setup",),
    ):
        t0 = time.monotonic()
        r = cli(*args, "--yes")
        t[args[0]] = time.monotonic() - t0
        assert recap(r.stdout)["failed"] == 0
    wait_for(
        "one VIP holder",
        lambda: (
            sum(
                f" {topology.load().vip}/"
                in netns.host_exec(h, ["ip", "-4", "-o", "addr", "show", "dev", "ens10"]).stdout
                for h in ("k8slb01", "k8slb02")
            )
            == 1
        ),
        timeout=60,
        step=0.5,
    )
    for k, v in t.items():
        measure(f"first run {k} (s)", v)
    return t


def test_second_run_changes_nothing(lb_tier: dict[str, float]) -> None:
    for args in (
        ("prepare", "--host", "k8slb01", "--host", "k8slb02"),
        ("network",),
        ("lb.setup",),
    ):
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


def test_lb_status_is_healthy(lb_tier: dict[str, float]) -> None:
    r = cli("lb.status")
    assert "healthy" in r.stdout and holder() in r.stdout


def test_vip_and_floating_ip_serve(lb_tier: dict[str, float]) -> None:
    topo = topology.load()
    assert probe.probe(topo.vip, 6443, read=False, host="k8scontrol01", count=3).ok == 3
    assert probe.probe(topo.floating_ip, 6443, read=False, count=3).ok == 3


def drill(mode: str, seconds: int = 12) -> tuple[dict[str, float], dict[str, float]]:
    """Run the CLI drill; (longest outage, first outage) per target."""
    before = holder()
    r = cli("lb.failover-drill", "--mode", mode, "--yes", "--seconds", str(seconds))
    outs = {t: float(v) for t, v in re.findall(r"^outage: (\S+) ([0-9.]+)$", r.stdout, re.M)}
    first = {t: float(v) for t, v in re.findall(r"^first-outage: (\S+) ([0-9.]+)$", r.stdout, re.M)}
    assert len(outs) == 2, r.stdout
    wait_for(
        "pair settles",
        lambda: holders() == [other(before)] or (mode == "linkdown" and len(holders()) == 1),
        timeout=45,
        step=0.5,
    )
    return outs, first


@pytest.mark.parametrize("mode", ["stop", "kill", "linkdown"])
def test_failover_drill(lb_tier: dict[str, float], mode: str) -> None:
    deadtime = 3
    outs, first = drill(mode, seconds=20 if mode == "linkdown" else 12)
    for target, seconds in outs.items():
        measure(f"drill {mode} {target} longest outage (s)", seconds)
        # the failover itself: the first window (linkdown: the heal follows it)
        failover = first.get(target, seconds) if mode == "linkdown" else seconds
        measure(f"drill {mode} {target} failover outage (s)", failover)
        # target (issue 4): deadtime + 1 s. Met by stop and kill; a dead link adds Heartbeat's
        # detection (~deadtime + 0.5 s) to the API moves (~1 s), measured 4.5-5.4 s (more under
        # CI load): the README reports the miss, this bound guards against regressions
        assert failover <= deadtime + (1 if mode != "linkdown" else 3), (mode, outs, first)
    if mode != "linkdown":
        assert max(outs.values()) <= deadtime + 1, outs


def partition(on: bool) -> None:
    """Drop traffic between the two LBs on the private network only (router policy rules)."""
    for a, b in (("10.143.0.5", "10.143.0.6"), ("10.143.0.6", "10.143.0.5")):
        subprocess.run(
            [
                "ip",
                "-n",
                topology.ROUTER_NS,
                "rule",
                "add" if on else "del",
                "from",
                f"{a}/32",
                "to",
                f"{b}/32",
                "blackhole",
            ],
            check=True,
        )


def test_private_partition_no_failover_then_heal(lb_tier: dict[str, float]) -> None:
    topo = topology.load()
    before = holder()
    result: dict[str, probe.ProbeResult] = {}
    t = threading.Thread(
        target=lambda: result.update(
            vip=probe.probe(topo.vip, 6443, read=False, host="k8scontrol01", duration=16)
        )
    )
    t.start()
    partition(True)
    time.sleep(8)
    assert holder() == before  # the public path keeps the pair together
    partition(False)
    t.join()
    longest = max((o.seconds for o in result["vip"].outages), default=0.0)
    measure("private partition + heal: VIP outage (s)", longest)
    assert longest < 2, result["vip"].summary()
    assert holder() == before


def fault(**kw: object) -> None:
    import urllib.request

    req = urllib.request.Request(
        "http://127.0.0.1:8780/_lab/faults",
        method="POST",
        data=json.dumps(kw).encode(),
        headers={"Authorization": f"Bearer {token()}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


@pytest.mark.parametrize("code", ["rate_limit_exceeded", "locked", "unavailable"])
def test_failover_with_api_faults(lb_tier: dict[str, float], code: str) -> None:
    fault(fail_next=3, code=code)
    try:
        outs, _ = drill("stop")
    finally:
        fault(clear=True)
    for target, seconds in outs.items():
        measure(f"drill stop with 3x {code} {target} outage (s)", seconds)
        assert seconds <= 3 + 4, outs


def test_failover_while_api_is_down_recovers(lb_tier: dict[str, float]) -> None:
    topo = topology.load()
    before = holder()
    fault(outage=20)
    t0 = time.monotonic()
    netns.host_exec(before, ["systemctl", "stop", "heartbeat"], timeout=60)
    res = probe.probe(
        topo.vip,
        6443,
        read=False,
        host="k8scontrol01",
        duration=45,
        until=lambda r: time.monotonic() - t0 > 21 and r.attempts[-1].ok,
    )
    fault(clear=True)
    netns.host_exec(before, ["systemctl", "start", "heartbeat"], timeout=60)
    assert res.attempts[-1].ok, res.summary()
    back = res.attempts[-1].at
    measure("API down 20 s during failover: VIP back after (s)", back)
    assert holder() == other(before)


def test_dead_haproxy_on_holder(lb_tier: dict[str, float]) -> None:
    topo = topology.load()
    h = holder()
    pid = netns.host_exec(h, ["systemctl", "show", "-p", "MainPID", "haproxy"]).stdout
    main_pid = pid.strip().split("=")[-1]
    t0 = time.monotonic()
    netns.host_exec(h, ["sh", "-c", f"chmod 000 /etc/haproxy/haproxy.cfg; kill -9 {main_pid}"])
    res = probe.probe(
        topo.vip,
        6443,
        read=False,
        host="k8scontrol01",
        duration=20,
        until=lambda r: time.monotonic() - t0 > 2 and r.attempts[-1].ok,
    )
    netns.host_exec(h, ["chmod", "644", "/etc/haproxy/haproxy.cfg"])
    netns.host_exec(h, ["systemctl", "start", "haproxy"])
    longest = max((o.seconds for o in res.outages), default=0.0)
    measure("dead haproxy on holder: VIP outage (s)", longest)
    assert res.attempts[-1].ok and longest <= 10, res.summary()


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


@pytest.fixture(autouse=True)
def _sample_argv_during_tests() -> Iterator[None]:
    """Sample every process's argv while each test runs (failovers included): no token."""
    stop = threading.Event()
    found: list[str] = []

    def sample() -> None:
        tok = token() if labstate.paths().token.exists() else ""
        while tok and not stop.wait(0.05):
            for p in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    if tok.encode() in p.read_bytes():
                        found.append(str(p))
                except OSError:
                    pass

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    yield
    stop.set()
    t.join()
    assert not found, f"token in argv of {found}"
