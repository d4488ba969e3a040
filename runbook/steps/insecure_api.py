"""The optional insecure-API emulation (`load_balancer.insecure_api`, off by default).

docs/procedure.md, "The insecure port".

The post's `insecure-port: 6080` no longer exists (serving removed in 1.20, flags in 1.24). When
enabled: on the first control plane a ServiceAccount bound to the chosen ClusterRole with an
explicit token Secret; on every control plane that ServiceAccount's kubeconfig (root 0600; the
token comes from the Secret and is compared by checksum, so it never travels back from a host
or shows in a plan) and a `kubectl proxy` unit on the private IP:port whose command line names
the kubeconfig file, never the token; restarted when either changes. A role change deletes the
binding first: a roleRef is immutable. Verify: `GET /api` answers on every private IP:port and
through VIP:port (HAProxy's frontend, `inv lb.haproxy`).

When disabled nothing is created, and what an earlier run created is removed: the unit stopped,
disabled and deleted, the kubeconfig and the manifest deleted, the cluster objects deleted
(only looked up when the manifest says an earlier run applied them: a disabled run costs one
fact-gathering round trip per control plane).
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change, TargetPlan
from ..core.remote import Fact, Host
from ..core.resources import SECRET_MARKER, File, Resource, Service, SystemdReload
from ..core.waiting import poll
from ..render import insecureapifiles as ia
from ..render.k8sfiles import ADMIN_CONF
from ._k8s import KUBECTL, Cluster, KubectlApplied
from ._select import hosts_with

TOKEN_WAIT_S = 60
VERIFY_WAIT_S = 20
VIP_WAIT_S = 30  # HAProxy marks a new server UP after `rise 2` x `inter 1s`


@dataclass
class InsecureApiRun:
    """Per run: the ServiceAccount's token (read once) and whether the cluster was checked."""

    token: str = ""
    initialised: bool = False
    token_lock: threading.Lock = field(default_factory=threading.Lock)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _q(s: str) -> str:
    return shlex.quote(s)


def sa_token(ctx: StepContext, *, wait: bool) -> str:
    """The ServiceAccount's token from its Secret, through the first control plane; masked at
    once and read once per run. `wait`: poll until the token controller filled it in."""
    state = ctx.run.of(InsecureApiRun)
    with state.token_lock:
        if state.token:
            return state.token
        host = Cluster.of(ctx).host
        cmd = (
            f"{KUBECTL} -n {ia.NAMESPACE} get secret {ia.SECRET_NAME} -o jsonpath='{{.data.token}}'"
        )

        def filled() -> str:
            res = host.query(cmd, ok_codes=None)
            return res.stdout.strip() if res.exited == 0 else ""

        b64 = poll(filled, seconds=TOKEN_WAIT_S if wait else 0, interval=1)
        if not b64:
            return ""
        ctx.ui.masker.register(b64)
        token = base64.b64decode(b64).decode()
        ctx.ui.masker.register(token)
        state.token = token
        return token


def _no_token(wait: bool) -> str:
    return ""


def _no_content(token: str) -> str:
    return ""


@dataclass
class TokenKubeconfig(File):
    """A kubeconfig holding the ServiceAccount token: `content` is the rendering with the secret
    marker (what `inv render` shows); the host's file is compared by sha256, never read back."""

    make: Callable[[str], str] = field(default=_no_content)
    token: Callable[[bool], str] = field(default=_no_token)

    def probe(self) -> str:
        q = _q(self.path)
        return f"test -f {q} || exit 3; stat -c '%a %U %G' {q}; sha256sum < {q}"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        what = f"token of Secret {ia.NAMESPACE}/{ia.SECRET_NAME}, content hidden"
        if fact is None or fact.rc == 3:
            return Change(
                self.key, "create", f"mode {self.mode:o} {self.owner}:{self.group}; {what}"
            )
        meta, _, digest = fact.stdout.partition("\n")
        token = self.token(False)
        if not token:
            return Change(
                self.key, "update", "rewritten once the token controller fills the Secret"
            )
        want = hashlib.sha256(self.make(token).encode()).hexdigest()
        if digest.split()[:1] != [want]:
            return Change(self.key, "update", f"token or server changed ({what})")
        wants = [f"{self.mode:o}", self.owner, self.group]
        if meta.split() != wants:
            return Change(self.key, "chmod/chown", f"{meta.strip()} -> {' '.join(wants)}")
        return None

    def apply(self, host: Host) -> None:
        token = self.token(True)
        if not token:
            raise StepFailed(
                f"Secret {ia.NAMESPACE}/{ia.SECRET_NAME} has no token: run the step for the "
                "first control plane (it creates the ServiceAccount and the Secret)"
            )
        # no backup: a copy of an old token is a live credential lying around
        data = self.make(token).encode()
        host.write_file(self.path, data, mode=self.mode, owner=self.owner, group=self.group,
                        backup=False)  # fmt: skip


