"""The stand-ins end to end between two throw-away network namespaces (no lab needed, root):
`kubeadm init` with the runbook's rendered v1beta4 config, fresh token + certificate key, a
control-plane `kubeadm join` over real TCP/TLS (CA pin, token, key checked by the API server
stand-in), a wrong token refused, the joined apiserver advertising its own IP, state replicated
between the two API servers, and a second join refused by preflight.

Addresses are 198.18.0.0/24 (benchmarking range) inside the two namespaces only; every process
lives in the namespaces' own PID namespaces and ends with them.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from runbook.inventory import load_inventory
from runbook.render import k8sfiles

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]
NS = ("rbk8s-e2e-a", "rbk8s-e2e-b")
IPS = ("198.18.0.2", "198.18.0.3")

HOST_SH = r"""
set -e
N=$1; IP=$2; ROLE=$3; T=$4; D=$T/$N
mkdir -p $D/up/etc $D/up/var $D/w/etc $D/w/var
mount -t overlay overlay -o lowerdir=/etc,upperdir=$D/up/etc,workdir=$D/w/etc /etc
mount -t overlay overlay -o lowerdir=/var/lib,upperdir=$D/up/var,workdir=$D/w/var /var/lib
mount -t tmpfs tmpfs /run
hostname $N; ip link set lo up; sysctl -qw net.ipv4.ip_forward=1
# the per-node kubeadm patch the init/join steps write (the configs' patches.directory)
mkdir -p /etc/kubernetes/runbook/patches
cp $T/$N.patch.yaml /etc/kubernetes/runbook/patches/kube-apiserver+json.yaml
export PATH=$T/bin:$PATH
(containerd >/run/containerd.log 2>&1 &)
sleep 0.5
if [ $ROLE = init ]; then
  kubeadm init --config $T/init.yaml --upload-certs > $T/init.out 2>&1
  kubeadm token create --print-join-command > $T/join-cmd
  kubeadm init phase upload-certs --upload-certs | tail -1 > $T/cert-key
  touch $T/a.ready
  while [ ! -f $T/b.done ]; do sleep 0.2; done
else
  while [ ! -f $T/join.yaml ]; do sleep 0.2; done
  kubeadm join --config $T/join-bad.yaml > $T/bad.out 2>&1 && exit 9
  kubeadm join --config $T/join.yaml > $T/join.out 2>&1
  for i in $(seq 40); do
    kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes > $T/nodes.out 2>&1 || true
    [ "$(grep -c NotReady $T/nodes.out)" = 2 ] && break; sleep 0.5
  done
  grep -o -- '--advertise-address=[0-9.]*' /etc/kubernetes/manifests/kube-apiserver.yaml > $T/adv
  kubeadm token create > $T/token-b
  kubeadm join --config $T/join.yaml > $T/second.out 2>&1 && exit 8
  touch $T/b.done
fi
"""
FAKE_SYSTEMCTL = """#!/bin/bash
case "$1 $2" in
  "restart kubelet"|"start kubelet")
    [ -f /run/kubelet.pid ] && kill $(cat /run/kubelet.pid) 2>/dev/null; sleep 0.3
    (kubelet >>/run/kubelet.log 2>&1 & echo $! > /run/kubelet.pid);;
  *) exit 0;;
esac
"""


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root (network, mount and PID namespaces)")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for prog in ("kubeadm", "kubectl", "kubelet", "containerd"):
        w = bindir / prog
        w.write_text(
            f"#!/bin/sh\nPYTHONPATH={ROOT}/lab/standins exec /usr/bin/python3 -m rbk8s "
            f'{prog} "$@"\n'
        )
        w.chmod(0o755)
    (bindir / "systemctl").write_text(FAKE_SYSTEMCTL)
    (bindir / "systemctl").chmod(0o755)
    (tmp_path / "host.sh").write_text(HOST_SH)
    for ns in NS:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", "rbk8se2ea", "type", "veth", "peer", "name", "rbk8se2eb")
        for ns, dev, ip in zip(NS, ("rbk8se2ea", "rbk8se2eb"), IPS, strict=True):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        yield tmp_path
    finally:
        for ns in NS:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def host(ns: str, name: str, ip: str, role: str, t: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "unshare",
            "-m",
            "-p",
            "-u",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "bash",
            str(t / "host.sh"),
            name,
            ip,
            role,
            str(t),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_init_join_and_refusals_over_real_tls(pair: Path) -> None:
    t = pair
    inv = load_inventory(ROOT / "hosts.yaml")
    sub = {"10.143.0.50": IPS[0], "10.143.0.2": IPS[0], "10.143.0.3": IPS[1]}

    def local(text: str) -> str:
        for a, b in sub.items():
            text = text.replace(a, b)
        return text

    for name in ("k8scontrol01", "k8scontrol02"):
        (t / f"{name}.patch.yaml").write_text(local(k8sfiles.apiserver_patch(inv, name)))
    init = k8sfiles.kubeadm_init_config(inv, "k8scontrol01", kubernetes_version="v1.36.0")
    (t / "init.yaml").write_text(local(init))
    a = host(NS[0], "k8scontrol01", IPS[0], "init", t)
    b = host(NS[1], "k8scontrol02", IPS[1], "join", t)
    try:
        deadline = time.monotonic() + 60
        while not (t / "a.ready").exists():
            assert a.poll() is None, a.communicate()[0] + (t / "init.out").read_text()
            assert time.monotonic() < deadline, "init did not finish"
            time.sleep(0.2)
        creds = k8sfiles.parse_join_command((t / "join-cmd").read_text())
        key = (t / "cert-key").read_text().strip()
        join = k8sfiles.kubeadm_join_config(
            inv,
            "k8scontrol02",
            token=creds.token,
            ca_cert_hash=creds.ca_cert_hash,
            certificate_key=key,
        )
        bad = creds.token[:7] + "0123456789abcdef"
        (t / "join-bad.yaml").write_text(local(join.replace(creds.token, bad)))
        (t / "join.yaml").write_text(local(join))
        out = b.communicate(timeout=120)[0]
        assert b.returncode == 0, out + "".join(
            p.read_text() for p in t.glob("*.out") if p.exists()
        )
    finally:
        (t / "b.done").touch()
        for p in (a, b):
            if p.poll() is None:
                p.wait(timeout=30)
    assert "is invalid for this cluster or it has expired" in (t / "bad.out").read_text()
    assert "This node has joined the cluster" in (t / "join.out").read_text()
    nodes = (t / "nodes.out").read_text()
    assert "k8scontrol01" in nodes and "k8scontrol02" in nodes, nodes
    assert (t / "adv").read_text().strip() == f"--advertise-address={IPS[1]}"
    assert "FileAvailable--etc-kubernetes-kubelet.conf" in (t / "second.out").read_text()
    assert creds.token not in "".join(p.read_text() for p in t.glob("*.out"))
