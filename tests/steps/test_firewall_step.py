"""The firewall step against the simulated API (real HTTP, real hcloud client): labels, one
firewall per role, rules and their diff, idempotency, the operator's own source address."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest

from lab.fakecloud.firewalls import server_rules
from lab.fakecloud.server import FakeCloud
from runbook.cloud.api import CloudTarget
from runbook.cloud.firewall import Rule, source_allowed, wanted_rules
from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import RunOptions, StepContext, run_step
from runbook.core.plan import CLOUD, Status
from runbook.core.remote import Host, Result
from runbook.inventory import Inventory, load_inventory, parse_inventory
from runbook.steps.firewall import FirewallStep
from tests.steps.test_cloud_steps import REPO, cloud, posts  # noqa: F401 - fixture

LAB = REPO / "lab" / "hosts.yaml"


class SourceHost(Host):
    """A host that answers the step's `$SSH_CONNECTION` query with a given source address."""

    def __init__(self, name: str, source: str | None) -> None:
        super().__init__(name)
        self.source = source
        self.asked = 0

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        self.asked += 1
        if self.source is None:
            return Result("", "ssh: connect timed out", 255)
        return Result(self.source, "", 0)


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(LAB)


def with_firewall(inv: Inventory, **firewall: Any) -> Inventory:
    import yaml

    data = yaml.safe_load(LAB.read_text())
    data["firewall"].update(firewall)
    return parse_inventory(data, path=LAB)


def run(
    inv: Inventory,
    fc: FakeCloud,
    url: str,
    *,
    source: str | None = "203.0.113.201",
    dry_run: bool = False,
) -> tuple[Any, str, SourceHost]:
    out = io.StringIO()
    masker = Masker()
    ui = Ui(make_console(masker, file=out, width=140), masker, assume_yes=True)
    ctx = StepContext(inventory=inv, ui=ui, options=RunOptions(dry_run=dry_run, yes=True))
    patched = inv.model_copy(update={"hcloud": inv.hcloud.model_copy(update={"endpoint": url})})
    ctx.targets[CLOUD] = CloudTarget.from_inventory(
        patched, dry_run=dry_run, ui=ui, environ={"RBLAB_HCLOUD_TOKEN": fc._token.decode()}
    )
    first = next(iter(inv.hosts))
    host = SourceHost(first, source)
    ctx.targets[first] = host
    res = run_step(FirewallStep(), ctx)
    return res, out.getvalue(), host


def flat(text: str) -> str:
    """Console output without panel borders and line wrapping."""
    return re.sub(r"[│\s]+", " ", text)


def rules_by_server(fc: FakeCloud) -> dict[str, list[tuple[str, str | None, list[str]]] | None]:
    state = fc.snapshot()
    per_id = server_rules(state)
    out: dict[str, list[tuple[str, str | None, list[str]]] | None] = {}
    for s in state["servers"]:
        rules = per_id[s["id"]]
        out[s["name"]] = (
            None
            if rules is None
            else sorted((r["protocol"], r["port"], r["source_ips"]) for r in rules)
        )
    return out


def test_wanted_rules_per_role(inv: Inventory) -> None:
    ssh = Rule.of("tcp", "22", ["203.0.113.201/32"], "SSH from admin networks")
    icmp = Rule.of("icmp", None, ["0.0.0.0/0", "::/0"], "ICMP")
    assert wanted_rules(inv, "worker") == tuple(sorted([ssh, icmp]))
    assert wanted_rules(inv, "control-plane") == tuple(sorted([ssh, icmp]))
    lb = wanted_rules(inv, "lb")
    assert Rule.of("tcp", "6443", ["203.0.113.0/24"], "Kubernetes API on the floating IP") in lb
    assert (
        Rule.of("udp", "694", ["203.0.113.14/32", "203.0.113.15/32"], "Heartbeat between the LBs")
        in lb
    )
    assert len(lb) == 4  # nothing else
    extra = with_firewall(
        inv,
        icmp=False,
        rules=[{"roles": ["worker"], "protocol": "tcp", "port": "30000-32767",
                "sources": ["198.51.100.0/24"], "description": "NodePorts"}],
    )  # fmt: skip
    assert wanted_rules(extra, "worker") == tuple(
        sorted([ssh, Rule.of("tcp", "30000-32767", ["198.51.100.0/24"], "NodePorts")])
    )
    assert wanted_rules(extra, "control-plane") == (ssh,)


def test_source_allowed(inv: Inventory) -> None:
    assert source_allowed("203.0.113.201", inv)
    assert not source_allowed("203.0.113.200", inv)
    assert not source_allowed("198.51.100.10", inv)
    assert source_allowed("10.143.0.9", inv)  # the private network is never filtered
    assert not source_allowed("2001:db8::1", inv)


