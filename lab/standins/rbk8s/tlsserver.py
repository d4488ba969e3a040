"""A threading HTTPS server whose TLS handshake runs in each connection's own thread.

Why: wrapping the listening socket (`ctx.wrap_socket(server.socket)`) does the handshake inside
`accept()`, in the one thread that accepts: a client that connects and then stalls (a paused load
balancer's health check, a hung node) holds up every other client. A real apiserver or etcd
serves each connection on its own, so the stand-ins do too.
"""

from __future__ import annotations

import socket
import ssl
from http.server import ThreadingHTTPServer
from typing import Any

HANDSHAKE_TIMEOUT = 10.0


class TlsThreadingServer(ThreadingHTTPServer):
    daemon_threads = True
    tls: ssl.SSLContext | None = None  # set by the subclass before serving

    def finish_request(self, request: Any, client_address: Any) -> None:
        assert self.tls is not None
        sock: socket.socket = request
        sock.settimeout(HANDSHAKE_TIMEOUT)
        try:
            wrapped = self.tls.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError):
            return
        wrapped.settimeout(None)
        try:
            super().finish_request(wrapped, client_address)
        finally:
            # the caller's shutdown_request gets the raw socket, which the wrap detached: end
            # this one as it would (FIN after the answer, then close), not by a bare close
            self.shutdown_request(wrapped)