@dataclass
class BindingRole(Resource[Host]):
    """A ClusterRoleBinding's roleRef is immutable: a binding to another role is deleted, and
    `kubectl apply` (next resource) creates it with the wanted one."""

    name: str
    role: str

    @property
    def key(self) -> str:
        return f"binding-role:{self.name}"

    def probe(self) -> str:
        return f"{KUBECTL} get clusterrolebinding {_q(self.name)} -o jsonpath='{{.roleRef.name}}'"

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        current = fact.stdout.strip() if fact and fact.rc == 0 else ""
        if not current or current == self.role:
            return None
        return Change(
            self.key,
            "delete",
            f"clusterrolebinding/{self.name}: role {current} -> {self.role} "
            "(roleRef is immutable: deleted, then re-created by kubectl apply)",
        )

    def apply(self, host: Host) -> None:
        host.run(f"{KUBECTL} delete {_q('clusterrolebinding/' + self.name)} --ignore-not-found")


@dataclass
class KubectlDeleted(Resource[Host]):
    """Cluster objects an earlier run created, deleted; looked up only while `marker` (the
    applied manifest) exists on the host — it is removed after the objects."""

    label: str
    objects: Sequence[str]
    namespace: str
    marker: str

    @property
    def key(self) -> str:
        return f"kubectl-delete:{self.label}"

    def _objs(self) -> str:
        return " ".join(_q(o) for o in self.objects)

    def probe(self) -> str:
        return (
            f"test -f {_q(self.marker)} && test -f {ADMIN_CONF} && "
            f"{KUBECTL} -n {_q(self.namespace)} get {self._objs()} -o name"
        )

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        lines = (fact.stdout if fact else "").splitlines()
        found = {
            f"{k.split('.')[0].lower()}/{n}" for k, _, n in (ln.partition("/") for ln in lines)
        }
        present = [o for o in self.objects if o in found]
        if not present:
            return None
        return Change(self.key, "delete", f"kubectl delete {' '.join(present)}")

    def apply(self, host: Host) -> None:
        host.run(f"{KUBECTL} -n {_q(self.namespace)} delete {self._objs()} --ignore-not-found")


@dataclass
class FileAbsent(Resource[Host]):
    """A file and the backup `write_file` kept of it, absent."""

    path: str

    @property
    def key(self) -> str:
        return f"absent:{self.path}"

    def _paths(self) -> str:
        return f"{_q(self.path)} {_q(self.path + '.rb-bak')}"

    def probe(self) -> str:
        return f'for f in {self._paths()}; do test -e "$f" && echo "$f"; done; true'

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        found = (fact.stdout if fact else "").split()
        return Change(self.key, "remove", ", ".join(found)) if found else None

    def apply(self, host: Host) -> None:
        host.run(f"rm -f {self._paths()}")


@dataclass
class UnitAbsent(Resource[Host]):
    """A systemd service stopped, disabled and its unit file gone."""

    name: str
    path: str
    wants: str

    @property
    def key(self) -> str:
        return f"unit-absent:{self.name}"

    def probe(self) -> str:
        p, w = _q(self.path), _q(self.wants)
        return (
            f"test -e {p} && echo unit-file; test -e {p}.rb-bak && echo backup; "
            f"test -L {w} && echo enabled; systemctl is-active {_q(self.name)}"
        )

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        lines = (fact.stdout if fact else "").split()
        found: list[str] = [s for s in ("unit-file", "backup", "enabled") if s in lines]
        if lines[-1:] == ["active"]:
            found.insert(0, "running")
        if not found:
            return None
        return Change(self.key, "stop+disable+remove", ", ".join(found))

    def apply(self, host: Host) -> None:
        n, p = _q(self.name), _q(self.path)
        host.run(
            f"systemctl stop {n}; systemctl disable {n}; rm -f {p} {p}.rb-bak {_q(self.wants)}; "
            "systemctl daemon-reload",
            timeout=120,
        )


def _get(host: Host, url: str) -> tuple[int, str]:
    """HTTP status (0: no answer) and body of `GET url`, fetched on `host` with curl."""
    res = host.query(
        f"curl -sS --max-time 5 -w '\\n%{{http_code}}' {_q(url)}", ok_codes=None, timeout=15
    )
    body, _, code = res.stdout.rpartition("\n")
    return (int(code) if code.strip().isdigit() else 0), (body or res.stderr).strip()


