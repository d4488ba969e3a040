"""The LB tier's steps as data: given these host facts, expect these changes (no host touched)."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import RunOptions, StepContext, plan_target
from runbook.core.plan import Change
from runbook.core.remote import CommandTimeout, Fact, Host, Result
from runbook.core.resources import File, LineInFile, PythonBytecode, Resource, Service
from runbook.inventory import Inventory, load_inventory
from runbook.render import lbfiles
from runbook.status.lbstatus import node_status
from runbook.steps._select import holds_vip
from runbook.steps.haproxy import HaproxyStep
from runbook.steps.heartbeat import HeartbeatRun, HeartbeatStep, clustermsg_line
from runbook.steps.prepare import PrepareStep, hosts_lines

REPO = Path(__file__).resolve().parents[2]
TOKEN = "tok-" + "a1b2c3d4" * 6


class FactsHost(Host):
    """Answers probes from a table: resource key -> Fact; unknown probes: nothing there."""

    def __init__(
        self, name: str, facts: dict[str, Fact] | None = None, files: dict[str, bytes] | None = None
    ) -> None:
        super().__init__(name, dry_run=True)
        self.facts = facts or {}
        self.files = files or {}
        self.resources: list[Resource] = []

    def gather(self, probes: Sequence[str | None]) -> list[Fact | None]:
        by_probe = {r.probe(): self.facts.get(r.key) for r in self.resources}
        return [by_probe.get(p, Fact("", 3)) if p else None for p in probes]

    def read_file(self, path: str) -> bytes | None:
        return self.files.get(path)

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        return Result("", "", 1)


def converged_fact(res: Resource) -> Fact:
    if isinstance(res, File):
        meta = f"{res.mode:o} {res.owner} {res.group}"
        return Fact(f"{meta}\n{base64.b64encode(res.content.encode()).decode()}", 0)
    if isinstance(res, LineInFile):  # the package's file with the line at its end
        text = f"# the package's lines\n{res.line}\n"
        return Fact(f"644 root root\n{base64.b64encode(text.encode()).decode()}", 0)
    if isinstance(res, Service):
        return Fact("enabled\n|\nactive", 0)
    if isinstance(res, PythonBytecode):
        return Fact("ok\n", 0)
    return Fact("", 0)


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(REPO / "hosts.yaml")


def ctx_for(inv: Inventory, hosts: dict[str, FactsHost]) -> tuple[StepContext, io.StringIO]:
    out = io.StringIO()
    masker = Masker()
    ui = Ui(make_console(masker, file=out, width=120), masker, assume_yes=True)
    ctx = StepContext(inventory=inv, ui=ui, options=RunOptions(dry_run=True))
    ctx.targets.update(hosts)
    return ctx, out


def plan(step, ctx: StepContext, name: str) -> list[Change]:  # type: ignore[no-untyped-def]
    host = ctx.targets[name]
    host.resources = step.resources(ctx, name)
    p = plan_target(step, ctx, name)
    assert not p.error, p.error
    return list(p.changes)


def test_heartbeat_on_empty_hosts_creates_everything(inv: Inventory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    hosts = {n: FactsHost(n) for n in ("k8slb01", "k8slb02")}
    ctx, _ = ctx_for(inv, hosts)
    changes = plan(HeartbeatStep(), ctx, "k8slb01")
    by = {c.resource: c for c in changes}
    for path in (
        "/etc/ha.d/ha.cf",
        "/etc/ha.d/authkeys",
        "/etc/ha.d/haresources",
        "/etc/ha.d/resource.d/hcloud-failover",
        "/etc/hcloud-failover.env",
        "/etc/systemd/system/hcloud-reassert.timer",
        "/usr/local/sbin/haproxy-watchdog",
    ):
        assert by[f"file:{path}"].action == "create"
    assert by["service:heartbeat"].action == "enable+start"
    assert by["service:hcloud-reassert.timer"].action == "enable+start"
    assert by["systemd:daemon-reload"].action == "daemon-reload"
    # secrets: neither the generated authkey nor the token show in any diff
    key = ctx.run.of(HeartbeatRun).authkey or ""
    assert len(key) == 64
    for c in changes:
        assert TOKEN not in c.diff and key not in c.diff


def test_heartbeat_keeps_the_existing_authkey(inv: Inventory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    existing = b"auth 1\n1 sha1 existingkey0123456789\n"
    hosts = {
        "k8slb01": FactsHost("k8slb01", files={"/etc/ha.d/authkeys": existing}),
        "k8slb02": FactsHost("k8slb02"),
    }
    ctx, _ = ctx_for(inv, hosts)
    plan(HeartbeatStep(), ctx, "k8slb02")
    assert ctx.run.of(HeartbeatRun).authkey == "existingkey0123456789"


def test_heartbeat_converged_host_has_no_changes(inv: Inventory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    key = b"auth 1\n1 sha1 k" + b"0" * 40 + b"\n"
    ctx, _ = ctx_for(inv, {"k8slb01": FactsHost("k8slb01", files={"/etc/ha.d/authkeys": key})})
    step = HeartbeatStep()
    host = ctx.targets["k8slb01"]
    host.facts = {r.key: converged_fact(r) for r in step.resources(ctx, "k8slb01")}
    assert plan(step, ctx, "k8slb01") == []


KEYFILE = {"/etc/ha.d/authkeys": b"auth 1\n1 sha1 k" + b"0" * 40 + b"\n"}


def _drifted(inv: Inventory, drift: dict[str, Fact]) -> dict[str, Change]:
    ctx, _ = ctx_for(inv, {"k8slb01": FactsHost("k8slb01", files=KEYFILE)})
    step = HeartbeatStep()
    facts = {r.key: converged_fact(r) for r in step.resources(ctx, "k8slb01")}
    ctx.targets["k8slb01"].facts = {**facts, **drift}
    return {c.resource: c for c in plan(step, ctx, "k8slb01")}


def _file_fact(mode: str, content: bytes) -> Fact:
    return Fact(f"{mode} root root\n" + base64.b64encode(content).decode(), 0)


def test_heartbeat_ha_cf_change_reloads_never_restarts(inv: Inventory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Issue 11: a converge run must never cause a failover. ha.cf is what `heartbeat -r`
    re-reads (resources kept): reload, not restart."""
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    changes = _drifted(inv, {"file:/etc/ha.d/ha.cf": _file_fact("644", b"keepalive 2\n")})
    assert set(changes) == {"file:/etc/ha.d/ha.cf", "service:heartbeat"}
    assert changes["service:heartbeat"].action == "reload"
    assert "-keepalive 2" in changes["file:/etc/ha.d/ha.cf"].diff


