"""`cluster.upgrade` as data: the skew rules, the exact package versions from the repository,
the per-node checks (what is upgraded already stays untouched), HAProxy's runtime commands and
the readyz probe's verdicts."""

from __future__ import annotations

import io
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.apiprobe import readyz_once
from lab.standins.rbk8s import pki
from lab.standins.rbk8s.apiserver import ApiServer, Store
from runbook.core.console import Masker, Ui, make_console
from runbook.core.engine import RunOptions, StepContext
from runbook.core.remote import Fact, Host, Result
from runbook.inventory import load_inventory
from runbook.steps._k8s import Cluster, NodeInfo
from runbook.steps.upgrade import ControlPlaneUpgraded, KubeletUpgraded
from runbook.tools import haproxyctl
from runbook.tools.k8sversions import (
    SkewError,
    Version,
    check_step,
    deb_upstream,
    exact_package,
    newest_package,
)

ROOT = Path(__file__).resolve().parents[2]
MADISON = """\
   kubeadm | 1.37.2-1.1 | https://pkgs.k8s.io/core:/stable:/v1.37/deb  Packages
   kubeadm | 1.37.10-1.1 | https://pkgs.k8s.io/core:/stable:/v1.37/deb  Packages
   kubeadm | 1.37.0-1.1 | https://pkgs.k8s.io/core:/stable:/v1.37/deb  Packages
   kubeadm | 1.36.4-1.1 | file:/run/labrepo ./ Packages
"""


def test_one_minor_at_a_time_never_down() -> None:
    check_step(Version(1, 36, 3), 37)
    check_step(Version(1, 37, 0), 37)  # a patch, or nothing
    with pytest.raises(SkewError, match=r"skips a minor.*set 1\.37 first"):
        check_step(Version(1, 36, 3), 38)
    with pytest.raises(SkewError, match="does not downgrade"):
        check_step(Version(1, 36, 3), 35)


def test_newest_patch_and_exact_package_versions() -> None:
    assert newest_package(MADISON, 37) == (Version(1, 37, 10), "1.37.10-1.1")
    assert newest_package(MADISON, 38) is None
    assert exact_package(" kubectl | 2:1.37.0-1.1 | file:/x ./ Packages", Version(1, 37, 0)) == (
        "2:1.37.0-1.1"
    )
    assert exact_package(MADISON, Version(1, 37, 1)) is None
    assert deb_upstream("2:1.37.0-1.1") == Version(1, 37, 0)
    assert deb_upstream("") is None


def test_haproxy_runtime_commands_refuse_injection() -> None:
    cmd = haproxyctl.set_server_state("k8scontrol01", "drain")
    assert "set server k8s-control-plane/k8scontrol01 state drain" in cmd
    for bad in (("k8s;reboot", "drain"), ("k8scontrol01", "down")):
        with pytest.raises(ValueError):
            haproxyctl.set_server_state(*bad)


class ScriptedHost(Host):
    def __init__(self, name: str, answers: dict[str, str]) -> None:
        super().__init__(name, dry_run=True)
        self.answers = answers

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        for prefix, out in self.answers.items():
            if cmd.startswith(prefix):
                return Result(out, "", 0)
        return Result("", f"unscripted: {cmd}", 1)


def context(
    nodes: dict[str, NodeInfo], madison: str = MADISON, *, tmp: Path, version: str = "1.37"
) -> StepContext:
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["kubernetes"]["version"] = version
    (tmp / "hosts.yaml").write_text(yaml.safe_dump(data))
    inv = load_inventory(tmp / "hosts.yaml")
    masker = Masker()
    ui = Ui(make_console(masker, file=io.StringIO(), width=120), masker, assume_yes=True)
    ctx = StepContext(inventory=inv, ui=ui, options=RunOptions(dry_run=True))
    first = inv.first_control_plane.name
    ctx.targets[first] = ScriptedHost(first, {"apt-cache madison kubeadm": madison})
    cluster = Cluster.of(ctx)
    cluster._nodes = nodes  # what `kubectl get nodes` said at plan time
    return ctx


