"""An API client's view of an upgrade: a new TCP + TLS connection and `GET /readyz` every
`interval` from a lab namespace (the client, through the floating IP), until stopped.

Each attempt counts as ok only when the API answered `200 ok`; a refused connect, a TLS error, a
timeout, a reset or any other answer is a failed request (with what went wrong). Runs in a thread
that entered the namespace (lab.probe's way): nothing in the root namespace's network.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from lab.probe import Attempt, _enter_netns
from lab.topology import CLIENT_NS


def readyz_once(address: str, port: int, timeout: float) -> tuple[bool, str]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # any API server's cert
    try:
        with (
            socket.create_connection((address, port), timeout=timeout) as raw,
            ctx.wrap_socket(raw) as s,
        ):
            s.settimeout(timeout)
            s.sendall(
                f"GET /readyz HTTP/1.1\r\nHost: {address}:{port}\r\n"
                "Connection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := s.recv(4096):
                data += chunk
    except (OSError, ssl.SSLError) as exc:
        return False, type(exc).__name__
    status = data.split(b"\r\n", 1)[0].decode(errors="replace")
    body = data.partition(b"\r\n\r\n")[2].strip()
    if " 200 " in f"{status} " and body == b"ok":
        return True, "200 ok"
    return False, status or "empty answer"


@dataclass
class ReadyzProbe:
    """Start with `start()`, end with `stop()`; then read `attempts` / `summary()`."""

    address: str
    port: int = 6443
    netns: str = CLIENT_NS
    interval: float = 0.2
    timeout: float = 1.0
    attempts: list[Attempt] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: list[BaseException] = field(default_factory=list)

    def start(self) -> ReadyzProbe:
        self._thread = threading.Thread(target=self._run, name="readyz-probe", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            _enter_netns(self.netns)
            t0 = time.monotonic()
            n = 0
            while not self._stop.is_set():
                at = time.monotonic() - t0
                ok, answer = readyz_once(self.address, self.port, self.timeout)
                self.attempts.append(Attempt(at, ok, answer))
                n += 1
                self._stop.wait(max(0.0, t0 + n * self.interval - time.monotonic()))
        except BaseException as exc:  # re-raised by stop()
            self._error.append(exc)

    def stop(self) -> ReadyzProbe:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._error:
            raise self._error[0]
        return self

    @property
    def failed(self) -> list[Attempt]:
        return [a for a in self.attempts if not a.ok]

    @property
    def failed_ratio(self) -> float:
        return len(self.failed) / len(self.attempts) if self.attempts else 1.0

    def summary(self) -> str:
        why = Counter(a.answer for a in self.failed)
        detail = ", ".join(f"{k} x{v}" for k, v in why.most_common()) or "none"
        return (
            f"GET /readyz via {self.address}:{self.port} from {self.netns} every "
            f"{self.interval:.1f}s: {len(self.attempts)} requests, {len(self.failed)} failed "
            f"({100 * self.failed_ratio:.2f} %): {detail}"
        )
