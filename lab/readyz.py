"""The issue-11 probe: a new TCP+TLS `GET /readyz` every 100 ms (through the floating IP from the
lab's client namespace, through the VIP from a control plane), each request in its own thread so
a hung one does not delay the next; and, for lab runs without the Kubernetes walkthrough, a small
TLS `/readyz` server on the control planes so HAProxy's real health checks have something to
check (installed as a unit, so it comes back when its host reboots).

A request counts as ok when the answer's status line says 200 within `timeout` seconds.
"""

from __future__ import annotations

import functools
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab import netns, probe, topology
from lab.probe import Attempt, ProbeResult

UNIT = "rblab-readyz"
SCRIPT = "/usr/local/sbin/rblab-readyz"
CERT_DIR = "/etc/rblab-readyz"
# the server: HTTPS on ADDRESS:6443, 200 "ok" for GET /readyz, 404 otherwise
SERVER = f"""#!/usr/bin/python3
import http.server, ssl, sys

class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 200 if self.path.startswith("/readyz") else 404
        body = b"ok" if code == 200 else b"not found"
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("{CERT_DIR}/cert.pem", "{CERT_DIR}/key.pem")


class Server(http.server.ThreadingHTTPServer):
    # the TLS handshake runs in each connection's own thread, as a real apiserver serves every
    # connection on its own: a client that connects and then stalls (a paused load balancer's
    # health check) must not hold up everyone else's accept, as a handshake inside accept() would
    def finish_request(self, request, client_address):
        request.settimeout(10)
        try:
            request = ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            super().finish_request(request, client_address)
        finally:
            self.shutdown_request(request)


srv = Server((sys.argv[1], 6443), H)
srv.serve_forever()
"""
UNIT_FILE = f"""[Unit]
Description=Lab stand-in for an apiserver's /readyz (LB-tier tests only)
After=network.target

[Service]
ExecStart=/usr/bin/python3 {SCRIPT} @ADDRESS@
Restart=always
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


# ----- the probe --------------------------------------------------------------------------------
@functools.cache
def _client_context() -> ssl.SSLContext:
    """The one TLS client context of every request (no verification: any apiserver
    certificate). Why one: `ssl.create_default_context()` loads the system's CA store, ~29 ms
    of CPU under the GIL per call on the 2-core lab machine, and the probes made 20 requests a
    second: over half a core of the harness, and a request thread waiting for the GIL sent its
    SYN late, which can move a request across a failover's switch of the route."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def get_readyz(address: str, port: int, timeout: float) -> tuple[bool, str]:
    """One new connection: TCP, TLS (no verification: any apiserver certificate), GET /readyz.
    A failure names the error and the phase it hit ("TimeoutError in connect"): a lost SYN, a
    slow handshake and a slow answer have different causes (CI's drift re-run: one request
    timed out and the report could not say where)."""
    context = _client_context()
    phase = "connect"
    try:
        with socket.create_connection((address, port), timeout=timeout) as raw:
            raw.settimeout(timeout)
            phase = "tls"
            with context.wrap_socket(raw) as s:
                phase = "reply"
                s.sendall(b"GET /readyz HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
                data = s.recv(128)
    except (OSError, ssl.SSLError) as e:
        return False, f"{type(e).__name__} in {phase}"
    line = data.split(b"\r\n", 1)[0].decode(errors="replace")
    return line.split()[1:2] == ["200"], line


@dataclass
class Probe:
    """A running probe; `stop()` ends it and returns what it saw (attempts by start time)."""

    target: str
    attempts: list[Attempt]
    thread: threading.Thread
    stopping: threading.Event
    t0: float

    def now(self) -> float:
        """Seconds since the probe started (the attempts' clock)."""
        return time.monotonic() - self.t0

    def result(self) -> ProbeResult:
        return ProbeResult(self.target, tuple(sorted(self.attempts, key=lambda a: a.at)))

    def stop(self) -> ProbeResult:
        self.stopping.set()
        self.thread.join()
        return self.result()


def start(
    address: str,
    port: int = 6443,
    *,
    host: str | None = None,
    netns_name: str = topology.CLIENT_NS,
    interval: float = 0.1,
    timeout: float = 1.0,
) -> Probe:
    """Start a request every `interval` s from lab host `host` (or namespace `netns_name`; ""
    for this process's own namespace)."""
    ns = topology.host_ns(host) if host else netns_name
    attempts: list[Attempt] = []
    stopping = threading.Event()
    lock = threading.Lock()
    t0 = time.monotonic()

    def one() -> None:
        # timed here, when the request is made: a thread the scheduler (or the GIL) started
        # late makes its request late, and its result belongs to that moment, not to the tick
        # that created it
        at = time.monotonic() - t0
        ok, answer = get_readyz(address, port, timeout)
        with lock:
            attempts.append(Attempt(at, ok, answer))

    def run() -> None:
        if ns:
            probe._enter_netns(ns)  # threads started from here inherit the namespace
        workers: list[threading.Thread] = []
        n = 0
        while not stopping.is_set():
            w = threading.Thread(target=one, daemon=True)
            w.start()
            workers.append(w)
            n += 1
            stopping.wait(max(0.0, t0 + n * interval - time.monotonic()))
        for w in workers:
            w.join(timeout + 1)

    th = threading.Thread(target=run, name=f"readyz-{ns}", daemon=True)
    th.start()
    return Probe(f"https://{address}:{port}/readyz from {ns}", attempts, th, stopping, t0)


def both(interval: float = 0.1, timeout: float = 1.0) -> dict[str, Probe]:
    """The issue's two probes: the VIP from a control plane, the floating IP from outside."""
    topo = topology.load()
    return {
        "vip": start(topo.vip, host="k8scontrol01", interval=interval, timeout=timeout),
        "fip": start(topo.floating_ip, interval=interval, timeout=timeout),
    }


def wait_ok(target: Callable[[], tuple[bool, str]], timeout: float = 30) -> None:
    t0 = time.monotonic()
    while not target()[0]:
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"no 200 from /readyz within {timeout}s")
        time.sleep(0.3)


