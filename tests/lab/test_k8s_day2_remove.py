"""Day 2 on the lab: `inv cluster.remove --host` and re-join with `inv cluster.join --host`.

A worker and a control plane leave (the control plane also as an etcd member, with the API
answering through the floating IP all the while) and come back; a second remove changes
nothing; removing a control plane while another is down is refused (etcd quorum) and so is the
last control plane (exit 2, inventory-level).
"""

from __future__ import annotations

import json

import pytest
import yaml

from lab import netns, topology
from lab.apiprobe import ReadyzProbe
from tests.lab.test_k8s_walkthrough import K8S_HOSTS, KUBECTL, cli, cluster, inventory, recap

from .helpers import wait_for

__all__ = ["cluster"]
pytestmark = pytest.mark.lab
ETCDCTL = [
    "etcdctl",
    "--endpoints=https://127.0.0.1:2379",
    "--cacert=/etc/kubernetes/pki/etcd/ca.crt",
    "--cert=/etc/kubernetes/pki/etcd/server.crt",
    "--key=/etc/kubernetes/pki/etcd/server.key",
]


def node_names(on: str = "k8scontrol01") -> set[str]:
    r = netns.host_exec(on, [*KUBECTL, "get", "nodes", "-o", "json"])
    return {i["metadata"]["name"] for i in json.loads(r.stdout)["items"]}


def members(on: str = "k8scontrol01") -> set[str]:
    r = netns.host_exec(on, [*ETCDCTL, "member", "list", "-w", "json"])
    return {m["name"] for m in json.loads(r.stdout)["members"]}


def all_ready() -> bool:
    r = netns.host_exec("k8scontrol01", [*KUBECTL, "get", "nodes", "-o", "json"], check=False)
    items = json.loads(r.stdout)["items"] if r.returncode == 0 else []
    ok = {i["metadata"]["name"] for i in items if i["status"]["conditions"][0]["status"] == "True"}
    return ok == set(K8S_HOSTS)


def test_remove_and_rejoin_a_worker(cluster: dict[str, float]) -> None:
    r = cli("cluster.remove", "--host", "k8node02", "--yes")
    assert recap(r.stdout)["changed"] == 1, r.stdout
    assert "k8node02" not in node_names()
    assert (
        netns.host_exec(
            "k8node02", ["test", "-e", "/etc/kubernetes/kubelet.conf"], check=False
        ).returncode
        != 0
    )
    r = cli("cluster.remove", "--host", "k8node02", "--yes")
    assert recap(r.stdout)["changed"] == 0, r.stdout
    r = cli("cluster.join", "--host", "k8node02", "--yes")
    assert recap(r.stdout)["changed"] == 1, r.stdout
    wait_for("every node Ready after the re-join", all_ready, timeout=90, step=1)


def test_remove_and_rejoin_a_control_plane_api_kept_serving(cluster: dict[str, float]) -> None:
    assert node_names() >= {"k8scontrol01", "k8scontrol02", "k8scontrol03"}
    # a cluster never backed up has no etcdctl (only backup and restore installed etcd-client;
    # CI ran this module without them once: "etcdctl: command not found"): the removal
    # installs it where it runs it
    for cp in ("k8scontrol01", "k8scontrol02", "k8scontrol03"):
        netns.host_exec(cp, ["dpkg", "--purge", "etcd-client"], timeout=120)
    assert netns.host_exec(
        "k8scontrol01", ["sh", "-c", "command -v etcdctl"], check=False
    ).returncode
    probe = ReadyzProbe(topology.load().floating_ip, interval=0.2).start()
    try:
        r = cli("cluster.remove", "--host", "k8scontrol03", "--yes")
    finally:
        probe.stop()
    print(probe.summary())
    try:
        # two steps changed: remove-tools (etcd-client on k8scontrol01) and the removal
        assert recap(r.stdout)["changed"] == 2, r.stdout
        assert "remove-tools" in r.stdout and "etcd-client" in r.stdout, r.stdout
        assert members() == {"k8scontrol01", "k8scontrol02"}
        assert "k8scontrol03" not in node_names("k8scontrol02")
        assert probe.failed_ratio <= 0.01, probe.summary()
    finally:
        # back in any case: the next test needs three members (CI 85: an assertion here left
        # two, and the quorum test then removed a second control plane, rightly)
        r = cli("cluster.join", "--host", "k8scontrol03", "--yes", check=False)
    assert recap(r.stdout)["failed"] == 0, r.stdout
    assert members() == {"k8scontrol01", "k8scontrol02", "k8scontrol03"}
    wait_for("every node Ready after the re-join", all_ready, timeout=90, step=1)


def test_remove_refuses_to_break_quorum_or_the_last_control_plane(
    cluster: dict[str, float],
) -> None:
    netns.host_exec("k8scontrol03", ["systemctl", "stop", "kubelet"])
    try:
        r = cli("cluster.remove", "--host", "k8scontrol02", "--yes", check=False)
        text = " ".join(r.stdout.split())
        assert r.returncode == 1 and "would break etcd's quorum" in text, r.stdout
        assert members() == {"k8scontrol01", "k8scontrol02", "k8scontrol03"}
    finally:
        netns.host_exec("k8scontrol03", ["systemctl", "start", "kubelet"])
    data = yaml.safe_load(inventory().read_text())
    for name in ("k8scontrol02", "k8scontrol03"):
        del data["hosts"][name]
    one = inventory().with_name("hosts-one-cp.yaml")
    one.write_text(yaml.safe_dump(data, sort_keys=False))
    from lab import scenarios

    r = scenarios.inv_runner(inventory=one)("cluster.remove", "--host", "k8scontrol01", check=False)
    assert r.returncode == 2 and "last control plane" in r.stdout + r.stderr
    wait_for("every node Ready again", all_ready, timeout=90, step=1)
