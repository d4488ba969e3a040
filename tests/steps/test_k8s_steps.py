"""Kubernetes steps as data and as flows over a scripted cluster (tests/steps/k8s_fakes.py):
given these facts expect these changes; never init twice, never re-join; fresh credentials per
join, never in argv; token and p12 files 0600; secrets masked in output."""

from __future__ import annotations

import base64
import io
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook.core.console import Masker, NeedsPerson, Ui, make_console
from runbook.core.engine import RunOptions, StepContext, plan_target, run_step
from runbook.core.plan import Status
from runbook.core.remote import Host, Result
from runbook.core.resources import Packages
from runbook.inventory import Inventory, load_inventory
from runbook.render import k8sfiles
from runbook.steps.admin_user import AdminUserStep
from runbook.steps.certs import CertsStep
from runbook.steps.cni import CniStep
from runbook.steps.init import InitStep
from runbook.steps.join import JoinStep
from runbook.steps.k8s_prepare import kubernetes_resources
from tests.conftest import FakeClock
from tests.steps.k8s_fakes import FakeCluster, FakeK8sHost

ROOT = Path(__file__).resolve().parents[2]
WEAVE = ROOT / "lab" / "standins" / "manifests" / "weave-daemonset-k8s.yaml"


@pytest.fixture
def inv(tmp_path: Path) -> Inventory:
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["kubernetes"]["cni_manifest_url"] = WEAVE.as_uri()
    p = tmp_path / "hosts.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_inventory(p)


class World:
    def __init__(self, inv: Inventory) -> None:
        self.inv = inv
        self.cluster = FakeCluster()
        self.hosts = {
            h.name: FakeK8sHost(h.name, str(h.private_ip), self.cluster)
            for h in inv.hosts_with_role("control-plane", "worker")
        }
        self.out = io.StringIO()

    def ctx(self, *, yes: bool = True, interactive: bool = False, dry_run: bool = False,
            hosts: tuple[str, ...] = ()) -> StepContext:  # fmt: skip
        masker = Masker()
        ui = Ui(make_console(masker, file=self.out, width=120), masker, assume_yes=yes,
                interactive=interactive, stdin=io.StringIO(""))  # fmt: skip
        for h in self.hosts.values():
            h.dry_run = dry_run
            h.touched.clear()
        ctx = StepContext(self.inv, ui, RunOptions(dry_run=dry_run, yes=yes, hosts=hosts))
        ctx.targets.update(self.hosts)
        return ctx

    def argv(self) -> list[str]:
        return [cmd for h in self.hosts.values() for cmd, _, _ in h.sent]


def changes(step: Any, ctx: StepContext, target: str) -> list[tuple[str, str]]:
    plan = plan_target(step, ctx, target)
    assert not plan.error, plan.error
    return [(c.resource, c.action) for c in plan.changes]


def test_prepare_kubernetes_resources_in_apply_order(inv: Inventory) -> None:
    keys = [r.key for r in kubernetes_resources(inv, "k8node01")]
    assert keys == [
        "packages:ca-certificates,curl,gpg",
        "apt-repo:kubernetes",
        "apt-repo:docker",
        "swap:off",
        f"file:{k8sfiles.MODULES_PATH}",
        "command:modules",
        "sysctl:net.ipv4.ip_forward",
        "sysctl:net.bridge.bridge-nf-call-iptables",
        "sysctl:net.bridge.bridge-nf-call-ip6tables",
        "containerd:runtime",
        f"file:{k8sfiles.CONTAINERD_CONFIG_PATH}",
        "service:containerd",
        "packages:kubelet,kubeadm,kubectl",
        "command:enable-kubelet",
    ]
    pkgs = kubernetes_resources(inv, "k8node01")[12]
    assert isinstance(pkgs, Packages) and pkgs.hold


def test_init_plans_then_is_clean(inv: Inventory) -> None:
    w = World(inv)
    step = InitStep()
    ctx = w.ctx()
    assert step.target_names(ctx) == ["k8scontrol01"]
    assert changes(step, ctx, "k8scontrol01") == [
        (f"file:{k8sfiles.KUBEADM_CONFIG_PATH}", "create"),
        (f"file:{k8sfiles.APISERVER_PATCH}", "create"),
        ("command:kubeadm-init", "run"),
        ("command:root-kubeconfig", "run"),
    ]
    res = run_step(step, w.ctx())
    assert [r.status for r in res.results] == [Status.CHANGED], res
    host = w.hosts["k8scontrol01"]
    assert host.files[k8sfiles.KUBEADM_CONFIG_PATH][1] == 0o600
    cfg = list(yaml.safe_load_all(host.files[k8sfiles.KUBEADM_CONFIG_PATH][0]))
    assert cfg[1]["kubernetesVersion"] == "v1.36.1"
    again = run_step(step, w.ctx())
    assert [r.status for r in again.results] == [Status.OK]
    assert sum("kubeadm init" in c for c in w.argv()) == 1


