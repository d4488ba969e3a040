"""`cluster.backup` / `cluster.restore` as data and against the strict etcd stand-in.

The backup resource runs its real commands in a local shell whose `etcdctl`/`etcdutl` are the
lab's stand-ins (over real TLS with client certificates; host paths mapped into a temp dir):
the snapshot lands 0600 in the backup dir, the host copy is removed, old ones are pruned, a
second check is clean. The restore phases' checks are plain data; the typed confirmation needs
the exact cluster name (`--yes` is not enough).
"""

from __future__ import annotations

import io
import os
import shlex
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lab.standins.rbk8s import etcd, pki
from lab.standins.rbk8s.apiserver import Store
from runbook.core.console import CheckpointDeclined, Masker, NeedsPerson, Ui, make_console
from runbook.core.engine import StepFailed
from runbook.core.remote import Fact, Host, Result
from runbook.steps.backup import EtcdSnapshot
from runbook.steps.restore import (
    MARKER,
    Restore,
    RestoredData,
    StaticPodsParked,
    StaticPodsRunning,
)
from runbook.tools import etcdcli, snapshots

ROOT = Path(__file__).resolve().parents[2]


class MappedHost(Host):
    """Runs commands locally with the host's paths mapped into `root`; etcd tools = stand-ins."""

    def __init__(self, root: Path, port: int) -> None:
        super().__init__("k8scontrol01")
        self.root, self.port = root, port
        self.commands: list[str] = []
        bindir = root / "bin"
        bindir.mkdir(exist_ok=True)
        for prog in ("etcdctl", "etcdutl"):
            (bindir / prog).write_text(
                f"#!/bin/sh\ncd {shlex.quote(str(ROOT))} && exec {shlex.quote(sys.executable)} "
                f'-m lab.standins.rbk8s {prog} "$@"\n'
            )
            (bindir / prog).chmod(0o755)

    def _map(self, cmd: str) -> str:
        for path in (etcdcli.ETCD_PKI, etcdcli.WORK_DIR):
            cmd = cmd.replace(path, str(self.root) + path)
        return cmd.replace("127.0.0.1:2379", f"127.0.0.1:{self.port}")

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        self.commands.append(cmd)
        env = dict(os.environ, PATH=f"{self.root / 'bin'}:{os.environ['PATH']}")
        r = subprocess.run(
            ["bash", "-c", self._map(cmd)], input=stdin, capture_output=True, text=True, env=env
        )
        return Result(r.stdout, r.stderr, r.returncode)


@pytest.fixture
def member(tmp_path: Path) -> Iterator[tuple[MappedHost, Store]]:
    p = tmp_path / "host" / "etc/kubernetes/pki"
    pki.make_ca(p)
    e = p / "etcd"
    e.mkdir()
    for f in ("ca.crt", "ca.key"):
        (e / f).write_bytes((p / f).read_bytes())
    crt, key = pki.issue(p, "/CN=k8scontrol01", sans=("127.0.0.1",), server=True)
    pki.write_pair(e, "server", crt, key)
    store = Store(tmp_path / "db", self_name="k8scontrol01")
    store.data.update(cluster_id="c1", members={"k8scontrol01": "127.0.0.1"})
    store.put("configmap/default/x", {"kind": "ConfigMap", "metadata": {"name": "x"}})
    peer = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    srv = etcd.EtcdEndpoint(store, p, peer, address="127.0.0.1", port=0)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield MappedHost(tmp_path / "host", srv.server_address[1]), store
    finally:
        srv.shutdown()
        srv.server_close()


def test_backup_saves_checks_copies_and_prunes(member: Any, tmp_path: Path) -> None:
    host, store = member
    out = tmp_path / "backups"
    out.mkdir()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    olds = [out / snapshots.snapshot_name("k8scontrol01", t0 + timedelta(days=i)) for i in range(3)]
    for o in olds:
        o.write_bytes(b"old")
    (out / "notes.txt").write_text("not ours")
    res = EtcdSnapshot("k8scontrol01", out, keep=2)
    change = res.check(host, Fact("member", 0))
    assert change is not None and olds[0].name in change.summary and olds[1].name in change.summary
    assert olds[2].name not in change.summary
    res.apply(host)
    assert res.saved is not None and res.saved.parent == out
    assert res.saved.stat().st_mode & 0o777 == 0o600
    assert etcd.read_snapshot(res.saved)["objects"]["configmap/default/x"]
    assert res.status is not None and res.status.revision == store.data["version"]
    assert snapshots.existing(out) == [olds[2], res.saved] and (out / "notes.txt").exists()
    assert not list((host.root / etcdcli.WORK_DIR.lstrip("/")).iterdir())
    # the member's certificates were used, and status came from etcdutl (not etcdctl 3.6)
    assert any("--cert=/etc/kubernetes/pki/etcd/server.crt" in c for c in host.commands)
    assert any(c.startswith("etcdutl snapshot status") for c in host.commands)
    assert res.check(host, Fact("member", 0)) is None


