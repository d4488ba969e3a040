"""What the Kubernetes steps share: the first control plane as the cluster's door, node state,
fresh join credentials, and `kubectl apply` as an idempotent resource.

Everything cluster-side goes through ``kubectl --kubeconfig /etc/kubernetes/admin.conf`` on the
first control plane, whose admin.conf points at the controlPlaneEndpoint (VIP:6443): every call
therefore also proves the path through the load balancers.
"""

from __future__ import annotations

import json
import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.engine import StepContext, StepFailed
from ..core.plan import Change
from ..core.remote import CommandFailed, Fact, Host, Result, private_writer
from ..core.resources import Resource
from ..core.waiting import poll, wait_until
from ..render.k8sfiles import ADMIN_CONF, JoinCredentials, parse_certificate_key, parse_join_command

KUBECTL = f"kubectl --kubeconfig {ADMIN_CONF}"
# I5: a call through the VIP rides out a hand-over of the VIP (a few seconds without a holder, or
# the cloud still routing to the old one) instead of failing the run: kubectl's words for "no
# connection", retried every second until the deadline
VIP_TRANSIENT = ("Unable to connect to the server", "was refused", "connection reset by peer")
VIP_DEADLINE_S = 30.0
NODE_WAIT_S = 120  # a joined node appears in `kubectl get nodes`


def through_vip(
    host: Host, cmd: str, *, mutating: bool = False, timeout: float = 120, deadline_s: float = 0
) -> Result:
    """Run a kubectl command whose way to the apiserver is the VIP; retry while the answer is a
    connection failure, until `deadline_s` (default VIP_DEADLINE_S). The caller judges the last
    result (exit code and output)."""
    call = host.run if mutating else host.query

    def settled(res: Result) -> bool:
        transient = any(w in res.stderr + res.stdout for w in VIP_TRANSIENT)
        return res.exited == 0 or not transient

    return poll(
        lambda: call(cmd, timeout=timeout, ok_codes=None),
        seconds=deadline_s or VIP_DEADLINE_S,
        interval=1,
        done=settled,
    )


@dataclass(frozen=True)
class NodeInfo:
    name: str
    ready: bool
    version: str
    unschedulable: bool = False  # cordoned


