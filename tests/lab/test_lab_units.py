"""Pure parts of the lab (no root): route planning, unit time spans, probe outages, records."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from lab import hostunits, labstate, sdn
from lab.probe import Attempt, ProbeResult

NET = {
    "id": 7,
    "name": "k8s",
    "ip_range": "10.143.0.0/16",
    "subnets": [{"type": "cloud", "ip_range": "10.143.0.0/24", "gateway": "10.143.0.1"}],
}


def server(sid: int, name: str, ip: str | None, aliases: list[str] = []) -> dict:  # noqa: B006
    mac = f"86:00:00:00:00:{sid:02x}"
    pn = [{"network": 7, "ip": ip, "alias_ips": aliases, "mac_address": mac}] if ip else []
    return {"id": sid, "name": name, "private_net": pn}


def test_desired_routes_follow_attachments_aliases_and_floating_ips() -> None:
    state = {
        "networks": [NET],
        "servers": [
            server(1, "k8slb01", "10.143.0.5", ["10.143.0.50"]),
            server(2, "k8slb02", "10.143.0.6"),
            server(3, "k8node02", None),
            server(4, "elsewhere", "10.143.0.9"),
        ],
        "floating_ips": [
            {"ip": "203.0.113.100", "server": 2},
            {"ip": "203.0.113.101", "server": None},
        ],
    }
    d = sdn.desired(state, {"k8slb01", "k8slb02", "k8node02"})
    assert d.router == {
        "10.143.0.5": "r-k8slb01",
        "10.143.0.50": "r-k8slb01",
        "10.143.0.6": "r-k8slb02",
    }
    assert d.gateways == {"10.143.0.1"}
    assert d.inet == {"203.0.113.100": "i-k8slb02"}
    assert d.hosts["k8slb01"] == sdn.HostNet(
        "10.143.0.5", "10.143.0.0/16", "10.143.0.1", "86:00:00:00:00:01"
    )  # ens10 gets the API's MAC of the private NIC
    assert "k8node02" not in d.hosts  # not attached: not routed, no address


def test_desired_uses_the_network_range_for_the_host_route() -> None:
    wide = {**NET, "ip_range": "10.0.0.0/8"}
    d = sdn.desired({"networks": [wide], "servers": [server(1, "a", "10.143.0.2")]}, {"a"})
    assert d.hosts["a"].ip_range == "10.0.0.0/8" and d.hosts["a"].gateway == "10.143.0.1"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 5.0),
        ("5s", 5.0),
        ("2min", 120.0),
        ("1h 30s", 3630.0),
        ("100ms", 0.1),
        ("", None),
        ("soon", None),
    ],
)
def test_parse_span(text: str, seconds: float | None) -> None:
    assert hostunits.parse_span(text) == seconds


@pytest.mark.parametrize(
    ("text", "period"),
    [
        ("hourly", 3600.0),
        ("daily", 86400.0),
        ("*:0/5", 300.0),
        ("*-*-* *:0/15", 900.0),
        ("*:*:0/10", 10.0),
        ("Mon *-*-* 04:00", None),
    ],
)
def test_parse_calendar(text: str, period: float | None) -> None:
    assert hostunits.parse_calendar(text) == period


def test_read_unit_applies_dropins_and_resets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "x.service").write_text("[Service]\nType=notify\nRestart=no\n")
    (tmp_path / "x.service.d").mkdir()
    (tmp_path / "x.service.d/lab-a.conf").write_text(
        "[Service]\nType=\nType=forking\nRestart=always\n"
    )
    monkeypatch.setattr(hostunits, "UNIT_DIRS", (tmp_path,))
    u = hostunits.read_unit("x.service")
    assert hostunits.last(u, "Service", "Type") == "forking"
    assert u["Service"]["Type"] == ["forking"]
    assert hostunits.last(u, "Service", "Restart") == "always"


def test_probe_outages_are_windows_between_successes() -> None:
    att = [
        Attempt(0.0, True, "a"),
        Attempt(0.1, False, "x"),
        Attempt(0.2, False, "x"),
        Attempt(0.3, True, "b"),
        Attempt(0.4, False, "x"),
    ]
    res = ProbeResult("t", tuple(att))
    assert [(o.start, o.end) for o in res.outages] == [(0.1, 0.3), (0.4, 0.4)]
    assert res.answers == ("a", "b") and res.ok == 2


def test_procref_refuses_a_reused_pid(tmp_path: Path) -> None:
    me = labstate.ProcRef.of("me", os.getpid())
    assert me.alive()
    impostor = labstate.ProcRef("me", os.getpid(), me.start + 1)  # same PID, other start time
    assert not impostor.alive() and not impostor.signal(0)
    rec = labstate.Record(netns=["rbl-x"], procs=[me])
    rec.save(tmp_path / "r.json")
    assert labstate.Record.load(tmp_path / "r.json") == rec


class FakeIp:
    """`ip -n NS …` and `ip netns exec … nft` as `lab.sdn` runs them, against a dict of each
    namespace's /32 routes, lo gateways and ens10 (what a kernel would hold); every spawn is
    recorded by namespace."""

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, str]] = {}  # ns -> dst -> dev
        self.spawns: list[str] = []

    def __call__(self, argv: list[str], **kw: object) -> object:
        import json as _json
        import subprocess as _sp

        ns = argv[2] if argv[1] == "-n" else argv[3]
        self.spawns.append(ns)
        out = ""
        if "-batch" in argv:
            for line in str(kw.get("input", "")).splitlines():
                words = line.split()
                if words[:2] == ["route", "replace"] and "via" not in words:
                    self.routes.setdefault(ns, {})[words[2].split("/")[0]] = words[4]
                if words[:2] == ["route", "del"]:
                    self.routes.get(ns, {}).pop(words[2].split("/")[0], None)
        elif argv[-2:] == ["route", "show"]:
            out = _json.dumps([{"dst": d, "dev": v} for d, v in self.routes.get(ns, {}).items()])
        elif "link" in argv:
            out = _json.dumps([{"flags": ["UP"], "address": "86:00:00:00:00:01"}])
        elif "addr" in argv:
            out = "[]"
        return _sp.CompletedProcess(argv, 0, out, "")


@pytest.fixture
def fake_lab(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeIp:
    """`lab.sdn` against `FakeIp`: the lab's hosts.yaml, a state dir in tmp_path, every
    namespace present."""
    fake = FakeIp()
    monkeypatch.setenv("RBLAB_STATE", str(tmp_path))
    monkeypatch.delenv("RBLAB_TOPOLOGY", raising=False)
    monkeypatch.setattr(sdn.subprocess, "run", fake)
    monkeypatch.setattr(sdn, "_ns_ok", lambda ns: True)
    monkeypatch.setattr(sdn.labfirewall, "apply", lambda ns, text: fake.spawns.append(ns))
    monkeypatch.setattr(sdn, "_LAST_GATEWAYS", {})
    return fake


def lb_state(holder_id: int, fip_server: int) -> dict:
    lbs = [server(1, "k8slb01", "10.143.0.5"), server(2, "k8slb02", "10.143.0.6")]
    lbs[holder_id - 1]["private_net"][0]["alias_ips"] = ["10.143.0.50"]
    cp = server(3, "k8scontrol01", "10.143.0.11")
    for s in (*lbs, cp):
        s["public_net"] = {"ipv4": {"ip": f"198.51.100.{s['id']}"}, "firewalls": []}
        s["labels"] = {}
    fip = {"id": 9, "ip": "203.0.113.100", "server": fip_server}
    return {"networks": [NET], "servers": [*lbs, cp], "floating_ips": [fip], "firewalls": []}


def test_a_failovers_moves_reroute_only_the_traffic_routes(fake_lab: FakeIp) -> None:
    """An alias or floating IP move changes the router's and rbl-inet's /32s and nothing of the
    hosts: the fakecloud's hook must not re-assert every host's ens10 before the action counts
    as done. It did (18 `ip` spawns, 0.14-0.36 s idle, more in a failover, each move waiting
    for the one before): the data path followed the API by that much more, counted as outage."""
    sdn.apply_state(lb_state(holder_id=1, fip_server=1))  # attaches the hosts: a full pass
    assert any(ns.startswith("rbl-k8s") for ns in fake_lab.spawns)
    assert fake_lab.routes["rbl-router"]["10.143.0.50"] == "r-k8slb01"
    for moved in (lb_state(holder_id=2, fip_server=1), lb_state(holder_id=2, fip_server=2)):
        fake_lab.spawns.clear()
        sdn.apply_state(moved)
        assert set(fake_lab.spawns) <= {"rbl-router", "rbl-inet"}, fake_lab.spawns
        assert len(fake_lab.spawns) <= 4  # a read and a batch in each
    assert fake_lab.routes["rbl-router"]["10.143.0.50"] == "r-k8slb02"
    assert fake_lab.routes["rbl-inet"]["203.0.113.100"] == "i-k8slb02"
    # a host's own part changes (detached from the network): the hosts are synced again
    detached = lb_state(holder_id=2, fip_server=2)
    detached["servers"][2]["private_net"] = []
    fake_lab.spawns.clear()
    sdn.apply_state(detached)
    assert "rbl-k8scontrol01" in fake_lab.spawns
    # `apply_from_file` (lab.up, a reboot, the supervisor's repair) re-asserts every host
    fake_lab.spawns.clear()
    sdn.apply_state(detached, full=True)
    assert {"rbl-k8slb01", "rbl-k8slb02"} <= set(fake_lab.spawns)


def test_the_lab_init_never_waits_for_a_timers_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lab's PID 1 runs the timers and reaps orphans in one loop. It waited for each timer's
    job: a re-assert's follow (up to 60 s) left a killed Heartbeat a zombie that long, and the
    watchdog's restart of a wedged Heartbeat waited 5 s for the old PID to go while the peer
    took over (systemd's PID 1 reaps at once). Now a job runs beside the loop; the timer's next
    run counts from the job's end, and no second job starts while one runs."""
    (tmp_path / "x.timer").write_text("[Timer]\nOnUnitActiveSec=5\n")
    (tmp_path / "x.service").write_text("[Service]\nType=oneshot\n")
    release = tmp_path / "release"
    fake = tmp_path / "systemctl"
    fake.write_text(
        f'#!/bin/sh\necho "$*" >> {tmp_path}/calls\nwhile [ ! -e {release} ]; do sleep 0.05; done\n'
    )
    fake.chmod(0o755)
    monkeypatch.setattr(hostunits, "UNIT_DIRS", (tmp_path,))
    monkeypatch.setattr(hostunits, "SYSTEMCTL", str(fake))
    monkeypatch.setattr(hostunits.Units, "enabled", staticmethod(lambda *a, **k: ["x.timer"]))
    units = hostunits.Units()
    units.arm_timers(0.0)
    units.timers["x.timer"].next_due = 0.0
    units.run_due_timers(1.0)  # due: its job starts, and the call returns while it runs
    job = units.jobs["x.timer"]
    assert job.poll() is None
    units.run_due_timers(2.0)  # still at work: not started again
    assert units.jobs["x.timer"] is job
    release.touch()
    job.wait(timeout=10)
    before = time.time()
    units.run_due_timers(3.0)  # ended: the next run 5 s after the end
    assert "x.timer" not in units.jobs
    assert units.timers["x.timer"].next_due >= before + 5
    assert (tmp_path / "calls").read_text().splitlines() == ["restart x.service"]
