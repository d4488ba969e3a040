"""Day-2 tasks: `cluster.backup`, `cluster.restore` (etcd snapshots), `cluster.upgrade`,
`cluster.remove`, `cluster.renew-certs` and the top-level `patch`.

Registered into the `cluster` collection by `runbook.tasks.namespace` (kept apart from
`cluster.py`, the build steps).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from invoke import task
from invoke.context import Context
from invoke.exceptions import Exit

from ..core.console import Ui
from ..core.engine import RunState
from ..inventory import Inventory
from . import _common as common

if TYPE_CHECKING:
    from ..steps._repocheck import RepoTarget
    from ..steps.upgrade import ClusterVersions


@task(
    help={k: v for k, v in common.STEP_HELP.items() if k != "host"},
)
def backup(
    c: Context,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """etcd snapshot of the first control plane, checked (snapshot status: etcdutl, else
    etcdctl 3.4), copied to .runbook/CLUSTER/backups/ (0600); keeps kubernetes.backup.keep."""
    from ..steps.backup import BackupStep

    ui = common.new_ui(yes=yes, verbose=verbose)
    step = BackupStep()
    common.execute(c, [step], task="cluster.backup", roles=["control-plane"],
                   dry_run=dry_run, yes=yes, verbose=verbose,
                   accept_new_host_keys=accept_new_host_keys, ui=ui)  # fmt: skip
    snap = step.snapshot
    if dry_run or snap is None or snap.saved is None or snap.status is None:
        return
    st = snap.status
    ui.print(
        f"snapshot: {snap.saved} (mode 600; revision {st.revision}, {st.total_keys} keys, "
        f"{st.total_size} bytes)"
    )
    for old in snap.pruned:
        ui.print(f"pruned: {old}")


@task(
    help={
        **{k: v for k, v in common.STEP_HELP.items() if k != "host"},
        "snapshot": "Local snapshot file (from `inv cluster.backup`) to restore on every control "
        "plane.",
        "confirm": "The cluster name, typed: confirms the restore without a prompt (--yes does "
        "not).",
    },
)
def restore(
    c: Context,
    snapshot: str = "",
    confirm: str | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """kubeadm's etcd restore on every control plane: stop static pods everywhere, snapshot
    restore (etcdutl, else etcdctl 3.4), start again (typed confirmation; every change since
    the snapshot is lost)."""
    from ..steps.restore import Restore, RestoreRun, restore_steps
    from ..tools import snapshots

    ui = common.new_ui(yes=yes, verbose=verbose)
    path = Path(snapshot).expanduser()
    if not snapshot or not path.is_file():
        raise common.fail_input(ui, [f"--snapshot: {snapshot or '(missing)'}: no such file"])
    try:
        digest = snapshots.sha256(path)
    except OSError as exc:
        raise common.fail_input(ui, [f"--snapshot: {path}: {exc.strerror}"]) from None
    inv = common.load(c, ui)
    members = {h.name: str(h.private_ip) for h in inv.hosts_with_role("control-plane")}
    plan = Restore(path.resolve(), digest, inv.cluster.name, members)
    common.execute(c, restore_steps(), task="cluster.restore", roles=["control-plane"],
                   host=list(members), dry_run=dry_run, yes=yes, verbose=verbose,
                   accept_new_host_keys=accept_new_host_keys, ui=ui,
                   run=RunState().given(RestoreRun(plan, confirm)))  # fmt: skip


@task(help={k: v for k, v in common.STEP_HELP.items() if k != "host"})
def upgrade(
    c: Context,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Upgrade Kubernetes to the inventory's kubernetes.version (one minor at a time): the new
    minor's package repository tested on the first control plane (exit 2 if missing), etcd
    backup, package repository, kubeadm upgrade per control plane (drained in HAProxy), then
    kubelet/kubectl per node (drain, upgrade, uncordon). A re-run changes nothing."""
    from ..core.engine import Step
    from ..steps.backup import BackupStep
    from ..steps.upgrade import (
        UpgradeControlPlaneStep,
        UpgradeKubeletStep,
        UpgradeRepoStep,
        UpgradeRun,
    )

    ui = common.new_ui(yes=yes, verbose=verbose)
    inv = common.load(c, ui)
    versions, target = upgrade_preflight(inv, ui, accept_new_host_keys=accept_new_host_keys)
    steps: list[Step] = [] if versions.at(target.version) else [BackupStep()]
    steps += [UpgradeRepoStep(), UpgradeControlPlaneStep(), UpgradeKubeletStep()]
    run = RunState().given(UpgradeRun(target=(target.version, target.packages["kubeadm"])))
    names = [h.name for h in inv.hosts_with_role("control-plane", "worker", "lb")]
    common.execute(c, steps, task="cluster.upgrade", host=names, dry_run=dry_run, yes=yes,
                   verbose=verbose, accept_new_host_keys=accept_new_host_keys, ui=ui,
                   run=run)  # fmt: skip


