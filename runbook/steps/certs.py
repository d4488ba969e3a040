"""Step 10 — certs: kubecfg.crt, kubecfg.key and kubecfg.p12 from the admin kubeconfig.

The post greps ~/.kube/config and runs `openssl pkcs12 -export` typing the password at a prompt.
Here the files are LOCAL, 0600 from creation; the p12 password comes from an environment
variable, a prompt (TTY) or — with --yes and neither — is generated and written 0600 beside the
p12. It reaches openssl through its environment (`-passout env:`), never argv. `legacy` adds
`-legacy` (RC2/3DES) for importers that cannot read OpenSSL 3's default AES p12.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change
from ..core.remote import Fact, Host
from ..core.resources import Resource
from ..render.k8sfiles import ADMIN_CONF
from ._k8s import write_private
from ._select import hosts_with

PASSWORD_ENV = "RUNBOOK_P12_PASSWORD"
P12_NAME = "kubernetes-client"


@dataclass
class CertsRun:
    """Per run: admin.conf's client certificate and key (PEM), read once."""

    client_pem: tuple[bytes, bytes] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def default_out(ctx: StepContext) -> Path:
    return ctx.inventory.resolve_path(f".runbook/{ctx.inventory.cluster.name}")


def client_pem(ctx: StepContext, host: Host) -> tuple[bytes, bytes]:
    """(certificate, key) PEM from admin.conf's first user (read once per run, masked)."""
    state = ctx.run.of(CertsRun)
    with state.lock:
        if state.client_pem is None:
            raw = host.read_file(ADMIN_CONF)
            if raw is None:
                raise StepFailed(f"{host.name} has no {ADMIN_CONF}: run `inv cluster.init` first")
            conf = yaml.safe_load(raw)
            user = (conf.get("users") or [{}])[0].get("user") or {}
            try:
                crt = base64.b64decode(user["client-certificate-data"])
                key = base64.b64decode(user["client-key-data"])
            except (KeyError, ValueError) as exc:
                raise StepFailed(f"{ADMIN_CONF} has no embedded client certificate/key") from exc
            ctx.ui.masker.register(user["client-key-data"])
            state.client_pem = (crt, key)
        return state.client_pem


@dataclass
class LocalPem(Resource[Host]):
    """A local 0600 file equal to the certificate or key of admin.conf."""

    path: Path
    which: int  # 0 certificate, 1 key
    ctx: StepContext

    @property
    def key(self) -> str:
        return f"local-file:{self.path}"

    def _wanted(self, host: Host) -> bytes:
        return client_pem(self.ctx, host)[self.which]

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        want = self._wanted(host)
        try:
            current, mode = self.path.read_bytes(), self.path.stat().st_mode & 0o777
        except OSError:
            return Change(self.key, "create", f"{self.path} (mode 600)")
        if current != want:
            return Change(self.key, "update", f"{self.path}: admin.conf's client cert changed")
        if mode != 0o600:
            return Change(self.key, "chmod", f"{self.path}: {mode:o} -> 600")
        return None

    def apply(self, host: Host) -> None:
        write_private(self.path, self._wanted(host))


@dataclass
class P12(Resource):
    """kubecfg.p12 from the crt/key; rebuilt when either changed in this run."""

    path: Path
    crt: LocalPem
    key_file: LocalPem
    ctx: StepContext
    legacy: bool = False
    password_env: str = PASSWORD_ENV
    _password: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"local-p12:{self.path}"

    @property
    def password_file(self) -> Path:
        return self.path.with_name(self.path.name + ".password")

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        touched = [k for k in (self.crt.key, self.key_file.key) if k in host.touched]
        if not self.path.exists():
            return Change(
                self.key,
                "create",
                f"{self.path} (password from ${self.password_env} or a prompt; never argv)",
            )
        if touched:
            return Change(self.key, "update", f"{self.path}: {', '.join(touched)} changed")
        if self.path.stat().st_mode & 0o777 != 0o600:
            return Change(self.key, "chmod", f"{self.path} -> 600")
        return None

    def password(self) -> str:
        """Env var, else a prompt (TTY, asked twice), else generated under --yes."""
        if self._password:
            return self._password[0]
        ui = self.ctx.ui
        value = os.environ.get(self.password_env, "")
        if not value and ui.interactive:
            value = ui.ask_secret(f"password for {self.path.name}")
            if value != ui.ask_secret("again"):
                raise StepFailed("the two p12 passwords differ")
        if not value and ui.assume_yes:
            value = secrets.token_urlsafe(18)
            write_private(self.password_file, (value + "\n").encode())
            ui.warn(
                f"generated the p12 password (--yes, no ${self.password_env}): {self.password_file}"
            )
        if not value:
            from ..core.console import NeedsPerson

            raise NeedsPerson(
                f"the p12 needs a password: set ${self.password_env}, run on a TTY, or use --yes "
                "to generate one"
            )
        ui.masker.register(value)
        self._password.append(value)
        return value

    def apply(self, host: Host) -> None:
        pw = self.password()
        tmp = self.path.with_name(self.path.name + ".rb-tmp")
        argv = ["openssl", "pkcs12", "-export", "-clcerts", "-inkey", str(self.key_file.path),
                "-in", str(self.crt.path), "-out", str(tmp), "-name", P12_NAME,
                "-passout", "env:RB_P12_PASS"]  # fmt: skip
        if self.legacy:
            argv.append("-legacy")
        old = os.umask(0o077)
        try:
            r = subprocess.run(
                argv, env={**os.environ, "RB_P12_PASS": pw}, capture_output=True, text=True
            )
        finally:
            os.umask(old)
        if r.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise StepFailed(f"openssl pkcs12 -export failed: {r.stderr.strip()[-300:]}")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)


class CertsStep(Step):
    name = "certs"
    title = "kubecfg.crt / .key / .p12 from the admin kubeconfig (local, 0600)"

    def __init__(
        self, out: Path | None = None, *, legacy: bool = False, password_env: str = PASSWORD_ENV
    ) -> None:
        self.out, self.legacy, self.password_env = out, legacy, password_env

    def target_names(self, ctx: StepContext) -> list[str]:
        first = ctx.inventory.first_control_plane.name
        return [first] if first in hosts_with(ctx, "control-plane") else []

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        if ctx.run.render:
            return []
        out = self.out or default_out(ctx)
        crt = LocalPem(out / "kubecfg.crt", 0, ctx)
        key = LocalPem(out / "kubecfg.key", 1, ctx)
        p12 = P12(out / "kubecfg.p12", crt, key, ctx, self.legacy, self.password_env)
        return [crt, key, p12]

    def verify(self, ctx: StepContext, target: str) -> None:
        out = self.out or default_out(ctx)
        for name in ("kubecfg.crt", "kubecfg.key", "kubecfg.p12"):
            path = out / name
            if not path.exists() or path.stat().st_mode & 0o777 != 0o600:
                raise StepFailed(f"{path} is missing or not mode 600")
