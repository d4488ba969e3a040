"""The operator's ssh_config against real sshd: hosts named by aliases only the ssh_config knows,
one reached through its ProxyCommand, another only through a ProxyJump over the first (the root
namespace has no route into the lab: reaching it at all proves the jump)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab import labstate
from runbook.core.remote import connect_all
from runbook.inventory import load_inventory

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]


def test_hosts_are_reached_through_ssh_config_aliases_and_proxyjump(
    lab_up: dict[str, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh of the machine
    src = labstate.paths().root / "hosts.yaml"
    data = yaml.safe_load((src if src.exists() else REPO / "lab" / "hosts.yaml").read_text())
    proxy = data["ssh"].pop("proxy_command")
    lb, cp = data["hosts"]["k8slb01"], data["hosts"]["k8scontrol01"]
    lb_address = lb["address"]
    (tmp_path / "ssh_config").write_text(
        f"Host lab-lb1\n    HostName {lb_address}\n    ProxyCommand {proxy}\n"
        f"Host lab-cp1\n    HostName {cp['address']}\n    ProxyJump lab-lb1\n"
    )
    lb["address"], cp["address"] = "lab-lb1", "lab-cp1"
    data["ssh"].update(
        config_file="ssh_config",
        identity=str(labstate.paths().key),
        known_hosts=str(labstate.paths().known_hosts),  # the lab's keys, by the real addresses
    )
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    inv = load_inventory(tmp_path / "hosts.yaml")
    hosts = connect_all(inv, ["k8slb01", "k8scontrol01"], dry_run=True)
    try:
        for name, host in hosts.items():
            assert host.query("hostname").stdout.strip() == name
        jump = hosts["k8scontrol01"].conn.gateway  # type: ignore[attr-defined]
        assert jump.host == lb_address and jump.is_connected  # the hop that carried it
        # lab-lb1's own ProxyCommand from the ssh_config, %h/%p filled in
        assert jump.gateway == proxy.replace("%h", lb_address).replace("%p", "22")
    finally:
        for host in hosts.values():
            host.close()
