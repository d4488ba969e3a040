"""The insecure-API emulation on the lab, through the real CLI (runs after the walkthrough module,
see conftest.ORDER): `inv cluster.insecure-api --yes` with `load_balancer.insecure_api.enabled`
in a copy of the lab inventory, then plain HTTP on VIP:6080 from an LB host answers reads as the
`view` ServiceAccount and refuses writes (403 from the API server stand-in's RBAC, through the
`kubectl proxy` stand-in); the floating IP does not serve it; the token is in no process's argv;
a second run changes nothing; the inventory as it was (disabled) removes it all again.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from lab import netns, scenarios
from tests.lab.test_k8s_walkthrough import (
    K8S_HOSTS,
    KUBECTL,
    ensure_standin_debs,
    inventory,
    recap,
)

pytestmark = pytest.mark.lab
VIP, PORT = "10.143.0.50", 6080
SA = "system:serviceaccount:kube-system:insecure-api-proxy"
CPS = {"k8scontrol01": "10.143.0.2", "k8scontrol02": "10.143.0.3", "k8scontrol03": "10.143.0.4"}
OUTPUTS: list[str] = []


def inventories() -> tuple[Path, Path]:
    """(the lab's Kubernetes inventory as it is: insecure_api off, a copy with it on)."""
    off = inventory()
    data = yaml.safe_load(off.read_text())
    assert not data["load_balancer"].get("insecure_api", {}).get("enabled")
    data["load_balancer"]["insecure_api"] = {"enabled": True, "port": PORT, "role": "view"}
    on = off.with_name("hosts-insecure.yaml")
    on.write_text(yaml.safe_dump(data, sort_keys=False))
    return off, on


def inv(inventory_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return scenarios.inv_runner(OUTPUTS, inventory=inventory_file)(*args, timeout=900)


def http(on: str, method: str, url: str, body: object = None) -> tuple[int, str]:
    """curl on lab host `on`: (status, body); status 0 when nothing answered."""
    argv = ["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}", "-X", method, url]
    if body is not None:
        argv += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    r = netns.host_exec(on, argv, check=False)
    text, _, code = r.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), text or r.stderr


def ready(on: str = "k8scontrol01") -> bool:
    r = netns.host_exec(on, [*KUBECTL, "get", "nodes", "-o", "json"], check=False)
    if r.returncode != 0:
        return False
    items = json.loads(r.stdout)["items"]
    up = {i["metadata"]["name"] for i in items if i["status"]["conditions"][0]["status"] == "True"}
    return up == set(K8S_HOSTS)


@pytest.fixture(scope="module")
def enabled(lab_up: dict[str, float]) -> tuple[Path, Path, str]:
    """The cluster (the walkthrough module built it; alone, this builds it), then the task run
    with insecure_api on."""
    off, on = inventories()
    if not ready():
        version = yaml.safe_load(off.read_text())["kubernetes"]["version"]
        ensure_standin_debs(version)
        inv(off, "walkthrough", "--yes")
    r = inv(on, "cluster.insecure-api", "--yes")
    return off, on, r.stdout


def test_enabling_serves_view_through_the_vip(enabled: tuple[Path, Path, str]) -> None:
    out = enabled[2]
    counts = recap(out)
    assert counts["failed"] == 0 and counts["changed"] > 0, out
    assert "WARNING: load_balancer.insecure_api is enabled" in out
    for lb in ("k8slb01", "k8slb02"):  # the holder and the other one (routed to the holder)
        code, body = http(lb, "GET", f"http://{VIP}:{PORT}/api/v1/namespaces")
        assert code == 200, body
        assert {"default", "kube-system"} <= {
            i["metadata"]["name"] for i in json.loads(body)["items"]
        }
    evil = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "evil"}}
    code, body = http("k8slb01", "POST", f"http://{VIP}:{PORT}/api/v1/namespaces", evil)
    assert code == 403, body
    status = json.loads(body)
    assert status["reason"] == "Forbidden" and f'User "{SA}" cannot create' in status["message"]
    assert http("k8slb01", "DELETE", f"http://{VIP}:{PORT}/api/v1/namespaces/default")[0] == 403
    assert http("k8slb01", "GET", f"http://{VIP}:{PORT}/api/v1/nodes")[0] == 403
    # every control plane serves it on its own private IP (what HAProxy balances over)
    for ip in CPS.values():
        assert http("k8slb02", "GET", f"http://{ip}:{PORT}/api")[0] == 200
    # not on the public side: nothing listens on the floating IP's port 6080
    public = f"http://203.0.113.100:{PORT}/api"
    r = netns.ns_exec("rbl-client", ["curl", "-sS", "--max-time", "3", public], check=False)
    assert r.returncode != 0, r.stdout


def test_the_token_is_in_a_root_file_not_in_argv(enabled: tuple[Path, Path, str]) -> None:
    b64 = netns.host_exec(
        "k8scontrol01",
        [*KUBECTL, "-n", "kube-system", "get", "secret", "insecure-api-proxy-token",
         "-o", "jsonpath={.data.token}"],
    ).stdout  # fmt: skip
    import base64

    token = base64.b64decode(b64).decode()
    assert len(token) > 20
    for cp in CPS:
        st = netns.host_exec(cp, ["stat", "-c", "%a %U", "/etc/kubernetes/insecure-api-proxy.conf"])
        assert st.stdout.split() == ["600", "root"]
        ps = netns.host_exec(cp, ["ps", "-eo", "args"]).stdout
        assert "proxy --address=" + CPS[cp] in ps and "--kubeconfig=" in ps, ps
        assert token not in ps and b64 not in ps
    assert all(token not in o and b64 not in o for o in OUTPUTS)


def test_second_run_changes_nothing(enabled: tuple[Path, Path, str]) -> None:
    r = inv(enabled[1], "cluster.insecure-api", "--yes")
    counts = recap(r.stdout)
    assert counts["changed"] == 0 and counts["failed"] == 0, r.stdout


def test_disabling_removes_it_again(enabled: tuple[Path, Path, str]) -> None:
    off = enabled[0]
    r = inv(off, "cluster.insecure-api", "--yes")
    counts = recap(r.stdout)
    assert counts["changed"] > 0 and counts["failed"] == 0, r.stdout
    assert http("k8slb01", "GET", f"http://{VIP}:{PORT}/api")[0] == 0
    for cp, ip in CPS.items():
        assert http("k8slb02", "GET", f"http://{ip}:{PORT}/api")[0] == 0
        gone = netns.host_exec(
            cp, ["ls", "/etc/systemd/system/insecure-api-proxy.service",
                 "/etc/kubernetes/insecure-api-proxy.conf"], check=False,
        )  # fmt: skip
        assert gone.returncode != 0 and not gone.stdout, gone.stdout
    sa = netns.host_exec(
        "k8scontrol01",
        [*KUBECTL, "-n", "kube-system", "get", "serviceaccount/insecure-api-proxy", "-o", "name"],
        check=False,
    )
    assert sa.returncode == 1 and "NotFound" in sa.stderr
    again = inv(off, "cluster.insecure-api", "--yes")
    counts = recap(again.stdout)
    assert counts["changed"] == 0 and counts["failed"] == 0, again.stdout
