"""Step 8 — the pod network (`inv cluster.weave`): Weave as in the post, Calico or Flannel.

The manifest is fetched by the runbook (URL from the inventory, default the pinned upstream
release), patched so the CNI uses the inventory's pod subnet — Weave's default 10.32.0.0/12 is
the post's collision with the Hetzner route — installed as a file and applied with kubectl.
Weave Net is archived (2.8.1, 2021): applying it is a checkpoint. Verify: every node Ready.
"""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Sequence

from ..engine import Step, StepContext, StepFailed
from ..k8sfiles import CNI_DAEMONSETS, CNI_MANIFEST_PATH, cni_manifest_url, patch_cni_manifest
from ..plan import TargetPlan
from ..resources import File, Resource
from ._k8s import Cluster, KubectlApplied
from ._select import hosts_with

READY_WAIT_S = 300
FETCH_TIMEOUT_S = 30
_lock = threading.Lock()

WEAVE_WARNING = (
    "Weave Net is archived: its last release is 2.8.1 (2021), it gets no fixes and its "
    "cloud.weave.works installer is gone. The runbook installs 2.8.1 from the GitHub release "
    "with IPALLOC_RANGE = the pod subnet, as the post does. For a maintained CNI set "
    "kubernetes.cni to calico or flannel. Install Weave anyway?"
)


def fetch(url: str) -> str:
    """The manifest text (http(s) or file:); a clear failure instead of a traceback."""
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_S) as resp:
            return str(resp.read().decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise StepFailed(f"cannot fetch the CNI manifest {url}: {exc}") from exc


def manifest(ctx: StepContext) -> str:
    """Fetched and patched once per run."""
    with _lock:
        if "k8s.cni-manifest" not in ctx.extra:
            url = cni_manifest_url(ctx.inventory)
            ctx.extra["k8s.cni-manifest"] = patch_cni_manifest(ctx.inventory, fetch(url))
        return str(ctx.extra["k8s.cni-manifest"])


class CniStep(Step):
    name = "cni"
    title = "pod network: the CNI manifest with the pod subnet, applied; every node Ready"

    def target_names(self, ctx: StepContext) -> list[str]:
        first = ctx.inventory.first_control_plane.name
        return [first] if first in hosts_with(ctx, "control-plane") else []

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        if ctx.extra.get("render"):
            return []  # upstream content: `inv render` fetches nothing from the internet
        Cluster.of(ctx).require_initialised()
        cni = ctx.inventory.kubernetes.cni
        namespace, daemonset = CNI_DAEMONSETS[cni]
        file = File(CNI_MANIFEST_PATH, manifest(ctx), mode=0o600)
        return [
            file,
            KubectlApplied(
                cni, CNI_MANIFEST_PATH, [f"daemonset/{daemonset}"], namespace, watch=[file.key]
            ),
        ]

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
