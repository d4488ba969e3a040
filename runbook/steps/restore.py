"""Day 2 — restore: kubeadm's documented etcd restore, on every control plane, in three phases.

1. `restore-stop` (all control planes, all or nothing, behind a typed confirmation): `etcd-client`
   installed where missing (before anything stops), then the static-pod
   manifests move from /etc/kubernetes/manifests to a parking directory, so the kubelet stops
   etcd and the API server everywhere before any member gets old data (a member still running
   would hand its newer state to the restored ones).
2. `restore-data` (all control planes): the snapshot is uploaded (0600), `snapshot restore`
   (etcdutl, else Debian 12's etcdctl 3.4) builds a new data dir with this host's name and peer
   URL and the same `--initial-cluster` (every control plane of the inventory) and cluster token
   on every member; the old data dir is kept as /var/lib/etcd.before-restore-TIMESTAMP.
3. `restore-start` (all control planes): the manifests go back, each API server answers /readyz
   locally, then the API answers through the VIP.

A marker in the data dir (`runbook-restored-from`, the snapshot's sha256) makes a re-run with the
same file change nothing; an interrupted run resumes (parked manifests are brought back).
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change, TargetPlan
from ..core.remote import Fact, Host
from ..core.resources import Packages, Resource
from ..tools import etcdcli, staticpods
from ._day2 import wait_apiserver_ready
from ._k8s import KUBECTL
from ._select import hosts_with

MARKER = f"{etcdcli.DATA_DIR}/runbook-restored-from"


@dataclass(frozen=True)
class Restore:
    """What every phase needs: the local snapshot, its sha256 and the members to rebuild."""

    snapshot: Path
    sha256: str
    cluster: str
    members: dict[str, str]  # name -> private IP, every control plane of the inventory

    @property
    def token(self) -> str:
        return f"{self.cluster}-restore-{self.sha256[:12]}"


@dataclass
class RestoreRun:
    """Per run: what `cluster.restore` was given (the snapshot, `--confirm`), the members'
    restored-from markers (read once) and whether the operator confirmed."""

    plan: Restore | None = None
    confirm: str | None = None
    confirmed: bool = False
    markers: dict[str, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def restore_of(ctx: StepContext) -> Restore:
    r = ctx.run.of(RestoreRun).plan
    if r is None:
        raise StepFailed("no snapshot given (cluster.restore --snapshot FILE)")
    return r


def _markers(ctx: StepContext) -> dict[str, str]:
    """The restored-from marker of every control plane (read once per run)."""
    state = ctx.run.of(RestoreRun)
    with state.lock:
        if state.markers is None:
            found = {}
            for name in restore_of(ctx).members:
                res = ctx.targets[name].query(f"cat {MARKER}", ok_codes=None)
                found[name] = res.stdout.strip() if res.exited == 0 else ""
            state.markers = found
        return state.markers


def restore_needed(ctx: StepContext) -> bool:
    """Any control plane not restored from this snapshot: all of them are (one cluster)."""
    sha = restore_of(ctx).sha256
    return any(m != sha for m in _markers(ctx).values())


def _count(fact: Fact | None) -> int:
    """The number `staticpods.count` printed (0 when nothing was read)."""
    return int((fact.stdout.strip() if fact else "") or 0)


@dataclass
class StaticPodsParked(Resource[Host]):
    """The control plane's static pods are stopped (manifests parked) while a restore is due."""

    needed: bool

    @property
    def key(self) -> str:
        return "static-pods:parked"

    def probe(self) -> str:
        return staticpods.count(etcdcli.MANIFESTS)

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        running = _count(fact)
        if not self.needed or running == 0:
            return None
        return Change(
            self.key, "stop", f"park {running} static-pod manifest(s) in {staticpods.PARKED}"
        )

    def apply(self, host: Host) -> None:
        host.run(staticpods.park(), timeout=120)


