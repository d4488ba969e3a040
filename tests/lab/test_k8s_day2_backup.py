"""Day 2 on the lab through the real CLI: `inv cluster.backup` then `inv cluster.restore`.

Back up (a snapshot file 0600 under .runbook/CLUSTER/backups beside the inventory), delete an
object, restore: the object is back on every control plane, the nodes are Ready, and a re-run of
the restore changes nothing. Without the typed confirmation nothing happens (exit 3).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from lab import netns
from tests.lab.test_k8s_walkthrough import K8S_HOSTS, KUBECTL, cli, cluster, inventory, recap

from .helpers import wait_for

__all__ = ["cluster"]  # the walkthrough's fixture: builds (or re-checks) the cluster
pytestmark = pytest.mark.lab
CPS = ("k8scontrol01", "k8scontrol02", "k8scontrol03")
CM = "day2-restore-probe"


def cm_present(on: str) -> bool:
    r = netns.host_exec(on, [*KUBECTL, "get", f"configmap/{CM}", "-o", "name"], check=False)
    return r.returncode == 0 and CM in r.stdout


def all_ready() -> bool:
    r = netns.host_exec("k8scontrol01", [*KUBECTL, "get", "nodes", "-o", "json"], check=False)
    if r.returncode != 0:
        return False
    items = json.loads(r.stdout)["items"]
    ready = {
        i["metadata"]["name"] for i in items if i["status"]["conditions"][0]["status"] == "True"
    }
    return ready == set(K8S_HOSTS)


def test_backup_delete_restore_brings_the_object_back(cluster: dict[str, float]) -> None:
    manifest = yaml.safe_dump(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": CM}, "data": {"a": "1"}}
    )
    netns.host_exec("k8scontrol01", ["sh", "-c", "cat > /tmp/day2-cm.yaml"], input=manifest)
    netns.host_exec("k8scontrol01", [*KUBECTL, "apply", "-f", "/tmp/day2-cm.yaml"])
    assert cm_present("k8scontrol02")

    r = cli("cluster.backup", "--yes")
    assert recap(r.stdout)["failed"] == 0, r.stdout
    m = re.search(r"snapshot: (\S+) \(mode 600; revision (\d+)", r.stdout)
    assert m, r.stdout
    snap = Path(m.group(1))
    cluster_name = yaml.safe_load(inventory().read_text())["cluster"]["name"]
    assert snap.parent == inventory().parent / ".runbook" / cluster_name / "backups"
    assert snap.stat().st_mode & 0o777 == 0o600 and snap.stat().st_size > 0
    # the snapshot did not stay on the host
    left = netns.host_exec("k8scontrol01", ["ls", "/var/lib/runbook-etcd"], check=False).stdout
    assert not left.strip()

    netns.host_exec("k8scontrol01", [*KUBECTL, "delete", f"configmap/{CM}"])
    assert not cm_present("k8scontrol03")

    # no TTY, no typed confirmation: nothing happens (--yes is not enough)
    r = cli("cluster.restore", "--snapshot", str(snap), "--yes", check=False)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "--confirm skgm" in " ".join((r.stdout + r.stderr).split())
    for cp in CPS:
        manifests = netns.host_exec(cp, ["ls", "/etc/kubernetes/manifests"]).stdout.split()
        assert "etcd.yaml" in manifests and "kube-apiserver.yaml" in manifests, cp
    r = cli("cluster.restore", "--snapshot", str(snap), "--dry-run")
    assert "snapshot restore" in " ".join(r.stdout.split())
    assert not cm_present("k8scontrol01")

    r = cli("cluster.restore", "--snapshot", str(snap), "--confirm", cluster_name)
    counts = recap(r.stdout)
    assert counts["failed"] == 0 and counts["changed"] >= 3, r.stdout
    for cp in CPS:
        assert cm_present(cp), cp
        old = netns.host_exec(cp, ["sh", "-c", "ls -d /var/lib/etcd.before-restore-*"]).stdout
        assert old.strip(), cp
    wait_for("every node Ready after the restore", all_ready, timeout=90, step=1)

    r = cli("cluster.restore", "--snapshot", str(snap), "--confirm", cluster_name)
    assert recap(r.stdout)["changed"] == 0, r.stdout
    r = cli("walkthrough", "--yes")
    assert recap(r.stdout)["changed"] == 0, r.stdout
