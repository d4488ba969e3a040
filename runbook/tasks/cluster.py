"""Kubernetes tier tasks: cluster.init, join, cni (alias weave), admin-user, insecure-api, certs."""

from __future__ import annotations

import sys
from pathlib import Path

from invoke import task
from invoke.context import Context

from ..steps import registry
from . import _common as common

init = common.step_task(
    "cluster.init",
    "Step 6: kubeadm init on the first control plane (never on an initialised host).",
    [registry.INIT],
)

join = common.step_task(
    "cluster.join",
    "Step 7: join control planes (one at a time) and workers, fresh credentials each time.",
    [registry.JOIN, registry.JOIN_WORKERS],
)

cni = common.step_task(
    "cluster.cni",
    "Step 8: the CNI (Weave with IPALLOC_RANGE = pod subnet; Calico/Flannel selectable). "
    "Also named cluster.weave (the post's name).",
    [registry.CNI],
    aliases=["weave"],
)


@task(
    name="admin-user",
    help=common.step_help(
        token_file="Local file for the token (mode 0600; default .runbook/CLUSTER/USER.token "
        "beside the inventory).",
        show="Also print the token (it is never printed otherwise).",
    ),
    iterable=["host"],
)
def admin_user(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
    token_file: str = "",
    show: bool = False,
) -> None:
    """Step 9: admin ServiceAccount, cluster-admin binding and an explicit token Secret."""
    from ..steps.admin_user import AdminUserStep

    ui = common.new_ui(yes=yes, verbose=verbose)
    step = AdminUserStep(Path(token_file).expanduser() if token_file else None)
    common.execute(c, [step], task="cluster.admin-user", host=host, roles=["control-plane"],
                   dry_run=dry_run, yes=yes, verbose=verbose,
                   accept_new_host_keys=accept_new_host_keys, ui=ui)  # fmt: skip
    if dry_run or step.used_path is None or not step.used_path.exists():
        return
    ui.print(f"token: {step.used_path} (mode 600; --show prints it)")
    if show:
        # asked for explicitly: straight to stdout, past the masker
        sys.stdout.write(step.used_path.read_text())
        sys.stdout.flush()


insecure_api = common.step_task(
    "cluster.insecure-api",
    "Optional plain-HTTP API on VIP:port, off by default (load_balancer.insecure_api): "
    "kubectl proxy as a ServiceAccount with the chosen role on each control plane behind "
    "HAProxy; while disabled it removes what an earlier run created.",
    [registry.HAPROXY, registry.INSECURE_API],
)


@task(
    help=common.step_help(
        out="Local directory for kubecfg.crt/.key/.p12 (default .runbook/CLUSTER beside the "
        "inventory).",
        legacy="Export the p12 with -legacy (RC2/3DES) for old importers.",
        password_env="Environment variable holding the p12 password (default "
        "RUNBOOK_P12_PASSWORD); without it you are prompted (TTY), or --yes generates one.",
    ),
    iterable=["host"],
)
def certs(
    c: Context,
    host: list[str] | None = None,
    dry_run: bool = False,
    yes: bool = False,
    verbose: bool = False,
    accept_new_host_keys: bool = False,
    out: str = "",
    legacy: bool = False,
    password_env: str = "RUNBOOK_P12_PASSWORD",
) -> None:
    """Step 10: kubecfg.crt/.key/.p12 from the admin kubeconfig (password never in argv)."""
    from ..steps.certs import CertsStep

    step = CertsStep(
        Path(out).expanduser() if out else None, legacy=legacy, password_env=password_env
    )
    common.execute(c, [step], task="cluster.certs", host=host, roles=["control-plane"],
                   dry_run=dry_run, yes=yes, verbose=verbose,
                   accept_new_host_keys=accept_new_host_keys)  # fmt: skip
