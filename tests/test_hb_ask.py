"""files/hb-ask: cl_status, with Heartbeat woken so that it answers the query at once.

The stand-in Heartbeat below behaves as Heartbeat 3.0.6 does in the lab (strace of cl_status:
the sign-on answered at once, the query after it only at the main loop's next wake-up): it
answers a query only when its loop wakes, and the only thing that wakes it here is a
connection to its register socket. It has no timers: a query nobody wakes it for is never
answered, so these tests wait for no clock.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

HB_ASK = Path(__file__).resolve().parents[1] / "files" / "hb-ask"

# a cl_status stand-in: sends its query to the stand-in's query socket, prints the answer
CL_STATUS = """\
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall((" ".join(sys.argv[2:]) + "\\n").encode())
answer = s.makefile().readline().strip()
print(answer)
sys.exit(0 if answer == "active" else 3)
"""


class StandInHeartbeat:
    """Answers queued queries ("nodestatus PEER" → "active") only on a wake-up: a connection
    to its register socket. Counts the wake-ups."""

    def __init__(self, tmp: Path) -> None:
        self.register = str(tmp / "register")
        self.queries = str(tmp / "queries")
        self.wakeups = 0
        self._waiting: list[tuple[socket.socket, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._servers = []
        for path, handler in ((self.register, self._wake), (self.queries, self._queue)):
            srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            srv.bind(path)
            srv.listen(64)
            srv.settimeout(0.05)
            self._servers.append(srv)
            threading.Thread(target=self._accept, args=(srv, handler), daemon=True).start()

    def _accept(self, srv: socket.socket, handler) -> None:  # type: ignore[no-untyped-def]
        while not self._stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            handler(conn)

    def _queue(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        query = conn.makefile().readline().strip()
        with self._lock:
            self._waiting.append((conn, query))

    def _wake(self, conn: socket.socket) -> None:
        conn.close()
        with self._lock:
            self.wakeups += 1
            waiting, self._waiting = self._waiting, []
        for client, query in waiting:
            answer = "active" if query.startswith("nodestatus ") else "dead"
            client.sendall(f"{answer}\n".encode())
            client.close()

    def stop_registering(self) -> None:
        """Its register socket gone (Heartbeat stopping): nothing wakes it any more."""
        self._servers[0].close()
        os.unlink(self.register)

    def close(self) -> None:
        self._stop.set()
        for srv in self._servers:
            srv.close()


@pytest.fixture
def heartbeat(tmp_path: Path) -> Iterator[StandInHeartbeat]:
    hb = StandInHeartbeat(tmp_path)
    yield hb
    hb.close()


def _cl_status(tmp_path: Path, hb: StandInHeartbeat) -> str:
    script = tmp_path / "cl_status.py"
    script.write_text(CL_STATUS)
    return f"{sys.executable} {script} {hb.queries}"


def _hb_ask(
    tmp_path: Path, hb: StandInHeartbeat, *args: str, timeout: str = "30"
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HB_ASK_CL_STATUS": _cl_status(tmp_path, hb),
        "HB_ASK_REGISTER": hb.register,
        "HB_ASK_TIMEOUT": timeout,
    }
    return subprocess.run(
        [sys.executable, str(HB_ASK), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cl_status_alone_waits_for_a_wake_up_that_does_not_come(
    tmp_path: Path, heartbeat: StandInHeartbeat
) -> None:
    """What the resource script and the watchdog did: the query waits for Heartbeat's loop."""
    argv = [*_cl_status(tmp_path, heartbeat).split(), "nodestatus", "k8slb02"]
    with pytest.raises(subprocess.TimeoutExpired):
        subprocess.run(argv, capture_output=True, timeout=2, check=False)
    assert heartbeat.wakeups == 0


def test_hb_ask_wakes_heartbeat_and_passes_the_answer_on(
    tmp_path: Path, heartbeat: StandInHeartbeat
) -> None:
    r = _hb_ask(tmp_path, heartbeat, "nodestatus", "k8slb02")
    assert (r.returncode, r.stdout, r.stderr) == (0, "active\n", "")
    assert heartbeat.wakeups >= 1


def test_hb_ask_keeps_cl_status_exit_code(tmp_path: Path, heartbeat: StandInHeartbeat) -> None:
    r = _hb_ask(tmp_path, heartbeat, "rscstatus")
    assert (r.returncode, r.stdout) == (3, "dead\n")


def test_hb_ask_ends_a_cl_status_that_never_answers(
    tmp_path: Path, heartbeat: StandInHeartbeat
) -> None:
    """Heartbeat not listening (its register socket gone): no wake-up, the query never gets an
    answer; hb-ask ends cl_status after its timeout instead of hanging its caller."""
    heartbeat.stop_registering()
    r = _hb_ask(tmp_path, heartbeat, "nodestatus", "k8slb02", timeout="0.5")
    assert r.returncode == 1
    assert "did not answer within 0.5 s" in r.stderr


def test_hb_ask_without_cl_status_says_so(tmp_path: Path) -> None:
    env = {**os.environ, "HB_ASK_CL_STATUS": str(tmp_path / "missing")}
    r = subprocess.run(
        [sys.executable, str(HB_ASK), "hbstatus"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 127
    assert "cannot run" in r.stderr
