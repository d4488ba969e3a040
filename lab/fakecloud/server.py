"""HTTP front of the simulated API: routing, bearer auth, rate limit, faults, admin endpoints.

Stdlib only (`http.server.ThreadingHTTPServer`), so the lab needs nothing beyond the runbook's
own environment. A listener may live in another network namespace: its socket is created by a
short-lived thread that enters the namespace (setns affects only the calling thread), so the
process itself stays in the root namespace.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import select
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from lab.fakecloud.errors import ApiError, invalid_field
from lab.fakecloud.faults import Call
from lab.fakecloud.model import FakeCloud, Response

__all__ = ["FakeCloud", "Listener", "Running", "start"]

log = logging.getLogger(__name__)
CLONE_NEWNET = 0x40000000
MAX_BODY = 1 << 20
_COLL = r"(?P<coll>servers|networks|floating_ips|firewalls)"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(rf"^/{_COLL}$"), "list"),
    ("GET", re.compile(rf"^/{_COLL}/actions$"), "kind_actions"),
    ("GET", re.compile(rf"^/{_COLL}/actions/(?P<aid>[^/]+)$"), "kind_action"),
    ("POST", re.compile(r"^/networks$"), "create_network"),
    ("POST", re.compile(r"^/firewalls$"), "create_firewall"),
    ("GET", re.compile(rf"^/{_COLL}/(?P<id>[^/]+)$"), "get"),
    ("PUT", re.compile(rf"^/{_COLL}/(?P<id>[^/]+)$"), "update"),
    ("DELETE", re.compile(rf"^/{_COLL}/(?P<id>[^/]+)$"), "delete"),
    ("GET", re.compile(rf"^/{_COLL}/(?P<id>[^/]+)/actions$"), "res_actions"),
    ("GET", re.compile(rf"^/{_COLL}/(?P<id>[^/]+)/actions/(?P<aid>[^/]+)$"), "res_action"),
    ("POST", re.compile(rf"^/{_COLL}/(?P<id>[^/]+)/actions/(?P<cmd>[a-z_]+)$"), "action"),
    ("GET", re.compile(r"^/actions$"), "actions"),
    ("GET", re.compile(r"^/actions/(?P<aid>[^/]+)$"), "get_action"),
]


@dataclass(frozen=True)
class Listener:
    """Where to listen; `netns` names a namespace under /run/netns; admin adds /_lab/."""

    host: str
    port: int
    netns: str | None = None
    admin: bool = False


@dataclass
class Running:
    """Handle on started listeners; `addresses` holds the real (host, port) of each."""

    cloud: FakeCloud
    servers: list[_Server] = field(default_factory=list)
    threads: list[threading.Thread] = field(default_factory=list)

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [(str(s.server_address[0]), int(s.server_address[1])) for s in self.servers]

    def stop(self, *, close_cloud: bool = True) -> None:
        """Stop listening; by default also stop the action timers (state stays on disk)."""
        for srv in self.servers:
            srv.stopping.set()
            srv.shutdown()
            srv.server_close()
        for t in self.threads:
            t.join(timeout=5)
        if close_cloud:
            self.cloud.close()


HANG_HOLD_MAX_S = 600.0  # a call held unanswered by a hung outage is closed after this at most


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], cloud: FakeCloud, admin: bool) -> None:
        super().__init__(addr, _Handler)
        self.cloud = cloud
        self.admin = admin
        self.stopping = threading.Event()


def _int_id(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError as exc:
        raise invalid_field(name, "must be an integer") from exc


class _Handler(BaseHTTPRequestHandler):
    _started: tuple[float, str] | None = None  # the public call being answered: (t0, method)
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "fakecloud"

    def setup(self) -> None:
        super().setup()
        # headers and body go out as separate writes; without NODELAY, Nagle + delayed ACK add
        # ~40 ms to every answer on a kept-alive connection
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.client_address[0], *args)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    # ----- plumbing -------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ApiError("invalid_input", "request body too large")
        return self.rfile.read(length) if length > 0 else b""

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = b"" if status == 204 else json.dumps(body).encode()  # 204: no content at all
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Correlation-Id", uuid.uuid4().hex[:16])
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self._log_call(status)  # before the answer leaves: a client that has it finds it logged
        self.wfile.write(data)

    def _log_call(self, status: int | None) -> None:
        """Log the public call in progress once (no-op for admin calls or when already logged)."""
        started, self._started = self._started, None
        if started is not None:
            t0, method = started
            self.server.cloud.calls.add(
                Call(time.time(), method, self.path, status, time.monotonic() - t0)
            )

    def _presented(self) -> str:
        """The bearer token of the request ("" without one)."""
        scheme, _, token = (self.headers.get("Authorization") or "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def _access(self) -> bool | None:
        """The request's token: None, missing or not valid; False, Read; True, Read & Write."""
        token = self._presented()
        return self.server.cloud.token_access(token) if token else None

    def _serve(self, method: str) -> None:
        t0 = time.monotonic()
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        if path.startswith("/v1/") or path == "/v1":
            path = path[3:] or "/"
        query = parse_qs(url.query, keep_blank_values=True)
        try:
            raw = self._read_body()
        except (ValueError, ApiError):
            self.close_connection = True
            self._send(400, ApiError("json_error", "unreadable request body").body())
            return
        if path.startswith("/_lab/") and self.server.admin:
            self._admin(method, path, raw)
            return
        self._started = (t0, method)
        try:
            self._public(method, path, query, raw)
        finally:
            self._log_call(None)  # closed without an answer (an outage); answered calls logged

    def _hold_unanswered(self) -> None:
        """A call that came during a hung outage gets no answer, ever: it waits for its client's
        own timeout, as behind a real hung endpoint, even when the outage ends meanwhile (only
        calls made after that are answered). Held until the client closes its end (or
        HANG_HOLD_MAX_S, or the server stops)."""
        conn = self.connection
        end = time.monotonic() + HANG_HOLD_MAX_S
        while time.monotonic() < end and not self.server.stopping.is_set():
            ready, _, _ = select.select([conn], [], [], 0.05)
            if ready:
                try:
                    if conn.recv(1, socket.MSG_PEEK) == b"":
                        return  # the client gave up
                except OSError:
                    return
                time.sleep(0.05)  # more bytes from the client (a pipelined call): still unanswered

    def _public(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> None:
        cloud = self.server.cloud
        verdict = cloud.faults.judge()
        if verdict.outage == "503":
            err = ApiError("unavailable", "service is currently unavailable (outage)")
            self._send(err.status, err.body(), cloud.bucket.headers())
            return
        if verdict.outage is not None:
            if verdict.outage == "hang":
                self._hold_unanswered()
            self.close_connection = True  # closed without an answer, like a dead endpoint
            return
        if verdict.delay > 0:
            time.sleep(verdict.delay)
        try:
            if verdict.fail_code is not None:
                raise ApiError(verdict.fail_code, f"{verdict.fail_code} (injected fault)")
            access = self._access()
            if access is None:
                raise ApiError("unauthorized")
            if method != "GET" and not access:
                raise ApiError("forbidden")  # a Read token's write
            if not cloud.bucket.take():
                raise ApiError("rate_limit_exceeded", "limit of requests per hour reached")
            status, body = self._route(method, path, query, raw)
        except ApiError as err:
            status, body = err.status, err.body()
        except Exception:
            log.exception("internal error on %s %s", method, path)
            internal = ApiError("server_error")
            status, body = internal.status, internal.body()
        self._send(status, body, cloud.bucket.headers())

    def _route(self, method: str, path: str, query: dict[str, list[str]], raw: bytes) -> Response:
        from lab.fakecloud.inputs import parse_body

        cloud = self.server.cloud
        known_path = False
        for m, rx, name in _ROUTES:
            match = rx.match(path)
            if match is None:
                continue
            known_path = True
            if m != method:
                continue
            g = match.groupdict()
            coll = g.get("coll", "")
            if name == "list":
                return cloud.list_resources(coll, query)
            if name == "kind_actions":
                return cloud.kind_actions(coll, query)
            if name == "kind_action":
                return cloud.kind_actions(coll, query, _int_id(g["aid"], "id"))
            if name == "create_network":
                return cloud.create_network(parse_body(raw))
            if name == "create_firewall":
                return cloud.create_firewall(parse_body(raw))
            if name == "get":
                return cloud.get_resource(coll, _int_id(g["id"], "id"))
            if name == "update":
                return cloud.update_resource(coll, _int_id(g["id"], "id"), parse_body(raw))
            if name == "delete":
                return cloud.delete_resource(coll, _int_id(g["id"], "id"))
            if name == "res_actions":
                return cloud.resource_actions(coll, _int_id(g["id"], "id"), query)
            if name == "res_action":
                rid, aid = _int_id(g["id"], "id"), _int_id(g["aid"], "action_id")
                return cloud.resource_actions(coll, rid, query, aid)
            if name == "action":
                body = parse_body(raw)
                return cloud.resource_action(coll, _int_id(g["id"], "id"), g["cmd"], body)
            if name == "actions":
                return cloud.list_actions(query)
            return cloud.get_action(_int_id(g["aid"], "id"))
        if known_path:
            raise ApiError("method_not_allowed", f"method {method} not allowed on {path}")
        raise ApiError("not_found", f"no such endpoint: {path}")

    # ----- admin ----------------------------------------------------------------------------
    def _admin(self, method: str, path: str, raw: bytes) -> None:
        cloud = self.server.cloud
        if self._access() is None:
            err = ApiError("unauthorized")
            self._send(err.status, err.body())
            return
        try:
            if path == "/_lab/state" and method == "GET":
                self._send(200, cloud.snapshot())
            elif path == "/_lab/calls" and method == "GET":
                self._send(200, {"calls": cloud.calls.dump()})
            elif path == "/_lab/faults" and method in ("GET", "POST", "DELETE"):
                if method == "DELETE":
                    cloud.faults.clear()
                elif method == "POST":
                    self._configure_faults(raw)
                self._send(200, {"faults": asdict(cloud.faults.view())})
            elif path == "/_lab/busy" and method == "POST":
                self._send(201, {"action": self._busy(raw)})
            elif path == "/_lab/token" and method == "POST":
                self._rotate_token(raw)
                self._send(200, {"rotated": True})  # never echoes a token
            else:
                raise ApiError("not_found", f"no such admin endpoint: {method} {path}")
        except ApiError as err:
            self._send(err.status, err.body())

    def _busy(self, raw: bytes) -> dict[str, Any]:
        from lab.fakecloud.inputs import parse_body

        body = parse_body(raw)
        unknown = set(body) - {"server", "seconds"}
        if unknown:
            raise invalid_field(sorted(unknown)[0], "unknown setting")
        server, seconds = body.get("server"), _opt_number(body, "seconds")
        if not isinstance(server, str) or seconds is None:
            raise invalid_field("server", "a server name and seconds are required")
        try:
            return self.server.cloud.busy(server, seconds)
        except ValueError as exc:
            raise invalid_field("seconds", str(exc)) from exc

    def _rotate_token(self, raw: bytes) -> None:
        from lab.fakecloud.inputs import parse_body

        body = parse_body(raw)
        token = body.get("token")
        flags = {k: body.get(k, d) for k, d in (("read_only", False), ("revoke", True))}
        if (
            not set(body) <= {"token", *flags}
            or not isinstance(token, str)
            or len(token) < 32
            or not all(isinstance(v, bool) for v in flags.values())
        ):
            raise invalid_field(
                "token",
                "a new token of at least 32 characters; optional booleans read_only "
                "(a Read token) and revoke (the others; default true); nothing else",
            )
        self.server.cloud.rotate_token(token, **flags)

    def _configure_faults(self, raw: bytes) -> None:
        from lab.fakecloud.inputs import parse_body

        body = parse_body(raw)
        known = {
            "latency",
            "fail_next",
            "code",
            "outage",
            "outage_mode",
            "fail_actions",
            "action_seconds",
            "clear",
        }
        unknown = set(body) - known
        if unknown:
            raise invalid_field(sorted(unknown)[0], "unknown fault setting")
        faults = self.server.cloud.faults
        if body.get("clear"):
            faults.clear()
        try:
            faults.configure(
                latency=_opt_number(body, "latency"),
                fail_next=_opt_whole(body, "fail_next"),
                code=body.get("code"),
                outage=_opt_number(body, "outage"),
                outage_mode=body.get("outage_mode"),
                fail_actions=_opt_whole(body, "fail_actions"),
                action_seconds=_opt_number(body, "action_seconds"),
            )
        except ValueError as exc:
            raise ApiError("invalid_input", str(exc)) from exc


def _opt_number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid_field(name, "must be a number")
    return float(value)


def _opt_whole(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_field(name, "must be an integer")
    return value


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def _bind_in_netns(listener: Listener, cloud: FakeCloud) -> _Server:
    """Create the listening socket inside `listener.netns` from a throw-away thread."""
    result: list[_Server] = []
    errors: list[BaseException] = []

    def work() -> None:
        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{listener.netns}", os.O_RDONLY)
        try:
            _setns(target)
            try:
                result.append(_Server((listener.host, listener.port), cloud, listener.admin))
            finally:
                _setns(own)  # if this fails the thread ends anyway; nobody else is affected
        except BaseException as exc:
            errors.append(exc)
        finally:
            os.close(own)
            os.close(target)

    t = threading.Thread(target=work, name=f"bind-{listener.netns}")
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return result[0]


def start(cloud: FakeCloud, listeners: list[Listener]) -> Running:
    """Start one ThreadingHTTPServer per listener, each served by its own thread."""
    running = Running(cloud)
    try:
        for lst in listeners:
            if lst.netns:
                srv = _bind_in_netns(lst, cloud)
            else:
                srv = _Server((lst.host, lst.port), cloud, lst.admin)
            running.servers.append(srv)
            t = threading.Thread(
                target=srv.serve_forever,
                kwargs={"poll_interval": 0.05},
                daemon=True,
                name=f"fakecloud-{lst.host}:{srv.server_address[1]}",
            )
            t.start()
            running.threads.append(t)
    except BaseException:
        running.stop(close_cloud=False)
        raise
    return running
