"""network and lb (cloud part) against the simulated API, over real HTTP, with the real hcloud."""

from __future__ import annotations

import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.fakecloud.server import FakeCloud, Listener, start
from lab.fakecloud.state import SeedFloatingIP, SeedServer, seed
from runbook.cloud.api import CloudTarget, CloudUnavailable
from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import RunOptions, StepContext, run_step
from runbook.core.plan import CLOUD, Status
from runbook.core.remote import DryRunViolation
from runbook.inventory import Inventory, load_inventory
from runbook.steps.lb import LbStep
from runbook.steps.network import NetworkStep

REPO = Path(__file__).resolve().parents[2]


class CloudOnlyLb(LbStep):
    def target_names(self, ctx: StepContext) -> list[str]:
        return [CLOUD]


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(REPO / "hosts.yaml")


@pytest.fixture
def cloud(tmp_path: Path, inv: Inventory) -> Iterator[tuple[FakeCloud, str]]:
    state = tmp_path / "cloud.json"
    seed(
        state,
        servers=[
            SeedServer(h.name, f"203.0.113.{10 + i}") for i, h in enumerate(inv.hosts.values())
        ],
        floating_ips=[SeedFloatingIP("k8s-api", "116.202.6.21")],
    )
    token = "tok-" + secrets.token_hex(12)
    fc = FakeCloud(state, token, action_seconds=0.02)
    running = start(fc, [Listener("127.0.0.1", 0, admin=True)])
    host, port = running.addresses[0]
    yield fc, f"http://{host}:{port}/v1"
    running.stop()


def run(step, inv: Inventory, fc: FakeCloud, url: str, *, dry_run: bool = False):  # type: ignore[no-untyped-def]
    out = io.StringIO()
    masker = Masker()
    ui = Ui(make_console(masker, file=out, width=120), masker, assume_yes=True)
    ctx = StepContext(inventory=inv, ui=ui, options=RunOptions(dry_run=dry_run, yes=True))
    patched = inv.model_copy(update={"hcloud": inv.hcloud.model_copy(update={"endpoint": url})})
    token = fc._token.decode()
    ctx.targets[CLOUD] = CloudTarget.from_inventory(
        patched, dry_run=dry_run, ui=ui, environ={"HCLOUD_TOKEN": token}
    )
    res = run_step(step, ctx)
    assert token not in out.getvalue()
    return res, out.getvalue()


def posts(fc: FakeCloud) -> list[str]:
    return [c["path"] for c in fc.calls.dump() if c["method"] == "POST"]


def test_network_creates_attaches_then_is_clean(inv: Inventory, cloud) -> None:  # type: ignore[no-untyped-def]
    fc, url = cloud
    res, out = run(NetworkStep(), inv, fc, url)
    assert res.results[0].status is Status.CHANGED, out
    assert len(res.results[0].changes) == 1 + len(inv.hosts)
    state = fc.snapshot()
    net = state["networks"][0]
    assert net["name"] == "k8s" and net["ip_range"] == "10.143.0.0/16"
    ips = {s["name"]: s["private_net"][0]["ip"] for s in state["servers"]}
    assert ips == {h.name: str(h.private_ip) for h in inv.hosts.values()}
    before = len(posts(fc))
    again, _ = run(NetworkStep(), inv, fc, url)
    assert again.results[0].status is Status.OK
    assert len(posts(fc)) == before  # a second run writes nothing


def test_dry_run_writes_nothing(inv: Inventory, cloud) -> None:  # type: ignore[no-untyped-def]
    fc, url = cloud
    res, out = run(NetworkStep(), inv, fc, url, dry_run=True)
    assert res.dry_run and res.results[0].status is Status.CHANGED
    assert "create network:k8s" in out
    assert posts(fc) == []


