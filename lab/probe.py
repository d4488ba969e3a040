"""TCP probe for failover measurements: a new connection every `interval` from inside a lab
namespace.

Why new connections: a client of the VIP/floating IP sees a failover as refused or timed-out
connects; each attempt records whether it connected and what the server said first (e.g. the
answering host's name), so a test can tell *who* answered and for how long nobody did. The probe
runs in a thread of this process that switched its network namespace (setns) — no helper process,
nothing in the root namespace's network.
"""

from __future__ import annotations

import ctypes
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lab.topology import CLIENT_NS, host_ns

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)

# A one-line TCP responder for lab hosts: answers every connection with its text (default:
# hostname).
RESPONDER = (
    "import socket,sys\n"
    "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(64)\n"
    "msg=(sys.argv[3] if len(sys.argv)>3 else socket.gethostname()).encode()+b'\\n'\n"
    "while True:\n"
    "    c,_=s.accept()\n"
    "    try: c.sendall(msg)\n"
    "    finally: c.close()\n"
)


def responder_argv(port: int, text: str | None = None, bind: str = "0.0.0.0") -> list[str]:
    """argv for `lab.netns.host_spawn`: a TCP server on a host that answers with `text` or its
    hostname."""
    return ["/usr/bin/python3", "-c", RESPONDER, bind, str(port), *([text] if text else [])]


@dataclass(frozen=True)
class Attempt:
    at: float  # monotonic seconds since the probe started
    ok: bool
    answer: str  # first line the server sent, or the error


@dataclass(frozen=True)
class Outage:
    start: float
    end: float  # first success after the outage (or the probe's end)

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class ProbeResult:
    target: str
    attempts: tuple[Attempt, ...]

    @property
    def ok(self) -> int:
        return sum(a.ok for a in self.attempts)

    @property
    def answers(self) -> tuple[str, ...]:
        return tuple(a.answer for a in self.attempts if a.ok)

    @property
    def outages(self) -> tuple[Outage, ...]:
        """Windows without a successful connect (from the first failure to the next success)."""
        out: list[Outage] = []
        start: float | None = None
        for a in self.attempts:
            if not a.ok and start is None:
                start = a.at
            elif a.ok and start is not None:
                out.append(Outage(start, a.at))
                start = None
        if start is not None:
            out.append(Outage(start, self.attempts[-1].at))
        return tuple(out)

    def summary(self) -> str:
        outs = ", ".join(f"{o.start:.1f}s+{o.seconds:.2f}s" for o in self.outages) or "none"
        return f"{self.target}: {self.ok}/{len(self.attempts)} connects ok; outages: {outs}"


def _enter_netns(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({ns}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _connect(address: str, port: int, timeout: float, read: bool = True) -> tuple[bool, str]:
    try:
        with socket.create_connection((address, port), timeout=timeout) as s:
            if not read:  # a TLS server (HAProxy in front of an apiserver) waits for the client
                return True, ""
            s.settimeout(timeout)
            data = s.recv(256)
        return True, data.decode(errors="replace").strip()
    except OSError as e:
        return False, type(e).__name__


def probe(
    address: str,
    port: int,
    *,
    netns: str = CLIENT_NS,
    host: str | None = None,
    interval: float = 0.1,
    duration: float = 5.0,
    count: int | None = None,
    timeout: float = 0.3,
    read: bool = True,
    until: Callable[[ProbeResult], bool] | None = None,
) -> ProbeResult:
    """Connect to address:port every `interval` s from `netns` (or lab host `host`), for
    `duration` s
    or `count` attempts (whichever ends first), or until `until(result_so_far)` is true."""
    ns = host_ns(host) if host else netns
    attempts: list[Attempt] = []
    error: list[BaseException] = []
    target = f"{address}:{port} from {ns}"

    def run() -> None:
        try:
            _enter_netns(ns)  # only this thread switches (the thread is discarded afterwards)
            t0 = time.monotonic()
            while True:
                at = time.monotonic() - t0
                ok, answer = _connect(address, port, timeout, read)
                attempts.append(Attempt(at, ok, answer))
                if count is not None and len(attempts) >= count:
                    return
                if until is not None and until(ProbeResult(target, tuple(attempts))):
                    return
                if time.monotonic() - t0 >= duration:
                    return
                time.sleep(max(0.0, t0 + at + interval - time.monotonic()))
        except BaseException as e:  # re-raised in the caller's thread
            error.append(e)

    th = threading.Thread(target=run, name=f"probe-{ns}", daemon=True)
    th.start()
    th.join()
    if error:
        raise error[0]
    return ProbeResult(target, tuple(attempts))


def background_probe(
    address: str, port: int, **kw: object
) -> tuple[threading.Thread, list[ProbeResult]]:
    """Start `probe` in the background; join the thread, then read the result."""
    out: list[ProbeResult] = []
    th = threading.Thread(
        target=lambda: out.append(probe(address, port, **kw)),  # type: ignore[arg-type]
        daemon=True,
    )
    th.start()
    return th, out
