"""HAProxy's runtime API on the load balancers, through python3 (always on Debian):
no socat needed. Used to read the backends (`show stat`) and to take a control plane out of
rotation before its API server restarts (`set server BACKEND/SERVER state drain|ready`)."""

from __future__ import annotations

import re
import shlex

ADMIN_SOCKET = "/run/haproxy/admin.sock"
API_BACKEND = "k8s-control-plane"  # files/haproxy.cfg.j2
STATES = ("ready", "drain", "maint")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


def runtime_command(command: str) -> str:
    """Shell: send one runtime-API command, print the answer."""
    if "\n" in command or "'" in command or '"' in command:
        raise ValueError(f"not a single runtime-API command: {command!r}")
    return (
        'python3 -c "import socket;s=socket.socket(socket.AF_UNIX);'
        f"s.connect('{ADMIN_SOCKET}');s.sendall(b'{command}\\n');"
        "import sys;b=b''\nwhile True:\n d=s.recv(65536)\n if not d: break\n b+=d\n"
        'sys.stdout.write(b.decode())"'
    )


def set_server_state(server: str, state: str, *, backend: str = API_BACKEND) -> str:
    """Shell: `set server BACKEND/SERVER state STATE`; fails unless HAProxy answers empty (ok)."""
    if state not in STATES or not _NAME.match(server) or not _NAME.match(backend):
        raise ValueError(f"bad server state request: {backend}/{server} {state}")
    cmd = runtime_command(f"set server {backend}/{server} state {state}")
    # HAProxy answers nothing on success, a message on error
    return (
        f"out=$({cmd}) || exit 1; "
        'test -z "$(printf %s "$out" | tr -d \'[:space:]\')" || { echo "$out" >&2; exit 1; }'
    )


def server_state(server: str, *, backend: str = API_BACKEND) -> str:
    """Shell: print the server's admin state from `show stat` (status column: UP, DRAIN, MAINT…)."""
    cmd = runtime_command("show stat")
    b, srv = shlex.quote(backend), shlex.quote(server)
    return f"{cmd} | awk -F, -v b={b} -v s={srv} '$1==b && $2==s {{print $18}}'"
