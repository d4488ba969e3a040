"""etcd on a kubeadm control plane, as the day-2 steps talk to it.

etcd runs as a static pod; the host needs `etcdctl` (Debian: `etcd-client`). `etcdctl` reaches
the local member on 127.0.0.1:2379 with the member's own server certificate (kubeadm's etcd
serves TLS only and requires a client certificate).

The offline commands `snapshot status|restore` moved from `etcdctl` to `etcdutl` in etcd 3.5
(deprecated in etcdctl there, gone from etcdctl 3.6). Debian 12's `etcd-client` is 3.4.23 and
ships `etcdctl` only (no `etcdutl`), Debian 13's 3.5 ships both: `snapshot()` runs `etcdutl`
where it is installed and `etcdctl` otherwise, so one command serves every host.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass

ETCD_PKI = "/etc/kubernetes/pki/etcd"
DATA_DIR = "/var/lib/etcd"  # kubeadm's default etcd.local.dataDir (the runbook never changes it)
MANIFESTS = "/etc/kubernetes/manifests"
PACKAGE = "etcd-client"
HAS_ETCDCTL = "command -v etcdctl >/dev/null 2>&1"
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


def snapshot(*args: str) -> str:
    """`snapshot ARGS` (status, restore) with `etcdutl` where installed (etcd >= 3.5), else with
    `etcdctl` (3.4, e.g. Debian 12's etcd-client: the same flags and JSON)."""
    a = " ".join(shlex.quote(x) for x in ("snapshot", *args))
    return (
        f"if command -v etcdutl >/dev/null 2>&1; then etcdutl {a}; "
        f"else ETCDCTL_API=3 etcdctl {a}; fi"
    )


@dataclass(frozen=True)
class SnapshotStatus:
    hash: int
    revision: int
    total_keys: int
    total_size: int


def parse_status(text: str) -> SnapshotStatus:
    """`snapshot status -w json` (etcdutl or etcdctl 3.4) → its numbers; ValueError if not."""
    data = json.loads(text.strip().splitlines()[-1] if text.strip() else "")
    return SnapshotStatus(
        int(data["hash"]), int(data["revision"]), int(data["totalKey"]), int(data["totalSize"])
    )


def peer_url(ip: str) -> str:
    return f"https://{ip}:2380"


def initial_cluster(members: dict[str, str]) -> str:
    """`name=https://ip:2380,…` for `snapshot restore --initial-cluster`."""
    return ",".join(f"{name}={peer_url(ip)}" for name, ip in members.items())
