"""Root-namespace supervisor of the lab hosts: boots every host's init and boots it again after it
exits.

Why: a reboot inside a host (`reboot`, `halt`, Heartbeat's `reboot -nf`, `kill` of the init ...) can
only end that host's PID namespace. The supervisor turns that into a reboot like a cloud server's:
the host's network namespace stays (its NIC), runtime addresses are reset, the API's routing is
applied again, and a new PID/UTS/IPC/mount namespace starts on the same overlay layers. On SIGTERM
(`inv lab.down`) it shuts every host down (SIGTERM to each init: stop services, end processes;
SIGKILL after a timeout) and exits.

Run: python -m lab.supervisor --config <state>/lab-config.json
(started and recorded by `inv lab.up`)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from lab import labstate, netns, sdn, topology

HOSTINIT = Path(__file__).with_name("hostinit.py")
BOOT_DELAY = 5.0  # seconds between a host's end and its next boot (see HostRunner.run)
STOP_TIMEOUT = 25.0
# how a host init ends on request: 0 (SIGTERM), 100 (reboot/halt signal), or killed by the kernel
# after reboot(2) in its PID ns (SIGHUP: restart, SIGINT: halt/poweroff; unshare re-raises it)
REQUESTED_EXITS = {0, 100, -signal.SIGHUP, -signal.SIGINT}

_stopping = threading.Event()


def log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} supervisor: {msg}", flush=True)


def init_argv(cfg_path: Path, name: str) -> list[str]:
    return [
        "nsenter",
        f"--net=/run/netns/{topology.host_ns(name)}",
        "--",
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--uts",
        "--ipc",
        "--mount",
        "--propagation",
        "private",
        "/usr/bin/python3",
        str(HOSTINIT),
        "--config",
        str(cfg_path),
        "--host",
        name,
    ]


def _child_of(pid: int, timeout: float = 5.0) -> int | None:
    """unshare --fork's child = the host init (PID 1 inside)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return None
        if kids:
            return int(kids[0])
        time.sleep(0.01)
    return None


class HostRunner(threading.Thread):
    def __init__(self, cfg_path: Path, topo: topology.Topology, name: str) -> None:
        super().__init__(name=f"host-{name}", daemon=True)
        self.cfg_path, self.topo, self.host = cfg_path, topo, name
        self.paths = labstate.paths()
        self.init: labstate.ProcRef | None = None
        self.boots = 0

    def run(self) -> None:
        crashes: list[float] = []
        while not _stopping.is_set():
            if self.boots:
                self.reset_network()
                # a cloud server is gone for a while when it reboots or is reset (firmware, kernel,
                # systemd): one back within Heartbeat's deadtime would look like a Heartbeat
                # restart to its peer, not a failure, which no real power cut does
                if _stopping.wait(BOOT_DELAY):
                    break
            rc = self.boot_once()
            if rc in REQUESTED_EXITS or _stopping.is_set():
                continue
            # the init itself failed (a traceback, a failed mount): do not spin
            now = time.monotonic()
            crashes = [t for t in crashes if now - t < 30] + [now]
            if len(crashes) >= 3:
                log(f"{self.host}: init keeps failing (rc {rc}); next boot in 10 s")
                if _stopping.wait(10):
                    break
        log(f"{self.host}: stopped")

    def reset_network(self) -> None:
        try:
            netns.reset_host_network(self.topo, self.host)
            sdn.forget_host(self.host)
            sdn.apply_from_file(only_host=self.host)
        except Exception as e:  # keep booting even if the network reset failed
            log(f"{self.host}: network reset failed: {e}")

    def boot_once(self) -> int:
        self.boots += 1
        logf = open(self.paths.logs / f"{self.host}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            init_argv(self.cfg_path, self.host),
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            close_fds=True,
            start_new_session=True,
            env=netns.HOST_ENV,
        )
        logf.close()
        pid = _child_of(proc.pid)
        if pid is not None:
            try:
                self.init = labstate.ProcRef.of(f"init-{self.host}", pid)
                f = self.paths.init_pid_file(self.host)
                f.write_text(f"{pid} {self.init.start} {self.boots}\n")
            except ProcessLookupError:
                self.init = None
        log(f"{self.host}: boot {self.boots}, init pid {pid}")
        if _stopping.is_set():
            self.stop_init()
        rc = proc.wait()
        self.paths.init_pid_file(self.host).unlink(missing_ok=True)
        self.init = None
        if not _stopping.is_set():
            log(f"{self.host}: init exited ({rc}); rebooting")
        return rc

    def stop_init(self) -> None:
        init = self.init
        if init is None:
            return
        init.signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while init.alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        if init.alive():
            log(f"{self.host}: init still up after {STOP_TIMEOUT}s; SIGKILL (ends its PID ns)")
            init.signal(signal.SIGKILL)