def test_control_plane_check_compares_the_manifest_with_the_target(tmp_path: Path) -> None:
    ctx = context({}, tmp=tmp_path)
    h = Host("k8scontrol02")
    res = ControlPlaneUpgraded(ctx, "k8scontrol02", first=False)
    change = res.check(h, Fact("kube-apiserver:v1.36.4", 0))
    assert change is not None and "kubeadm upgrade node: v1.36.4 -> v1.37.10" in change.summary
    assert res.check(h, Fact("kube-apiserver:v1.37.10", 0)) is None
    first = ControlPlaneUpgraded(ctx, "k8scontrol01", first=True).check(h, Fact("", 1))
    assert first is not None and "kubeadm upgrade plan + apply" in first.summary


def test_without_the_new_repository_the_plan_names_the_minor(tmp_path: Path) -> None:
    ctx = context({}, madison=" kubeadm | 1.36.4-1.1 | file:/x ./ Packages", tmp=tmp_path)
    change = ControlPlaneUpgraded(ctx, "k8scontrol02", first=False).check(
        Host("k8scontrol02"), Fact("kube-apiserver:v1.36.4", 0)
    )
    assert change is not None and "v1.37.x (newest patch of the 1.37 repository)" in change.summary


@pytest.mark.parametrize(
    ("node", "debs", "todo"),
    [
        (
            NodeInfo("k8node01", True, "v1.37.10"),
            "kubelet 1.37.10-1.1\nkubectl 2:1.37.10-1.1",
            False,
        ),
        (
            NodeInfo("k8node01", True, "v1.37.10", True),
            "kubelet 1.37.10-1.1\nkubectl 1.37.10-1.1",
            True,
        ),
        (NodeInfo("k8node01", True, "v1.36.4"), "kubelet 1.36.4-1.1\nkubectl 1.36.4-1.1", True),
        (NodeInfo("k8node01", True, "v1.37.10"), "kubelet 1.37.10-1.1\nkubectl 1.36.4-1.1", True),
    ],
)
def test_kubelet_check(node: NodeInfo, debs: str, todo: bool, tmp_path: Path) -> None:
    ctx = context({node.name: node}, tmp=tmp_path)
    change = KubeletUpgraded(ctx, node.name).check(Host(node.name), Fact(debs, 0))
    assert (change is not None) is todo


def test_a_node_left_cordoned_at_the_target_is_only_uncordoned(tmp_path: Path) -> None:
    """An interrupted run (or a lost uncordon) leaves the node at the target but cordoned: the
    plan and the not-converged message say so, and nothing is drained or restarted again."""
    node = NodeInfo("k8node01", True, "v1.37.10", True)
    ctx = context({node.name: node}, tmp=tmp_path)
    debs = Fact("kubelet 1.37.10-1.1\nkubectl 1.37.10-1.1", 0)
    change = KubeletUpgraded(ctx, node.name).check(Host(node.name), debs)
    assert change is not None and change.action == "uncordon"
    assert "cordoned" in change.summary and "drain" not in change.summary


@pytest.fixture
def apiserver(tmp_path: Path) -> Any:
    p = tmp_path / "pki"
    pki.make_ca(p)
    crt, key = pki.issue(p, "/CN=kube-apiserver", sans=("127.0.0.1",), server=True)
    pki.write_pair(p, "apiserver", crt, key)
    srv = ApiServer(("127.0.0.1", 0), Store(tmp_path / "db"), p, cert=p / "apiserver.crt",
                    key=p / "apiserver.key")  # fmt: skip
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def test_readyz_probe_counts_only_200_ok(apiserver: int) -> None:
    assert readyz_once("127.0.0.1", apiserver, 2) == (True, "200 ok")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    ok, why = readyz_once("127.0.0.1", free, 1)
    assert not ok and why == "ConnectionRefusedError"
    # a plain TCP server that is no API server (e.g. a dead backend's port taken over)
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    th = threading.Thread(target=lambda: srv.accept()[0].close(), daemon=True)
    th.start()
    ok, why = readyz_once("127.0.0.1", srv.getsockname()[1], 1)
    srv.close()
    assert not ok and why in (
        "SSLEOFError",
        "ConnectionResetError",
        "SSLError",
        "SSLZeroReturnError",
    )
