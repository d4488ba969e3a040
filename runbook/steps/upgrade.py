"""Day 2 — upgrade: one Kubernetes minor at a time, the API kept serving.

The operator bumps `kubernetes.version`; `inv cluster.upgrade` first tries the new minor's
repository on the first control plane alone (`_repocheck`: refused, nothing written, when it is
missing or lacks the packages; its newest patch is the run's target, `UpgradeRun`), then runs
(after an etcd backup):

1. `upgrade-repo` — every control plane and worker gets the package repository of the new minor
   (pkgs.k8s.io has one per minor; the same resource `prepare` manages).
2. `upgrade-control-plane` — one control plane at a time, the first one first: taken out of
   HAProxy's rotation on both balancers (`set server … state drain`), kubeadm unheld, installed at
   the exact version, held; `kubeadm upgrade plan` + `kubeadm upgrade apply vX --yes` on the
   first, `kubeadm upgrade node` on the others; back to `ready` once its `/readyz` answers.
3. `upgrade-kubelet` — one node at a time, control planes first (so no kubelet is ever newer
   than an API server): drained in HAProxy (control planes), `kubectl drain --ignore-daemonsets`,
   on workers kubeadm + `kubeadm upgrade node`, kubelet and kubectl at the exact version (held),
   kubelet restarted, the node reports the new version and Ready, `kubectl uncordon`.
   Verify: every node's kubelet and every API server at the new version, all Ready, none cordoned.

Everything checks the real state first, so a re-run changes nothing and an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change, TargetPlan
from ..core.remote import Fact, Host
from ..core.resources import AptRepo, Resource
from ..core.waiting import wait_until
from ..render.k8sfiles import APISERVER_MANIFEST, apt_source
from ..tools.k8sversions import Version, deb_upstream, exact_package, newest_package
from ._day2 import apiserver_version, set_rotation, wait_apiserver_ready
from ._k8s import KUBECTL, Cluster
from ._select import hosts_with

READY_WAIT_S = 180


@dataclass
class UpgradeRun:
    """Per run: the version to upgrade to and its exact package version, found once."""

    target: tuple[Version, str] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def target_of(ctx: StepContext) -> tuple[Version, str] | None:
    """The run's target version with its exact kubeadm package version: what the task's
    repository test found (`UpgradeRun` given); else the newest patch of the inventory's minor
    in the repository the first control plane sees (None before the repository is switched)."""
    state = ctx.run.of(UpgradeRun)
    with state.lock:
        if state.target is None:
            host = ctx.targets[ctx.inventory.first_control_plane.name]
            res = host.query("apt-cache madison kubeadm", ok_codes=None)
            found = newest_package(res.stdout, ctx.inventory.kubernetes.minor)
            if found is None:
                return None
            state.target = found
        return state.target


def _describe_target(ctx: StepContext) -> str:
    t = target_of(ctx)
    minor = ctx.inventory.kubernetes.version
    return str(t[0]) if t else f"v{minor}.x (newest patch of the {minor} repository)"


def _at_target(ctx: StepContext, version: str) -> bool:
    """`version` (vX.Y.Z) is the target; without a known target: the target minor."""
    try:
        v = Version.parse(version)
    except ValueError:
        return False
    t = target_of(ctx)
    return v == t[0] if t else v.minor == ctx.inventory.kubernetes.minor


def install_exact(host: Host, packages: Sequence[str], version: Version) -> None:
    """Unhold, install the exact version, hold again. Each package's own version
    string (its revision, an epoch) comes from the repository."""
    names = " ".join(shlex.quote(p) for p in packages)
    pins = []
    for p in packages:
        madison = host.query(f"apt-cache madison {shlex.quote(p)}", ok_codes=None).stdout
        exact = exact_package(madison, version)
        if exact is None:
            raise StepFailed(f"{host.name}: the package repository has no {p} {version}")
        pins.append(shlex.quote(f"{p}={exact}"))
    host.run(
        f"apt-mark unhold {names} && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "
        f"--no-install-recommends --allow-change-held-packages -o Dpkg::Options::=--force-confold "
        f"{' '.join(pins)} && apt-mark hold {names}",
        timeout=1800,
    )


def _require_target(ctx: StepContext) -> tuple[Version, str]:
    t = target_of(ctx)
    if t is None:
        raise StepFailed(
            f"no kubeadm 1.{ctx.inventory.kubernetes.minor}.x in the package repository of "
            f"{ctx.inventory.first_control_plane.name} (was upgrade-repo applied?)"
        )
    return t


@dataclass
class ControlPlaneUpgraded(Resource[Host]):
    """This control plane's static pods run the target version."""

    ctx: StepContext
    name: str
    first: bool

    @property
    def key(self) -> str:
        return f"control-plane-version:{self.name}"

    def probe(self) -> str:
        return f"grep -o 'kube-apiserver:v[0-9.]*' {APISERVER_MANIFEST} | head -1"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        current = (fact.stdout if fact else "").strip().partition(":")[2]
        if _at_target(self.ctx, current):
            return None
        how = "kubeadm upgrade plan + apply" if self.first else "kubeadm upgrade node"
        return Change(
            self.key,
            "upgrade",
            f"{how}: {current or '?'} -> {_describe_target(self.ctx)}; out of HAProxy's "
            "rotation (drain) until /readyz answers",
        )

    def apply(self, host: Host) -> None:
        version = _require_target(self.ctx)[0]
        set_rotation(self.ctx, self.name, "drain")
        install_exact(host, ["kubeadm"], version)
        if self.first:
            host.run("kubeadm upgrade plan", timeout=300)
            host.run(f"kubeadm upgrade apply {version} --yes", timeout=1200)
        else:
            host.run("kubeadm upgrade node", timeout=1200)
        wait_apiserver_ready(self.ctx, self.name)
        set_rotation(self.ctx, self.name, "ready")