def _link_up(ns: str, dev: str) -> bool:
    out = subprocess.run(
        ["ip", "-n", ns, "-br", "link", "show", dev], text=True, capture_output=True
    ).stdout.split()
    return out[1:2] == ["UP"]


def watch_private_links(topo: topology.Topology, interval: float = 1.0) -> None:
    """Like systemd-networkd on a cloud server: when an attached host's `ens10` comes back up (link
    down/up in a failover drill), its address and network route return, and when `eth0` does, its
    default route (DHCP). The kernel drops them with the link; without this the host would stay
    cut off until the next API change (ens10) or for good (eth0: no API, no packages)."""
    p = labstate.paths()
    while not _stopping.wait(interval):
        try:
            applied = json.loads(p.sdn_applied.read_text())
        except (OSError, ValueError):
            continue
        for name, net in applied.items():
            ns = topology.host_ns(name)
            r = subprocess.run(
                ["ip", "-n", ns, "route", "show", "dev", "ens10"], text=True, capture_output=True
            )
            if r.returncode != 0 or net["ip_range"] in r.stdout:
                continue
            if _link_up(ns, "ens10"):
                log(f"{name}: ens10 is up without its network route; re-applying the API state")
                try:
                    sdn.apply_from_file()
                except Exception as e:
                    log(f"{name}: re-apply failed: {e}")
                break
        for name in topo.names:  # eth0: DHCP gives the default route back with the link
            ns = topology.host_ns(name)
            default = subprocess.run(
                ["ip", "-n", ns, "route", "show", "default"], capture_output=True, text=True
            )
            if default.returncode != 0 or default.stdout.strip():
                continue
            if _link_up(ns, "eth0"):
                log(f"{name}: eth0 is up without its default route; putting it back")
                subprocess.run(
                    [
                        "ip",
                        "-n",
                        ns,
                        "route",
                        "replace",
                        "default",
                        "via",
                        topology.PUBLIC_GATEWAY,
                        "dev",
                        "eth0",
                        "onlink",
                    ],
                    capture_output=True,
                )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab.supervisor", description=__doc__)
    ap.add_argument("--config", type=Path, required=True, help="lab-config.json written by lab.up")
    args = ap.parse_args(argv)
    cfg: dict[str, Any] = json.loads(args.config.read_text())
    os.environ["RBLAB_STATE"] = cfg["state"]
    topo = topology.load(Path(cfg["inventory"]))
    runners = [HostRunner(args.config, topo, name) for name in topo.names]

    def on_term(signum: int, _frame: object) -> None:
        _stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    for r in runners:
        r.start()
    threading.Thread(target=watch_private_links, args=(topo,), name="links", daemon=True).start()
    log(f"running {len(runners)} hosts")
    while not _stopping.wait(0.5):
        pass
    log("stopping hosts")
    stoppers = [threading.Thread(target=r.stop_init) for r in runners]
    for t in stoppers:
        t.start()
    for t in stoppers:
        t.join()
    for r in runners:
        r.join(timeout=STOP_TIMEOUT + 5)
    log("all hosts down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
