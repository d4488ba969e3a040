"""The inventory's `firewall` section: SSH from anywhere needs a confirmation, rule syntax, the
warning without a section; the repo's two inventories carry a meaningful one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook.inventory import InventoryError, load_inventory, parse_inventory

REPO = Path(__file__).resolve().parents[1]
HOSTS = REPO / "hosts.yaml"


def data() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(HOSTS.read_text(encoding="utf-8"))
    return loaded


def problems(d: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(InventoryError) as exc:
        parse_inventory(d, path=HOSTS)
    return [(p.key, p.reason) for p in exc.value.problems]


def test_repo_inventories_have_a_firewall() -> None:
    post = load_inventory(HOSTS)
    assert post.firewall is not None and [str(n) for n in post.firewall.admin_networks] == [
        "192.0.2.0/24"
    ]
    lab = load_inventory(REPO / "lab" / "hosts.yaml")
    assert lab.firewall is not None
    assert [str(n) for n in lab.firewall.admin_networks] == ["203.0.113.201/32"]  # rbl-op
    assert not [w for w in lab.warnings if w.key.startswith("firewall")]


@pytest.mark.parametrize("anywhere", ["0.0.0.0/0", "::/0"])
def test_ssh_from_anywhere_is_refused_unless_confirmed(anywhere: str) -> None:
    d = data()
    d["firewall"]["admin_networks"] = ["192.0.2.0/24", anywhere]
    (found,) = problems(d)
    assert found[0] == "firewall.admin_networks[1]"
    assert "opens SSH on every server to the whole internet" in found[1]
    assert "ssh_from_anywhere: true" in found[1]
    d["firewall"]["ssh_from_anywhere"] = True
    inv = parse_inventory(d, path=HOSTS)
    fw_warnings = [w for w in inv.warnings if w.key.startswith("firewall")]
    assert [(w.key, "confirmed" in w.reason) for w in fw_warnings] == [
        ("firewall.admin_networks[1]", True)
    ]


def test_a_confirmation_without_anywhere_is_refused() -> None:
    d = data()
    d["firewall"]["ssh_from_anywhere"] = True
    assert [k for k, _ in problems(d)] == ["firewall.ssh_from_anywhere"]


def test_api_open_to_anywhere_is_a_warning() -> None:
    d = data()
    d["load_balancer"]["public_allow"] = ["0.0.0.0/0"]
    inv = parse_inventory(d, path=HOSTS)
    assert any(
        w.key == "load_balancer.public_allow[0]" and "cloud firewall" in w.reason
        for w in inv.warnings
    )


def test_no_section_is_a_warning() -> None:
    d = data()
    del d["firewall"]
    inv = parse_inventory(d, path=HOSTS)
    assert inv.firewall is None
    (w,) = [w for w in inv.warnings if w.key == "firewall"]
    assert "reachable from the internet" in w.reason


@pytest.mark.parametrize(
    ("section", "key", "reason"),
    [
        ({"admin_networks": []}, "firewall.admin_networks", "at least 1"),
        ({"admin_networks": ["192.0.2.1"]}, "firewall.admin_networks[0]", "with its prefix"),
        ({"admin_networks": ["192.0.2.1/24"]}, "firewall.admin_networks[0]", "host bits"),
        ({"admin_networks": ["192.0.2.0/24"], "ports": 1}, "firewall.ports", "unknown key"),
        (
            {
                "admin_networks": ["192.0.2.0/24"],
                "rules": [{"roles": ["worker"], "protocol": "tcp", "sources": ["0.0.0.0/0"]}],
            },
            "firewall.rules[0]",
            "port is required for tcp",
        ),
        (
            {
                "admin_networks": ["192.0.2.0/24"],
                "rules": [
                    {"roles": ["nas"], "protocol": "icmp", "sources": ["0.0.0.0/0"]},
                ],
            },
            "firewall.rules[0].roles[0]",
            "not allowed",
        ),
        (
            {
                "admin_networks": ["192.0.2.0/24"],
                "rules": [
                    {"roles": ["lb"], "protocol": "udp", "port": "9-1", "sources": ["::/0"]},
                ],
            },
            "firewall.rules[0].port",
            "low to high",
        ),
    ],
)
def test_bad_sections(section: dict[str, Any], key: str, reason: str) -> None:
    d = data()
    d["firewall"] = section
    found = problems(d)
    assert any(k == key and reason in r for k, r in found), found


def test_validate_summary_names_the_firewall() -> None:
    from runbook.inventory import summary_facts

    facts = dict(summary_facts(load_inventory(HOSTS)))
    assert facts["cloud firewall"] == "SSH from 192.0.2.0/24, ICMP"
    d = data()
    del d["firewall"]
    bare = dict(summary_facts(parse_inventory(d, path=HOSTS)))
    assert bare["cloud firewall"].startswith("none: every port")
