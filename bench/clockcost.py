"""What the watchdog's reference clock costs a load balancer: `files/clock-watch` as the watchdog
runs it (one look every 0.5 s) against a local HTTPS server that answers like a control plane
(`HEAD /` refused, with a `Date`), for DURATION s; its CPU time and resident memory from /proc.

    python -m bench.clockcost [--duration 60]

Targets (ours): ≤ 1 % of a core, ≤ 32 MiB resident. No lab needed.
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from email.utils import formatdate
from pathlib import Path

from bench.common import REPO, save, table, verdict

SCRIPT = REPO / "files" / "clock-watch"
CPU_TARGET = 1.0  # % of a core
RSS_TARGET_MIB = 32


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate and key (P-256) in `directory`."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"]
    subprocess.run(
        ["openssl", "req", "-x509", *ec, "-subj", "/CN=cp", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


class DateServer:
    """HTTPS on 127.0.0.1 answering every `HEAD` with 403 and `Date` = now + `ahead` (or a
    broken date with `bad`), counting the requests: a control plane as the reference clock
    sees one."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.ahead = 0.0
        self.bad = False
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def date_time_string(self, timestamp: float | None = None) -> str:
                if server.bad:
                    return "not a date"
                return formatdate(time.time() + server.ahead, usegmt=True)

            def do_HEAD(self) -> None:
                server.requests += 1
                self.send_response(403)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def source(self) -> str:
        return f"127.0.0.1:{self.httpd.server_address[1]}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _usage(pid: int) -> tuple[float, int]:
    """CPU seconds (user + system) and resident KiB of process `pid`."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    rss = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return ticks / os.sysconf("SC_CLK_TCK"), rss


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = DateServer(*self_signed(Path(tmp)))
        # the LB's interpreter, as the script's shebang runs it
        python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
        proc = subprocess.Popen(
            [python, "-IS", str(SCRIPT), "--parent", str(os.getpid()), server.source],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(args.duration)
            cpu_s, rss_kib = _usage(proc.pid)
        finally:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)
            server.close()
    cpu_pct = 100 * cpu_s / args.duration
    rss_mib = rss_kib / 1024
    cpu_ok, rss_ok = cpu_pct <= CPU_TARGET, rss_mib <= RSS_TARGET_MIB
    table(
        f"the reference clock over {args.duration:g} s ({server.requests} answers)",
        ["measure", "value", "target", ""],
        [
            ("CPU, % of a core", round(cpu_pct, 2), f"≤ {CPU_TARGET:g}", verdict(cpu_ok)),
            ("resident, MiB", round(rss_mib, 1), f"≤ {RSS_TARGET_MIB}", verdict(rss_ok)),
        ],
    )
    save(
        "clockcost",
        {
            "duration_s": args.duration,
            "answers": server.requests,
            "cpu_s": round(cpu_s, 2),
            "cpu_pct": round(cpu_pct, 2),
            "rss_mib": round(rss_mib, 1),
        },
    )
    return 0 if cpu_ok and rss_ok else 1


if __name__ == "__main__":
    sys.exit(main())
