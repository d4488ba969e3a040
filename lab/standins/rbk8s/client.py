"""LAB STAND-IN — HTTPS calls to the API server stand-in with a kubeconfig's credentials.

The kubeconfig is read as kubectl reads it: the current context names the cluster and the user;
the CA comes from `certificate-authority-data` or the `certificate-authority` file; the user
authenticates with a client certificate (`client-certificate-data`/`client-key-data`) or a bearer
`token` (a ServiceAccount's), which travels in the Authorization header only.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def _named(conf: dict[str, Any], section: str, name: str) -> dict[str, Any]:
    for entry in conf.get(section) or []:
        if entry.get("name") == name:
            return dict(entry.get(section[:-1]) or {})
    raise ApiError(0, f'error: {section[:-1]} "{name}" not found in the kubeconfig')


def _current(conf: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(cluster, user) of the current context, as kubectl resolves them."""
    name = conf.get("current-context")
    if not name:
        raise ApiError(
            0,
            "error: invalid configuration: no configuration has been provided, try setting "
            "KUBERNETES_MASTER environment variable",
        )
    ctx = _named(conf, "contexts", str(name))
    return _named(conf, "clusters", str(ctx.get("cluster"))), _named(
        conf, "users", str(ctx.get("user"))
    )


@dataclass
class Session:
    """Where to connect and how to authenticate (the token only ever goes into a header)."""

    server: str
    ctx: ssl.SSLContext
    headers: dict[str, str]


@contextlib.contextmanager
def session(conf: dict[str, Any]) -> Iterator[Session]:
    cluster, user = _current(conf)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the server is addressed by IP; the CA pin is what matters
    if "certificate-authority-data" in cluster:
        ctx.load_verify_locations(
            cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
        )
    elif "certificate-authority" in cluster:
        try:
            ctx.load_verify_locations(cafile=str(cluster["certificate-authority"]))
        except OSError as exc:
            raise ApiError(
                0,
                f"error: unable to read certificate-authority {cluster['certificate-authority']}"
                f" for the cluster due to open {cluster['certificate-authority']}: {exc.strerror}",
            ) from exc
    headers: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="rbk8s-") as d:
        os.chmod(d, 0o700)
        if "client-certificate-data" in user:
            crt, key = Path(d, "c"), Path(d, "k")
            crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
            key.write_bytes(base64.b64decode(user["client-key-data"]))
            ctx.load_cert_chain(crt, key)
        elif user.get("token"):
            headers["Authorization"] = f"Bearer {user['token']}"
        yield Session(str(cluster["server"]).rstrip("/"), ctx, headers)


def load(path: str | Path) -> dict[str, Any]:
    try:
        conf = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ApiError(0, f"error: stat {path}: no such file or directory") from exc
    return dict(conf)


def call(
    conf: dict[str, Any], method: str, path: str, body: Any = None, *, timeout: float = 30
) -> Any:
    """One API request. Real kubectl sets no request timeout by default (--request-timeout=0);
    30 s still ends a hung request."""
    with session(conf) as s:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(s.server + path, data=data, method=method, headers=s.headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=s.ctx) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            msg = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError):
                msg = json.loads(msg).get("message", msg)
            raise ApiError(exc.code, msg) from exc
        except (OSError, ssl.SSLError) as exc:
            raise ApiError(0, f"Unable to connect to the server: {exc}") from exc
    text = raw.decode()
    try:
        return json.loads(text)
    except ValueError:
        return text