def test_init_never_runs_on_an_initialised_host(inv: Inventory) -> None:
    w = World(inv)
    w.hosts["k8scontrol01"].files[k8sfiles.ADMIN_CONF] = (b"already", 0o600)
    found = changes(InitStep(), w.ctx(), "k8scontrol01")
    assert ("command:kubeadm-init", "run") not in found


def test_init_refuses_a_kubeadm_of_another_minor(inv: Inventory) -> None:
    w = World(inv)
    w.hosts["k8scontrol01"].kubeadm_version = "v1.35.4"
    plan = plan_target(InitStep(), w.ctx(), "k8scontrol01")
    assert "installed kubeadm is v1.35.4" in plan.error


def test_join_before_init_says_what_to_do(inv: Inventory) -> None:
    w = World(inv)
    plan = plan_target(JoinStep("worker"), w.ctx(), "k8node01")
    assert "run `inv cluster.init` first" in plan.error


def initialised(inv: Inventory) -> World:
    w = World(inv)
    assert not run_step(InitStep(), w.ctx()).failed
    return w


def test_join_control_planes_one_at_a_time_then_workers_fresh_credentials(
    inv: Inventory,
) -> None:
    w = initialised(inv)
    cp, workers = JoinStep("control-plane"), JoinStep("worker")
    assert cp.serial and not workers.serial
    ctx = w.ctx()
    assert cp.target_names(ctx) == ["k8scontrol02", "k8scontrol03"]
    assert changes(cp, ctx, "k8scontrol02") == [
        (f"file:{k8sfiles.APISERVER_PATCH}", "create"),
        ("kubeadm-join:k8scontrol02", "join"),
    ]
    for step in (cp, workers):
        res = run_step(step, w.ctx())
        assert {r.status for r in res.results} == {Status.CHANGED}, res
    assert sorted(w.cluster.joins[2:]) == [("k8node01", "worker"), ("k8node02", "worker")]
    assert w.cluster.joins[:2] == [
        ("k8scontrol02", "control-plane"),
        ("k8scontrol03", "control-plane"),
    ]
    # each control plane advertises its own IP; the join file is gone; tokens were revoked
    for name, ip in (("k8scontrol02", "10.143.0.3"), ("k8scontrol03", "10.143.0.4")):
        manifest = w.hosts[name].files[k8sfiles.APISERVER_MANIFEST][0].decode()
        assert f"--advertise-address={ip}" in manifest
    assert all(k8sfiles.JOIN_CONFIG_PATH not in h.files for h in w.hosts.values())
    assert w.cluster.tokens == set()
    # four tokens and two certificate keys were issued; none ever appeared in a command line
    issued = [h for h in w.hosts["k8scontrol01"].sent if "kubeadm token create" in h[0]]
    assert len(issued) == 4
    argv = "\n".join(w.argv())
    assert len(w.cluster.cert_keys) == 2
    for secret in w.cluster.cert_keys:
        assert secret not in argv
    tokens = 0
    for h in w.hosts.values():
        for cmd, stdin, _ in h.sent:
            if cmd == f"WRITE {k8sfiles.JOIN_CONFIG_PATH}" and stdin:
                tokens += 1
                doc = yaml.safe_load(base64.b64decode(stdin))
                tok = doc["discovery"]["bootstrapToken"]["token"]
                assert tok not in argv and tok.split(".")[1] not in argv
    assert tokens == 4
    # a second run changes nothing and issues nothing
    sent_before = len(w.hosts["k8scontrol01"].sent)
    for step in (cp, workers):
        assert {r.status for r in run_step(step, w.ctx()).results} == {Status.OK}
    later = [c for c, _, m in w.hosts["k8scontrol01"].sent[sent_before:] if m]
    assert later == []