def wait_api(host: Host, url: str, timeout: float) -> str:
    """Poll until `GET url` is 200 with an APIVersions body; "" when it is, else the last answer."""

    def problem() -> str:
        code, body = _get(host, url)
        return (
            ""
            if code == 200 and '"APIVersions"' in body
            else f"HTTP {code or 'no answer'}: {body[-200:]}"
        )

    return poll(problem, seconds=timeout, interval=1, done=lambda p: not p)


class InsecureApiStep(Step):
    name = "insecure-api"
    title = "optional plain-HTTP API: kubectl proxy as a ServiceAccount (off unless enabled)"

    def target_names(self, ctx: StepContext) -> list[str]:
        return hosts_with(ctx, "control-plane")

    def _require_cluster(self, ctx: StepContext) -> None:
        state = ctx.run.of(InsecureApiRun)
        with state.lock:
            if not state.initialised:
                Cluster.of(ctx).require_initialised()
                state.initialised = True

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        inv = ctx.inventory
        spec = inv.load_balancer.insecure_api
        first = target == inv.first_control_plane.name
        render = ctx.run.render
        if not spec.enabled:
            if render:
                return []
            gone: list[Resource] = [
                UnitAbsent(ia.SERVICE, ia.UNIT_PATH, ia.WANTS_LINK),
                FileAbsent(ia.KUBECONFIG_PATH),
            ]
            if first:
                gone += [
                    KubectlDeleted("insecure-api", ia.OBJECTS, ia.NAMESPACE, ia.MANIFEST_PATH),
                    FileAbsent(ia.MANIFEST_PATH),
                ]
            return gone
        if not render:
            self._require_cluster(ctx)
        out: list[Resource] = []
        if first:
            manifest = File(ia.MANIFEST_PATH, ia.manifest(inv), mode=0o600)
            out += [
                manifest,
                BindingRole(ia.SA_NAME, spec.role),
                KubectlApplied(
                    "insecure-api", ia.MANIFEST_PATH, ia.OBJECTS, ia.NAMESPACE, watch=[manifest.key]
                ),
            ]
        # wait for the token only when the first control plane creates it in this run
        can_wait = inv.first_control_plane.name in self.target_names(ctx)
        kubeconfig = TokenKubeconfig(
            ia.KUBECONFIG_PATH,
            ia.kubeconfig(inv, target, token=SECRET_MARKER),
            mode=0o600,
            secret=True,
            make=lambda token: ia.kubeconfig(inv, target, token=token),
            token=lambda wait: sa_token(ctx, wait=wait and can_wait),
        )
        unit = File(ia.UNIT_PATH, ia.unit(inv, target))
        return [
            *out,
            kubeconfig,
            unit,
            SystemdReload([unit.key]),
            Service(ia.SERVICE, watch=[unit.key, kubeconfig.key]),
        ]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        if not ctx.inventory.load_balancer.insecure_api.enabled:
            return None
        if any(c.action in ("create", "apply") for p in plans for c in p.changes):
            return ia.warning(ctx.inventory)
        return None

    def verify(self, ctx: StepContext, target: str) -> None:
        inv = ctx.inventory
        spec = inv.load_balancer.insecure_api
        if not spec.enabled:
            return
        url = f"http://{inv.hosts[target].private_ip}:{spec.port}/api"
        problem = wait_api(ctx.targets[target], url, VERIFY_WAIT_S)
        if problem:
            raise StepFailed(f"{target}: GET {url}: {problem} (journalctl -u {ia.SERVICE})")

    def verify_all(self, ctx: StepContext, targets: Sequence[str]) -> None:
        """Through the VIP, from an LB when one is connected (else the first control plane)."""
        inv = ctx.inventory
        spec = inv.load_balancer.insecure_api
        if not spec.enabled or not targets:
            return
        order = [h.name for h in inv.hosts_with_role("lb")] + [inv.first_control_plane.name]
        via = next(n for n in [*order, *targets] if n in ctx.targets)
        url = f"http://{inv.load_balancer.vip}:{spec.port}/api"
        problem = wait_api(ctx.targets[via], url, VIP_WAIT_S)
        if problem:
            raise StepFailed(
                f"GET {url} from {via}: {problem}; does HAProxy have the frontend? "
                "(`inv lb.haproxy` renders it while insecure_api is enabled)"
            )
        ctx.ui.print(
            f"plain-HTTP API answers on {inv.load_balancer.vip}:{spec.port} (role {spec.role})",
            style="yellow",
        )
