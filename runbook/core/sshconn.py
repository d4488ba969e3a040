"""paramiko/Fabric plumbing for `remote`: a ProxyCommand that lives in its own session and sees
its proxy's EOF, failures in one line, and paramiko's logger kept off stderr.
"""

from __future__ import annotations

import logging
import os
import select
import shlex
import subprocess
import threading
import time
from typing import Any

import paramiko
from fabric import Connection
from paramiko.proxy import ProxyCommand

# paramiko logs transport-thread failures (a host that never sends its banner, "No existing
# session") with tracebacks; without a handler they reach stderr through logging's last resort.
# The runbook reports each as one line per host instead; `--verbose` shows paramiko's own words.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
logging.getLogger("paramiko").propagate = False


def library_logging(*, verbose: bool) -> None:
    """--verbose: paramiko's warnings and errors (with tracebacks) on stderr."""
    log = logging.getLogger("paramiko")
    if verbose and not any(isinstance(h, logging.StreamHandler) for h in log.handlers):
        handler = logging.StreamHandler()
        handler.setLevel(logging.WARNING)
        log.addHandler(handler)


# the longest a recv waits in one select before it looks whether the connection was closed
RECV_SLICE_S = 0.2


class SessionProxyCommand(ProxyCommand):
    """paramiko's ProxyCommand, its child in a session of its own: the terminal's Ctrl-C (sent to
    the whole foreground process group) must not cut the connection under a running command;
    the runbook decides when to close it. `close` also reaps the child."""

    def __init__(self, command_line: str) -> None:
        self.cmd = shlex.split(command_line)
        self.process = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            start_new_session=True,
        )
        self.timeout = None
        # recv reads the pipe by its descriptor number in paramiko's transport thread; the
        # pipes are closed only while no recv runs (`_reading`), and a recv after `close`
        # starts reads nothing. Closed under a running recv, the number went to the next file
        # the process opened, and the recv read the first 16 bytes of it (CI 75: the lazy
        # import of a module at the recap failed with a SyntaxError from its 17th byte on)
        self._reading = threading.Lock()
        self._closing = False

    def recv(self, size: int) -> bytes:
        """paramiko's loop, but the proxy's end of output is the connection's end: paramiko's own
        version ignores EOF and spins (a host that reboots under a session left the transport
        waiting forever). An empty result tells paramiko the connection is gone."""
        buffer = b""
        assert self.process.stdout is not None  # Popen(stdout=PIPE)
        with self._reading:
            if self._closing:
                return buffer
            fd = self.process.stdout.fileno()
            try:
                start = time.monotonic()
                while len(buffer) < size:
                    wait = RECV_SLICE_S
                    if self.timeout is not None:
                        left = self.timeout - (time.monotonic() - start)
                        if left <= 0:
                            raise TimeoutError
                        wait = min(wait, left)
                    ready, _, _ = select.select([fd], [], [], wait)
                    if self._closing:  # closed meanwhile: the pipe is about to go
                        return buffer
                    if ready:
                        chunk = os.read(fd, size - len(buffer))
                        if not chunk:
                            return buffer
                        buffer += chunk
                return buffer
            except TimeoutError:
                if buffer:
                    return buffer
                raise
            except OSError as exc:
                raise paramiko.ProxyCommandFailure(" ".join(self.cmd), str(exc)) from exc

    def close(self) -> None:
        self._closing = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # a running recv ends within one slice of its select; should it not, the pipes are
        # left to the garbage collector rather than closed under it
        if not self._reading.acquire(timeout=5 * RECV_SLICE_S):
            return
        try:
            for f in (self.process.stdin, self.process.stdout, self.process.stderr):
                if f is not None:
                    f.close()
        finally:
            self._reading.release()


class SessionConnection(Connection):
    """A Fabric Connection whose ProxyCommand runs in its own session (`SessionProxyCommand`)."""

    def open_gateway(self) -> Any:
        if isinstance(self.gateway, str):
            return SessionProxyCommand(self.gateway)
        return super().open_gateway()


def why_unreachable(exc: BaseException, *, timeout: float) -> str:
    """One line for an SSH connection failure (paramiko's messages say little to an operator)."""
    text = str(exc) or type(exc).__name__
    if "Error reading SSH protocol banner" in text:
        return f"no SSH banner within {timeout:g} s"
    if "No existing session" in text or "SSH session not active" in text:
        return f"no SSH handshake within {timeout:g} s"
    if isinstance(exc, paramiko.ProxyCommandFailure):
        return f"proxy command failed: {text}"
    return text
