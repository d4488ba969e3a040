"""LAB STAND-IN — `kubectl proxy`: plain HTTP on --address:--port, forwarded to the API server
with the kubeconfig's credentials (a ServiceAccount token goes into the Authorization header of
the forwarded request, nothing else sees it).

Strict as kubectl is: flags are parsed like cobra/pflag parses them (`--flag=value`,
`--flag value`, `-p 8001`, `-p=8001`), an unknown flag or an argument is an error (exit 1), a
bad port or regular expression too. The request filter is kubectl's: reject paths, reject
methods, then accept paths AND accept hosts, the host taken from the Host header with its port
stripped (a header without a port is used as it is); a refused request gets 403 "Forbidden".
Flags kubectl has but the stand-in does not emulate (`--www`, `--unix-socket`, …) are refused
with a message saying so. Regular expressions are Python's `re` (RE2 for the simple patterns
used here), searched unanchored like Go's MatchString.
"""

from __future__ import annotations

import re
import ssl
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from . import client

DEFAULT_ACCEPT_HOSTS = r"^localhost$,^127\.0\.0\.1$,^\[::1\]$"
DEFAULT_ACCEPT_PATHS = r"^.*"
DEFAULT_REJECT_PATHS = r"^/api/.*/pods/.*/exec,^/api/.*/pods/.*/attach"
DEFAULT_REJECT_METHODS = r"^$"
# flag → (takes a value, emulated); short forms map to long ones
FLAGS = {
    "accept-hosts": (True, True),
    "accept-paths": (True, True),
    "address": (True, True),
    "api-prefix": (True, True),
    "append-server-path": (False, False),
    "disable-filter": (False, True),
    "keepalive": (True, False),
    "port": (True, True),
    "reject-methods": (True, True),
    "reject-paths": (True, True),
    "unix-socket": (True, False),
    "www": (True, False),
    "www-prefix": (True, False),
}
SHORT = {"p": "port", "u": "unix-socket", "w": "www", "P": "www-prefix"}
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "upgrade", "host", "authorization"}


class Usage(Exception):
    """What kubectl prints before exiting 1."""


@dataclass
class Options:
    address: str = "127.0.0.1"
    port: int = 8001
    accept_hosts: str = DEFAULT_ACCEPT_HOSTS
    accept_paths: str = DEFAULT_ACCEPT_PATHS
    reject_paths: str = DEFAULT_REJECT_PATHS
    reject_methods: str = DEFAULT_REJECT_METHODS
    api_prefix: str = "/"
    disable_filter: bool = False
    compiled: dict[str, list[re.Pattern[str]]] = field(default_factory=dict)


def _regexps(text: str) -> list[re.Pattern[str]]:
    """kubectl's MakeRegexpArray: split at commas, compile each."""
    out = []
    for part in text.split(","):
        try:
            out.append(re.compile(part))
        except re.error as exc:
            raise Usage(f"error: error parsing regexp: {exc}: `{part}`") from exc
    return out


