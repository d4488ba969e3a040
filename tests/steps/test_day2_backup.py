"""`cluster.backup` / `cluster.restore` as data and against the strict etcd stand-in.

The backup and restore resources run their real commands in a local shell whose etcd tools are
the lab's stand-ins (over real TLS with client certificates; host paths mapped into a temp dir),
as two kinds of host have them: Debian 12's etcd-client 3.4 (`etcdctl` only, whose `snapshot
status|restore` are the ones to use) and etcd >= 3.6 (`etcdutl`, and an `etcdctl` that no longer
has them). The snapshot lands 0600 in the backup dir, the host copy is removed, old ones are
pruned, a second check is clean; a restore rebuilds the data dir. The restore phases' checks
are plain data; the typed confirmation needs the exact cluster name (`--yes` is not enough).
"""

from __future__ import annotations

import io
import json
import os
import shlex
import shutil
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


# the etcd tools of a host: program -> the stand-in call (etcdctl of that version / etcdutl)
TOOLS = {
    # Debian 12's etcd-client 3.4.23 (what the lab package ships): etcdctl only
    "debian12": {"etcdctl": "etcd.etcdctl(sys.argv[1:], version='3.4.23')"},
    # etcd 3.6 (e.g. upstream's release): etcdutl, and an etcdctl without snapshot status|restore
    "etcd36": {
        "etcdctl": "etcd.etcdctl(sys.argv[1:], version='3.6.4')",
        "etcdutl": "etcd.etcdutl(sys.argv[1:])",
    },
}


class MappedHost(Host):
    """Runs commands locally with the host's paths mapped into `root`; etcd tools = stand-ins."""

    def __init__(self, root: Path, port: int, tools: str = "debian12") -> None:
        super().__init__("k8scontrol01")
        self.root, self.port = root, port
        self.commands: list[str] = []
        bindir = root / "bin"
        bindir.mkdir(exist_ok=True)
        for prog, call in TOOLS[tools].items():
            code = f"import sys; from lab.standins.rbk8s import etcd; sys.exit({call})"
            (bindir / prog).write_text(
                f"#!/bin/sh\ncd {shlex.quote(str(ROOT))} && exec {shlex.quote(sys.executable)} "
                f'-c {shlex.quote(code)} "$@"\n'
            )
            (bindir / prog).chmod(0o755)
        self.path = f"{bindir}:{os.environ['PATH']}"
        # nothing else on this machine may answer for a tool the host does not have
        assert shutil.which("etcdutl", path=self.path) in (None, str(bindir / "etcdutl"))
        assert shutil.which("etcdctl", path=self.path) == str(bindir / "etcdctl")

    def _map(self, cmd: str) -> str:
        for path in (etcdcli.ETCD_PKI, etcdcli.WORK_DIR, etcdcli.DATA_DIR, etcdcli.MANIFESTS):
            cmd = cmd.replace(path, str(self.root) + path)
        return cmd.replace("127.0.0.1:2379", f"127.0.0.1:{self.port}")

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        self.commands.append(cmd)
        env = dict(os.environ, PATH=self.path)
        r = subprocess.run(
            ["bash", "-c", self._map(cmd)], input=stdin, capture_output=True, text=True, env=env
        )
        return Result(r.stdout, r.stderr, r.returncode)


@pytest.fixture(params=sorted(TOOLS))
def member(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[MappedHost, Store]]:
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
        yield MappedHost(tmp_path / "host", srv.server_address[1], request.param), store
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
    # the member's certificates were used; status came from the tool this host has (etcdctl
    # 3.6 refuses it, Debian 12 has no etcdutl: either wrong choice fails the backup)
    assert any("--cert=/etc/kubernetes/pki/etcd/server.crt" in c for c in host.commands)
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


def test_restore_rebuilds_the_data_dir_with_the_hosts_tool(member: Any, tmp_path: Path) -> None:
    """`restore-data` on a host with etcd stopped: the snapshot is restored with etcdutl where
    it exists, else with Debian 12's etcdctl 3.4; the old data dir is kept, the marker set."""
    host, store = member
    snap = tmp_path / "s.db"
    store.put("configmap/default/restored", {"kind": "ConfigMap", "metadata": {"name": "r"}})
    snap.write_bytes(etcd.snapshot_blob(store.data))
    r = Restore(snap, snapshots.sha256(snap), "skgm", {"k8scontrol01": "10.143.0.2"})
    data_dir = host.root / etcdcli.DATA_DIR.lstrip("/")
    data_dir.mkdir(parents=True)
    (data_dir / "old").write_text("before")
    (host.root / etcdcli.MANIFESTS.lstrip("/")).mkdir(parents=True)
    res = RestoredData("k8scontrol01", r, needed=True)
    res.apply(host)
    restored = json.loads((data_dir / etcd.DB).read_text())
    assert restored["objects"]["configmap/default/restored"]
    assert restored["members"] == {"k8scontrol01": "10.143.0.2"}
    assert (data_dir / "runbook-restored-from").read_text().strip() == r.sha256
    kept = list(data_dir.parent.glob("etcd.before-restore-*"))
    assert len(kept) == 1 and (kept[0] / "old").read_text() == "before"
    assert res.check(host, host.probe(res.probe())) is None


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