def test_join_one_host_by_name_and_refuse_half_joined(inv: Inventory) -> None:
    w = initialised(inv)
    res = run_step(JoinStep("control-plane"), w.ctx(hosts=("k8scontrol02",)))
    assert [(r.target, r.status) for r in res.results] == [("k8scontrol02", Status.CHANGED)]
    assert [j[0] for j in w.cluster.joins] == ["k8scontrol02"]
    w.hosts["k8node01"].files[k8sfiles.KUBELET_CONF] = (b"stale", 0o600)
    plan = plan_target(JoinStep("worker"), w.ctx(), "k8node01")
    assert "half-done join" in plan.error and "kubeadm reset" in plan.error


def test_a_failed_join_still_deletes_the_credentials_file(inv: Inventory) -> None:
    w = initialised(inv)
    w.cluster.ca_hash = "sha256:" + "00" * 32  # issued hash will not match what join checks
    orig = w.hosts["k8scontrol01"]._command

    def wrong_hash(cmd: str):  # type: ignore[no-untyped-def]
        r = orig(cmd)
        if "--print-join-command" in cmd:
            w.cluster.ca_hash = "sha256:" + "11" * 32
        return r

    w.hosts["k8scontrol01"]._command = wrong_hash  # type: ignore[method-assign]
    res = run_step(JoinStep("worker"), w.ctx(hosts=("k8node01",)))
    assert res.results[0].status is Status.FAILED and "CA hash mismatch" in res.results[0].message
    assert k8sfiles.JOIN_CONFIG_PATH not in w.hosts["k8node01"].files
    assert w.cluster.tokens == set()


def joined(inv: Inventory) -> World:
    w = initialised(inv)
    for step in (JoinStep("control-plane"), JoinStep("worker")):
        assert not run_step(step, w.ctx()).failed
    return w


def test_cni_weave_is_a_checkpoint_then_every_node_ready(inv: Inventory) -> None:
    w = joined(inv)
    with pytest.raises(NeedsPerson, match="Weave Net is archived"):
        run_step(CniStep(), w.ctx(yes=False))
    assert "daemonset/weave-net" not in w.cluster.objects
    res = run_step(CniStep(), w.ctx())
    assert [r.status for r in res.results] == [Status.CHANGED]
    manifest = w.hosts["k8scontrol01"].files[k8sfiles.CNI_MANIFEST_PATH][0].decode()
    assert "IPALLOC_RANGE" in manifest and "10.144.0.0/16" in manifest
    assert all(w.cluster.nodes.values()) and len(w.cluster.nodes) == 5
    assert "all 5 nodes Ready" in w.out.getvalue()
    assert [r.status for r in run_step(CniStep(), w.ctx(yes=False)).results] == [Status.OK]


def test_admin_user_token_to_a_0600_file_never_printed(inv: Inventory, tmp_path: Path) -> None:
    w = joined(inv)
    token_file = tmp_path / "out" / "admin.token"
    step = AdminUserStep(token_file)
    res = run_step(step, w.ctx())
    assert [r.status for r in res.results] == [Status.CHANGED], res
    assert token_file.read_text() == "eyJSECRET-TOKEN\n"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert "eyJSECRET-TOKEN" not in w.out.getvalue()
    assert set(w.cluster.objects) >= {
        "serviceaccount/skgm-admin-user",
        "clusterrolebinding/skgm-admin-user",
        "secret/skgm-admin-user-token",
    }
    assert [r.status for r in run_step(step, w.ctx()).results] == [Status.OK]
    token_file.chmod(0o644)
    assert changes(step, w.ctx(), "k8scontrol01") == [(f"local-token:{token_file}", "chmod")]


