"""Pure parts of the lab (no root): route planning, unit time spans, probe outages, records."""

from __future__ import annotations

import os
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
