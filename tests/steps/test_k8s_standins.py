"""The lab's Kubernetes stand-ins are strict: they refuse what kubeadm / the API server refuse.

Config reading (v1beta1/v1beta3, unknown fields, map extraArgs), the apiserver's removed flags,
and — over real TLS on 127.0.0.1 — bootstrap tokens and certificate keys: unknown, deleted and
expired ones are refused. Also: the runbook's own rendered configs pass the stand-in, and the
debs build with the promised metadata.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.standins import build_debs
from lab.standins.rbk8s import daemons, kconfig, pki
from lab.standins.rbk8s.apiserver import ApiServer, Store
from runbook.inventory import load_inventory
from runbook.render import k8sfiles

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rendered() -> tuple[str, str, str]:
    inv = load_inventory(ROOT / "hosts.yaml")
    init = k8sfiles.kubeadm_init_config(inv, "k8scontrol01", kubernetes_version="v1.36.0")
    tok, h, key = "abcdef.0123456789abcdef", "sha256:" + "ab" * 32, "cd" * 32
    cp = k8sfiles.kubeadm_join_config(
        inv, "k8scontrol02", token=tok, ca_cert_hash=h, certificate_key=key
    )
    worker = k8sfiles.kubeadm_join_config(inv, "k8node01", token=tok, ca_cert_hash=h)
    return init, cp, worker


def test_the_runbooks_configs_pass(rendered: tuple[str, str, str]) -> None:
    init, cp, worker = rendered
    docs = kconfig.parse(init, minor=36)
    assert set(docs) == {"InitConfiguration", "ClusterConfiguration"}
    assert kconfig.args(docs["ClusterConfiguration"]["etcd"]["local"]["extraArgs"]) == {
        "heartbeat-interval": "250",
        "election-timeout": "5000",
    }
    assert "controlPlane" in kconfig.parse(cp, minor=36)["JoinConfiguration"]
    assert "controlPlane" not in kconfig.parse(worker, minor=36)["JoinConfiguration"]


def test_old_api_versions_are_refused(rendered: tuple[str, str, str]) -> None:
    init = rendered[0]
    with pytest.raises(
        kconfig.ConfigError, match=r'"kubeadm\.k8s\.io/v1beta1" is no longer supported'
    ):
        kconfig.parse(init.replace("v1beta4", "v1beta1"), minor=36)
    with pytest.raises(kconfig.ConfigError, match=r'v1beta3" is no longer supported'):
        kconfig.parse(init.replace("v1beta4", "v1beta3"), minor=37)
    with pytest.raises(kconfig.ConfigError, match=r"accepts only kubeadm\.k8s\.io/v1beta4"):
        kconfig.parse(init.replace("v1beta4", "v1beta3"), minor=36)


def test_unknown_fields_and_map_extra_args_are_refused(rendered: tuple[str, str, str]) -> None:
    init = rendered[0]
    with pytest.raises(kconfig.ConfigError, match=r'unknown field "apiServer\.insecurePort"'):
        kconfig.parse(init.replace("  certSANs:", "  insecurePort: 6080\n  certSANs:"), minor=36)
    post_style = init.replace(
        "  extraArgs:\n    - name: kubelet-preferred-address-types\n"
        '      value: "InternalIP,Hostname,InternalDNS"\n',
        '  extraArgs:\n    insecure-port: "6080"\n',
    )
    assert post_style != init
    with pytest.raises(kconfig.ConfigError, match=r"of type \[\]v1beta4\.Arg"):
        kconfig.parse(post_style, minor=36)
    with pytest.raises(kconfig.ConfigError, match="podSubnet and serviceSubnet overlap"):
        kconfig.parse(init.replace("10.145.0.0/16", "10.144.0.0/17"), minor=36)


def test_join_config_credentials_format_is_checked(rendered: tuple[str, str, str]) -> None:
    cp = rendered[1]
    with pytest.raises(kconfig.ConfigError, match="bootstrap token is invalid"):
        kconfig.parse(cp.replace("abcdef.0123456789abcdef", "abcdef.short"), minor=36)
    with pytest.raises(kconfig.ConfigError, match="certificateKey"):
        kconfig.parse(cp.replace("cd" * 32, "xyz"), minor=36)


def test_apiserver_refuses_removed_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "kube-apiserver.yaml"
    pod = {
        "spec": {
            "containers": [
                {
                    "command": [
                        "kube-apiserver",
                        "--advertise-address=10.143.0.2",
                        "--insecure-port=6080",
                    ]
                }
            ]
        }
    }
    manifest.write_text(yaml.safe_dump(pod))
    assert daemons.apiserver(manifest) == 1
    assert "unknown flag: --insecure-port" in capsys.readouterr().err


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, Store, Clock, Path, ssl.SSLContext]]:
    p = tmp_path / "pki"
    pki.make_ca(p)
    crt, key = pki.issue(p, "/CN=kube-apiserver", sans=("127.0.0.1",), server=True)
    pki.write_pair(p, "apiserver", crt, key)
    acrt, akey = pki.issue(p, "/O=kubeadm:cluster-admins/CN=kubernetes-admin")
    pki.write_pair(p, "admin", acrt, akey)
    clock = Clock()
    store = Store(tmp_path / "state.json", self_name="cp1", now=clock)
    srv = ApiServer(("127.0.0.1", 0), store, p, cert=p / "apiserver.crt", key=p / "apiserver.key")
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    admin = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    admin.check_hostname = False
    admin.load_verify_locations(p / "ca.crt")
    admin.load_cert_chain(p / "admin.crt", p / "admin.key")
    try:
        yield f"https://127.0.0.1:{srv.server_address[1]}", store, clock, p, admin
    finally:
        srv.shutdown()
        srv.server_close()


def call(
    url: str, ctx: ssl.SSLContext, method: str, path: str, body: Any = None, token: str = ""
) -> tuple[int, Any]:
    req = urllib.request.Request(
        url + path, method=method, data=None if body is None else json.dumps(body).encode()
    )
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            raw = r.read()
            return r.status, json.loads(raw) if raw.startswith(b"{") else raw.decode()
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def bootstrap(url: str, p: Path, token: str, key: str | None) -> tuple[int, Any]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(p / "ca.crt")
    csr, _ = pki.new_csr("/O=system:nodes/CN=system:node:k8scontrol02")
    body = {"node": "k8scontrol02", "ip": "10.143.0.3", "csr": csr.decode(), "certificateKey": key}
    return call(url, ctx, "POST", "/rb/v1/bootstrap", body, token=token)


def test_readyz_over_tls_and_admin_needs_a_client_cert(api: Any) -> None:
    url, _, _, p, admin = api
    anon = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    anon.check_hostname = False
    anon.load_verify_locations(p / "ca.crt")
    assert call(url, anon, "GET", "/readyz") == (200, "ok")
    code, _body = call(url, anon, "POST", "/rb/v1/tokens", {})
    assert code == 403
    assert call(url, admin, "POST", "/rb/v1/tokens", {})[0] == 201


def test_tokens_unknown_deleted_and_expired_are_refused(api: Any) -> None:
    url, _store, clock, p, admin = api
    code, body = bootstrap(url, p, "abcdef.0123456789abcdef", None)
    assert code == 401 and 'token id "abcdef" is invalid' in body["message"]
    token = call(url, admin, "POST", "/rb/v1/tokens", {})[1]["token"]
    code, body = bootstrap(url, p, token, None)
    assert code == 200 and "BEGIN CERTIFICATE" in body["crt"]
    subject = subprocess.run(
        ["openssl", "x509", "-noout", "-subject"], input=body["crt"], capture_output=True, text=True
    ).stdout
    assert "system:node:k8scontrol02" in subject
    clock.t += 24 * 3600 + 1
    assert bootstrap(url, p, token, None)[0] == 401
    fresh = call(url, admin, "POST", "/rb/v1/tokens", {})[1]["token"]
    assert call(url, admin, "DELETE", f"/rb/v1/tokens/{fresh.split('.')[0]}")[0] == 200
    assert bootstrap(url, p, fresh, None)[0] == 401


def test_certificate_keys_are_checked_and_expire_after_two_hours(api: Any) -> None:
    url, store, clock, p, admin = api
    token = call(url, admin, "POST", "/rb/v1/tokens", {})[1]["token"]
    code, body = bootstrap(url, p, token, "00" * 32)
    assert code == 403 and "kubeadm-certs" in body["message"]
    key = call(url, admin, "POST", "/rb/v1/upload-certs", {})[1]["key"]
    code, body = bootstrap(url, p, token, key)
    assert code == 200 and "PRIVATE KEY" in body["controlPlane"]["ca_key"]
    assert store.data["members"] == {"k8scontrol02": "10.143.0.3"}
    clock.t += 2 * 3600 + 1
    code, body = bootstrap(url, p, token, key)
    assert code == 403 and "might have expired" in body["message"]


def test_nodes_ready_only_with_kubelet_reports_and_a_cni(api: Any) -> None:
    url, store, clock, _p, admin = api
    store.heartbeat("k8scontrol01", "v1.36.0", "10.143.0.2")
    nodes = call(url, admin, "GET", "/api/v1/nodes")[1]["items"]
    assert nodes[0]["status"]["conditions"][0]["reason"] == "NetworkPluginNotReady"
    ds = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "weave-net", "namespace": "kube-system"},
    }
    assert call(url, admin, "POST", "/rb/v1/apply", {"objects": [ds]})[0] == 200
    nodes = call(url, admin, "GET", "/api/v1/nodes")[1]["items"]
    assert nodes[0]["status"]["conditions"][0]["status"] == "True"
    clock.t += 60
    nodes = call(url, admin, "GET", "/api/v1/nodes")[1]["items"]
    assert nodes[0]["status"]["conditions"][0]["status"] == "False"


def test_service_account_token_secret_is_filled_once(api: Any) -> None:
    url, store, _, _, admin = api
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/service-account-token",
        "metadata": {"name": "x-token", "namespace": "kube-system"},
    }
    call(url, admin, "POST", "/rb/v1/apply", {"objects": [secret]})
    first = store.data["objects"]["secret/kube-system/x-token"]["data"]["token"]
    call(url, admin, "POST", "/rb/v1/apply", {"objects": [secret]})
    assert store.data["objects"]["secret/kube-system/x-token"]["data"]["token"] == first


def test_ca_hash_is_kubeadms_spki_pin(tmp_path: Path) -> None:
    pki.make_ca(tmp_path)
    ca = (tmp_path / "ca.crt").read_bytes()
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout"], input=ca, capture_output=True)
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub.stdout, capture_output=True
    ).stdout
    import hashlib

    assert pki.ca_hash(ca) == "sha256:" + hashlib.sha256(der).hexdigest()


def test_debs_build_with_versions(tmp_path: Path) -> None:
    debs = build_debs(tmp_path, "1.36")
    names = sorted(d.name for d in debs)
    assert names == [
        "etcd-client_3.4.23-0rblab1_all.deb",
        "kubeadm_1.36.0-1.1_all.deb",
        "kubectl_1.36.0-1.1_all.deb",
        "kubelet_1.36.0-1.1_all.deb",
    ]
    info = subprocess.run(
        ["dpkg-deb", "-f", str(tmp_path / "kubelet_1.36.0-1.1_all.deb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "Description: LAB STAND-IN" in info and "python3-yaml" in info
    listing = subprocess.run(
        ["dpkg-deb", "-c", str(tmp_path / "kubelet_1.36.0-1.1_all.deb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "./lib/systemd/system/kubelet.service" in listing
    assert "rbk8s/_version.py" in listing
    kubectl = subprocess.run(
        ["dpkg-deb", "-f", str(tmp_path / "kubectl_1.36.0-1.1_all.deb"), "Version"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert kubectl == "2:1.36.0-1.1"
    etcd = subprocess.run(
        ["dpkg-deb", "-c", str(tmp_path / "etcd-client_3.4.23-0rblab1_all.deb")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    # as Debian 12's etcd-client 3.4.23 (`apt-get download etcd-client; dpkg-deb -c`): etcdctl,
    # no etcdutl (that came with etcd 3.5)
    programs = sorted(
        w
        for ln in etcd.splitlines()
        if (w := ln.split()[-1]).startswith("./usr/bin/") and w != "./usr/bin/"
    )
    assert programs == ["./usr/bin/etcdctl"], etcd
    with pytest.raises(ValueError):
        build_debs(tmp_path, "1.3")


def test_replicas_merge_concurrent_writes_and_deletions(tmp_path: Path) -> None:
    """Two API servers written at the same time keep both writes (no whole-state overwrite)."""
    a = Store(tmp_path / "a.json", self_name="cp1")
    b = Store(tmp_path / "b.json", self_name="cp2")
    token = a.create_token()
    b.heartbeat("k8node01", "v1.36.0", "10.143.0.7")
    assert b.merge(a.data) and a.merge(b.data)
    assert b.valid_token(token) and "k8node01" in a.data["nodes"]
    b.delete_token(token.split(".")[0])
    a.heartbeat("k8node02", "v1.36.0", "10.143.0.8")
    a.merge(b.data)
    assert not a.valid_token(token) and set(a.data["nodes"]) == {"k8node01", "k8node02"}
    assert not a.merge(a.data)  # idempotent


def test_a_kubelet_report_on_another_replica_does_not_undo_an_uncordon(tmp_path: Path) -> None:
    """The upgrade's uncordon lands on one API server while the node's kubelet reports to
    another that has not had the uncordon pushed yet: after both merge, the node is
    schedulable (real etcd serialises the two writers; CI saw the cordon come back)."""
    from lab.standins.rbk8s import nodeops

    a = Store(tmp_path / "a.json", self_name="cp1")
    b = Store(tmp_path / "b.json", self_name="cp2")
    a.heartbeat("k8scontrol03", "v1.36.0", "10.143.0.4")
    assert nodeops.set_unschedulable(a, "k8scontrol03", True)
    b.merge(a.data)
    assert nodeops.set_unschedulable(a, "k8scontrol03", False)  # uncordon on cp1 ...
    b.heartbeat("k8scontrol03", "v1.37.0", "10.143.0.4")  # ... a later report on cp2
    a.merge(b.data)
    b.merge(a.data)
    for store in (a, b):
        (node,) = store.node_list()["items"]
        assert not node["spec"].get("unschedulable"), store.self_name
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.37.0"
    # deleting the node drops its cordon everywhere
    assert nodeops.set_unschedulable(b, "k8scontrol03", True)
    a.merge(b.data)
    a.delete(["node//k8scontrol03"])
    b.merge(a.data)
    assert b.data["cordons"] == {} and b.node_list()["items"] == []


def test_a_member_that_was_down_catches_up_before_it_serves(tmp_path: Path) -> None:
    """A write made while a member was down (an upgrade restarts each API server in turn) is
    there when it comes back, before anything reads from it; a push also brings back what the
    receiver had that the sender did not. Over real TLS on 127.0.0.1, two members."""
    p = tmp_path / "pki"
    pki.make_ca(p)
    crt, key = pki.issue(p, "/CN=kube-apiserver", sans=("127.0.0.1",), server=True)
    pki.write_pair(p, "apiserver", crt, key)

    def member(name: str) -> ApiServer:
        store = Store(tmp_path / f"{name}.json", self_name=name)
        return ApiServer(
            ("127.0.0.1", 0), store, p, cert=p / "apiserver.crt", key=p / "apiserver.key"
        )

    a, b = member("cp1"), member("cp2")
    members = {n: f"127.0.0.1:{s.server_address[1]}" for n, s in (("cp1", a), ("cp2", b))}
    for srv in (a, b):
        srv.store.data["members"] = dict(members)
    b.server_close()  # cp2 is down: only its state file is left
    threading.Thread(target=a.serve_forever, daemon=True).start()
    try:
        token = a.store.create_token()  # cp2 misses this write
        a.store.replicate()
        assert not b.store.valid_token(token)
        b.store.heartbeat("k8node01", "v1.36.0", "10.143.0.7")  # cp2's own, older write
        b.store.catch_up()  # what cp2's API server does before it serves again
        assert b.store.valid_token(token)
        assert "k8node01" in a.store.data["nodes"]  # the exchange went both ways
    finally:
        a.shutdown()
        a.server_close()
