"""The etcd stand-in (lab/standins/rbk8s/etcd.py) is strict like etcd's tools: client
certificates required on :2379, one endpoint for a snapshot, snapshot status/restore in etcdctl
3.4 (Debian 12's etcd-client, the lab package's) and 3.5 (deprecated), only in etcdutl from 3.6,
the hash trailer checked, restore's data dir / name / peer URL rules, and member remove's
quorum rule. Over real TLS on 127.0.0.1 with an ephemeral port."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.standins.rbk8s import etcd, pki
from lab.standins.rbk8s.apiserver import Store


@pytest.fixture
def endpoint(tmp_path: Path) -> Iterator[tuple[str, Store, Path]]:
    p = tmp_path / "pki"
    pki.make_ca(p)
    (p / "etcd").mkdir()
    for f in ("ca.crt", "ca.key"):
        (p / "etcd" / f).write_bytes((p / f).read_bytes())
    crt, key = pki.issue(p, "/CN=cp1", sans=("127.0.0.1",), server=True)
    pki.write_pair(p / "etcd", "server", crt, key)
    crt, key = pki.issue(p, "/CN=kube-etcd-healthcheck-client")
    pki.write_pair(p / "etcd", "healthcheck-client", crt, key)
    store = Store(tmp_path / "db", self_name="cp1")
    store.data["cluster_id"] = "c0ffee"
    store.data["members"] = {"cp1": "127.0.0.1"}
    store.put("configmap/default/keep-me", {"kind": "ConfigMap", "metadata": {"name": "keep-me"}})
    peer = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    peer.check_hostname = False
    peer.load_verify_locations(p / "ca.crt")
    srv = etcd.EtcdEndpoint(store, p, peer, address="127.0.0.1", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"https://127.0.0.1:{srv.server_address[1]}", store, p
    finally:
        srv.shutdown()
        srv.server_close()


def certs(p: Path) -> list[str]:
    e = p / "etcd"
    return [
        f"--cacert={e / 'ca.crt'}",
        f"--cert={e / 'healthcheck-client.crt'}",
        f"--key={e / 'healthcheck-client.key'}",
    ]


def test_snapshot_save_needs_client_certs_and_one_endpoint(
    endpoint: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _store, p = endpoint
    snap = tmp_path / "snap.db"
    # no client certificate: the TLS handshake fails (etcd runs with --client-cert-auth)
    assert (
        etcd.etcdctl(
            [f"--endpoints={url}", f"--cacert={p}/etcd/ca.crt", "snapshot", "save", str(snap)]
        )
        == 1
    )
    assert "context deadline exceeded" in capsys.readouterr().err and not snap.exists()
    two = f"--endpoints={url},{url}"
    assert etcd.etcdctl([two, *certs(p), "snapshot", "save", str(snap)]) == 1
    assert "not multiple" in capsys.readouterr().err
    assert etcd.etcdctl([f"--endpoints={url}", *certs(p), "snapshot", "save", str(snap)]) == 0
    assert f"Snapshot saved at {snap}" in capsys.readouterr().out
    assert os.stat(snap).st_mode & 0o777 == 0o600
    assert etcd.read_snapshot(snap)["objects"]["configmap/default/keep-me"]


@pytest.mark.parametrize(
    ("version", "has_status", "warns"),
    [("3.4.23", True, False), ("3.5.16", True, True), ("3.6.4", False, False)],
)
def test_status_and_restore_move_from_etcdctl_to_etcdutl(
    endpoint: Any,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    version: str,
    has_status: bool,
    warns: bool,
) -> None:
    url, store, p = endpoint
    snap = tmp_path / "snap.db"
    assert etcd.etcdctl([f"--endpoints={url}", *certs(p), "snapshot", "save", str(snap)]) == 0
    capsys.readouterr()
    rc = etcd.etcdctl(["snapshot", "status", str(snap), "-w", "json"], version=version)
    out, err = capsys.readouterr()
    if not has_status:
        assert rc == 1 and 'unknown command "status"' in err
        dd = tmp_path / "r"
        restore = ["snapshot", "restore", str(snap), f"--data-dir={dd}"]
        assert etcd.etcdctl(restore, version=version) == 1 and not dd.exists()
        assert 'unknown command "restore"' in capsys.readouterr().err
    else:
        info = json.loads(out)
        assert rc == 0 and info["revision"] == store.data["version"]
        assert ("version" in info) is not version.startswith("3.4.")  # 3.4 has no such field
        assert ("Deprecated: Use `etcdutl snapshot status`" in err) is warns
    assert etcd.etcdutl(["snapshot", "status", str(snap), "-w", "json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["revision"] == store.data["version"] and info["totalSize"] == snap.stat().st_size


def test_etcdctl_34_restores_as_etcdutl_does(tmp_path: Path) -> None:
    state = {"version": 7, "cluster_id": "old", "members": {"cp1": "10.0.0.1"}, "objects": {"a": 1}}
    snap = tmp_path / "snap.db"
    snap.write_bytes(etcd.snapshot_blob(state))
    args = [
        "snapshot",
        "restore",
        str(snap),
        "--name=cp1",
        "--initial-cluster=cp1=https://10.0.0.1:2380",
        "--initial-cluster-token=t",
        "--initial-advertise-peer-urls=https://10.0.0.1:2380",
    ]
    assert etcd.etcdctl([*args, f"--data-dir={tmp_path / 'a'}"]) == 0
    assert etcd.etcdutl([*args, f"--data-dir={tmp_path / 'b'}"]) == 0
    db = etcd.DB
    assert (tmp_path / "a" / db).read_text() == (tmp_path / "b" / db).read_text()
    # a flag etcdctl does not know is still refused outside the offline commands
    assert etcd.etcdctl(["member", "list", "--name=cp1"]) == 1


def test_restore_rules_and_hash_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = {"version": 7, "cluster_id": "old", "members": {"cp1": "10.0.0.1"}, "objects": {"a": 1}}
    snap = tmp_path / "snap.db"
    snap.write_bytes(etcd.snapshot_blob(state))
    cluster = "cp1=https://10.0.0.1:2380,cp2=https://10.0.0.2:2380"
    base = ["snapshot", "restore", str(snap), f"--initial-cluster={cluster}"]
    dd = tmp_path / "restored"
    args = [*base, "--name=cp2", f"--data-dir={dd}"]
    assert etcd.etcdutl([*args, "--initial-advertise-peer-urls=https://10.0.0.1:2380"]) == 1
    assert "missing from --initial-advertise-peer-urls" in capsys.readouterr().err
    assert etcd.etcdutl([*base, "--name=cp9", f"--data-dir={dd}"]) == 1
    assert 'couldn\'t find local name "cp9"' in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    full = [*base, "--name=cp2", f"--data-dir={tmp_path / 'full'}"]
    assert etcd.etcdutl([*full, "--initial-advertise-peer-urls=https://10.0.0.2:2380"]) == 1
    assert "not empty" in capsys.readouterr().err
    ok = [*args, "--initial-advertise-peer-urls=https://10.0.0.2:2380"]
    assert etcd.etcdutl(ok) == 0
    restored = json.loads((dd / "member" / "snap" / "db").read_text())
    assert restored["objects"] == {"a": 1}
    assert restored["members"] == {"cp1": "10.0.0.1", "cp2": "10.0.0.2"}
    assert restored["cluster_id"] != "old"
    assert (dd.stat().st_mode & 0o777) == 0o700
    # a flipped byte: the sha256 trailer no longer matches
    raw = bytearray(snap.read_bytes())
    raw[len(etcd.MAGIC) + 3] ^= 1
    snap.write_bytes(bytes(raw))
    dd2 = tmp_path / "again"
    again = [
        *base,
        "--name=cp2",
        f"--data-dir={dd2}",
        "--initial-advertise-peer-urls=https://10.0.0.2:2380",
    ]
    assert etcd.etcdutl(again) == 1
    assert "does not match" in capsys.readouterr().err and not dd2.exists()


def _closed_port_ip() -> str:
    """An address on loopback where no API server answers (a member that is down)."""
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.2", 6443)) != 0
    return "127.0.0.2"


def test_member_remove_keeps_quorum(endpoint: Any, capsys: pytest.CaptureFixture[str]) -> None:
    url, store, p = endpoint
    down = _closed_port_ip()
    store.data["members"] = {"cp1": "127.0.0.1", "cp2": down, "cp3": down}
    ids = {m["name"]: m["ID"] for m in etcd.members(store.data)}
    ctl = [f"--endpoints={url}", *certs(p)]
    # cp2 and cp3 are down: removing cp3 leaves {cp1, cp2} with only cp1 started — no quorum
    assert etcd.etcdctl([*ctl, "member", "remove", ids["cp3"]]) == 1
    assert "not enough started members" in capsys.readouterr().err
    assert set(store.data["members"]) == {"cp1", "cp2", "cp3"}
    store.data["members"] = {"cp1": "127.0.0.1", "cp2": down}
    ids = {m["name"]: m["ID"] for m in etcd.members(store.data)}
    # removing the dead cp2 leaves {cp1}, started: allowed
    assert etcd.etcdctl([*ctl, "member", "remove", ids["cp2"]]) == 0
    assert set(store.data["members"]) == {"cp1"}
    assert etcd.etcdctl([*ctl, "member", "remove", "ffff"]) == 1
    assert "member not found" in capsys.readouterr().err
    assert etcd.etcdctl([*ctl, "member", "list", "-w", "json"]) == 0
    out = capsys.readouterr().out
    assert [m["name"] for m in json.loads(out.splitlines()[-1])["members"]] == ["cp1"]


def test_a_client_that_stalls_in_the_handshake_holds_up_nobody(
    endpoint: Any, tmp_path: Path
) -> None:
    """A client that connects and never sends its ClientHello (a paused load balancer's health
    check) must not block the next client: the handshake runs per connection, as in etcd."""
    url, _, p = endpoint
    port = int(url.rsplit(":", 1)[1])
    stalled = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(p / "ca.crt")
        ctx.load_cert_chain(
            p / "etcd" / "healthcheck-client.crt", p / "etcd" / "healthcheck-client.key"
        )
        with (
            socket.create_connection(("127.0.0.1", port), timeout=3) as raw,
            ctx.wrap_socket(raw) as s,
        ):
            s.sendall(b"GET /health HTTP/1.0\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1."), "no answer while another client stalls"
    finally:
        stalled.close()
