"""etcd on a kubeadm control plane, as the day-2 steps talk to it.

etcd runs as a static pod; the host needs `etcdctl`/`etcdutl` (Debian: `etcd-client`, 3.5 or
later for `etcdutl`). `etcdctl` reaches the local member on 127.0.0.1:2379 with the member's own
server certificate (kubeadm's etcd serves TLS only and requires a client certificate);
`snapshot status|restore` are `etcdutl` commands since etcd 3.5 (etcdctl 3.6 dropped them).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

ETCD_PKI = "/etc/kubernetes/pki/etcd"
DATA_DIR = "/var/lib/etcd"  # kubeadm's default etcd.local.dataDir (the runbook never changes it)
MANIFESTS = "/etc/kubernetes/manifests"
PACKAGE = "etcd-client"
WORK_DIR = "/var/lib/runbook-etcd"  # root 0700: snapshots on their way to or from the operator


def etcdctl(*args: str) -> str:
    """An etcdctl command against the local member, with its certificates."""
    return " ".join(
        [
            "ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379",
            f"--cacert={ETCD_PKI}/ca.crt --cert={ETCD_PKI}/server.crt --key={ETCD_PKI}/server.key",
            *(shlex.quote(a) for a in args),
        ]
    )


def etcdutl(*args: str) -> str:
    return "etcdutl " + " ".join(shlex.quote(a) for a in args)


@dataclass(frozen=True)
class SnapshotStatus:
    hash: int
    revision: int
    total_keys: int
    total_size: int


def parse_status(text: str) -> SnapshotStatus:
    """`etcdutl snapshot status -w json` → its numbers; ValueError when it is not that."""
    data = json.loads(text.strip().splitlines()[-1] if text.strip() else "")
    return SnapshotStatus(
        int(data["hash"]), int(data["revision"]), int(data["totalKey"]), int(data["totalSize"])
    )


def peer_url(ip: str) -> str:
    return f"https://{ip}:2380"


def initial_cluster(members: dict[str, str]) -> str:
    """`name=https://ip:2380,…` for `etcdutl snapshot restore --initial-cluster`."""
    return ",".join(f"{name}={peer_url(ip)}" for name, ip in members.items())