def parse(args: list[str]) -> Options:
    opts = Options()
    values: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            raise Usage(f'error: unknown command "{arg}" for "kubectl proxy"')
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
        else:
            short, value = arg[1:2], arg[2:]
            eq = "="[: bool(value)]
            value = value.removeprefix("=")
            if short not in SHORT:
                raise Usage(f"error: unknown shorthand flag: '{short}' in {arg}")
            name = SHORT[short]
        if name not in FLAGS:
            raise Usage(f"error: unknown flag: --{name}\nSee 'kubectl proxy --help' for usage.")
        takes_value, emulated = FLAGS[name]
        if takes_value and not eq:
            if i >= len(args):
                raise Usage(f"error: flag needs an argument: --{name}")
            value, i = args[i], i + 1
        if not takes_value:
            if eq and value not in ("true", "false"):
                raise Usage(f'error: invalid argument "{value}" for "--{name}" flag')
            value = value if eq else "true"
        if not emulated:
            raise Usage(f"stand-in kubectl proxy: --{name} is not emulated")
        values[name] = value
    if "port" in values:
        try:
            opts.port = int(values["port"])
        except ValueError:
            raise Usage(
                f'error: invalid argument "{values["port"]}" for "-p, --port" flag: '
                f'strconv.ParseInt: parsing "{values["port"]}": invalid syntax'
            ) from None
    opts.address = values.get("address", opts.address)
    opts.accept_hosts = values.get("accept-hosts", opts.accept_hosts)
    opts.accept_paths = values.get("accept-paths", opts.accept_paths)
    opts.reject_paths = values.get("reject-paths", opts.reject_paths)
    opts.reject_methods = values.get("reject-methods", opts.reject_methods)
    opts.disable_filter = values.get("disable-filter", "false") == "true"
    if values.get("api-prefix", "/") != "/":
        raise Usage("stand-in kubectl proxy: only --api-prefix=/ is emulated")
    for key in ("accept_hosts", "accept_paths", "reject_paths", "reject_methods"):
        opts.compiled[key] = _regexps(getattr(opts, key))
    return opts


def extract_host(header: str) -> str:
    """kubectl's extractHost: net.SplitHostPort, or the whole header when that fails."""
    if header.startswith("["):
        end = header.find("]")
        if end > 0 and header[end + 1 : end + 2] == ":":
            return header[1:end]
        return header
    host, sep, _port = header.rpartition(":")
    if not sep or ":" in host:
        return header
    return host


def accept(opts: Options, method: str, path: str, host: str) -> bool:
    """kubectl's FilterServer.accept."""
    match = lambda s, key: any(r.search(s) for r in opts.compiled[key])  # noqa: E731
    if match(path, "reject_paths") or match(method, "reject_methods"):
        return False
    return match(path, "accept_paths") and match(host, "accept_hosts")


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, opts: Options, conf: dict[str, Any]) -> None:
        self.opts, self.conf = opts, conf
        super().__init__((opts.address, opts.port), Handler)


class Handler(BaseHTTPRequestHandler):
    server: ProxyServer

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: bytes, ctype: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        opts = self.server.opts
        path = self.path.partition("?")[0]
        host = extract_host(self.headers.get("Host", ""))
        if not opts.disable_filter and not accept(opts, self.command, path, host):
            return self._reply(403, b"Forbidden\n", "text/plain; charset=utf-8")
        n = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(n) if n else None
        try:
            with client.session(self.server.conf) as s:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers.update(s.headers)
                req = urllib.request.Request(
                    s.server + self.path, data=data, method=self.command, headers=headers
                )
                try:
                    with urllib.request.urlopen(req, timeout=30, context=s.ctx) as resp:
                        code, body = resp.status, resp.read()
                        ctype = resp.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as exc:
                    code, body = exc.code, exc.read()
                    ctype = exc.headers.get("Content-Type", "application/json")
        except (OSError, ssl.SSLError, client.ApiError) as exc:
            msg = str(getattr(exc, "reason", exc))
            return self._reply(500, f"{msg}\n".encode(), "text/plain; charset=utf-8")
        return self._reply(code, body, ctype)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def main(conf_path: str, args: list[str]) -> int:
    try:
        opts = parse(args)
        conf = client.load(conf_path)
        with client.session(conf):
            pass  # the kubeconfig must name a usable cluster and user before serving
    except (Usage, client.ApiError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    try:
        srv = ProxyServer(opts, conf)
    except OSError as exc:
        family = "tcp6" if ":" in opts.address else "tcp"
        sys.stderr.write(
            f"error: listen {family} {opts.address}:{opts.port}: bind: {exc.strerror.lower()}\n"
            if exc.strerror
            else f"error: {exc}\n"
        )
        return 1
    print(f"Starting to serve on {opts.address}:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()
    return 0