def _wanted(inv: Inventory, path: str) -> str:
    ctx, _ = ctx_for(inv, {"k8slb01": FactsHost("k8slb01", files=KEYFILE)})
    (wanted,) = (r for r in HeartbeatStep().resources(ctx, "k8slb01") if r.key == f"file:{path}")
    assert isinstance(wanted, File)
    return wanted.content


@pytest.mark.parametrize(
    ("path", "edit"),
    [
        ("/etc/ha.d/ha.cf", lambda text: text + "# local note\n"),  # the drift
        ("/etc/ha.d/ha.cf", lambda text: text.replace("\n", "   # why\n", 1) + "\n\n"),
        ("/etc/ha.d/haresources", lambda text: "# which node starts with the group\n" + text),
        ("/etc/ha.d/authkeys", lambda text: "  # rotated 2026\n" + text),
    ],
)
def test_heartbeat_comment_drift_rewrites_the_file_and_leaves_heartbeat_alone(  # type: ignore[no-untyped-def]
    inv: Inventory, monkeypatch, path: str, edit
) -> None:
    """Issue 11 item 3: a comment in ha.cf made the converge run reload Heartbeat on the holder
    (a re-exec of the daemon while it serves). What Heartbeat reads is unchanged: the file is
    put back, Heartbeat is not reloaded (ha.cf, authkeys) or restarted (haresources)."""
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    wanted = _wanted(inv, path)
    drifted = edit(wanted)
    assert drifted != wanted
    mode = "600" if path.endswith("authkeys") else "644"
    changes = _drifted(inv, {f"file:{path}": _file_fact(mode, drifted.encode())})
    assert set(changes) == {f"file:{path}"}, changes
    assert changes[f"file:{path}"].action == "update"
    assert "no reload" in changes[f"file:{path}"].summary