@dataclass
class KubeletUpgraded(Resource[Host]):
    """This node's kubelet (and kubectl) run the target version; the node is schedulable."""

    ctx: StepContext
    name: str

    @property
    def key(self) -> str:
        return f"kubelet-version:{self.name}"

    def probe(self) -> str:
        return "dpkg-query -W -f='${Package} ${Version}\\n' kubelet kubectl"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        node = Cluster.of(self.ctx).nodes().get(self.name)
        if node is None:
            raise StepFailed(f"{self.name} is not a node of the cluster (`inv cluster.join`)")
        t = target_of(self.ctx)
        debs = dict(
            ln.split(" ", 1) for ln in (fact.stdout if fact else "").splitlines() if " " in ln
        )
        packages_ok = t is None or all(
            deb_upstream(debs.get(p, "")) == t[0] for p in ("kubelet", "kubectl")
        )
        at_target = _at_target(self.ctx, node.version) and packages_ok
        if at_target and not node.unschedulable:
            return None
        if at_target:  # an interrupted run after the kubelet upgrade, before the uncordon
            return Change(self.key, "uncordon", f"{node.version}, but cordoned: uncordon")
        return Change(
            self.key,
            "upgrade",
            f"drain, kubelet+kubectl {node.version} -> {_describe_target(self.ctx)}, "
            "restart kubelet, uncordon",
        )

    def apply(self, host: Host) -> None:
        version = _require_target(self.ctx)[0]
        cluster = Cluster.of(self.ctx)
        control_plane = self.ctx.inventory.hosts[self.name].role == "control-plane"
        q = shlex.quote(self.name)
        change = self.check(host, host.probe(self.probe()))
        if change is not None and change.action == "upgrade":
            if control_plane:  # the kubelet restart restarts its static pods
                set_rotation(self.ctx, self.name, "drain")
            cluster.host.run(f"{KUBECTL} drain {q} --ignore-daemonsets", timeout=600)
            if not control_plane:
                install_exact(host, ["kubeadm"], version)
                host.run("kubeadm upgrade node", timeout=600)
            install_exact(host, ["kubelet", "kubectl"], version)
            host.run("systemctl daemon-reload && systemctl restart kubelet", timeout=120)

        def reports() -> bool:
            node = cluster.nodes(refresh=True).get(self.name)
            return bool(node and node.ready and node.version == str(version))

        wait_until(
            reports,
            seconds=READY_WAIT_S,
            interval=2,
            failure=f"{self.name} did not report {version} and Ready in time",
            ui=self.ctx.ui,
            what=f"{self.name} to report kubelet {version} and Ready",
        )
        if control_plane:
            wait_apiserver_ready(self.ctx, self.name)
            set_rotation(self.ctx, self.name, "ready")
        cluster.host.run(f"{KUBECTL} uncordon {q}", timeout=120)
        cluster.nodes(refresh=True)  # the engine's re-check reads the list: make it current


