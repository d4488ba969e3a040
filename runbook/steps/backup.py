"""Day 2 — backup: an etcd snapshot of one control plane, checked and copied to the operator.

`etcdctl snapshot save` with the member's client certificates into a root-only directory on the
host, `snapshot status` (etcdutl, else etcdctl 3.4; the snapshot must read back), then the file is
copied to `.runbook/CLUSTER/backups/` beside the inventory (0600, checked against the host's
sha256) and removed from the host; local snapshots beyond `kubernetes.backup.keep` are pruned,
oldest first. Every run takes a new snapshot — that is the task's purpose; `etcd-client` is
installed once.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change
from ..core.remote import Fact, Host
from ..core.resources import Packages, Resource
from ..tools import etcdcli, snapshots
from ._select import hosts_with


def backup_dir(ctx: StepContext) -> Path:
    return ctx.inventory.resolve_path(f".runbook/{ctx.inventory.cluster.name}/backups")


@dataclass
class EtcdSnapshot(Resource[Host]):
    """A new snapshot of the host's etcd member, saved locally (pending until taken this run)."""

    host_name: str
    directory: Path
    keep: int
    saved: Path | None = None
    status: etcdcli.SnapshotStatus | None = None
    pruned: list[Path] = field(default_factory=list)

    @property
    def key(self) -> str:
        return "etcd-snapshot"

    def probe(self) -> str:
        return f"test -f {etcdcli.ETCD_PKI}/server.crt && echo member"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        if self.saved is not None:
            return None
        if fact is not None and fact.stdout.strip() != "member":
            raise StepFailed(f"{self.host_name}: no etcd member here ({etcdcli.ETCD_PKI} missing)")
        prune = snapshots.to_prune(self.directory, self.keep, adding=1)
        note = f"; prune {', '.join(p.name for p in prune)}" if prune else ""
        return Change(
            self.key,
            "save",
            f"etcdctl snapshot save on {self.host_name} -> {self.directory}/ (keep {self.keep}"
            f"{note})",
        )

    def apply(self, host: Host) -> None:
        remote = f"{etcdcli.WORK_DIR}/snapshot.db"
        q = shlex.quote(remote)
        host.run(
            f"install -d -m 0700 {etcdcli.WORK_DIR} && rm -f {q} && "
            + etcdcli.etcdctl("snapshot", "save", remote),
            timeout=600,
        )
        try:
            out = host.run(etcdcli.snapshot("status", remote, "-w", "json")).stdout
            try:
                self.status = etcdcli.parse_status(out)
            except (ValueError, KeyError) as exc:
                raise StepFailed(f"snapshot status did not read back: {out!r}") from exc
            remote_sha = host.query(f"sha256sum {q}").stdout.split()[0]
            path = self.directory / snapshots.snapshot_name(self.host_name, datetime.now(UTC))
            if not host.download(remote, path):  # streamed to disk, 0600 from the first byte
                raise StepFailed(f"{remote} vanished before it was copied")
            if snapshots.sha256(path) != remote_sha:
                path.unlink()
                raise StepFailed(f"copy of {remote} differs from the host's (sha256)")
        finally:
            host.run(f"rm -f {q}", ok_codes=None)
        self.saved = path
        self.pruned = snapshots.to_prune(self.directory, self.keep)
        for old in self.pruned:
            old.unlink()


class BackupStep(Step):
    name = "backup"
    title = "etcd snapshot of one control plane, checked, copied to the operator (0600)"

    def __init__(self) -> None:
        self.snapshot: EtcdSnapshot | None = None

    def target_names(self, ctx: StepContext) -> list[str]:
        cps = hosts_with(ctx, "control-plane")
        return cps[:1]

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        if self.snapshot is None:
            self.snapshot = EtcdSnapshot(
                target, backup_dir(ctx), ctx.inventory.kubernetes.backup.keep
            )
        return [Packages([etcdcli.PACKAGE]), self.snapshot]

    def verify(self, ctx: StepContext, target: str) -> None:
        snap = self.snapshot
        if snap is None or snap.saved is None:
            return
        mode = snap.saved.stat().st_mode & 0o777
        if mode != 0o600:
            raise StepFailed(f"{snap.saved} has mode {mode:o}, not 600")