def test_heartbeat_reads_a_commented_out_directive_as_a_change(inv: Inventory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The other side: a directive commented out (or a haresources line that only looks like a
    comment further on) is content Heartbeat reads differently: reload / restart as before."""
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    ha_cf = _wanted(inv, "/etc/ha.d/ha.cf")
    directive = next(ln for ln in ha_cf.splitlines() if ln and not ln.startswith("#"))
    off = ha_cf.replace(directive, "#" + directive, 1)
    changes = _drifted(inv, {"file:/etc/ha.d/ha.cf": _file_fact("644", off.encode())})
    assert changes["service:heartbeat"].action == "reload"
    haresources = _wanted(inv, "/etc/ha.d/haresources")
    inline = haresources.rstrip("\n") + " # note\n"  # not a comment for Heartbeat there
    changes = _drifted(inv, {"file:/etc/ha.d/haresources": _file_fact("644", inline.encode())})
    assert changes["service:heartbeat"].action == "restart"


def test_heartbeat_removes_old_backups_of_its_secrets_without_a_restart(  # type: ignore[no-untyped-def]
    inv: Inventory, monkeypatch
) -> None:
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    ctx, _ = ctx_for(inv, {"k8slb01": FactsHost("k8slb01")})
    step = HeartbeatStep()
    res = step.resources(ctx, "k8slb01")
    facts = {r.key: converged_fact(r) for r in res}
    (cleanup,) = (r for r in res if r.key.startswith("stale-secret-backups:"))
    facts[cleanup.key] = Fact("/etc/ha.d/authkeys.rb-bak\n/etc/hcloud-failover.env.rb-bak", 0)
    ctx.targets["k8slb01"].facts = facts
    changes = plan(step, ctx, "k8slb01")
    assert [(c.resource, c.action) for c in changes] == [(cleanup.key, "remove")]
    assert "/etc/ha.d/authkeys.rb-bak" in changes[0].summary
    assert "/etc/hcloud-failover.env.rb-bak" in changes[0].summary


def test_heartbeat_mode_drift_is_fixed_without_touching_heartbeat(
    inv: Inventory, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """authkeys 0644 (the issue's drift): chmod only; Heartbeat needs nothing."""
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    authkeys = _wanted(inv, "/etc/ha.d/authkeys")
    changes = _drifted(inv, {"file:/etc/ha.d/authkeys": _file_fact("644", authkeys.encode())})
    assert set(changes) == {"file:/etc/ha.d/authkeys"}
    assert changes["file:/etc/ha.d/authkeys"].action == "chmod/chown"


@pytest.mark.parametrize("ours", [True, False])
def test_heartbeat_puts_the_packages_rotation_rule_back_once_the_log_file_is_unset(
    inv: Inventory, monkeypatch, ours: bool
) -> None:  # type: ignore[no-untyped-def]
    """The repo's inventory sets no `heartbeat.logfile`: a rule the runbook wrote (the log file
    set before) goes back to the package's, with no Heartbeat action; an operator's stays."""
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    assert inv.load_balancer.heartbeat.logfile is None
    path = "/etc/logrotate.d/heartbeat"
    rule = (
        "# /etc/logrotate.d/heartbeat — managed by the runbook from hosts.yaml (cluster x),\n"
        if ours
        else "# rotated by hand, our own way\n"
    ) + "/var/log/ha-log {\n    copytruncate\n}\n"
    changes = _drifted(inv, {f"file:{path}": _file_fact("644", rule.encode())})
    if not ours:
        assert changes == {}
        return
    assert set(changes) == {f"file:{path}"} and changes[f"file:{path}"].action == "update"
    assert "-    copytruncate" in changes[f"file:{path}"].diff
    assert "+/var/log/ha-debug {" in changes[f"file:{path}"].diff


def test_heartbeat_script_change_needs_no_heartbeat_action(inv: Inventory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    script = "file:/etc/ha.d/resource.d/hcloud-failover"
    changes = _drifted(inv, {script: _file_fact("755", b"#!/bin/sh\n")})
    assert set(changes) == {script}


def test_heartbeat_adds_its_message_function_to_shellfuncs_and_leaves_heartbeat_alone(  # type: ignore[no-untyped-def]
    inv: Inventory, monkeypatch
) -> None:
    """The package's shellfuncs without the step's line: the line is appended (after the
    package's own definition, which it overrides); the scripts read it on each run, so
    Heartbeat is neither restarted nor reloaded."""
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    key = clustermsg_line().key
    package = b'ha_clustermsg() {\n\t(echo ">>>"; cat -; echo "<<<")\t| cat - >> $HA_FIFO\n}\n'
    changes = _drifted(inv, {key: _file_fact("644", package)})
    assert set(changes) == {key} and changes[key].action == "add"
    assert changes[key].summary.endswith(lbfiles.clustermsg_override())


def test_heartbeat_haresources_change_restarts(inv: Inventory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    changes = _drifted(inv, {"file:/etc/ha.d/haresources": _file_fact("644", b"other\n")})
    assert changes["service:heartbeat"].action == "restart"


def test_holder_restart_needs_a_checkpoint(inv: Inventory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from runbook.core.plan import TargetPlan

    monkeypatch.setenv("HCLOUD_TOKEN", TOKEN)
    ctx, _ = ctx_for(inv, {})
    ctx.run.of(HeartbeatRun).vip_holders = ["k8slb01"]
    step = HeartbeatStep()
    restart = Change("service:heartbeat", "restart")
    reload = Change("service:heartbeat", "reload")
    assert step.checkpoint(ctx, [TargetPlan("k8slb02", (restart,))]) is None  # the standby
    assert step.checkpoint(ctx, [TargetPlan("k8slb01", (reload,))]) is None
    question = step.checkpoint(ctx, [TargetPlan("k8slb01", (restart,))])
    assert question and "k8slb01" in question and "hands the VIP over" in question


def test_haproxy_validates_and_reloads(inv: Inventory) -> None:
    ctx, _ = ctx_for(inv, {"k8slb01": FactsHost("k8slb01")})
    step = HaproxyStep()
    res = step.resources(ctx, "k8slb01")
    cfg = next(r for r in res if isinstance(r, File))
    assert cfg.validate and cfg.validate.startswith("haproxy -c")
    facts = {r.key: converged_fact(r) for r in res}
    facts[cfg.key] = Fact("644 root root\n" + base64.b64encode(b"old\n").decode(), 0)
    ctx.targets["k8slb01"].facts = facts
    changes = {c.resource: c.action for c in plan(step, ctx, "k8slb01")}
    assert changes == {cfg.key: "update", "service:haproxy": "reload"}


def test_prepare_lb_gets_packages_without_recommends_workers_do_not(inv: Inventory) -> None:
    ctx, _ = ctx_for(inv, {"k8slb01": FactsHost("k8slb01")})
    keys = {r.key for r in PrepareStep().resources(ctx, "k8slb01")}
    assert "packages:haproxy,heartbeat,python3" in keys
    assert any(k.startswith("line:/etc/hosts:^10\\.143\\.0\\.2") for k in keys)


@pytest.mark.parametrize("path", ["hosts.yaml", "lab/hosts.yaml"])
def test_hosts_lines_every_host_on_its_private_ip_and_the_api_name_on_the_vip(path: str) -> None:
    inv = load_inventory(REPO / path)
    ctx, _ = ctx_for(inv, {})
    lines = hosts_lines(ctx)
    assert {ln.path for ln in lines} == {"/etc/hosts"}
    by_ip = {ln.line.split("\t")[0]: ln.line.split("\t")[1].split() for ln in lines}
    assert len(by_ip) == len(lines)  # one line per address, each matched by it alone
    for ln in lines:
        ip = ln.line.split("\t")[0]
        assert re.match(ln.match.replace("[[:space:]]", r"\s"), ln.line)
        assert not re.match(ln.match.replace("[[:space:]]", r"\s"), f"{ip}0\tother")
    for host in inv.hosts.values():
        names = by_ip[str(host.private_ip)]
        assert names[-1] == host.name
        if not re.fullmatch(r"[\d.]+", host.address):
            assert names[0] == host.address
        else:
            assert names == [host.name]
    assert inv.kubernetes.api_dns_name
    assert by_ip[str(inv.load_balancer.vip)] == [inv.kubernetes.api_dns_name]
    ctx.inventory = inv.model_copy(
        update={"kubernetes": inv.kubernetes.model_copy(update={"api_dns_name": None})}
    )
    assert len(hosts_lines(ctx)) == len(inv.hosts)


class AddrHost(FactsHost):
    """Answers only `ip -o -4 addr show dev IFACE` with the given address lines."""

    def __init__(self, name: str, addrs: dict[str, str]) -> None:
        super().__init__(name)
        self.addrs = addrs

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        iface = cmd.removeprefix("ip -o -4 addr show dev ")
        return Result(self.addrs.get(iface, ""), "", 0 if iface in self.addrs else 1)

    def gather(self, probes: Sequence[str | None]) -> list[Fact | None]:
        return [
            Fact(self._exec(p, stdin=None, timeout=None).stdout, 0) if p else None for p in probes
        ]


def test_heartbeat_step_and_lb_status_agree_on_who_holds_the_vip(inv: Inventory) -> None:
    lb = inv.load_balancer
    vip = str(lb.vip)
    near = vip + "0"  # a longer address starting with the VIP is not the VIP
    cases = {
        f"3: {lb.interface}    inet 10.143.0.5/32 brd 10.143.0.5 scope global\n"
        f"3: {lb.interface}    inet {vip}/32 scope global {lb.interface}\n": True,
        f"3: {lb.interface}    inet 10.143.0.5/32 scope global\n": False,
        f"3: {lb.interface}    inet {near}/32 scope global\n": False,
        "": False,
    }
    for out, held in cases.items():
        host = AddrHost("k8slb01", {lb.interface: out})
        ctx, _ = ctx_for(inv, {"k8slb01": host})
        assert holds_vip(ctx, "k8slb01") is held, out
        assert node_status(inv, host).holds_vip is held, out
    ctx, _ = ctx_for(inv, {})
    assert holds_vip(ctx, "k8slb01") is False  # not connected


class HangingHost(AddrHost):
    """Every command hangs past its timeout (a host going down under the connection)."""

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        raise CommandTimeout(f"{self.name}: `{cmd}` did not complete within {timeout} s")


def test_a_host_whose_look_hangs_holds_no_vip_and_has_no_heartbeat_answer(inv: Inventory) -> None:
    """A look that hangs (a host rebooting, a wedged Heartbeat that does not answer cl_status)
    is "cannot be asked", as an unreachable host is, not a failed step."""
    host = HangingHost("k8slb01", {})
    ctx, _ = ctx_for(inv, {"k8slb01": host})
    assert holds_vip(ctx, "k8slb01") is False
    assert HeartbeatStep._rscstatus(ctx, "k8slb01") == ""
