"""The upgrade stand-ins are strict: kubeadm's version-skew rules (one minor at a time, no
downgrade, kubeadm first), the API server refusing a kubelet newer than itself, and `kubectl
drain` refusing DaemonSet pods without --ignore-daemonsets and unmanaged pods without --force
(after cordoning, as kubectl does). Over real TLS on 127.0.0.1."""

from __future__ import annotations

import json
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.standins.rbk8s import nodeops, pki, upgrade
from lab.standins.rbk8s.apiserver import ApiServer, Store


@pytest.mark.parametrize(
    ("kubeadm", "target", "cluster", "error"),
    [
        ("1.38.0", "v1.38.0", "v1.36.4", "too high; kubeadm can upgrade only 1 minor"),
        ("1.37.0", "v1.35.9", "v1.36.0", "Downgrades are not supported"),
        ("1.37.0", "v1.37.1", "v1.36.0", "higher than the kubeadm version"),
    ],
)
def test_kubeadm_upgrade_refuses_what_kubeadm_refuses(
    monkeypatch: pytest.MonkeyPatch, kubeadm: str, target: str, cluster: str, error: str
) -> None:
    monkeypatch.setattr(upgrade, "VERSION", kubeadm)
    with pytest.raises(upgrade.Fail, match=error):
        upgrade._check_target(upgrade.parse(target), upgrade.parse(cluster))


def test_kubeadm_upgrade_allows_one_minor_and_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upgrade, "VERSION", "1.37.0")
    upgrade._check_target(upgrade.parse("v1.37.0"), upgrade.parse("v1.36.3"))
    upgrade._check_target(upgrade.parse("1.37.0"), upgrade.parse("v1.37.0"))  # a re-run
    with pytest.raises(upgrade.Fail, match="unable to parse"):
        upgrade.parse("1.37")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[dict[str, Any], Store, str, Path]]:
    p = tmp_path / "pki"
    pki.make_ca(p)
    crt, key = pki.issue(p, "/CN=kube-apiserver", sans=("127.0.0.1",), server=True)
    pki.write_pair(p, "apiserver", crt, key)
    acrt, akey = pki.issue(p, "/O=kubeadm:cluster-admins/CN=kubernetes-admin")
    store = Store(tmp_path / "db", self_name="cp1")
    srv = ApiServer(("127.0.0.1", 0), store, p, cert=p / "apiserver.crt", key=p / "apiserver.key")
    srv.version = "v1.36.0"
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    server = f"127.0.0.1:{srv.server_address[1]}"
    ca = (p / "ca.crt").read_bytes()
    conf = yaml.safe_load(pki.kubeconfig(server, ca, acrt, akey, "kubernetes-admin"))
    try:
        yield conf, store, f"https://{server}", p
    finally:
        srv.shutdown()
        srv.server_close()


def _kubelet_post(url: str, p: Path, name: str, version: str) -> int:
    crt, key = pki.issue(p, f"/O=system:nodes/CN=system:node:{name}")
    pki.write_pair(p, "kubelet", crt, key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(p / "ca.crt")
    ctx.load_cert_chain(p / "kubelet.crt", p / "kubelet.key")
    body = json.dumps({"version": version, "ip": "10.0.0.9"}).encode()
    req = urllib.request.Request(f"{url}/rb/v1/nodes/{name}/status", data=body, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=5, context=ctx) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_api_server_refuses_a_kubelet_newer_than_itself(api: Any) -> None:
    _conf, store, url, p = api
    assert _kubelet_post(url, p, "w1", "v1.37.0") == 400
    assert "w1" not in store.data["nodes"]
    assert _kubelet_post(url, p, "w1", "v1.35.2") == 200  # older kubelets are fine (skew 3)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(p / "ca.crt")
    with urllib.request.urlopen(f"{url}/version", timeout=5, context=ctx) as r:
        assert json.loads(r.read())["gitVersion"] == "v1.36.0"


def test_drain_is_strict_about_daemonsets_and_unmanaged_pods(
    api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, store, _url, _p = api
    store.heartbeat("w1", "v1.36.0", "10.0.0.9")
    store.put("daemonset/kube-system/weave-net", {"kind": "DaemonSet"})
    bare = {"kind": "Pod", "metadata": {"name": "bare", "namespace": "default"}}
    store.put("pod/default/bare", {**bare, "spec": {"nodeName": "w1"}})
    owned = {"name": "web-1", "namespace": "default", "ownerReferences": [{"kind": "ReplicaSet"}]}
    store.put("pod/default/web-1", {"kind": "Pod", "metadata": owned, "spec": {"nodeName": "w1"}})

    assert nodeops.kubectl(conf, ["drain", "w1"]) == 1
    err = capsys.readouterr().err
    assert "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets" in err
    assert "cannot delete Pods that declare no controller (use --force" in err
    assert "w1" in store.data["cordons"]  # cordoned before refusing
    assert "pod/default/web-1" in store.data["objects"]  # nothing evicted
    assert nodeops.kubectl(conf, ["drain", "w1", "--ignore-daemonsets"]) == 1
    assert "--force" in capsys.readouterr().err
    assert nodeops.kubectl(conf, ["drain", "w1", "--ignore-daemonsets", "--force"]) == 0
    out = capsys.readouterr().out
    assert "ignoring DaemonSet-managed Pods: kube-system/weave-net-" in out
    assert "node/w1 drained" in out
    assert not any(k.startswith("pod/") for k in store.data["objects"])
    node = next(n for n in store.node_list()["items"] if n["metadata"]["name"] == "w1")
    assert node["spec"]["unschedulable"] is True
    # a heartbeat keeps the cordon; uncordon lifts it
    store.heartbeat("w1", "v1.36.0", "10.0.0.9")
    assert "w1" in store.data["cordons"]
    assert nodeops.kubectl(conf, ["uncordon", "w1"]) == 0
    node = next(n for n in store.node_list()["items"] if n["metadata"]["name"] == "w1")
    assert not node["spec"].get("unschedulable") and "taints" not in node["spec"]


def test_control_planes_carry_kubeadms_taint(api: Any) -> None:
    _conf, store, _url, _p = api
    store.data["members"] = {"cp1": "10.0.0.1"}
    store.heartbeat("cp1", "v1.36.0", "10.0.0.1")
    store.heartbeat("w1", "v1.36.0", "10.0.0.9")
    specs = {n["metadata"]["name"]: n["spec"] for n in store.node_list()["items"]}
    assert specs["cp1"]["taints"] == [
        {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
    ]
    assert specs["w1"] == {}


def test_cordon_of_an_unknown_node_and_unknown_flags(
    api: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    conf, _store, _url, _p = api
    assert nodeops.kubectl(conf, ["cordon", "nope"]) == 1
    assert 'nodes "nope" not found' in capsys.readouterr().err
    assert nodeops.kubectl(conf, ["cordon", "nope", "--ignore-daemonsets"]) == 1
    assert "unknown flag: --ignore-daemonsets" in capsys.readouterr().err
