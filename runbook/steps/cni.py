"""Step 8 — the pod network (`inv cluster.cni`): Weave as in the post, Calico or Flannel.

The manifest is fetched by the runbook (URL from the inventory, default the pinned upstream
release), patched so the CNI uses the inventory's pod subnet — Weave's default 10.32.0.0/12 is
the post's collision with the Hetzner route — installed as a file and applied with kubectl.
Weave Net is archived (2.8.1, 2021): applying it is a checkpoint. Verify: every node Ready.

With `kubernetes.api_dns_name`, CoreDNS gets a `hosts` entry for it on the VIP (`CorednsApiHost`):
pods resolve the API name as the hosts do through /etc/hosts (inside `dns_domain` CoreDNS would
answer NXDOMAIN; `inv validate` warns about that case).
"""

from __future__ import annotations

import shlex
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change, TargetPlan
from ..core.remote import Fact, Host
from ..core.resources import File, Resource, unified_diff
from ..render.k8sfiles import (
    CNI_DAEMONSETS,
    CNI_MANIFEST_PATH,
    COREDNS_MANIFEST_PATH,
    cni_manifest_url,
    coredns_configmap,
    corefile_with_api_host,
    patch_cni_manifest,
)
from ._k8s import KUBECTL, Cluster, KubectlApplied
from ._select import hosts_with

READY_WAIT_S = 300
FETCH_TIMEOUT_S = 30

WEAVE_WARNING = (
    "Weave Net is archived: its last release is 2.8.1 (2021), it gets no fixes and its "
    "cloud.weave.works installer is gone. The runbook installs 2.8.1 from the GitHub release "
    "with IPALLOC_RANGE = the pod subnet, as the post does. For a maintained CNI set "
    "kubernetes.cni to calico or flannel. Install Weave anyway?"
)


@dataclass
class CorednsApiHost(Resource[Host]):
    """The API DNS name → VIP in CoreDNS's Corefile (ConfigMap kube-system/coredns), applied
    with kubectl on the first control plane; CoreDNS's `reload` plugin picks it up."""

    name: str
    vip: str

    @property
    def key(self) -> str:
        return "coredns:api-host"

    def probe(self) -> str:
        path = shlex.quote("jsonpath={.data.Corefile}")
        return f"{KUBECTL} -n kube-system get configmap coredns -o {path}"

    def _wanted(self, fact: Fact | None) -> tuple[str, str]:
        if fact is None or fact.rc != 0 or not fact.stdout.strip():
            raise StepFailed("ConfigMap kube-system/coredns not found (kubeadm makes it at init)")
        return fact.stdout, corefile_with_api_host(fact.stdout, self.name, self.vip)

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        current, wanted = self._wanted(fact)
        if current.rstrip("\n") == wanted.rstrip("\n"):
            return None
        diff = unified_diff(current, wanted, "Corefile (cluster)", "Corefile (wanted)")
        return Change(self.key, "update", f"{self.name} -> {self.vip} in CoreDNS", diff)

    def apply(self, host: Host) -> None:
        _, wanted = self._wanted(host.probe(self.probe()))
        host.write_file(COREDNS_MANIFEST_PATH, coredns_configmap(wanted).encode(), mode=0o600)
        host.run(f"{KUBECTL} apply -f {COREDNS_MANIFEST_PATH}", timeout=120)


def fetch(url: str) -> str:
    """The manifest text (http(s) or file:); a clear failure instead of a traceback."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as resp:
            return str(resp.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise StepFailed(f"cannot fetch the CNI manifest {url}: {exc}") from exc


@dataclass
class CniRun:
    """Per run: the CNI manifest, fetched and patched once."""

    manifest: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def manifest(ctx: StepContext) -> str:
    """Fetched and patched once per run."""
    state = ctx.run.of(CniRun)
    with state.lock:
        if state.manifest is None:
            url = cni_manifest_url(ctx.inventory)
            state.manifest = patch_cni_manifest(ctx.inventory, fetch(url))
        return state.manifest


class CniStep(Step):
    name = "cni"
    title = (
        "pod network: the CNI manifest with the pod subnet, applied; the API name in CoreDNS; "
        "every node Ready"
    )

    def target_names(self, ctx: StepContext) -> list[str]:
        first = ctx.inventory.first_control_plane.name
        return [first] if first in hosts_with(ctx, "control-plane") else []

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        if ctx.run.render:
            return []  # upstream content: `inv render` fetches nothing from the internet
        Cluster.of(ctx).require_initialised()
        cni = ctx.inventory.kubernetes.cni
        namespace, daemonset = CNI_DAEMONSETS[cni]
        file = File(CNI_MANIFEST_PATH, manifest(ctx), mode=0o600)
        res: list[Resource] = [
            file,
            KubectlApplied(
                cni, CNI_MANIFEST_PATH, [f"daemonset/{daemonset}"], namespace, watch=[file.key]
            ),
        ]
        k8s = ctx.inventory.kubernetes
        if k8s.api_dns_name:
            name = k8s.api_dns_name.lower().rstrip(".")
            res.append(CorednsApiHost(name, str(ctx.inventory.load_balancer.vip)))
        return res

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        applies = any(c.action == "apply" for p in plans for c in p.changes)
        if ctx.inventory.kubernetes.cni == "weave" and applies:
            return WEAVE_WARNING
        return None

    def verify(self, ctx: StepContext, target: str) -> None:
        cluster = Cluster.of(ctx)
        nodes = cluster.nodes(refresh=True)
        cluster.wait_ready(
            sorted(nodes), timeout=READY_WAIT_S, what=f"{len(nodes)} node(s) becoming Ready"
        )
        wanted = [h.name for h in ctx.inventory.hosts_with_role("control-plane", "worker")]
        missing = [n for n in wanted if n not in nodes]
        if missing:
            ctx.ui.warn(f"not joined yet: {', '.join(missing)} (inv cluster.join)")
        else:
            ctx.ui.print(f"all {len(wanted)} nodes Ready", style="green")