def upgrade_preflight(
    inv: Inventory, ui: Ui, *, accept_new_host_keys: bool = False
) -> tuple[ClusterVersions, RepoTarget]:
    """Read-only, on the first control plane, before any host is touched (also in --dry-run):
    the cluster's versions, the skew rule (one minor at a time, never down) and the new minor's
    package repository tested in isolation (`_repocheck`). A skip, a downgrade or a repository
    that is missing or lacks the packages is bad input (exit 2); an unreadable cluster or a
    repository the host cannot reach (network) exit 1."""
    from ..core.engine import StepFailed
    from ..core.remote import HostUnreachable, connect_all
    from ..render.k8sfiles import apt_source
    from ..steps._repocheck import RepositoryUnreachable, RepositoryUnusable, check_repository
    from ..steps.upgrade import read_versions
    from ..tools.k8sversions import SkewError, check_step

    first = inv.first_control_plane.name
    key = f"{inv.path}: kubernetes.version {inv.kubernetes.version}"
    host = connect_all(inv, [first], dry_run=True, accept_new_host_keys=accept_new_host_keys,
                       log=ui.command)[first]  # fmt: skip
    try:
        try:
            versions = read_versions(host)
        except (HostUnreachable, StepFailed) as exc:
            ui.error(f"cannot read the cluster's versions on {first}: {exc}")
            raise Exit(code=common.EXIT_FAILED) from None
        try:
            check_step(versions.control_plane, inv.kubernetes.minor)
        except SkewError as exc:
            raise common.fail_input(ui, [f"{key}: {exc}"]) from None
        try:
            target = check_repository(host, apt_source(inv), inv.kubernetes.minor)
        except RepositoryUnusable as exc:
            raise common.fail_input(
                ui, [f"{key}: {exc}", "nothing was changed on any host"]
            ) from None
        except HostUnreachable as exc:
            ui.error(f"cannot test the package repository on {first}: {exc}")
            raise Exit(code=common.EXIT_FAILED) from None
        except RepositoryUnreachable as exc:  # a fault (exit 1), not bad input
            ui.error(f"{exc}; nothing was changed on any host")
            raise Exit(code=common.EXIT_FAILED) from None
    finally:
        host.close()
    ui.info(
        f"cluster {versions.control_plane} -> kubernetes.version {inv.kubernetes.version}: "
        f"repository v{inv.kubernetes.version} found, newest {target.version} "
        f"(tested on {first}, nothing written)"
    )
    return versions, target


@task(
    help={
        **common.STEP_HELP,
        "host": "The control plane or worker to remove (exactly one; an inventory name).",
    },
    iterable=["host"],
)
def remove(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Remove one node: out of HAProxy's rotation (control planes), drain, etcd member removed
    (never breaking quorum), kubeadm reset, kubectl delete node. `cluster.join --host` re-joins."""
    from ..steps.remove import RemoveStep, RemoveToolsStep

    ui = common.new_ui(yes=yes, verbose=verbose)
    inv = common.load(c, ui)
    names = common.hosts_for(inv, ui, host or [], roles=["control-plane", "worker"],
                             task="cluster.remove")  # fmt: skip
    if len(host or []) != 1:
        raise common.fail_input(ui, ["--host: name exactly one control plane or worker"])
    name = names[0]
    cps = [h.name for h in inv.hosts_with_role("control-plane")]
    if cps == [name]:
        raise common.fail_input(ui, [f"--host {name}: the last control plane cannot be removed"])
    connect = list(dict.fromkeys([name, *cps, *(h.name for h in inv.hosts_with_role("lb"))]))
    common.execute(c, [RemoveToolsStep(name), RemoveStep(name)], task="cluster.remove", host=[name],
                   roles=["control-plane", "worker"], dry_run=dry_run, yes=yes, verbose=verbose,
                   accept_new_host_keys=accept_new_host_keys, ui=ui,
                   also_connect=lambda _inv: connect)  # fmt: skip


@task(
    name="renew-certs",
    help={
        **common.STEP_HELP,
        "host": "Limit to this control plane (repeatable).",
        "min_days": "Renew a control plane whose soonest certificate expires within this many "
        "days (default 30; 366 renews certificates kubeadm just issued).",
        "password_env": "Environment variable with the kubecfg.p12 password (as cluster.certs).",
    },
    iterable=["host"],
)
def renew_certs(
    c: Context,
    host: list[str] | None = None,
    min_days: int = 30,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
    password_env: str = "RUNBOOK_P12_PASSWORD",
) -> None:
    """Renew kubeadm's certificates one control plane at a time (drained in HAProxy, static pods
    restarted, /readyz back), then the runbook's kubecfg.crt/.key/.p12."""
    from ..steps.certs import CertsStep
    from ..steps.renew_certs import RenewCertsStep

    ui = common.new_ui(yes=yes, verbose=verbose)
    if min_days < 1:
        raise common.fail_input(ui, [f"--min-days: {min_days}: must be at least 1"])
    inv = common.load(c, ui)
    lbs = [h.name for h in inv.hosts_with_role("lb")]
    common.execute(c, [RenewCertsStep(min_days), CertsStep(password_env=password_env)],
                   task="cluster.renew-certs", host=host, roles=["control-plane"],
                   dry_run=dry_run, yes=yes, verbose=verbose,
                   accept_new_host_keys=accept_new_host_keys, ui=ui,
                   also_connect=lambda i: [i.first_control_plane.name, *lbs])  # fmt: skip


@task(help=common.step_help(), iterable=["host"])
def patch(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Rolling OS updates, one host at a time: the standby LB, a planned hand-over and the former
    holder, the control planes (out of HAProxy's rotation), the workers; each drained, upgraded
    (held packages stay held), rebooted when required, Ready, uncordoned."""
    from ..steps.patch import PatchStep

    ui = common.new_ui(yes=yes, verbose=verbose)
    inv = common.load(c, ui)
    everyone = list(inv.hosts)  # the door to kubectl, the LBs' rotation and the VIP holder
    common.execute(c, [PatchStep()], task="patch", host=host, dry_run=dry_run, yes=yes,
                   verbose=verbose, accept_new_host_keys=accept_new_host_keys, ui=ui,
                   also_connect=lambda _i: everyone)  # fmt: skip
