"""What the day-2 steps share: HAProxy's rotation of a control plane, waiting for its API
server, and another control plane to run kubectl/etcdctl on."""

from __future__ import annotations

import json

from ..core.engine import StepContext, StepFailed
from ..core.waiting import wait_until
from ..render.k8sfiles import ADMIN_CONF
from ..tools import haproxyctl

READY_WAIT_S = 180
CA = "/etc/kubernetes/pki/ca.crt"


def set_rotation(ctx: StepContext, server: str, state: str) -> None:
    """Put a control plane's server in `state` (drain/ready) on every load balancer."""
    for lb in ctx.inventory.hosts_with_role("lb"):
        ctx.targets[lb.name].run(haproxyctl.set_server_state(server, state))


def wait_apiserver_ready(ctx: StepContext, name: str) -> None:
    """Until this control plane's own API server answers /readyz (TLS checked, its own IP)."""
    ip = ctx.inventory.hosts[name].private_ip
    probe = f"curl -s --max-time 3 --cacert {CA} https://{ip}:6443/readyz"
    wait_until(
        lambda: ctx.targets[name].query(probe, ok_codes=None).stdout.strip() == "ok",
        seconds=READY_WAIT_S,
        interval=1,
        failure=f"{name}: the API server is not ready after {READY_WAIT_S} s",
        ui=ctx.ui,
        what=f"{name}'s API server to answer /readyz",
    )


def apiserver_version(ctx: StepContext, name: str) -> str:
    ip = ctx.inventory.hosts[name].private_ip
    res = ctx.targets[name].query(
        f"curl -s --max-time 3 --cacert {CA} https://{ip}:6443/version", ok_codes=None
    )
    try:
        return str(json.loads(res.stdout)["gitVersion"])
    except (ValueError, KeyError, TypeError):
        return ""


def door(ctx: StepContext, leaving: str) -> str:
    """A control plane other than the one leaving, with an admin.conf: where kubectl/etcdctl run."""
    for h in ctx.inventory.hosts_with_role("control-plane"):
        if h.name == leaving or h.name not in ctx.targets:
            continue
        if ctx.targets[h.name].query(f"test -f {ADMIN_CONF}", ok_codes=None).exited == 0:
            return h.name
    raise StepFailed(f"no other initialised control plane to remove {leaving} from")
