"""The operator's ssh_config (`ssh.config_file`, runbook/core/remote.py `Connector`): read by
default as ssh reads it, ignored with `none`, a named file must exist; the inventory's explicit
user/port/identity/gateway win; ProxyJump hops are connections with the run's host-key policy.

Connections are lazy: these tests look at what a connection would do, without a network.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paramiko
import pytest
import yaml
from fabric import Connection

import runbook.inventory.models
from runbook.core.remote import (
    Connector,
    HostKeyPolicy,
    HostUnreachable,
    SSHConfigError,
    SSHHost,
    connect_all,
    ssh_config_problems,
)
from runbook.inventory import Inventory, InventoryError, load_inventory
from runbook.inventory.localfiles import local_file_findings

REPO = Path(__file__).resolve().parents[1]
LB = "k8slb01"
LB_ADDRESS = "k8slb01.skgm.de"


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HOME and the system file point into tmp_path: the machine's own ssh_config stays out."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(
        runbook.inventory.models,
        "DEFAULT_SSH_CONFIGS",
        ("~/.ssh/config", str(tmp_path / "etc-ssh_config")),
    )
    return home


def inventory(tmp_path: Path, **ssh: Any) -> Inventory:
    """The repository's hosts.yaml with `ssh` replaced by these keys only (None: left out)."""
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    data["ssh"] = {"known_hosts": "known_hosts", **{k: v for k, v in ssh.items() if v is not None}}
    path = tmp_path / "hosts.yaml"
    path.write_text(yaml.safe_dump(data))
    return load_inventory(path)


def connection(inv: Inventory, host: str = LB) -> Connection:
    return SSHHost(inv.hosts[host], inv, keys=HostKeyPolicy(inv.known_hosts_path)).conn


def key(path: Path) -> str:
    path.write_text("not a real key\n")
    return str(path)


ALIAS = """
Host k8slb01.skgm.de
    HostName 192.0.2.11
    User ops
    Port 2222
    IdentityFile {key}
"""


def test_an_alias_in_the_named_file_sets_hostname_user_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(ALIAS.format(key=key(tmp_path / "ops_key")))
    inv = inventory(tmp_path, config_file="ssh_config")  # relative to the inventory's directory
    host = SSHHost(inv.hosts[LB], inv, keys=HostKeyPolicy(inv.known_hosts_path))
    conn = host.conn
    # the port stays ssh.port (the one the cloud firewall opens); validate warns
    assert (conn.host, conn.user, conn.port) == ("192.0.2.11", "ops", 22)
    assert conn.connect_kwargs["key_filename"] == [str(tmp_path / "ops_key")]
    problems, warnings = local_file_findings(inv, {})
    assert problems == [] and [str(w) for w in warnings] == [
        f"{inv.path}: hosts.{LB}.address: the ssh_config's Port 2222 for {LB_ADDRESS} is not "
        "used: hosts are reached on ssh.port (22), the port the cloud firewall opens"
    ]
    assert host.user == "ops"  # not root: commands are wrapped in sudo
    assert host._wrap("id").startswith("sudo -n -- sh -c ")
    # a host the file does not mention: the inventory's defaults, unchanged
    other = connection(inv, "k8scontrol01")
    assert (other.host, other.user, other.port) == ("k8scontrol01.skgm.de", "root", 22)
    assert not other.gateway and not other.forward_agent


