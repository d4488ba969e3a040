"""Step 9 — admin-user: ServiceAccount + cluster-admin binding + an explicit token Secret.

Since Kubernetes 1.24 no token Secret is created for a ServiceAccount, so the post's
`kubectl describe secret` finds nothing: the manifest carries a `kubernetes.io/service-account-
token` Secret, the token controller fills it, and the runbook writes the token to a LOCAL file
(mode 0600). It is registered with the masker and printed only when the operator asks (--show).
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass
from pathlib import Path

from ..core.engine import Step, StepContext
from ..core.plan import Change
from ..core.remote import Fact, Host
from ..core.resources import File, Resource
from ..core.waiting import wait_until
from ..render.k8sfiles import (
    ADMIN_NAMESPACE,
    ADMIN_USER_PATH,
    admin_user_manifest,
    token_secret_name,
)
from ._k8s import KUBECTL, Cluster, KubectlApplied, write_private
from ._select import hosts_with

TOKEN_WAIT_S = 60


def default_token_file(ctx: StepContext) -> Path:
    inv = ctx.inventory
    return inv.resolve_path(f".runbook/{inv.cluster.name}/{inv.kubernetes.admin_user}.token")


@dataclass
class TokenFile(Resource[Host]):
    """The admin token in a local 0600 file, equal to what the cluster's Secret holds."""

    path: Path
    secret: str
    ctx: StepContext

    @property
    def key(self) -> str:
        return f"local-token:{self.path}"

    def _command(self) -> str:
        return (
            f"{KUBECTL} -n {ADMIN_NAMESPACE} get secret {shlex.quote(self.secret)} "
            "-o jsonpath='{.data.token}'"
        )

    def probe(self) -> str:
        return self._command()

    def _token(self, b64: str) -> str:
        token = base64.b64decode(b64.strip() or b"").decode() if b64.strip() else ""
        self.ctx.ui.masker.register(token)
        return token

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        token = self._token(fact.stdout if fact and fact.rc == 0 else "")
        try:
            st = self.path.stat()
            current = self.path.read_text()
        except OSError:
            return Change(self.key, "create", f"{self.path} (mode 600)")
        if not token or current.strip() != token:
            return Change(self.key, "update", f"{self.path}: token differs from the Secret")
        if st.st_mode & 0o777 != 0o600:
            return Change(self.key, "chmod", f"{self.path}: {st.st_mode & 0o777:o} -> 600")
        return None

    def apply(self, host: Host) -> None:

        def token_now() -> str:
            res = host.query(self._command(), ok_codes=None)
            return self._token(res.stdout if res.exited == 0 else "")

        token = wait_until(
            token_now,
            seconds=TOKEN_WAIT_S,
            interval=1,
            failure=f"the token controller did not fill Secret {self.secret}",
        )
        write_private(self.path, (token + "\n").encode())


class AdminUserStep(Step):
    name = "admin-user"
    title = "admin ServiceAccount, cluster-admin binding, explicit token Secret; token to a file"

    def __init__(self, token_file: Path | None = None) -> None:
        self.token_file = token_file
        self.used_path: Path | None = None  # where the token went (for the task's message)

    def target_names(self, ctx: StepContext) -> list[str]:
        first = ctx.inventory.first_control_plane.name
        return [first] if first in hosts_with(ctx, "control-plane") else []

    def _path(self, ctx: StepContext) -> Path:
        self.used_path = self.token_file or default_token_file(ctx)
        return self.used_path

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        if not ctx.run.render:
            Cluster.of(ctx).require_initialised()
        inv = ctx.inventory
        name, secret = inv.kubernetes.admin_user, token_secret_name(inv)
        file = File(ADMIN_USER_PATH, admin_user_manifest(inv), mode=0o600)
        return [
            file,
            KubectlApplied(
                "admin-user",
                ADMIN_USER_PATH,
                [f"serviceaccount/{name}", f"clusterrolebinding/{name}", f"secret/{secret}"],
                ADMIN_NAMESPACE,
                watch=[file.key],
            ),
            TokenFile(self._path(ctx), secret, ctx),
        ]
