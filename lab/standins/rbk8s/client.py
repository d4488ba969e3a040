"""LAB STAND-IN — HTTPS calls to the API server stand-in with a kubeconfig's credentials."""

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
from pathlib import Path
from typing import Any

import yaml


class ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


@contextlib.contextmanager
def _context(conf: dict[str, Any]) -> Iterator[tuple[str, ssl.SSLContext]]:
    cluster = conf["clusters"][0]["cluster"]
    user = conf["users"][0]["user"]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # the server is addressed by IP; the CA pin is what matters
    ctx.load_verify_locations(
        cadata=base64.b64decode(cluster["certificate-authority-data"]).decode()
    )
    with tempfile.TemporaryDirectory(prefix="rbk8s-") as d:
        os.chmod(d, 0o700)
        crt, key = Path(d, "c"), Path(d, "k")
        crt.write_bytes(base64.b64decode(user["client-certificate-data"]))
        key.write_bytes(base64.b64decode(user["client-key-data"]))
        ctx.load_cert_chain(crt, key)
        yield cluster["server"].rstrip("/"), ctx


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
    with _context(conf) as (server, ctx):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(server + path, data=data, method=method)
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
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