def test_backup_refuses_a_host_without_an_etcd_member(tmp_path: Path) -> None:
    res = EtcdSnapshot("k8node01", tmp_path, keep=3)
    with pytest.raises(StepFailed, match="no etcd member"):
        res.check(Host("k8node01"), Fact("", 1))


def test_backup_fails_when_etcd_is_unreachable(member: Any, tmp_path: Path) -> None:
    host, _ = member
    host.port = 1  # nothing listens: etcdctl fails, nothing is written locally
    res = EtcdSnapshot("k8scontrol01", tmp_path / "b", keep=3)
    with pytest.raises(Exception, match="context deadline exceeded"):
        res.apply(host)
    assert snapshots.existing(tmp_path / "b") == [] and res.saved is None


def plan(tmp_path: Path) -> Restore:
    snap = tmp_path / "s.db"
    snap.write_bytes(etcd.snapshot_blob({"version": 1}))
    members = {"k8scontrol01": "10.143.0.2", "k8scontrol02": "10.143.0.3"}
    return Restore(snap, snapshots.sha256(snap), "skgm", members)


def test_restore_phases_check_as_data(tmp_path: Path) -> None:
    r = plan(tmp_path)
    h = Host("k8scontrol01")
    assert StaticPodsParked(needed=True).check(h, Fact("4", 0)) is not None
    assert StaticPodsParked(needed=True).check(h, Fact("0", 1)) is None  # parked already
    assert StaticPodsParked(needed=False).check(h, Fact("4", 0)) is None
    data = RestoredData("k8scontrol01", r, needed=True)
    c = data.check(h, Fact("", 1))
    assert c is not None and "2 member(s)" in c.summary
    assert data.check(h, Fact(r.sha256, 0)) is None  # this member holds it (resumed run)
    assert RestoredData("k8scontrol01", r, needed=False).check(h, Fact("", 1)) is None
    assert StaticPodsRunning().check(h, Fact("2", 0)) is not None
    assert StaticPodsRunning().check(h, Fact("0", 1)) is None
    assert etcdcli.initial_cluster(r.members) == (
        "k8scontrol01=https://10.143.0.2:2380,k8scontrol02=https://10.143.0.3:2380"
    )
    assert MARKER.startswith(etcdcli.DATA_DIR + "/")
    assert r.token == f"skgm-restore-{r.sha256[:12]}"


def ui(*, interactive: bool, typed: str = "", yes: bool = False) -> tuple[Ui, io.StringIO]:
    out = io.StringIO()
    masker = Masker()
    return (
        Ui(
            make_console(masker, file=out, width=120),
            masker,
            assume_yes=yes,
            interactive=interactive,
            stdin=io.StringIO(typed + "\n"),
        ),
        out,
    )


def test_typed_confirmation_needs_the_exact_name() -> None:
    u, _ = ui(interactive=False, yes=True)
    with pytest.raises(NeedsPerson, match="--confirm skgm"):
        u.typed_checkpoint("restore?", expected="skgm", given=None)
    with pytest.raises(CheckpointDeclined):
        u.typed_checkpoint("restore?", expected="skgm", given="SKGM")
    u.typed_checkpoint("restore?", expected="skgm", given="skgm")
    u, _ = ui(interactive=True, typed="y")
    with pytest.raises(CheckpointDeclined):
        u.typed_checkpoint("restore?", expected="skgm", given=None)
    u, out = ui(interactive=True, typed="skgm")
    u.typed_checkpoint("restore?", expected="skgm", given=None)
    assert "type skgm to confirm" in out.getvalue()


def test_parse_status_refuses_other_output() -> None:
    st = etcdcli.parse_status('{"hash":1,"revision":2,"totalKey":3,"totalSize":4,"version":"3.6"}')
    assert (st.revision, st.total_keys, st.total_size) == (2, 3, 4)
    with pytest.raises(ValueError):
        etcdcli.parse_status("1, 2, 3, 4")
