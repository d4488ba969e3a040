"""Kubernetes tier tasks: cluster.init, join, weave, admin-user, certs."""

from __future__ import annotations

from invoke import task
from invoke.context import Context

from ._common import STEP_HELP, not_built

ISSUE = "issue 5"


@task(help=STEP_HELP, iterable=["host"])
def init(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Step 6: kubeadm init on the first control plane (never on an initialised host)."""
    not_built("cluster.init", ISSUE)()


@task(help=STEP_HELP, iterable=["host"])
def join(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Step 7: join control planes (one at a time) and workers, fresh credentials each time."""
    not_built("cluster.join", ISSUE)()


@task(help=STEP_HELP, iterable=["host"])
def weave(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Step 8: the CNI (Weave with IPALLOC_RANGE = pod subnet; Calico/Flannel selectable)."""
    not_built("cluster.weave", ISSUE)()


@task(name="admin-user", help=STEP_HELP, iterable=["host"])
def admin_user(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Step 9: admin ServiceAccount, cluster-admin binding and an explicit token Secret."""
    not_built("cluster.admin-user", ISSUE)()


@task(help=STEP_HELP, iterable=["host"])
def certs(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
) -> None:
    """Step 10: kubecfg.crt/.key/.p12 from the admin kubeconfig (password never in argv)."""
    not_built("cluster.certs", ISSUE)()