# ----- the stand-in server ----------------------------------------------------------------------
def serving(host: str) -> bool:
    """Whether something answers GET /readyz 200 on the control plane's private IP:6443."""
    ip = topology.load().host(host).private_ip
    code = (
        "import ssl,socket,sys\n"
        "c=ssl.create_default_context();c.check_hostname=False;c.verify_mode=ssl.CERT_NONE\n"
        f"s=c.wrap_socket(socket.create_connection(('{ip}',6443),timeout=2))\n"
        "s.sendall(b'GET /readyz HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n"
        "sys.exit(0 if b' 200 ' in s.recv(64) else 1)\n"
    )
    r = netns.host_exec(host, ["/usr/bin/python3", "-c", code], check=False, timeout=10)
    return r.returncode == 0


def install(hosts: list[str]) -> list[str]:
    """Install and start the stand-in on each control plane where nothing answers /readyz yet
    (after the Kubernetes walkthrough the apiserver stand-ins do). Returns where it went."""
    done = []
    for h in hosts:
        if serving(h):
            continue
        ip = topology.load().host(h).private_ip
        netns.host_exec(
            h,
            [
                "sh",
                "-c",
                f"mkdir -p {CERT_DIR} && openssl req -x509 -newkey ec "
                "-pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 "
                f"-subj /CN={h} -keyout {CERT_DIR}/key.pem -out {CERT_DIR}/cert.pem "
                f">/dev/null 2>&1 && cat > {SCRIPT} && chmod 755 {SCRIPT}",
            ],
            input=SERVER,
        )
        netns.host_exec(
            h,
            ["sh", "-c", f"cat > /etc/systemd/system/{UNIT}.service"],
            input=UNIT_FILE.replace("@ADDRESS@", ip),
        )
        netns.host_exec(
            h,
            [
                "sh",
                "-c",
                f"systemctl daemon-reload && systemctl enable {UNIT}.service "
                f"&& systemctl start {UNIT}.service",
            ],
        )
        done.append(h)
    for h in done:
        wait_ok(lambda h=h: (serving(h), ""), timeout=30)  # type: ignore[misc]
    return done


def remove(hosts: list[str]) -> None:
    for h in hosts:
        netns.host_exec(
            h,
            [
                "sh",
                "-c",
                f"systemctl disable --now {UNIT}.service; "
                f"rm -f /etc/systemd/system/{UNIT}.service {SCRIPT}; rm -rf {CERT_DIR}; "
                "systemctl daemon-reload",
            ],
            check=False,
        )
