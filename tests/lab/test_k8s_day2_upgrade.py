"""Day 2 on the lab: `inv cluster.upgrade` 1.36 -> 1.37 with the API kept serving.

The lab's repository gets per-minor repositories (`k8s/v1.36`, `k8s/v1.37`, as pkgs.k8s.io
has them); a copy of the lab inventory says 1.37 and points at the 1.37 one. While the upgrade
runs, a client outside opens a new TCP + TLS connection to the floating IP every 200 ms and asks
`GET /readyz`; the failed requests are reported and must stay at or under 1 %. Then every node's
kubelet and every API server report v1.37.0, all nodes Ready and schedulable, a re-run changes
nothing, and skipping a minor or going back is refused (exit 2) before any host is touched, as
is the next minor whose repository the lab does not have (every host's sources unchanged).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lab import k8srepo, labstate, netns, scenarios, topology
from lab.apiprobe import ReadyzProbe
from tests.lab.test_k8s_walkthrough import K8S_HOSTS, KUBECTL, cluster, inventory, recap

__all__ = ["cluster"]
pytestmark = pytest.mark.lab
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "upgrade-probe.json"


def inventory_for(version: str) -> Path:
    data = yaml.safe_load(inventory().read_text())
    data["kubernetes"]["version"] = version
    data["kubernetes"]["package_repo"] = {"url": k8srepo.host_url(version), "trusted": True}
    out = inventory().with_name(f"hosts-k8s-{version}.yaml")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def inv(path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return scenarios.inv_runner(inventory=path)(*args, check=check, timeout=1800)


def test_upgrade_136_to_137_keeps_the_api_serving(cluster: dict[str, float]) -> None:
    repo = labstate.paths().repo
    for v in ("1.36", "1.37"):
        k8srepo.build_minor(repo, v)
    new = inventory_for("1.37")

    r = inv(new, "cluster.upgrade", "--dry-run")
    plan = " ".join(r.stdout.split())
    assert "upgrade-control-plane" in plan and "kubeadm upgrade plan + apply" in plan
    # the new repository was tried on the first control plane: the plan names the exact target
    assert "repository v1.37 found, newest v1.37.0" in plan, plan

    fip = topology.load().floating_ip
    probe = ReadyzProbe(fip, interval=0.2).start()
    t0 = time.monotonic()
    try:
        r = inv(new, "cluster.upgrade", "--yes")
    finally:
        probe.stop()
    took = time.monotonic() - t0
    out = r.stdout
    print(probe.summary())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "what": "inv cluster.upgrade 1.36 -> 1.37 on the lab (7 hosts)",
                "seconds": round(took, 1),
                "requests": len(probe.attempts),
                "failed": len(probe.failed),
                "failed_percent": round(100 * probe.failed_ratio, 3),
                "failures": [(round(a.at, 2), a.answer) for a in probe.failed],
            },
            indent=2,
        )
    )
    counts = recap(out)
    assert counts["failed"] == 0, out
    assert len(probe.attempts) > 100, probe.summary()
    assert probe.failed_ratio <= 0.01, probe.summary()

    nodes = json.loads(
        netns.host_exec("k8scontrol02", [*KUBECTL, "get", "nodes", "-o", "json"]).stdout
    )["items"]
    assert {n["metadata"]["name"]: n["status"]["nodeInfo"]["kubeletVersion"] for n in nodes} == (
        dict.fromkeys(K8S_HOSTS, "v1.37.0")
    )
    assert all(n["status"]["conditions"][0]["status"] == "True" for n in nodes)
    assert not any((n.get("spec") or {}).get("unschedulable") for n in nodes)
    for cp, ip in (("k8scontrol01", "10.143.0.2"), ("k8scontrol02", "10.143.0.3")):
        v = netns.host_exec(
            cp,
            ["curl", "-s", "--cacert", "/etc/kubernetes/pki/ca.crt", f"https://{ip}:6443/version"],
        ).stdout
        assert json.loads(v)["gitVersion"] == "v1.37.0", cp
    held = netns.host_exec("k8node01", ["apt-mark", "showhold"]).stdout.split()
    assert {"kubelet", "kubeadm", "kubectl"} <= set(held)

    r = inv(new, "cluster.upgrade", "--yes")
    assert recap(r.stdout)["changed"] == 0, r.stdout

    for version, why in (("1.39", "skips a minor"), ("1.36", "does not downgrade")):
        r = inv(inventory_for(version), "cluster.upgrade", "--yes", check=False)
        text = " ".join((r.stdout + r.stderr).split())
        assert r.returncode == 2 and why in text and "kubernetes.version" in text, text

    # the next minor, whose repository the lab does not have (k8s/v1.38 is never built): the
    # repository is tried on the first control plane alone and the upgrade refused before any
    # host's sources change (in --dry-run too)
    def sources() -> dict[str, str]:
        return {
            h: netns.host_exec(h, ["cat", "/etc/apt/sources.list.d/kubernetes.list"]).stdout
            for h in K8S_HOSTS
        }

    before = sources()
    assert all("k8s/v1.37" in s for s in before.values()), before
    for extra in ("--dry-run", "--yes"):
        r = inv(inventory_for("1.38"), "cluster.upgrade", extra, check=False)
        text = " ".join((r.stdout + r.stderr).split())
        assert r.returncode == 2, text
        assert "kubernetes.version 1.38: the package repository file:/run/labrepo/k8s/v1.38" in text
        assert "apt-get update failed" in text and "nothing was changed on any host" in text
    assert sources() == before