def parse_nodes(text: str) -> dict[str, NodeInfo]:
    """`kubectl get nodes -o json` → name → readiness and kubelet version."""
    data = json.loads(text or "{}")
    out: dict[str, NodeInfo] = {}
    for item in data.get("items") or []:
        name = item["metadata"]["name"]
        conds = (item.get("status") or {}).get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)
        version = ((item.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")
        cordoned = bool((item.get("spec") or {}).get("unschedulable"))
        out[name] = NodeInfo(name, ready, version, cordoned)
    return out


class Cluster:
    """The cluster as seen from the first control plane (one per run, shared by the steps)."""

    def __init__(self, ctx: StepContext) -> None:
        self.ctx = ctx
        self.name = ctx.inventory.first_control_plane.name
        self._lock = threading.Lock()
        self._nodes: dict[str, NodeInfo] | None = None

    @classmethod
    def of(cls, ctx: StepContext) -> Cluster:
        return ctx.run.of(Cluster, lambda: cls(ctx))

    @property
    def host(self) -> Host:
        host = self.ctx.targets.get(self.name)
        if host is None:
            raise StepFailed(f"{self.name} (the first control plane) is not connected")
        return host

    def initialised(self) -> bool:
        return self.host.query(f"test -f {ADMIN_CONF}", ok_codes=None).exited == 0

    def require_initialised(self) -> None:
        if not self.initialised():
            raise StepFailed(f"{self.name} has no {ADMIN_CONF}: run `inv cluster.init` first")

    def nodes(self, *, refresh: bool = False) -> dict[str, NodeInfo]:
        with self._lock:
            if self._nodes is None or refresh:
                self.require_initialised()
                res = through_vip(self.host, f"{KUBECTL} get nodes -o json")
                if res.exited != 0:
                    raise StepFailed(
                        f"kubectl get nodes on {self.name} failed: {res.stderr.strip()[-300:]}"
                    )
                self._nodes = parse_nodes(res.stdout)
            return dict(self._nodes)

    def issue(self, *, control_plane: bool) -> tuple[JoinCredentials, str | None]:
        """A fresh bootstrap token (and certificate key for control planes), masked at once."""
        with self._lock:
            out = self.host.run("kubeadm token create --print-join-command", timeout=120).stdout
            creds = parse_join_command(out)
            self.ctx.ui.masker.register(creds.token)
            key = None
            if control_plane:
                up = self.host.run("kubeadm init phase upload-certs --upload-certs", timeout=300)
                key = parse_certificate_key(up.stdout)
                self.ctx.ui.masker.register(key)
            return creds, key

    def revoke(self, token: str) -> None:
        """Delete a used token by its public id (the part before the dot is not secret)."""
        token_id = token.split(".", 1)[0]
        self.host.run(f"kubeadm token delete {shlex.quote(token_id)}", ok_codes=None)

    def wait_listed(self, name: str) -> None:
        """Poll until `name` is in `kubectl get nodes` (after its join); StepFailed after
        NODE_WAIT_S."""
        wait_until(
            lambda: name in self.nodes(refresh=True),
            seconds=NODE_WAIT_S,
            interval=2,
            failure=f"{name} joined but is not in `kubectl get nodes`",
        )

    def wait_ready(self, names: Sequence[str], *, timeout: float, what: str) -> dict[str, NodeInfo]:
        """Poll until every node in `names` is Ready, with a progress bar; StepFailed on timeout."""
        waiting: list[str] = list(names)
        with self.ctx.ui.wait(what, timeout) as progress:
            task = progress.add_task(what, total=len(names))

            def all_ready() -> dict[str, NodeInfo]:
                nodes = self.nodes(refresh=True)
                waiting[:] = [n for n in names if n not in nodes or not nodes[n].ready]
                progress.update(task, completed=len(names) - len(waiting))
                return nodes

            return wait_until(
                all_ready,
                seconds=timeout,
                interval=2,
                done=lambda _: not waiting,
                failure=lambda: f"not Ready after {timeout:.0f} s: {', '.join(waiting)}",
            )


def _short(name: str) -> str:
    """`daemonset.apps/weave-net` → `daemonset/weave-net` (what `kubectl get -o name` prints)."""
    kind, _, obj = name.strip().partition("/")
    return f"{kind.split('.')[0].lower()}/{obj}"


@dataclass
class KubectlApplied(Resource[Host]):
    """`kubectl apply -f PATH` on the first control plane when the objects are missing or the
    manifest file changed in this run (`watch`). `objects` are `kind/name` for `kubectl get`."""

    label: str
    path: str
    objects: Sequence[str]
    namespace: str = "kube-system"
    watch: Sequence[str] = ()

    @property
    def key(self) -> str:
        return f"kubectl-apply:{self.label}"

    def probe(self) -> str:
        objs = " ".join(shlex.quote(o) for o in self.objects)
        return f"{KUBECTL} -n {shlex.quote(self.namespace)} get {objs} -o name"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        found = {_short(ln) for ln in (fact.stdout if fact else "").splitlines() if ln.strip()}
        missing = [o for o in self.objects if o.lower() not in found]
        changed = [k for k in self.watch if k in host.touched]
        if not missing and not changed:
            return None
        why = f"missing {', '.join(missing)}" if missing else f"changed: {', '.join(changed)}"
        return Change(self.key, "apply", f"kubectl apply -f {self.path} ({why})")

    def apply(self, host: Host) -> None:
        # `kubectl apply` is idempotent: a transient "Unable to connect to the server" (an
        # apiserver behind the VIP still settling, a VIP hand-over) is retried, else it fails
        cmd = f"{KUBECTL} apply -f {shlex.quote(self.path)}"
        res = through_vip(host, cmd, mutating=True, timeout=300)
        if res.exited != 0:
            raise CommandFailed(host.name, cmd, res.exited, res.stderr or res.stdout)


def write_private(path: Path, data: bytes) -> None:
    """Create/replace a local file readable by the owner only (0600 from the first byte)."""
    with private_writer(path) as fh:
        fh.write(data)