def test_creates_labels_applies_then_is_clean(inv: Inventory, cloud) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    fc, url = cloud
    assert set(rules_by_server(fc).values()) == {None}  # nothing filtered before
    dry, out, _ = run(inv, fc, url, dry_run=True)
    assert dry.results[0].status is Status.CHANGED and posts(fc) == []
    assert "+ tcp 22 from 203.0.113.201/32" in out
    res, out, host = run(inv, fc, url)
    assert res.results[0].status is Status.CHANGED, out
    assert host.asked == 1  # the source is learnt once per run
    assert "Apply the cloud firewalls?" in flat(out)
    assert "your source 203.0.113.201 is inside" in flat(out)
    state = fc.snapshot()
    assert sorted(f["name"] for f in state["firewalls"]) == [
        "skgm-control-plane",
        "skgm-lb",
        "skgm-worker",
    ]
    for s in state["servers"]:
        assert s["labels"]["hetzner-ha-runbook/cluster"] == "skgm"
    got = rules_by_server(fc)
    ssh = ("tcp", "22", ["203.0.113.201/32"])
    icmp = ("icmp", None, ["0.0.0.0/0", "::/0"])
    assert got["k8scontrol01"] == sorted([icmp, ssh])
    assert got["k8node02"] == sorted([icmp, ssh])
    assert got["k8slb02"] == sorted(
        [icmp, ssh, ("tcp", "6443", ["203.0.113.0/24"]),
         ("udp", "694", ["203.0.113.14/32", "203.0.113.15/32"])]
    )  # fmt: skip
    before = len(posts(fc)) + len([c for c in fc.calls.dump() if c["method"] == "PUT"])
    again, out, _ = run(inv, fc, url)
    assert again.results[0].status is Status.OK, out
    after = len(posts(fc)) + len([c for c in fc.calls.dump() if c["method"] == "PUT"])
    assert after == before  # a re-run writes nothing


def test_removing_an_admin_network_removes_the_rule(inv: Inventory, cloud) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    fc, url = cloud
    two = with_firewall(inv, admin_networks=["203.0.113.201/32", "192.0.2.0/24"])
    run(two, fc, url)
    assert ("tcp", "22", ["192.0.2.0/24", "203.0.113.201/32"]) in (
        rules_by_server(fc)["k8node01"] or []
    )
    res, out, _ = run(inv, fc, url)
    assert res.results[0].status is Status.CHANGED
    assert "- tcp 22 from 192.0.2.0/24, 203.0.113.201/32" in out
    assert "+ tcp 22 from 203.0.113.201/32" in out
    assert ("tcp", "22", ["203.0.113.201/32"]) in (rules_by_server(fc)["k8node01"] or [])


def test_refuses_when_the_operator_would_lock_himself_out(inv: Inventory, cloud) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    fc, url = cloud
    res, out, _ = run(inv, fc, url, source="198.51.100.10")
    assert res.results[0].status is Status.FAILED
    assert "your source address 198.51.100.10 is outside firewall.admin_networks" in flat(out)
    assert fc.snapshot()["firewalls"] == [] and posts(fc) == []
    # unreachable (an earlier firewall may drop us): warn, and let the rules be fixed
    res, out, _ = run(inv, fc, url, source=None)
    assert res.results[0].status is Status.CHANGED, out
    assert "not reachable to learn your source address" in flat(out)
    # reachable, but the variable is empty (sudo resets it): a warning, not a guess
    res, out, _ = run(inv, fc, url, source="")
    assert res.results[0].status is Status.OK, out
    assert "did not show your source address" in flat(out)
    assert "your source address could not be checked" not in flat(out)  # nothing to apply


def test_foreign_targets_and_outbound_rules_are_reconciled(inv: Inventory, cloud) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from hcloud.firewalls import FirewallResource, FirewallRule

    fc, url = cloud
    run(inv, fc, url)
    client = CloudTarget.from_inventory(
        inv.model_copy(update={"hcloud": inv.hcloud.model_copy(update={"endpoint": url})}),
        dry_run=False,
        environ={"RBLAB_HCLOUD_TOKEN": fc._token.decode()},
    ).client
    fw = client.firewalls.get_by_name("skgm-worker")
    srv = client.servers.get_by_name("k8slb01")
    for a in client.firewalls.apply_to_resources(fw, [FirewallResource("server", server=srv)]):
        a.wait_until_finished()
    out_rule = FirewallRule("out", "tcp", destination_ips=["0.0.0.0/0"], port="25")
    for a in client.firewalls.set_rules(fw, [*fw.rules, out_rule]):
        a.wait_until_finished()
    res, out, _ = run(inv, fc, url)
    assert res.results[0].status is Status.CHANGED, out
    fw = client.firewalls.get_by_name("skgm-worker")
    assert [e.type for e in fw.applied_to] == ["label_selector"]
    assert all(r.direction == "in" for r in fw.rules)


def test_no_firewall_section_manages_nothing(cloud) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    import yaml

    fc, url = cloud
    data = yaml.safe_load(LAB.read_text())
    del data["firewall"]
    bare = parse_inventory(data, path=LAB)
    assert any(w.key == "firewall" for w in bare.warnings)
    res, out, _ = run(bare, fc, url)
    assert res.results == () and "nothing is managed" in flat(out)


def test_status_view_lists_firewalls_and_uncovered_servers(inv: Inventory, cloud) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    from runbook.status.clusterfacts import firewall_view

    fc, url = cloud
    client = CloudTarget.from_inventory(
        inv.model_copy(update={"hcloud": inv.hcloud.model_copy(update={"endpoint": url})}),
        dry_run=True,
        environ={"RBLAB_HCLOUD_TOKEN": fc._token.decode()},
    ).client
    before = firewall_view(inv, lambda: client)
    assert before.firewalls == () and set(before.uncovered) == set(inv.hosts)
    run(inv, fc, url)
    view = firewall_view(inv, lambda: client)
    assert view.uncovered == () and not view.error
    rows = {r.name: (r.rules, r.servers) for r in view.firewalls}
    assert rows["skgm-lb"] == (4, ("k8slb01", "k8slb02"))
    assert rows["skgm-worker"] == (2, ("k8node01", "k8node02"))

    def down() -> object:
        raise ConnectionError("API unreachable")

    assert "API unreachable" in firewall_view(inv, down).error