class UpgradeRepoStep(Step):
    name = "upgrade-repo"
    title = "package repository of the new minor on every Kubernetes host"

    def target_names(self, ctx: StepContext) -> list[str]:
        return hosts_with(ctx, "control-plane", "worker")

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        src = apt_source(ctx.inventory)
        return [AptRepo(src.name, src.line, keyring=src.keyring, key_url=src.key_url)]


class UpgradeControlPlaneStep(Step):
    name = "upgrade-control-plane"
    title = "kubeadm upgrade, one control plane at a time, drained in HAProxy meanwhile"
    serial = True

    def target_names(self, ctx: StepContext) -> list[str]:
        return hosts_with(ctx, "control-plane")

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        first = target == ctx.inventory.first_control_plane.name
        return [ControlPlaneUpgraded(ctx, target, first)]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        return (
            f"Upgrade the control planes to {_describe_target(ctx)}, one at a time (each out "
            "of HAProxy's rotation while its API server restarts)?"
        )


class UpgradeKubeletStep(Step):
    name = "upgrade-kubelet"
    title = "kubelet and kubectl, one node at a time (drain, upgrade, Ready, uncordon)"
    serial = True

    def target_names(self, ctx: StepContext) -> list[str]:
        return hosts_with(ctx, "control-plane") + hosts_with(ctx, "worker")

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        return [KubeletUpgraded(ctx, target)]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        n = sum(1 for p in plans if p.changes)
        return f"Drain and upgrade {n} node(s), one at a time (their pods are evicted)?"

    def verify_all(self, ctx: StepContext, targets: Sequence[str]) -> None:
        t = _require_target(ctx)[0]
        nodes = Cluster.of(ctx).nodes(refresh=True)
        problems = []
        for name in targets:
            n = nodes.get(name)
            if n is None or not n.ready or n.version != str(t) or n.unschedulable:
                problems.append(f"node {name}: {n}")
        for name in hosts_with(ctx, "control-plane"):
            v = apiserver_version(ctx, name)
            if v != str(t):
                problems.append(f"{name}: API server {v or '?'}, not {t}")
        if problems:
            raise StepFailed("not upgraded: " + "; ".join(problems))


@dataclass(frozen=True)
class ClusterVersions:
    """What the cluster runs, read before anything changes (the skew check needs it)."""

    control_plane: Version
    kubelets: dict[str, str]

    def at(self, target: Version) -> bool:
        """Every API server and kubelet runs `target` already."""
        return self.control_plane == target and all(
            v == str(target) for v in self.kubelets.values()
        )


def read_versions(host: Host) -> ClusterVersions:
    """kubeadm-config's kubernetesVersion and the nodes' kubelets."""
    import yaml

    from ._k8s import parse_nodes

    res = host.query(
        f"{KUBECTL} -n kube-system get configmap kubeadm-config "
        "-o 'jsonpath={.data.ClusterConfiguration}'",
        ok_codes=None,
    )
    if res.exited != 0:
        raise StepFailed(f"{host.name}: cannot read kubeadm-config: {res.stderr.strip()[-200:]}")
    try:
        cp = Version.parse(str(yaml.safe_load(res.stdout)["kubernetesVersion"]))
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise StepFailed(f"{host.name}: kubeadm-config has no usable kubernetesVersion") from exc
    nodes = parse_nodes(host.query(f"{KUBECTL} get nodes -o json").stdout)
    return ClusterVersions(cp, {n.name: n.version for n in nodes.values()})
