"""Command line: `python -m lab.fakecloud serve|seed|fault|show`.

The token is only ever read from a file that nobody but its owner can read (never argv, where
`ps` would show it to every user of the machine).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import stat
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from lab.fakecloud.model import OnChange
from lab.fakecloud.server import FakeCloud, Listener, start
from lab.fakecloud.state import SeedFloatingIP, SeedServer, seed

EXIT_USAGE = 2


class CliError(Exception):
    """A user error: printed as one line, exit code 2, no traceback."""


def read_token(path: Path) -> str:
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CliError(f"{path}: cannot read token file: {exc.strerror}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(f"{path}: token file must not be accessible by group/others (chmod 600)")
    if not text:
        raise CliError(f"{path}: token file is empty")
    return text


def parse_listen(spec: str) -> Listener:
    """`[NETNS=]HOST:PORT[:admin]` → Listener."""
    netns, _, rest = spec.rpartition("=")
    parts = rest.split(":")
    admin = parts[-1] == "admin"
    if admin:
        parts = parts[:-1]
    if len(parts) != 2 or not parts[1].isdigit():
        raise CliError(f"--listen {spec!r}: expected [NETNS=]HOST:PORT[:admin]")
    return Listener(parts[0], int(parts[1]), netns or None, admin)


def load_hook(spec: str) -> OnChange:
    module, _, func = spec.partition(":")
    if not module or not func:
        raise CliError(f"--on-change {spec!r}: expected module:function")
    try:
        hook = getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as exc:
        raise CliError(f"--on-change {spec!r}: {exc}") from exc
    if not callable(hook):
        raise CliError(f"--on-change {spec!r}: not callable")
    return hook


def cmd_serve(args: argparse.Namespace) -> int:
    token = read_token(args.token_file)
    listeners = [parse_listen(s) for s in args.listen]
    hook = load_hook(args.on_change) if args.on_change else None
    cloud = FakeCloud(
        args.state,
        token,
        action_seconds=args.action_seconds,
        on_change=hook,
        rate_limit=args.rate_limit,
        rate_refill_per_s=args.rate_refill,
    )
    cloud.notify()  # bring the lab's routing in line with the state before answering anything
    running = start(cloud, listeners)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if args.pid_file:
        args.pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
    for (host, port), lst in zip(running.addresses, listeners, strict=True):
        where = f" in netns {lst.netns}" if lst.netns else ""
        print(
            f"fakecloud listening on {host}:{port}{where}{' (admin)' if lst.admin else ''}",
            flush=True,
        )
    try:
        while not stop.wait(0.5):
            pass
    finally:
        running.stop()
        if args.pid_file:
            args.pid_file.unlink(missing_ok=True)
    return 0


def _name_ip(spec: str, what: str) -> tuple[str, str, str]:
    name, sep, rest = spec.partition("=")
    ip, _, location = rest.partition("@")
    if not sep or not name or not ip:
        raise CliError(f"{what} {spec!r}: expected NAME=IPV4[@LOCATION]")
    return name, ip, location or "fsn1"


def cmd_seed(args: argparse.Namespace) -> int:
    labels: dict[str, dict[str, str]] = {}
    for spec in args.label:
        name, sep, kv = spec.partition(":")
        key, _, value = kv.partition("=")
        if not sep or not key:
            raise CliError(f"--label {spec!r}: expected SERVER:KEY=VALUE")
        labels.setdefault(name, {})[key] = value
    servers = []
    for spec in args.server:
        name, ip, loc = _name_ip(spec, "--server")
        servers.append(SeedServer(name, ip, labels.pop(name, {}), loc))
    if labels:
        raise CliError(f"--label for unknown server(s): {', '.join(sorted(labels))}")
    fips = [SeedFloatingIP(*_name_ip(s, "--floating-ip")) for s in args.floating_ip]
    try:
        seed(args.state, servers=servers, floating_ips=fips)
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return 0


def _admin_call(url: str, token: str, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:
        raise CliError(f"{method} {path}: HTTP {exc.code}: {exc.read().decode()[:300]}") from exc
    except OSError as exc:
        raise CliError(f"{method} {path}: {exc}") from exc


def cmd_fault(args: argparse.Namespace) -> int:
    token = read_token(args.token_file)
    body: dict[str, Any] = {}
    if args.clear:
        body["clear"] = True
    for key in (
        "latency",
        "fail_next",
        "code",
        "outage",
        "outage_mode",
        "fail_actions",
        "action_seconds",
    ):
        value = getattr(args, key)
        if value is not None:
            body[key] = value
    if args.fail_next and args.code is None:
        raise CliError("--fail-next needs --code")
    answer = _admin_call(args.url, token, "POST" if body else "GET", "/_lab/faults", body or None)
    print(json.dumps(answer["faults"], indent=1))
    return 0


def cmd_busy(args: argparse.Namespace) -> int:
    token = read_token(args.token_file)
    body = {"server": args.server, "seconds": args.seconds}
    print(json.dumps(_admin_call(args.url, token, "POST", "/_lab/busy", body)["action"], indent=1))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    token = read_token(args.token_file)
    print(json.dumps(_admin_call(args.url, token, "GET", f"/_lab/{args.what}"), indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m lab.fakecloud", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the simulated Hetzner Cloud API")
    s.add_argument(
        "--state", type=Path, required=True, help="state file (JSON, created if missing)"
    )
    s.add_argument(
        "--token-file",
        type=Path,
        required=True,
        help="file holding the API token (mode 0600; the token never goes on argv)",
    )
    s.add_argument(
        "--listen",
        action="append",
        required=True,
        metavar="[NETNS=]HOST:PORT[:admin]",
        help="listen address, repeatable; NETNS= binds inside /run/netns/NETNS; "
        ":admin adds the /_lab/ endpoints",
    )
    s.add_argument(
        "--on-change",
        metavar="MODULE:FUNC",
        help="hook called with the state after every completed change (e.g. lab.sdn:apply_state)",
    )
    s.add_argument(
        "--action-seconds",
        type=float,
        default=0.2,
        help="how long an action stays 'running' (default 0.2)",
    )
    s.add_argument(
        "--rate-limit", type=int, default=3600, help="rate-limit bucket size (default 3600)"
    )
    s.add_argument(
        "--rate-refill",
        type=float,
        default=1.0,
        help="bucket refill in requests per second (default 1.0)",
    )
    s.add_argument("--pid-file", type=Path, help="write the server's PID here; removed on exit")
    s.add_argument("--log-level", default="WARNING", help="Python log level (default WARNING)")
    s.set_defaults(func=cmd_serve)

    d = sub.add_parser("seed", help="add servers and floating IPs to a state file (idempotent)")
    d.add_argument("--state", type=Path, required=True, help="state file to create or extend")
    d.add_argument(
        "--server",
        action="append",
        default=[],
        metavar="NAME=IPV4[@LOCATION]",
        help="a server with its public IPv4, repeatable (location default fsn1)",
    )
    d.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="SERVER:KEY=VALUE",
        help="a label of a --server, repeatable",
    )
    d.add_argument(
        "--floating-ip",
        action="append",
        default=[],
        metavar="NAME=IPV4[@LOCATION]",
        help="a floating IP, repeatable (home location default fsn1)",
    )
    d.set_defaults(func=cmd_seed)

    f = sub.add_parser("fault", help="inject or clear faults on a running server (admin listener)")
    f.add_argument(
        "--url", required=True, help="admin listener base URL, e.g. http://127.0.0.1:8780"
    )
    f.add_argument(
        "--token-file", type=Path, required=True, help="file holding the API token (0600)"
    )
    f.add_argument("--latency", type=float, help="added delay per public call, seconds")
    f.add_argument("--fail-next", type=int, help="the next N public calls fail with --code")
    f.add_argument(
        "--code",
        help="error code for --fail-next: rate_limit_exceeded, locked, "
        "unavailable, server_error, timeout, conflict, ...",
    )
    f.add_argument("--outage", type=float, help="total outage for this many seconds")
    f.add_argument(
        "--outage-mode",
        choices=["close", "hang", "503"],
        help="close: connection closed unanswered (default); hang: no answer until the "
        "outage ends; 503: answer 503 unavailable",
    )
    f.add_argument("--fail-actions", type=int, help="the next N actions end in status 'error'")
    f.add_argument(
        "--action-seconds",
        type=float,
        help="each action started from now on runs this long (Hetzner's take seconds; "
        "--clear restores the server's --action-seconds)",
    )
    f.add_argument("--clear", action="store_true", help="remove all faults (applied first)")
    f.set_defaults(func=cmd_fault)

    b = sub.add_parser(
        "busy",
        help="lock a server with an action of the cloud's own (a backup, create_image) for a "
        "while: every action on it answers 423 locked meanwhile",
    )
    b.add_argument("server", help="the server's name")
    b.add_argument("seconds", type=float, help="how long the action runs (0 < seconds ≤ 600)")
    b.add_argument("--url", required=True, help="admin listener base URL")
    b.add_argument(
        "--token-file", type=Path, required=True, help="file holding the API token (0600)"
    )
    b.set_defaults(func=cmd_busy)

    w = sub.add_parser("show", help="print the state or the call log of a running server")
    w.add_argument("what", choices=["state", "calls", "faults"], help="what to print")
    w.add_argument("--url", required=True, help="admin listener base URL")
    w.add_argument(
        "--token-file", type=Path, required=True, help="file holding the API token (0600)"
    )
    w.set_defaults(func=cmd_show)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "WARNING"),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
