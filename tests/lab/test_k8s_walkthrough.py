"""The Kubernetes tier on the lab through the real CLI, with the stand-ins of lab/standins:
`inv walkthrough --yes` from a fresh lab to 5 Ready nodes behind the VIP, a clean re-run, a
second `cluster.join --host k8scontrol02` that changes nothing, and the API through the VIP
still answering with a control plane down.

The lab's repo gets the current stand-in debs here (the hosts see the repo through a bind mount,
so `apt-get update` on a host finds them), and the inventory copy
points the runbook at that repo and at the stand-in CNI manifest.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from lab import aptrepo, labstate, netns, scenarios

from .helpers import fresh_lab, recap

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
KUBECTL = ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]
K8S_HOSTS = ("k8scontrol01", "k8scontrol02", "k8scontrol03", "k8node01", "k8node02")


def inventory() -> Path:
    """The lab inventory plus the two keys the Kubernetes tier needs in the lab."""
    root = labstate.paths().root
    src = root / "hosts.yaml"
    data = yaml.safe_load((src if src.exists() else REPO / "lab" / "hosts.yaml").read_text())
    k8s = data["kubernetes"]
    k8s.setdefault("package_repo", {"url": "file:/run/labrepo", "trusted": True})
    k8s.setdefault("containerd_repo", yaml.safe_load((REPO / "lab" / "hosts.yaml").read_text())[
        "kubernetes"]["containerd_repo"])  # fmt: skip
    manifest = REPO / "lab" / "standins" / "manifests" / "weave-daemonset-k8s.yaml"
    k8s.setdefault("cni_manifest_url", manifest.as_uri())
    out = root / "hosts-k8s.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def ensure_standin_debs(version: str) -> None:
    """(Re)build the stand-in debs into the lab repo: cheap, and a repo kept from an earlier
    session must not serve stale stand-ins (same version, so hosts would not notice)."""
    from lab.standins import build_debs

    paths = labstate.paths()
    build_debs(paths.repo, version)
    aptrepo.index(paths.repo)
    aptrepo.build_docker(paths.docker_repo, paths.docker_key, version)


def cli(*args: str, check: bool = True, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    run = scenarios.inv_runner(
        inventory=inventory(), extra_env={"RUNBOOK_P12_PASSWORD": "lab-p12-password"}
    )
    return run(*args, check=check, timeout=timeout)


def nodes(on: str = "k8scontrol01") -> dict[str, bool]:
    r = netns.host_exec(on, [*KUBECTL, "get", "nodes", "-o", "json"], check=False)
    assert r.returncode == 0, r.stderr
    items = json.loads(r.stdout)["items"]
    return {i["metadata"]["name"]: i["status"]["conditions"][0]["status"] == "True" for i in items}


def installed_minor(host: str = "k8scontrol01") -> str | None:
    """The Kubernetes minor ("1.NN") whose kubeadm the host has installed, or None."""
    r = netns.host_exec(host, ["dpkg-query", "-W", "-f=${Version}", "kubeadm"], check=False)
    parts = r.stdout.split(":")[-1].split(".") if r.returncode == 0 else []
    return ".".join(parts[:2]) if len(parts) >= 2 else None


@pytest.fixture(scope="module")
def cluster(lab_up: dict[str, float]) -> dict[str, float]:
    """The lab's cluster at the inventory's minor: built, or re-checked by a no-op walkthrough;
    a lab a previous module upgraded to the next minor is rebuilt on fresh hosts first (there
    is no downgrade), so every module that uses it runs in any order or alone."""
    version = yaml.safe_load((REPO / "lab" / "hosts.yaml").read_text())["kubernetes"]["version"]
    ensure_standin_debs(version)
    if installed_minor() not in (None, version):
        fresh_lab()
    t0 = time.monotonic()
    r = cli("walkthrough", "--yes")
    took = time.monotonic() - t0
    assert recap(r.stdout)["failed"] == 0, r.stdout
    return {"walkthrough": took, "output": r.stdout}  # type: ignore[dict-item]


def test_walkthrough_builds_five_ready_nodes(cluster: dict[str, float]) -> None:
    assert nodes() == dict.fromkeys(K8S_HOSTS, True)
    for name, ip in (("k8scontrol02", "10.143.0.3"), ("k8scontrol03", "10.143.0.4")):
        m = netns.host_exec(name, ["cat", "/etc/kubernetes/manifests/kube-apiserver.yaml"])
        assert f"--advertise-address={ip}" in m.stdout


def test_status_shows_the_healthy_cluster(cluster: dict[str, float]) -> None:
    r = cli("status", check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    holders = [
        h
        for h in ("k8slb01", "k8slb02")
        if " 10.143.0.50/" in netns.host_exec(h, ["ip", "-4", "-o", "addr", "show", "ens10"]).stdout
    ]
    assert len(holders) == 1, holders
    assert "hosts (7/7 reachable over SSH)" in out
    assert f"healthy: 7 hosts reachable, {holders[0]} holds the VIP" in out
    # cells apart by box characters and blanks (\W+): ASCII boxes on a non-UTF-8 stdout too
    lb_row = rf"{holders[0]}\W+running\W+yes\W+yes\W+active\W+3/3 UP"
    assert re.search(lb_row, out), out
    assert re.search(r"VIP 10\.143\.0\.50:6443\W+k8scontrol01\W+ok\W+200\W", out), out
    assert "verified (cluster CA)" in out
    fip_row = r"floating IP 203\.0\.113\.100:6443\W+k8slb0[12]\W+ok\W+200\W"
    assert re.search(fip_row, out), out
    assert "nodes (5/5 Ready; kubectl on k8scontrol01)" in out
    for name in K8S_HOSTS:
        assert re.search(rf"{name}\W+Ready\W+", out), name
    assert "status: healthy problems=0" in out


def test_rerun_is_clean(cluster: dict[str, float]) -> None:
    r = cli("walkthrough", "--yes")
    assert recap(r.stdout)["changed"] == 0, r.stdout


def test_join_one_host_twice_changes_nothing(cluster: dict[str, float]) -> None:
    r = cli("cluster.join", "--host", "k8scontrol02", "--yes")
    counts = recap(r.stdout)
    assert counts["changed"] == 0 and counts["failed"] == 0, r.stdout


def test_secrets_not_in_output(cluster: dict[str, float]) -> None:
    out = str(cluster["output"])
    token = netns.host_exec(
        "k8scontrol01",
        [
            *KUBECTL,
            "-n",
            "kube-system",
            "get",
            "secret",
            "skgm-admin-user-token",
            "-o",
            "jsonpath={.data.token}",
        ],
    ).stdout
    assert token and token not in out
    assert "lab-p12-password" not in out
    assert not re.search(r"--token [a-z0-9]{6}\.[a-z0-9]{16}", out)


def test_api_through_the_vip_survives_a_control_plane_down(cluster: dict[str, float]) -> None:
    netns.host_exec("k8scontrol01", ["systemctl", "stop", "kubelet"])
    try:
        # HAProxy takes the dead apiserver out after `fall 2` checks (inter 1s, fastinter
        # 250ms); until then a request may still land on it (as with the real thing). Within
        # 30 s every request must succeed.
        deadline = time.monotonic() + 30
        ok_in_a_row = 0
        while ok_in_a_row < 5:
            r = netns.host_exec(
                "k8scontrol02", [*KUBECTL, "get", "nodes", "-o", "json"], check=False
            )
            ok_in_a_row = ok_in_a_row + 1 if r.returncode == 0 else 0
            assert time.monotonic() < deadline, r.stderr
            time.sleep(0.5)
        assert set(nodes("k8scontrol02")) == set(K8S_HOSTS)
    finally:
        netns.host_exec("k8scontrol01", ["systemctl", "start", "kubelet"])


def test_pods_resolve_the_api_name_to_the_vip(cluster: dict[str, float]) -> None:
    """The post's api.k8s.skgm.de lies inside dns_domain k8s.skgm.de: the Corefile the cluster
    holds, read by the CoreDNS stand-in, answers it with the VIP (without the runbook's entry:
    NXDOMAIN), and nothing else of the zone."""
    from lab.standins.rbk8s import coredns

    r = netns.host_exec(
        "k8scontrol02",
        [*KUBECTL, "-n", "kube-system", "get", "configmap", "coredns", "-o",
         "jsonpath={.data.Corefile}"],
    )  # fmt: skip
    assert coredns.resolve(r.stdout, "api.k8s.skgm.de") == "10.143.0.50"
    assert coredns.resolve(r.stdout, "nope.k8s.skgm.de") is None


def test_kubectl_get_nodes_table_as_kubectl_prints_it(cluster: dict[str, float]) -> None:
    table = netns.host_exec("k8scontrol01", [*KUBECTL, "get", "nodes"]).stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {ln.split()[0]: ln.split() for ln in table[1:]}
    assert set(rows) == set(K8S_HOSTS)
    for name, row in rows.items():
        role = "control-plane" if name.startswith("k8scontrol") else "<none>"
        assert row[1:3] == ["Ready", role], row
        assert re.fullmatch(r"\d+(s|m\d*s?)", row[3]), row  # kubectl's AGE: 45s, 3m, 3m20s
        assert row[4] == "v1.36.0"
    bare = netns.host_exec("k8scontrol01", [*KUBECTL, "get", "nodes", "--no-headers"]).stdout
    assert [ln.split()[:3] for ln in bare.splitlines()] == [r.split()[:3] for r in table[1:]]


def test_public_frontend_admits_a_local_client_only_with_a_loopback_source(
    cluster: dict[str, float],
) -> None:
    """haproxy.cfg's 127.0.0.0/8 on the floating IP: a local client's default source towards the
    floating IP is the floating IP itself, never loopback (so 127.0.0.0/8 does not admit it; the
    lab's allow-list 203.0.113.0/24 happens to); only a client bound to 127.0.0.1, as `inv
    status` does, is admitted by that entry (127.0.0.1 is in no other allowed network)."""
    fip = "203.0.113.100"
    holder = next(
        h
        for h in ("k8slb01", "k8slb02")
        if f" {fip}/" in netns.host_exec(h, ["ip", "-4", "-o", "addr", "show"]).stdout
    )
    route = netns.host_exec(holder, ["ip", "-4", "route", "get", fip]).stdout
    assert f"src {fip}" in route and "127." not in route, route
    url = f"https://{fip}:6443/readyz"
    bound = netns.host_exec(
        holder, ["curl", "-sk", "--max-time", "5", "--interface", "127.0.0.1", url], check=False
    )
    assert bound.returncode == 0 and bound.stdout.strip() == "ok", bound
