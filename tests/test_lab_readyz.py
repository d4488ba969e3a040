"""The lab's issue-11 probe: a request (`lab.readyz.get_readyz`) names where a failed request
failed, and the probe (`lab.readyz.start`) times each request when it is made.

Run against loopback sockets in the test process (no lab namespace, no lab address)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from lab import readyz
from lab.readyz import get_readyz


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts connections and then never says anything (no TLS handshake)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


def test_a_handshake_that_never_comes_is_a_timeout_in_tls(silent_listener: int) -> None:
    ok, answer = get_readyz("127.0.0.1", silent_listener, 0.3)
    assert (ok, answer) == (False, "TimeoutError in tls")


def test_a_closed_port_is_refused_in_connect() -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # bound once, nobody listens now
    ok, answer = get_readyz("127.0.0.1", port, 0.3)
    assert (ok, answer) == (False, "ConnectionRefusedError in connect")


def test_an_attempt_is_timed_when_its_request_is_made(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request thread that starts late (a 2-core machine busy with a failover: the scheduler,
    the GIL) makes its request late; its result counts at that moment. Timed at the tick that
    created the thread, a request sent after a failover's route switch counted before it and
    split one outage in two (a bench run: an isolated success among failures)."""
    made: list[float] = []

    def request(address: str, port: int, timeout: float) -> tuple[bool, str]:
        made.append(time.monotonic())
        return True, "HTTP/1.1 200 OK"

    class LateThread(threading.Thread):
        def run(self) -> None:
            if getattr(self, "_target", None) is not None and self._target.__name__ == "one":
                time.sleep(0.15)  # the request's thread gets the CPU 0.15 s after its tick
            super().run()

    monkeypatch.setattr(readyz, "get_readyz", request)
    monkeypatch.setattr(readyz.threading, "Thread", LateThread)
    p = readyz.start("127.0.0.1", 1, netns_name="", interval=0.1, timeout=0.3)
    time.sleep(0.45)
    result = p.stop()
    assert len(result.attempts) >= 3
    times = sorted(p.t0 + a.at for a in result.attempts)
    assert len(times) == len(made)
    for recorded, sent in zip(times, sorted(made), strict=True):
        assert abs(recorded - sent) < 0.03, (recorded - sent, "timed at the tick, not the request")
