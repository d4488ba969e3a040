"""Defence in depth: each control plane's kube-apiserver binds its own private IP (a per-node
kubeadm JSON patch), kubelets listen on the private IP; the stand-in kubeadm applies the patch as
kubeadm does, strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lab.standins.rbk8s import kconfig, kubeadm
from runbook.inventory import load_inventory
from runbook.render import k8sfiles

ROOT = Path(__file__).resolve().parents[2]
TOK, HASH, KEY = "abcdef.0123456789abcdef", "sha256:" + "ab" * 32, "cd" * 32


def test_configs_name_the_patch_directory_and_the_kubelet_address() -> None:
    inv = load_inventory(ROOT / "hosts.yaml")
    init = kconfig.parse(
        k8sfiles.kubeadm_init_config(inv, "k8scontrol01", kubernetes_version="v1.36.0"), minor=36
    )["InitConfiguration"]
    assert init["patches"] == {"directory": k8sfiles.PATCHES_DIR}
    assert kconfig.args(init["nodeRegistration"]["kubeletExtraArgs"])["address"] == "10.143.0.2"
    cp = kconfig.parse(
        k8sfiles.kubeadm_join_config(
            inv, "k8scontrol02", token=TOK, ca_cert_hash=HASH, certificate_key=KEY
        ),
        minor=36,
    )["JoinConfiguration"]
    assert cp["patches"] == {"directory": k8sfiles.PATCHES_DIR}
    worker = kconfig.parse(
        k8sfiles.kubeadm_join_config(inv, "k8node01", token=TOK, ca_cert_hash=HASH), minor=36
    )["JoinConfiguration"]
    assert "patches" not in worker
    assert kconfig.args(worker["nodeRegistration"]["kubeletExtraArgs"])["address"] == "10.143.0.7"
    # not cluster-wide: the ClusterConfiguration that every join reads names no bind address
    cluster = kconfig.parse(
        k8sfiles.kubeadm_init_config(inv, "k8scontrol01", kubernetes_version="v1.36.0"), minor=36
    )["ClusterConfiguration"]
    assert "bind-address" not in kconfig.args(cluster["apiServer"]["extraArgs"])


@pytest.mark.parametrize(
    ("host", "ip"), [("k8scontrol01", "10.143.0.2"), ("k8scontrol03", "10.143.0.4")]
)
def test_stand_in_kubeadm_applies_each_nodes_patch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, ip: str
) -> None:
    inv = load_inventory(ROOT / "hosts.yaml")
    manifests, patches = tmp_path / "manifests", tmp_path / "patches"
    manifests.mkdir()
    patches.mkdir()
    monkeypatch.setattr(kubeadm, "MANIFESTS", manifests)
    (manifests / "kube-apiserver.yaml").write_text(
        kubeadm._apiserver_manifest(ip, {"networking": {"serviceSubnet": "10.145.0.0/16"}})
    )
    (patches / "kube-apiserver+json.yaml").write_text(k8sfiles.apiserver_patch(inv, host))
    kubeadm._apply_patches(str(patches))
    cmd = yaml.safe_load((manifests / "kube-apiserver.yaml").read_text())["spec"]["containers"][0][
        "command"
    ]
    assert cmd[0] == "kube-apiserver" and cmd[-1] == f"--bind-address={ip}"
    assert f"--advertise-address={ip}" in cmd


def test_stand_in_patches_are_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifests, patches = tmp_path / "manifests", tmp_path / "patches"
    manifests.mkdir()
    patches.mkdir()
    monkeypatch.setattr(kubeadm, "MANIFESTS", manifests)
    (manifests / "kube-apiserver.yaml").write_text(
        kubeadm._apiserver_manifest("10.143.0.2", {"networking": {"serviceSubnet": "10.1.0.0/16"}})
    )
    with pytest.raises(kubeadm.Fail, match="no such directory"):
        kubeadm._apply_patches(str(tmp_path / "missing"))
    bad = patches / "kube-apiserver+json.yaml"
    bad.write_text("- {op: move, from: /a, path: /b}\n")
    with pytest.raises(kubeadm.Fail, match="unsupported operation"):
        kubeadm._apply_patches(str(patches))
    bad.write_text("- {op: add, path: /spec/nothing/0, value: x}\n")
    with pytest.raises(kubeadm.Fail, match="not found"):
        kubeadm._apply_patches(str(patches))
    bad.unlink()
    (patches / "kube-apiserver.yaml").write_text("spec: {}\n")  # strategic: not this stand-in's
    with pytest.raises(kubeadm.Fail, match="not supported"):
        kubeadm._apply_patches(str(patches))
