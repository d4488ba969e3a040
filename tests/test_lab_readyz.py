"""The lab's issue-11 probe request (`lab.readyz.get_readyz`) names where a failed request failed.

Run against loopback sockets in the test process (no lab namespace, no lab address)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

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
