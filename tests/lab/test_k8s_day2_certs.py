"""Day 2 on the lab: certificate expiry in `inv status` and `inv cluster.renew-certs`.

k8scontrol01's API server certificate is re-signed (same key, SANs, usages) to expire in 10
days, as on a cluster nearly a year old: `inv status` warns; `inv cluster.renew-certs` renews
that control plane only (out of HAProxy's rotation meanwhile, the API answering through the
floating IP all along), refreshes kubecfg.crt/.key/.p12, and a re-run changes nothing.
"""

from __future__ import annotations

import re

import pytest
import yaml

from lab import netns, topology
from lab.apiprobe import ReadyzProbe
from tests.lab.test_k8s_walkthrough import cli, cluster, inventory, recap

__all__ = ["cluster"]
pytestmark = pytest.mark.lab
SHORTEN = (
    "set -e; cd /etc/kubernetes/pki; "
    "openssl x509 -x509toreq -in apiserver.crt -signkey apiserver.key -copy_extensions copyall "
    "-out /tmp/apiserver.csr; "
    "openssl x509 -req -in /tmp/apiserver.csr -CA ca.crt -CAkey ca.key -days 10 "
    "-copy_extensions copyall -out apiserver.crt; rm -f /tmp/apiserver.csr"
)


def residual(host: str, cert: str) -> str:
    out = netns.host_exec(host, ["kubeadm", "certs", "check-expiration"]).stdout
    m = re.search(rf"^{cert}\s+\w+ \d+, \d+ \d+:\d+ UTC\s+(\S+)", out, re.M)
    assert m, out
    return m.group(1)


def test_status_warns_and_renew_certs_renews_one_control_plane(cluster: dict[str, float]) -> None:
    netns.host_exec("k8scontrol01", ["sh", "-c", SHORTEN])
    assert residual("k8scontrol01", "apiserver") in ("9d", "10d")
    r = cli("status", check=False)
    text = " ".join(r.stdout.split())
    assert "k8scontrol01: certificate apiserver expires in" in text, r.stdout
    name = yaml.safe_load(inventory().read_text())["cluster"]["name"]
    kubecfg = inventory().parent / ".runbook" / name / "kubecfg.crt"
    before = kubecfg.read_bytes()

    probe = ReadyzProbe(topology.load().floating_ip, interval=0.2).start()
    try:
        r = cli("cluster.renew-certs", "--yes")
    finally:
        probe.stop()
    print(probe.summary())
    assert recap(r.stdout)["failed"] == 0, r.stdout
    assert re.search(r"renew-certs.*k8scontrol01", r.stdout, re.S)
    assert residual("k8scontrol01", "apiserver") in ("364d", "365d")
    assert residual("k8scontrol02", "apiserver") in ("364d", "365d")  # untouched, still fresh
    assert kubecfg.read_bytes() != before  # admin.conf was renewed with it
    assert probe.failed_ratio <= 0.01, probe.summary()

    r = cli("cluster.renew-certs", "--yes")
    assert recap(r.stdout)["changed"] == 0, r.stdout
    r = cli("status", check=False)
    assert r.returncode == 0 and "certificate apiserver expires" not in r.stdout, r.stdout