def test_certs_crt_key_p12_0600_password_never_in_argv(
    inv: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = initialised(inv)
    password = "p12-Secret-Pass"
    monkeypatch.setenv("RUNBOOK_P12_PASSWORD", password)
    seen: list[list[str]] = []
    real = subprocess.run

    def spy(argv: list[str], **kw: Any) -> Any:
        seen.append(list(argv))
        return real(argv, **kw)

    monkeypatch.setattr("runbook.steps.certs.subprocess.run", spy)
    out = tmp_path / "certs"
    step = CertsStep(out)
    res = run_step(step, w.ctx())
    assert [r.status for r in res.results] == [Status.CHANGED], res
    crt, key = w.cluster.client
    assert (out / "kubecfg.crt").read_bytes() == crt and (out / "kubecfg.key").read_bytes() == key
    for name in ("kubecfg.crt", "kubecfg.key", "kubecfg.p12"):
        assert (out / name).stat().st_mode & 0o777 == 0o600
    assert seen and all(password not in " ".join(a) for a in seen)
    assert any("env:RB_P12_PASS" in a for a in seen[0])
    check = real(
        ["openssl", "pkcs12", "-in", str(out / "kubecfg.p12"), "-nokeys", "-passin", "env:P"],
        env={"P": password, "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )  # fmt: skip
    assert check.returncode == 0 and "kubernetes-admin" in check.stdout, check.stderr
    assert [r.status for r in run_step(step, w.ctx()).results] == [Status.OK]


def test_certs_without_password_source_needs_a_person(
    inv: Inventory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = initialised(inv)
    monkeypatch.delenv("RUNBOOK_P12_PASSWORD", raising=False)
    res = run_step(CertsStep(tmp_path / "c"), w.ctx(yes=False))
    assert res.results[0].status is Status.FAILED
    assert "needs a password" in res.results[0].message
    assert not (tmp_path / "c" / "kubecfg.p12").exists()
    res = run_step(CertsStep(tmp_path / "c"), w.ctx(yes=True))
    assert res.results[0].status is Status.CHANGED
    pw = tmp_path / "c" / "kubecfg.p12.password"
    assert pw.stat().st_mode & 0o777 == 0o600 and pw.read_text().strip() not in w.out.getvalue()


def test_dry_run_changes_nothing(inv: Inventory) -> None:
    w = World(inv)
    res = run_step(InitStep(), w.ctx(dry_run=True))
    assert res.dry_run and [r.status for r in res.results] == [Status.CHANGED]
    assert not any(m for h in w.hosts.values() for _, _, m in h.sent)
    assert w.hosts["k8scontrol01"].files == {}


def test_walkthrough_runs_every_step_in_document_order() -> None:
    from runbook.steps.registry import PROCEDURE
    from runbook.tasks._common import as_checked

    assert [(e.name, e.number) for e in PROCEDURE] == [
        ("prepare", 1), ("reboot", 1), ("network", 2), ("firewall", 2), ("lb", 3),
        ("haproxy", 5), ("heartbeat", 4), ("init", 6), ("join", 7), ("join-workers", 7),
        ("cni", 8), ("admin-user", 9), ("insecure-api", 9), ("certs", 10),
    ]  # fmt: skip
    from runbook.core.plan import Change, StepResult, TargetResult

    pending = StepResult(
        "lb", (TargetResult("hcloud", Status.CHANGED, (Change("vip", "assign"),)),), True
    )
    checked = as_checked(pending)
    assert not checked.dry_run and checked.results[0].status is Status.SKIPPED


class _FlakyVip(Host):
    """Answers the first `fail` calls as kubectl does while the VIP has no holder."""

    def __init__(self, fail: int, error: str) -> None:
        super().__init__("k8scontrol01")
        self.fail, self.error, self.calls = fail, error, 0

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        self.calls += 1
        if self.calls <= self.fail:
            return Result("", self.error, 1)
        return Result("ok", "", 0)


@pytest.mark.parametrize(
    "error",
    [
        "Unable to connect to the server: dial tcp 10.143.0.50:6443: connect: no route to host",
        "The connection to the server 10.143.0.50:6443 was refused - did you specify the right "
        "host or port?",
    ],
)
def test_calls_through_the_vip_ride_out_a_hand_over(error: str, fake_clock: FakeClock) -> None:
    """I5 (issue 11: the join step's verification failed the run on one "Unable to connect to
    the server" while the VIP moved): connection failures are retried until the deadline."""
    from runbook.steps._k8s import through_vip

    host = _FlakyVip(2, error)
    res = through_vip(host, "kubectl get nodes -o json", deadline_s=10)
    assert res.exited == 0 and host.calls == 3 and fake_clock.slept == [1, 1]
    # a real error is not retried; a connection failure past the deadline is returned as is
    other = _FlakyVip(5, 'Error from server (Forbidden): nodes is forbidden: User "x"')
    assert through_vip(other, "kubectl get nodes", deadline_s=10).exited == 1 and other.calls == 1
    late = _FlakyVip(99, error)
    fake_clock.slept.clear()
    assert through_vip(late, "kubectl get nodes", deadline_s=1.5).exited == 1
    assert late.calls == 3 and fake_clock.slept == [1, 1]  # at 0, 1 and 2 s (past 1.5 s)
    assert through_vip(_FlakyVip(99, error), "kubectl get nodes").exited == 1
    assert sum(fake_clock.slept) == 2 + 30  # VIP_DEADLINE_S by default
