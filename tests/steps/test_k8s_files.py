"""The Kubernetes tier's rendered files, parsed: kubeadm v1beta4 field list, containerd, CNI."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook.inventory import Inventory, load_inventory
from runbook.render import k8sfiles

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "lab" / "standins" / "manifests"

# kubeadm.k8s.io/v1beta4 fields (k8s.io/kubernetes cmd/kubeadm/app/apis/kubeadm/v1beta4/types.go)
INIT_FIELDS = {
    "apiVersion", "kind", "bootstrapTokens", "dryRun", "nodeRegistration", "localAPIEndpoint",
    "certificateKey", "skipPhases", "patches", "timeouts",
}  # fmt: skip
CLUSTER_FIELDS = {
    "apiVersion", "kind", "etcd", "networking", "kubernetesVersion", "controlPlaneEndpoint",
    "apiServer", "controllerManager", "scheduler", "dns", "proxy", "certificatesDir",
    "imageRepository", "featureGates", "clusterName", "encryptionAlgorithm",
    "certificateValidityPeriod", "caCertificateValidityPeriod",
}  # fmt: skip
JOIN_FIELDS = {
    "apiVersion", "kind", "dryRun", "nodeRegistration", "caCertPath", "discovery",
    "controlPlane", "skipPhases", "patches", "timeouts",
}  # fmt: skip
REMOVED_FLAGS = {"insecure-port", "insecure-bind-address", "log-dir", "log-file"}

TOKEN = "abcdef.0123456789abcdef"
HASH = "sha256:" + "ab" * 32
KEY = "cd" * 32


def inv_with(tmp_path: Path, **k8s: Any) -> Inventory:
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["kubernetes"].update(k8s)
    p = tmp_path / "hosts.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_inventory(p)


@pytest.fixture
def inv() -> Inventory:
    return load_inventory(ROOT / "hosts.yaml")


def docs(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


def test_init_config_is_v1beta4_from_the_inventory(inv: Inventory) -> None:
    text = k8sfiles.kubeadm_init_config(inv, "k8scontrol01", kubernetes_version="v1.36.2")
    d = docs(text)
    init, cluster = d["InitConfiguration"], d["ClusterConfiguration"]
    assert set(d) == {"InitConfiguration", "ClusterConfiguration"}
    assert {init["apiVersion"], cluster["apiVersion"]} == {"kubeadm.k8s.io/v1beta4"}
    assert set(init) <= INIT_FIELDS and set(cluster) <= CLUSTER_FIELDS
    assert init["localAPIEndpoint"] == {"advertiseAddress": "10.143.0.2", "bindPort": 6443}
    assert init["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "10.143.0.2"},
        {"name": "address", "value": "10.143.0.2"},
    ]
    assert cluster["controlPlaneEndpoint"] == "10.143.0.50:6443"
    assert cluster["kubernetesVersion"] == "v1.36.2"
    assert cluster["networking"] == {
        "podSubnet": "10.144.0.0/16",
        "serviceSubnet": "10.145.0.0/16",
        "dnsDomain": "k8s.skgm.de",
    }
    assert cluster["apiServer"]["certSANs"] == ["116.202.6.21", "api.k8s.skgm.de", "10.143.0.50"]
    assert cluster["etcd"]["local"]["extraArgs"] == [
        {"name": "heartbeat-interval", "value": "250"},
        {"name": "election-timeout", "value": "5000"},
    ]
    for section in ("apiServer", "controllerManager", "scheduler"):
        args = (cluster.get(section) or {}).get("extraArgs", [])
        assert isinstance(args, list)
        assert all(set(a) == {"name", "value"} and isinstance(a["value"], str) for a in args)
        assert not {a["name"] for a in args} & REMOVED_FLAGS
    assert "service-cluster-ip-range" not in text


def test_init_config_refuses_a_kubeadm_of_another_minor(inv: Inventory) -> None:
    with pytest.raises(ValueError, match=r"installed kubeadm is v1\.35\.0"):
        k8sfiles.kubeadm_init_config(inv, "k8scontrol01", kubernetes_version="v1.35.0")
    with pytest.raises(ValueError, match="not a control-plane"):
        k8sfiles.kubeadm_init_config(inv, "k8node01")


def test_etcd_timeouts_and_sans_follow_the_inventory(tmp_path: Path) -> None:
    inv = inv_with(
        tmp_path,
        etcd={"heartbeat_interval_ms": 100, "election_timeout_ms": 1000},
        cert_sans=["api.k8s.skgm.de", "k8s.example.org"],
    )
    c = docs(k8sfiles.kubeadm_init_config(inv, "k8scontrol01"))["ClusterConfiguration"]
    assert c["kubernetesVersion"] == "stable-1.36"
    assert c["etcd"]["local"]["extraArgs"][0]["value"] == "100"
    assert c["apiServer"]["certSANs"] == [
        "116.202.6.21",
        "api.k8s.skgm.de",
        "k8s.example.org",
        "10.143.0.50",
    ]


def test_join_config_control_plane_advertises_its_own_ip(inv: Inventory) -> None:
    text = k8sfiles.kubeadm_join_config(
        inv, "k8scontrol03", token=TOKEN, ca_cert_hash=HASH, certificate_key=KEY
    )
    j = docs(text)["JoinConfiguration"]
    assert j["apiVersion"] == "kubeadm.k8s.io/v1beta4" and set(j) <= JOIN_FIELDS
    assert j["discovery"]["bootstrapToken"] == {
        "apiServerEndpoint": "10.143.0.50:6443",
        "token": TOKEN,
        "caCertHashes": [HASH],
    }
    assert j["controlPlane"] == {
        "localAPIEndpoint": {"advertiseAddress": "10.143.0.4", "bindPort": 6443},
        "certificateKey": KEY,
    }
    assert j["nodeRegistration"]["kubeletExtraArgs"] == [
        {"name": "node-ip", "value": "10.143.0.4"},
        {"name": "address", "value": "10.143.0.4"},
    ]


def test_join_config_worker_has_no_control_plane_and_credentials_are_checked(
    inv: Inventory,
) -> None:
    j = docs(k8sfiles.kubeadm_join_config(inv, "k8node02", token=TOKEN, ca_cert_hash=HASH))
    assert "controlPlane" not in j["JoinConfiguration"]
    with pytest.raises(ValueError, match="takes no certificate key"):
        k8sfiles.kubeadm_join_config(
            inv, "k8node02", token=TOKEN, ca_cert_hash=HASH, certificate_key=KEY
        )
    with pytest.raises(ValueError, match="needs a certificate key"):
        k8sfiles.kubeadm_join_config(inv, "k8scontrol02", token=TOKEN, ca_cert_hash=HASH)
    with pytest.raises(ValueError) as err:
        k8sfiles.kubeadm_join_config(inv, "k8node01", token="SECRET.notatoken", ca_cert_hash=HASH)
    assert "SECRET" not in str(err.value)
    with pytest.raises(ValueError, match="not a control-plane or worker"):
        k8sfiles.kubeadm_join_config(inv, "k8slb01", token=TOKEN, ca_cert_hash=HASH)


def test_join_command_and_certificate_key_parsing() -> None:
    out = f"kubeadm join 10.143.0.50:6443 --token {TOKEN} --discovery-token-ca-cert-hash {HASH} \n"
    creds = k8sfiles.parse_join_command(out)
    assert (creds.endpoint, creds.token, creds.ca_cert_hash) == ("10.143.0.50:6443", TOKEN, HASH)
    upload = (
        f"[upload-certs] Storing the certificates in Secret\n[upload-certs] Using key:\n{KEY}\n"
    )
    assert k8sfiles.parse_certificate_key(upload) == KEY
    with pytest.raises(ValueError):
        k8sfiles.parse_join_command("error: unable to create token")
    with pytest.raises(ValueError):
        k8sfiles.parse_certificate_key("[upload-certs] failed\n")


@pytest.mark.parametrize(
    ("version", "major", "pause"),
    [("1.36", 2, "3.10.2"), ("1.35", 1, "3.10.1"), ("1.33", 1, "3.10")],
)
def test_containerd_config_systemd_cgroup_and_pinned_pause(
    tmp_path: Path, version: str, major: int, pause: str
) -> None:
    inv = inv_with(tmp_path, version=version)
    conf = tomllib.loads(k8sfiles.containerd_config(inv))
    if major == 2:
        assert conf["version"] == 3
        cri = conf["plugins"]
        assert cri["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == (
            f"registry.k8s.io/pause:{pause}"
        )
        runc = cri["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["runc"]
    else:
        assert conf["version"] == 2
        cri = conf["plugins"]["io.containerd.grpc.v1.cri"]
        assert cri["sandbox_image"] == f"registry.k8s.io/pause:{pause}"
        runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["options"]["SystemdCgroup"] is True


def test_apt_source_pkgs_k8s_io_and_mirrors(inv: Inventory, tmp_path: Path) -> None:
    src = k8sfiles.apt_source(inv)
    assert src.line == (
        "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] "
        "https://pkgs.k8s.io/core:/stable:/v1.36/deb/ /"
    )
    assert src.key_url == "https://pkgs.k8s.io/core:/stable:/v1.36/deb/Release.key"
    lab = inv_with(tmp_path, package_repo={"url": "file:/run/labrepo", "trusted": True})
    assert k8sfiles.apt_source(lab).line == "deb [trusted=yes] file:/run/labrepo/ /"
    assert k8sfiles.apt_source(lab).keyring is None


def test_modules_file_lists_overlay_and_br_netfilter() -> None:
    lines = [ln for ln in k8sfiles.modules_load().splitlines() if ln and not ln.startswith("#")]
    assert lines == ["overlay", "br_netfilter"]


def test_admin_user_manifest_has_an_explicit_token_secret(inv: Inventory) -> None:
    objs = list(yaml.safe_load_all(k8sfiles.admin_user_manifest(inv)))
    kinds = {o["kind"]: o for o in objs}
    assert set(kinds) == {"ServiceAccount", "ClusterRoleBinding", "Secret"}
    assert kinds["ServiceAccount"]["metadata"] == {
        "name": "skgm-admin-user",
        "namespace": "kube-system",
    }
    assert kinds["ClusterRoleBinding"]["roleRef"]["name"] == "cluster-admin"
    secret = kinds["Secret"]
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"] == {
        "kubernetes.io/service-account.name": "skgm-admin-user"
    }


def _env(ds: dict[str, Any], container: str) -> dict[str, str]:
    c = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == container)
    return {e["name"]: e.get("value") for e in c.get("env", [])}


def test_weave_gets_ipalloc_range_and_peers_over_the_private_ips(inv: Inventory) -> None:
    """Weave has no interface flag: it peers over the nodes' InternalIPs, which the kubeadm
    configs pin to the private IPs (kubelet `node-ip`)."""
    text = (MANIFESTS / "weave-daemonset-k8s.yaml").read_text()
    (doc,) = list(yaml.safe_load_all(k8sfiles.patch_cni_manifest(inv, text)))
    ds = next(i for i in doc["items"] if i["kind"] == "DaemonSet")
    env = _env(ds, "weave")
    assert env["IPALLOC_RANGE"] == "10.144.0.0/16"
    assert env["INIT_CONTAINER"] == "true" and "HOSTNAME" in env
    assert "IPALLOC_RANGE" not in _env(ds, "weave-npc")
    assert k8sfiles.cni_manifest_url(inv).endswith("/v2.8.1/weave-daemonset-k8s.yaml")
    init = list(yaml.safe_load_all(k8sfiles.kubeadm_init_config(inv, "k8scontrol01")))
    assert {"name": "node-ip", "value": "10.143.0.2"} in init[0]["nodeRegistration"][
        "kubeletExtraArgs"
    ]
    join = yaml.safe_load(
        k8sfiles.kubeadm_join_config(
            inv, "k8node01", token="abcdef.0123456789abcdef", ca_cert_hash="sha256:" + "a" * 64
        )
    )
    assert {"name": "node-ip", "value": "10.143.0.7"} in join["nodeRegistration"][
        "kubeletExtraArgs"
    ]


def test_calico_gets_the_pod_subnet_and_the_private_network(tmp_path: Path) -> None:
    calico = inv_with(tmp_path, cni="calico")
    (ds,) = list(
        yaml.safe_load_all(
            k8sfiles.patch_cni_manifest(calico, (MANIFESTS / "calico.yaml").read_text())
        )
    )
    env = _env(ds, "calico-node")
    assert env["CALICO_IPV4POOL_CIDR"] == "10.144.0.0/16"
    assert env["IP_AUTODETECTION_METHOD"] == "cidr=10.143.0.0/24"
    assert "/calico/v3.33.0/" in k8sfiles.cni_manifest_url(calico)


def test_flannel_gets_the_pod_subnet_and_the_private_interface(tmp_path: Path) -> None:
    """Without --iface/--iface-can-reach flanneld takes the default route's interface: eth0,
    the public one on Hetzner."""
    flannel = inv_with(tmp_path, cni="flannel")
    out = k8sfiles.patch_cni_manifest(flannel, (MANIFESTS / "kube-flannel.yml").read_text())
    docs = [d for d in yaml.safe_load_all(out) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap")
    assert json.loads(cm["data"]["net-conf.json"])["Network"] == "10.144.0.0/16"
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    (c,) = ds["spec"]["template"]["spec"]["containers"]
    assert c["args"] == ["--ip-masq", "--kube-subnet-mgr", "--iface-can-reach=10.143.0.50"]
    again = k8sfiles.patch_cni_manifest(flannel, out.split("\n", 1)[1])  # an --iface is replaced
    assert again.count("--iface") == 1
    assert "/flannel/releases/download/v0.28.9/" in k8sfiles.cni_manifest_url(flannel)


def test_unknown_manifest_is_refused(inv: Inventory) -> None:
    with pytest.raises(ValueError, match="no DaemonSet weave-net"):
        k8sfiles.patch_cni_manifest(inv, "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