@dataclass
class RestoredData(Resource[Host]):
    """The host's etcd data dir holds the snapshot, restored for this member."""

    name: str
    restore: Restore
    needed: bool

    @property
    def key(self) -> str:
        return f"etcd-data:{etcdcli.DATA_DIR}"

    def probe(self) -> str:
        return f"cat {MARKER}"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        r = self.restore
        # this member holds the snapshot already (e.g. a run interrupted after it)
        if not self.needed or (fact is not None and fact.stdout.strip() == r.sha256):
            return None
        return Change(
            self.key,
            "restore",
            f"snapshot restore {r.snapshot.name} as {self.name} of "
            f"{len(r.members)} member(s); old data kept as {etcdcli.DATA_DIR}.before-restore-*",
        )

    def apply(self, host: Host) -> None:
        if host.query(f"test -e {etcdcli.MANIFESTS}/etcd.yaml", ok_codes=None).exited == 0:
            raise StepFailed(f"{self.name}: etcd is not stopped (its manifest is in place)")
        r = self.restore
        upload = f"{etcdcli.WORK_DIR}/restore.db"
        staging = f"{etcdcli.DATA_DIR}-runbook-restore"
        host.run(f"install -d -m 0700 {etcdcli.WORK_DIR}")
        host.write_file(upload, r.snapshot, mode=0o600, backup=False)  # streamed, not in memory
        got = host.query(f"sha256sum {shlex.quote(upload)}").stdout.split()[0]
        if got != r.sha256:
            raise StepFailed(f"{self.name}: uploaded snapshot differs (sha256 {got})")
        ip = r.members[self.name]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        restore = etcdcli.snapshot(
            "restore",
            upload,
            f"--name={self.name}",
            f"--initial-cluster={etcdcli.initial_cluster(r.members)}",
            f"--initial-cluster-token={r.token}",
            f"--initial-advertise-peer-urls={etcdcli.peer_url(ip)}",
            f"--data-dir={staging}",
        )
        d = etcdcli.DATA_DIR
        host.run(
            f"set -e; rm -rf {staging}; {restore}; "
            f"if [ -e {d} ]; then mv {d} {d}.before-restore-{stamp}; fi; "
            f"mv {staging} {d}; echo {r.sha256} > {MARKER}; rm -f {shlex.quote(upload)}",
            timeout=600,
        )


@dataclass
class StaticPodsRunning(Resource[Host]):
    """No parked manifests left: the static pods run (after a restore, or an interrupted one)."""

    @property
    def key(self) -> str:
        return "static-pods:running"

    def probe(self) -> str:
        return staticpods.count(staticpods.PARKED)

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        parked = _count(fact)
        if parked == 0:
            return None
        return Change(self.key, "start", f"{parked} manifest(s) back to {etcdcli.MANIFESTS}")

    def apply(self, host: Host) -> None:
        host.run(staticpods.unpark())


class RestoreStopStep(Step):
    name = "restore-stop"
    title = "stop etcd and the API server on every control plane (manifests parked)"
    all_or_nothing = True

    def target_names(self, ctx: StepContext) -> list[str]:
        return list(restore_of(ctx).members)

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        # etcd-client on every member, installed before anything stops
        return [Packages([etcdcli.PACKAGE]), StaticPodsParked(restore_needed(ctx))]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        confirm(ctx)
        return None


def confirm(ctx: StepContext) -> None:
    """The typed confirmation, once per run (`--yes` does not give it; `--confirm NAME` does)."""
    state = ctx.run.of(RestoreRun)
    if state.confirmed:
        return
    r = restore_of(ctx)
    ctx.ui.typed_checkpoint(
        f"Restore {r.snapshot} ({r.sha256[:12]}) on {', '.join(r.members)}: the cluster "
        "API is DOWN until every member is back, and every change since the snapshot is "
        f"LOST. Type the cluster name ({r.cluster}) to go on.",
        expected=r.cluster,
        given=state.confirm,
    )
    state.confirmed = True


class RestoreDataStep(Step):
    name = "restore-data"
    title = "etcd snapshot restore on every control plane (same cluster, new data dirs)"
    all_or_nothing = True

    def target_names(self, ctx: StepContext) -> list[str]:
        return list(restore_of(ctx).members)

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        return [RestoredData(target, restore_of(ctx), restore_needed(ctx))]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        confirm(ctx)  # a resumed run (pods already parked) has not asked yet
        return None


class RestoreStartStep(Step):
    name = "restore-start"
    title = "start the static pods again; /readyz on every control plane and through the VIP"

    def target_names(self, ctx: StepContext) -> list[str]:
        return hosts_with(ctx, "control-plane") or list(restore_of(ctx).members)

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        return [StaticPodsRunning()]

    def verify(self, ctx: StepContext, target: str) -> None:
        wait_apiserver_ready(ctx, target)

    def verify_all(self, ctx: StepContext, targets: Sequence[str]) -> None:
        first = ctx.inventory.first_control_plane.name
        res = ctx.targets[first].query(f"{KUBECTL} get --raw=/readyz", ok_codes=None)
        if res.stdout.strip() != "ok":
            raise StepFailed(
                f"the API does not answer /readyz through {ctx.inventory.control_plane_endpoint}"
            )


def restore_steps() -> list[Step]:
    return [RestoreStopStep(), RestoreDataStep(), RestoreStartStep()]