def test_the_inventory_explicit_user_port_and_identity_win(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text(ALIAS.format(key=key(tmp_path / "ops_key")) + "    ForwardAgent yes\n")
    identity = key(tmp_path / "inventory_key")
    inv = inventory(tmp_path, config_file=str(cfg), user="admin", port=22, identity=identity)
    conn = connection(inv)
    # the address is still the alias ssh_config maps (HostName); the rest is the inventory's
    assert (conn.host, conn.user, conn.port) == ("192.0.2.11", "admin", 22)
    assert conn.connect_kwargs["key_filename"] == [identity]  # not the ssh_config's key
    assert conn.connect_kwargs["look_for_keys"] is False
    assert conn.forward_agent is False  # the operator's agent never goes to a cluster host


def test_by_default_the_users_file_is_read_before_the_systems(
    tmp_path: Path, _own_home: Path
) -> None:
    (_own_home / ".ssh" / "config").write_text("Host k8slb01.skgm.de\n    User fromuser\n")
    (tmp_path / "etc-ssh_config").write_text("Host *\n    User fromsystem\n")
    inv = inventory(tmp_path)
    assert inv.ssh_config_files == (
        _own_home / ".ssh" / "config",
        tmp_path / "etc-ssh_config",
    )
    conn = connection(inv)
    assert conn.user == "fromuser"  # the first value obtained wins, as in ssh
    assert connection(inv, "k8scontrol01").user == "fromsystem"
    assert local_file_findings(inv, {}) == ([], [])


def test_by_default_missing_files_are_skipped(tmp_path: Path) -> None:
    inv = inventory(tmp_path)
    assert local_file_findings(inv, {}) == ([], [])
    conn = connection(inv)
    assert (conn.host, conn.user, conn.port) == (LB_ADDRESS, "root", 22)


@pytest.mark.parametrize("off", [False, "none", "None"])
def test_none_or_false_reads_no_ssh_config(tmp_path: Path, _own_home: Path, off: object) -> None:
    (_own_home / ".ssh" / "config").write_text(
        "Host *\n    HostName 192.0.2.99\n    User ops\n    ProxyJump bastion\n"
    )
    inv = inventory(tmp_path, config_file=off)
    assert inv.ssh.config_file is False and inv.ssh_config_files == ()
    conn = connection(inv)
    assert (conn.host, conn.user, conn.port) == (LB_ADDRESS, "root", 22)
    assert not conn.gateway


JUMP = """
Host bastion
    HostName 192.0.2.99
    User jump
Host *.skgm.de
    ProxyJump bastion:2200
"""


def test_proxyjump_is_a_gateway_with_the_runs_host_key_policy(tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text(JUMP)
    inv = inventory(tmp_path, config_file="ssh_config")
    conn = connection(inv)
    gw = conn.gateway
    assert isinstance(gw, Connection)
    assert (gw.host, gw.user, gw.port) == ("192.0.2.99", "jump", 2200)
    assert not gw.gateway  # the bastion itself is reached directly
    # the jump host's key is checked as strictly as the host's (Fabric's own hops auto-add)
    for c in (conn, gw):
        policy = c.client._policy
        with pytest.raises(paramiko.SSHException, match="unknown host key"):
            policy.missing_host_key(c.client, c.host, paramiko.ECDSAKey.generate())


def test_a_chain_of_jumps_is_hop_by_hop_in_order(tmp_path: Path) -> None:
    """`ProxyJump a,b`: ssh reaches a, from a reaches b, from b the host."""
    (tmp_path / "ssh_config").write_text(
        "Host k8slb01.skgm.de\n    ProxyJump ops@a.example.org,b.example.org:2022\n"
    )
    conn = connection(inventory(tmp_path, config_file="ssh_config"))
    b = conn.gateway
    a = b.gateway
    assert (b.host, b.user, b.port) == ("b.example.org", "root", 2022)
    assert (a.host, a.user, a.port) == ("a.example.org", "ops", 22)
    assert not a.gateway


def test_the_inventory_gateway_and_proxy_command_win_over_proxyjump(tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text(JUMP + "    User ops\n")
    data = yaml.safe_load((REPO / "hosts.yaml").read_text())
    data["ssh"] = {"known_hosts": "kh", "config_file": "ssh_config", "proxy_command": "nc %h %p"}
    data["hosts"]["k8scontrol01"]["gateway"] = "k8slb01"
    (tmp_path / "hosts.yaml").write_text(yaml.safe_dump(data))
    inv = load_inventory(tmp_path / "hosts.yaml")
    assert connection(inv, LB).gateway == "nc k8slb01.skgm.de 22"
    worker = connection(inv, "k8scontrol01")
    gw = worker.gateway
    assert isinstance(gw, Connection) and gw.host == LB_ADDRESS
    assert gw.user == "ops"  # the inventory host as jump host: ssh_config's User applies
    assert gw.gateway and gw.gateway.host == "192.0.2.99"  # and its own ProxyJump


def test_a_host_is_not_its_own_jump_host_and_a_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text(
        "Host bastion\n    HostName 192.0.2.99\nHost *\n    ProxyJump bastion\n"
    )
    inv = inventory(tmp_path, config_file="ssh_config")
    gw = connection(inv).gateway
    assert gw.host == "192.0.2.99" and not gw.gateway  # `Host *` does not make bastion loop
    (tmp_path / "ssh_config").write_text(
        "Host a\n    ProxyJump b\nHost b\n    ProxyJump a\nHost *.skgm.de\n    ProxyJump a\n"
    )
    inv = inventory(tmp_path, config_file="ssh_config")
    with pytest.raises(SSHConfigError, match="more than 8 jump hosts"):
        connection(inv)
    # validate and the connecting tasks refuse it (exit 2); a run that got there anyway has
    # the host unreachable with the reason, never a traceback
    assert dict(ssh_config_problems(inv))[LB] == (
        f"{LB_ADDRESS}: the ssh_config's ProxyJump leads through more than 8 jump hosts "
        "(a loop, e.g. `Host *` with ProxyJump? exclude the jump host: `Host * !bastion`)"
    )
    host = connect_all(inv, [LB], dry_run=True)[LB]
    with pytest.raises(HostUnreachable, match=f"^{LB}: unreachable: {LB_ADDRESS}: the ssh_conf"):
        host.query("true")


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("Port 99999", "the ssh_config's Port '99999' for bastion is not a port (1-65535)"),
        ("ProxyJump bastion:x", "the ssh_config's ProxyJump 'bastion:x' is not [user@]host[:port]"),
    ],
)
def test_a_bad_port_or_jump_in_ssh_config_is_named(tmp_path: Path, line: str, reason: str) -> None:
    (tmp_path / "ssh_config").write_text(f"Host bastion k8slb01.skgm.de\n    {line}\n")
    if line.startswith("Port"):
        (tmp_path / "ssh_config").write_text(
            f"Host *.skgm.de\n    ProxyJump bastion\nHost bastion\n    {line}\n"
        )
    inv = inventory(tmp_path, config_file="ssh_config")
    problems = dict(ssh_config_problems(inv))
    assert reason in problems[LB]


# -- bad input: clear inventory errors (exit 2 through the tasks: tests/test_cli.py) -----------
def test_a_named_file_that_does_not_exist_is_an_inventory_problem(tmp_path: Path) -> None:
    inv = inventory(tmp_path, config_file="missing_config")
    problems, _ = local_file_findings(inv, {})
    assert [str(p) for p in problems] == [
        f"{tmp_path / 'hosts.yaml'}: ssh.config_file: {tmp_path / 'missing_config'} does not exist"
    ]


def test_an_unparsable_file_is_a_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Host x\n    =broken\n")
    problems, _ = local_file_findings(inventory(tmp_path, config_file=str(cfg)), {})
    assert len(problems) == 1 and "is not a valid ssh_config" in str(problems[0])


def test_include_is_followed_as_ssh_follows_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian's /etc/ssh/ssh_config starts with `Include /etc/ssh/ssh_config.d/*.conf`:
    included files apply (globbed in order, relative names from ~/.ssh for a user's file,
    nested, a missing one skipped); an include loop is a problem, as ssh refuses it."""
    from runbook.core.remote import read_ssh_config

    monkeypatch.setenv("HOME", str(tmp_path))
    d = tmp_path / ".ssh" / "config.d"
    d.mkdir(parents=True)
    (d / "10-lb.conf").write_text("Host lb\n    HostName 10.0.0.5\n    Include more\n")
    (d / "more").write_text("    User ops\n")
    (tmp_path / ".ssh" / "more").write_text("    User ops\n")
    (d / "20-cp.conf").write_text("Host cp\n    User admin\n")
    cfg = tmp_path / "ssh_config"
    cfg.write_text("Include config.d/*.conf nothing-here\nHost *\n    User fallback\n")
    inv = inventory(tmp_path, config_file=str(cfg))
    problems, warnings = local_file_findings(inv, {})
    assert problems == [] and not any("Include" in str(w) for w in warnings)
    config = read_ssh_config([cfg])
    assert config.lookup("lb")["hostname"] == "10.0.0.5"
    assert config.lookup("lb")["user"] == "ops"
    assert config.lookup("cp")["user"] == "admin"
    assert config.lookup("other")["user"] == "fallback"
    cfg.write_text(f"Include {cfg}\n")
    problems, _ = local_file_findings(inventory(tmp_path, config_file=str(cfg)), {})
    assert len(problems) == 1 and "Include nested more than 16 deep" in str(problems[0])


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (True, "true is the default"),
        ("", "is empty"),
        (0, "expected a file path, or false (none); got 0"),
        ("a\nb", "control characters"),
    ],
)
def test_config_file_values_are_strict(tmp_path: Path, value: object, reason: str) -> None:
    with pytest.raises(InventoryError) as exc:
        inventory(tmp_path, config_file=value)
    assert "ssh.config_file: " in str(exc.value) and reason in str(exc.value)


def test_connector_reads_the_files_once_per_run(tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text(JUMP)
    inv = inventory(tmp_path, config_file="ssh_config")
    connector = Connector(inv, HostKeyPolicy(inv.known_hosts_path))
    (tmp_path / "ssh_config").unlink()  # read at the start; nothing re-reads it per host
    assert connector.host(inv.hosts[LB]).gateway.host == "192.0.2.99"


def test_validate_names_the_ssh_config_files_in_effect(tmp_path: Path, _own_home: Path) -> None:
    from runbook.inventory import summary_facts

    assert dict(summary_facts(inventory(tmp_path)))["ssh_config"] == "none found (default)"
    (_own_home / ".ssh" / "config").write_text("Host x\n    User y\n")
    facts = dict(summary_facts(inventory(tmp_path)))
    assert facts["ssh_config"] == f"{_own_home}/.ssh/config (default)"
    facts = dict(summary_facts(inventory(tmp_path, config_file="none")))
    assert facts["ssh_config"] == "none (ssh.config_file: none)"
