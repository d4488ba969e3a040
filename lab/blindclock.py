"""A pause the paused host cannot see: the lab's stand-in for a hypervisor that stops and
continues a KVM guest with kvm-clock (QEMU saves and restores kvmclock at stop/cont, so no
clock inside the guest shows the gap: not Heartbeat's, not /proc/uptime, not the wall clock
until NTP steps it).

The lab's usual hang (`faults.freeze`: SIGSTOP of every process of the host) lets the clocks run
on, so Heartbeat on the resumed node sees its peer's heartbeats late and the watchdog's pause
detector sees a gap in /proc/uptime. Here, every clock of the host is shifted back by the pause
instead:

- `lab/blindclock.c`, compiled here (gcc, installed by lab/install-machine.sh) and loaded into
  every process the host starts from then on (its /etc/ld.so.preload), subtracts one offset,
  mapped from the host's /run/rblab-blind-offset, from every clock (times(2), Heartbeat's clock,
  included) and adds it back to absolute deadlines;
- /proc/uptime, which no preload reaches, is covered by a bind mount of a file that a ticker
  process of the host (itself shifted) rewrites every 20 ms: it stops with the host, and its
  first value after the resume continues where it stopped;
- `pause` stops the host like `faults.freeze`, raises the offset by the time it was stopped
  while nothing of it runs, then continues it.

Heartbeat and the watchdog are restarted by `enable` (a running process keeps its unshifted
clocks), so the fault that uses this makes the host the holder again afterwards. The blindness
stays for the host's boot: taking the bind mount away while the offset is not zero would show
the watchdog a pause of that size. A reboot ends it (a fresh /run: no offset file, offset 0);
`disable` removes the preload, for the campaign's cleanup.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path

from lab import faults, labstate, netns, scenarios

SOURCE = Path(__file__).with_name("blindclock.c")
LIBRARY = "/usr/local/lib/rblab-blindclock.so"  # in the host
PRELOAD = "/etc/ld.so.preload"
OFFSET = "/run/rblab-blind-offset"
UPTIME = "/run/rblab-uptime"
TICKER_PID = "/run/rblab-uptime.pid"
# the ticker: /proc/uptime's first field from the (shifted) boot-time clock, every 20 ms
TICKER = (
    "import os, time\n"
    f"fd = os.open({UPTIME!r}, os.O_WRONLY | os.O_CREAT, 0o444)\n"
    "while True:\n"
    "    os.pwrite(fd, b'%.2f 0.00\\n' % time.clock_gettime(time.CLOCK_BOOTTIME), 0)\n"
    "    time.sleep(0.02)\n"
)


def build(out: Path | None = None) -> Path:
    """The shared library, compiled once per lab run (again when the source changed); `out`:
    where (default: the lab's run directory)."""
    out = out or labstate.paths().run / "blindclock.so"
    if out.is_file() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("the blind clock needs a C compiler: run `bash bin/setup` (gcc)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    subprocess.run(
        [cc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(tmp), str(SOURCE), "-ldl"],
        check=True,
        capture_output=True,
        text=True,
    )
    tmp.replace(out)
    return out


def _in_host(host: str, path: str) -> Path:
    """A path of the host's own mount namespace, reached from here (its init's root)."""
    return Path(f"/proc/{netns.init_pid(host)}/root{path}")


def enabled(host: str) -> bool:
    """The host's clocks are blind (its preload, offset file and ticker are in place)."""
    pid = _in_host(host, TICKER_PID)
    try:
        ticker = int(pid.read_text())
    except (OSError, ValueError):
        return False
    r = netns.host_exec(host, ["kill", "-0", str(ticker)], check=False, timeout=10)
    return r.returncode == 0 and _in_host(host, PRELOAD).is_file()


def enable(host: str) -> bool:
    """Make every clock of `host` blind to a `pause`: the library and the preload, the offset
    file (0), the ticker and its bind mount over /proc/uptime, then a restart of Heartbeat and
    the watchdog so they run shifted. Returns False when it already was (nothing restarted)."""
    if enabled(host):
        return False
    lib = build()
    target = _in_host(host, LIBRARY)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(lib, target)
    offset = _in_host(host, OFFSET)
    offset.write_bytes(struct.pack("q", 0))
    _in_host(host, PRELOAD).write_text(LIBRARY + "\n")
    netns.host_exec(
        host,
        [
            "sh",
            "-c",
            f'python3 -IS -c "$1" </dev/null >/dev/null 2>&1 & echo $! > {TICKER_PID}; '
            f"i=0; while [ ! -s {UPTIME} ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; "
            f"mount --bind {UPTIME} /proc/uptime",
            "ticker",
            TICKER,
        ],
        timeout=30,
    )
    # the long-running processes whose clocks decide: Heartbeat, the watchdog and its
    # reference clock (a running process keeps its unshifted clocks)
    netns.host_exec(host, ["systemctl", "restart", "heartbeat", "haproxy-watchdog"], timeout=120)
    return True


def _add_offset(host: str, seconds: float) -> None:
    fd = os.open(_in_host(host, OFFSET), os.O_RDWR)
    try:
        (now,) = struct.unpack("q", os.pread(fd, 8, 0))
        # in place: the host's processes map this page
        os.pwrite(fd, struct.pack("q", now + int(seconds * 1e9)), 0)
    finally:
        os.close(fd)


def pause(host: str, seconds: float) -> float:
    """Stop every process of `host` for `seconds`, then continue it with every clock shifted
    back by the time it was stopped (measured from the last stop to the first continue, so no
    clock of the host goes backwards). Returns that time."""
    if not enabled(host):
        raise RuntimeError(f"{host}: the blind clock is not enabled (blindclock.enable)")
    pids = faults.freeze(host)
    stopped = time.monotonic()
    try:
        time.sleep(seconds)
    finally:
        took = time.monotonic() - stopped
        try:
            _add_offset(host, took)
        finally:
            faults.thaw(host, pids)
    return took


def disable(host: str) -> None:
    """No preload for processes the host starts from now on, and no library in its layers (the
    campaign's cleanup). The ticker and its mount stay until the host reboots (see the module's
    docstring); processes that mapped the library keep it."""
    # a host that is not running starts its next boot with offset 0
    with contextlib.suppress(RuntimeError):
        _in_host(host, PRELOAD).unlink(missing_ok=True)
        _in_host(host, LIBRARY).unlink(missing_ok=True)


def restore(host: str) -> None:
    """The host's clocks real again, for what runs after a test: no preload, then a reboot (a
    fresh /run: no offset file, no ticker, no bind mount). The pair takes the group from the
    host first when it holds it (a planned hand-over, `hb_standby`)."""
    disable(host)
    if host in scenarios.holders():
        netns.host_exec(host, ["/usr/share/heartbeat/hb_standby"], check=False, timeout=60)
        scenarios.wait_for(
            f"{host} gave the VIP up", lambda: host not in scenarios.holders(), 30, 0.5
        )
    boots = faults.power_cycle(host)
    faults.wait_booted(host, boots)