def test_lb_assigns_vip_and_floating_ip_and_keeps_a_failed_over_holder(
    inv: Inventory,
    cloud,  # type: ignore[no-untyped-def]
) -> None:
    fc, url = cloud
    run(NetworkStep(), inv, fc, url)
    res, out = run(CloudOnlyLb(), inv, fc, url)
    assert res.results[0].status is Status.CHANGED, out
    state = fc.snapshot()
    by_id = {s["id"]: s for s in state["servers"]}
    lb01 = next(s for s in state["servers"] if s["name"] == "k8slb01")
    assert "10.143.0.50" in lb01["private_net"][0]["alias_ips"]
    fip = state["floating_ips"][0]
    assert by_id[fip["server"]]["name"] == "k8slb01"
    assert fip["dns_ptr"] == [{"ip": "116.202.6.21", "dns_ptr": "api.k8s.skgm.de"}]
    assert "forward DNS record is yours" in out
    # a failover moved both to k8slb02: re-running lb must not move them back
    client = CloudTarget.from_inventory(
        inv.model_copy(update={"hcloud": inv.hcloud.model_copy(update={"endpoint": url})}),
        dry_run=False,
        environ={"HCLOUD_TOKEN": fc._token.decode()},
    ).client
    net = client.networks.get_by_name("k8s")
    lb02 = client.servers.get_by_name("k8slb02")
    client.servers.change_alias_ips(
        client.servers.get_by_name("k8slb01"), net, []
    ).wait_until_finished()
    client.servers.change_alias_ips(lb02, net, ["10.143.0.50"]).wait_until_finished()
    client.floating_ips.assign(
        client.floating_ips.get_by_name("k8s-api"), lb02
    ).wait_until_finished()
    n = len(posts(fc))
    again, _ = run(CloudOnlyLb(), inv, fc, url)
    assert again.results[0].status is Status.OK and len(posts(fc)) == n


def test_locked_and_unavailable_are_retried(inv: Inventory, cloud) -> None:  # type: ignore[no-untyped-def]
    fc, url = cloud
    fc.faults.configure(fail_next=2, code="locked")
    res, out = run(NetworkStep(), inv, fc, url)
    assert res.results[0].status is Status.CHANGED, out
    fc.faults.configure(fail_next=2, code="unavailable")
    again, out = run(NetworkStep(), inv, fc, url)
    assert again.results[0].status is Status.OK, out


def test_missing_server_is_a_clear_failure(inv: Inventory, tmp_path: Path) -> None:
    state = tmp_path / "c.json"
    seed(state, servers=[SeedServer("k8slb01", "203.0.113.5")], floating_ips=[])
    fc = FakeCloud(state, "tok-abcdefabcdef", action_seconds=0.02)
    running = start(fc, [Listener("127.0.0.1", 0)])
    try:
        host, port = running.addresses[0]
        res, _ = run(NetworkStep(), inv, fc, f"http://{host}:{port}/v1")
    finally:
        running.stop()
    assert res.results[0].status is Status.FAILED
    assert "server k8scontrol01 not found in the Hetzner project" in res.results[0].message
    assert posts(fc) == []  # nothing created when the plan is broken


def test_the_token_probe_tells_a_read_token_and_changes_nothing(inv: Inventory, cloud) -> None:  # type: ignore[no-untyped-def]
    """`token_may_write`: a write that sets a server's name to the name it has. True with a
    Read & Write token, False with a Read token (403 forbidden), None for a server the project
    does not have; refused in dry-run like every write. The server stays as it was."""
    fc, url = cloud
    patched = inv.model_copy(update={"hcloud": inv.hcloud.model_copy(update={"endpoint": url})})

    def target(token: str, dry_run: bool = False) -> CloudTarget:
        return CloudTarget.from_inventory(patched, dry_run=dry_run, environ={"HCLOUD_TOKEN": token})

    before = fc.snapshot()["servers"]
    writer = fc._token.decode()
    assert target(writer).token_may_write("k8slb01") is True
    assert target(writer).token_may_write("nosuchserver") is None
    reader = "read-" + secrets.token_hex(16)
    fc.rotate_token(reader, read_only=True, revoke=False)
    assert target(reader).token_may_write("k8slb01") is False
    assert target(writer).token_may_write("k8slb01") is True  # the old one still writes
    with pytest.raises(DryRunViolation):
        target(writer, dry_run=True).token_may_write("k8slb01")
    assert fc.snapshot()["servers"] == before
    puts = [c for c in fc.calls.dump() if c["method"] == "PUT"]
    assert [c["status"] for c in puts] == [200, 403, 200]
    fc.rotate_token("n" * 40)  # both revoked: 401 is not a Read token, it cannot be told
    with pytest.raises(CloudUnavailable, match="unauthorized"):
        target(writer).token_may_write("k8slb01")
