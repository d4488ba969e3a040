"""Step 7 — join: other control planes (one at a time), then workers, through the VIP.

Fresh credentials for every join: `kubeadm token create --print-join-command` and, for control
planes, `kubeadm init phase upload-certs --upload-certs` (its key lives 2 h). They never touch
argv: the host gets a JoinConfiguration file (mode 0600, on tmpfs, over stdin) that is deleted
right after `kubeadm join`, and the token is deleted from the cluster after use.

Done when /etc/kubernetes/kubelet.conf exists AND the node is in `kubectl get nodes`; either one
alone is a half-done join a person must look at, so the step refuses to guess.
"""

from __future__ import annotations

import contextlib
import shlex
from dataclasses import dataclass

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change
from ..core.remote import Fact, Host, HostUnreachable
from ..core.resources import File, Resource
from ..render.k8sfiles import (
    APISERVER_MANIFEST,
    APISERVER_PATCH,
    JOIN_CONFIG_PATH,
    KUBELET_CONF,
    apiserver_patch,
    kubeadm_join_config,
)
from ._k8s import NODE_WAIT_S, Cluster
from ._select import hosts_with

JOIN_TIMEOUT_S = 900  # kubeadm join (pulls images; a control plane waits for etcd)


@dataclass
class Joined(Resource[Host]):
    """This host is a node of the cluster (joined with its role)."""

    node: str
    cluster: Cluster

    @property
    def key(self) -> str:
        return f"kubeadm-join:{self.node}"

    def probe(self) -> str:
        return f"test -f {KUBELET_CONF} && echo present"

    def _role(self) -> str:
        return self.cluster.ctx.inventory.hosts[self.node].role

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        has_conf = fact is not None and fact.stdout.strip() == "present"
        listed = self.node in self.cluster.nodes()
        if has_conf and listed:
            return None
        if has_conf:
            raise StepFailed(
                f"{self.node}: {KUBELET_CONF} exists but the node is not in the cluster (a "
                "half-done join): run `kubeadm reset -f` on it, then re-run"
            )
        if listed:
            raise StepFailed(
                f"{self.node}: the cluster lists the node but the host has no {KUBELET_CONF} "
                f"(reinstalled?): `kubectl delete node {self.node}` first, then re-run"
            )
        role = self._role()
        creds = "fresh token" + (" + certificate key" if role == "control-plane" else "")
        endpoint = self.cluster.ctx.inventory.control_plane_endpoint
        return Change(self.key, "join", f"kubeadm join as {role} via {endpoint} ({creds})")

    def apply(self, host: Host) -> None:
        inv = self.cluster.ctx.inventory
        control_plane = self._role() == "control-plane"
        creds, cert_key = self.cluster.issue(control_plane=control_plane)
        content = kubeadm_join_config(
            inv,
            self.node,
            token=creds.token,
            ca_cert_hash=creds.ca_cert_hash,
            certificate_key=cert_key,
        )
        path = shlex.quote(JOIN_CONFIG_PATH)
        try:
            host.write_file(JOIN_CONFIG_PATH, content.encode(), mode=0o600, backup=False)
            with self.cluster.ctx.ui.waiting(
                f"{self.node}: kubeadm join and the node in `kubectl get nodes`",
                JOIN_TIMEOUT_S + NODE_WAIT_S,
            ):
                host.run(
                    f"kubeadm join --config {path}; rc=$?; rm -f {path}; exit $rc",
                    timeout=JOIN_TIMEOUT_S,
                )
                self.cluster.wait_listed(self.node)
        finally:
            with contextlib.suppress(HostUnreachable):
                host.run(f"rm -f {path}", ok_codes=None)
            self.cluster.revoke(creds.token)


class JoinStep(Step):
    """Joins the hosts of one role; control planes strictly one after another (etcd grows by one
    member at a time), workers in parallel."""

    name = "join"

    def __init__(self, role: str = "control-plane") -> None:
        if role not in ("control-plane", "worker"):
            raise ValueError(f"JoinStep joins control planes or workers, not {role}")
        self.role = role
        self.serial = role == "control-plane"
        self.name = "join" if role == "control-plane" else "join-workers"
        what = "control planes, one at a time" if self.serial else "workers"
        self.title = f"kubeadm join of the {what} through the VIP (fresh credentials each)"

    def target_names(self, ctx: StepContext) -> list[str]:
        first = ctx.inventory.first_control_plane.name
        return [n for n in hosts_with(ctx, self.role) if n != first]

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        joined = Joined(target, Cluster.of(ctx))
        if self.role != "control-plane":
            return [joined]
        return [File(APISERVER_PATCH, apiserver_patch(ctx.inventory, target)), joined]

    def verify(self, ctx: StepContext, target: str) -> None:
        cluster = Cluster.of(ctx)
        # the list of this run (read at plan time, refreshed after every join) usually has it:
        # only a missing node costs more `kubectl get nodes` (20 workers: 20 fewer calls)
        if target not in cluster.nodes():
            cluster.wait_listed(target)
        if self.role == "control-plane":
            ip = str(ctx.inventory.hosts[target].private_ip)
            res = ctx.targets[target].query(
                f"grep -q -- --advertise-address={ip} {APISERVER_MANIFEST}", ok_codes=None
            )
            if res.exited != 0:
                raise StepFailed(f"{target}: {APISERVER_MANIFEST} does not advertise its own {ip}")
