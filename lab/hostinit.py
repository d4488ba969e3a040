#!/usr/bin/python3
"""PID 1 of a lab host (its own PID, UTS and mount namespace). Stdlib only: runs with Debian's
/usr/bin/python3.

Why an init of our own: without systemd, something must (a) build the host's private filesystem
view, (b) start sshd and the enabled units at boot, (c) run timers and honour Restart= (gaps of the
systemctl replacement), (d) reap orphans, and (e) catch reboot/halt requests, which in a PID
namespace reach only this process, and turn them into a clean host reboot. Exit codes: 0 after
SIGTERM (lab shutdown), 100 reboot request. The supervisor in the root namespace starts it again on
the same layers either way unless the lab is going down.

Started as: nsenter --net=/run/netns/rbl-NAME unshare --pid --fork --mount-proc --uts --ipc --mount
            --propagation private /usr/bin/python3 hostinit.py --config CONFIG.json --host NAME
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import py_compile
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hostunits

REBOOT_EXIT = 100
REBOOT_SIGNALS: list[int] = [
    signal.SIGINT,  # ctrl-alt-del / our reboot
    signal.SIGQUIT,  # systemctl3.py halt
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGPWR,
    *(signal.SIGRTMIN + n for n in (3, 4, 5, 6)),  # systemd halt/poweroff/reboot/kexec
]
# private copies of everything a package or an admin writes to (all of /var, not only lib/cache/log:
# packages also create /var/www, /var/spool, ...); /run and /tmp are fresh tmpfs per boot
OVERLAY_DIRS = ("etc", "usr", "opt", "var", "home", "srv", "boot", "media")
# home directories that start empty, like a fresh server's, instead of showing the machine's own
# (this machine's /root has pyenv/cargo hooks in .bashrc: bash sources it for every SSH command,
# which cost ~150 ms a command and put the machine's python first on PATH)
FRESH_DIRS = ("root",)
SKEL = {f".{n}": f"/usr/share/base-files/dot.{n}" for n in ("bashrc", "profile")}
POLICY_RC = "#!/bin/sh\n# rblab: package scripts start no services (hostinit does)\nexit 101\n"

_request: str | None = None  # "reboot" | "shutdown" (set by signal handlers)


def log(msg: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} hostinit[{HOST}]: {msg}\n")
    sys.stderr.flush()


HOST = "?"


def sh(
    *argv: str, check: bool = True, timeout: float | None = 120
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(list(argv), text=True, capture_output=True, timeout=timeout, close_fds=True)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: rc {r.returncode}: {r.stderr.strip()}")
    return r


def on_signal(signum: int, _frame: Any) -> None:
    global _request
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = f"SIGRTMIN+{signum - signal.SIGRTMIN}"
    if signum == signal.SIGTERM:
        _request = _request or "shutdown"
    elif signum == signal.SIGHUP:
        return  # `kill -1 1` (SIGHUP to init): nothing to reload
    else:
        _request = "reboot"
    log(f"got {name}: {_request}")


def mount_filesystems(cfg: dict[str, Any], layer: Path) -> None:
    """Private /run, then overlays whose upper dirs are reached through a bind mount of the host's
    layer dir (the path under the state dir is hidden once /var/lib is overlaid), /tmp, sysfs of
    this netns."""
    # copies of the machine's /run/netns/* bind mounts would keep other namespaces alive from in
    # here
    sh("umount", "-R", "-l", "/run/netns", check=False)
    sh("mount", "-t", "tmpfs", "-o", "mode=755,nosuid,nodev", "tmpfs", "/run")
    layer.mkdir(parents=True, exist_ok=True)
    lay = Path("/run/rblab/layer")
    lay.mkdir(parents=True)
    sh("mount", "--bind", str(layer), str(lay))
    Path("/run/labrepo").mkdir()
    sh("mount", "--bind", cfg["repo"], "/run/labrepo")
    sh("mount", "-o", "remount,bind,ro", "/run/labrepo")
    if Path(cfg.get("docker_repo", "/nonexistent")).is_dir():  # the simulated Docker repository
        Path("/run/labdocker").mkdir()
        sh("mount", "--bind", cfg["docker_repo"], "/run/labdocker")
        sh("mount", "-o", "remount,bind,ro", "/run/labdocker")
    tools = Path("/run/rblab/tools")
    tools.mkdir()
    sh("mount", "--bind", cfg["tools"], str(tools))
    sh("mount", "-o", "remount,bind,ro", str(tools))
    migrate_layers(lay)
    for d in OVERLAY_DIRS:
        n = d.replace("/", "_")
        (lay / f"{n}.upper").mkdir(exist_ok=True)
        (lay / f"{n}.work").mkdir(exist_ok=True)
        if not Path("/" + d).is_dir() or Path("/" + d).is_symlink():
            continue  # never create anything on the machine's root fs
        opts = f"lowerdir=/{d},upperdir={lay}/{n}.upper,workdir={lay}/{n}.work"
        sh("mount", "-t", "overlay", "overlay", "-o", opts, "/" + d)
    for d in FRESH_DIRS:
        own = lay / f"{d}.home"
        if not own.is_dir():
            own.mkdir(mode=0o700)
            for dot, src in SKEL.items():
                if Path(src).is_file():
                    shutil.copyfile(src, own / dot)
        sh("mount", "--bind", str(own), "/" + d)
    sh("umount", str(lay))
    lay.rmdir()
    # the lab state dir (keys, token, other hosts' layers) must not be visible inside a host
    state = Path(cfg["state"])
    if state.is_dir():
        sh("mount", "-t", "tmpfs", "-o", "ro,size=4k,mode=700", "tmpfs", str(state))
    sh("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", "/tmp")
    sh("mount", "-t", "tmpfs", "-o", "mode=1777,nosuid,nodev", "tmpfs", "/dev/shm")  # own IPC ns
    sh("umount", "-l", "/sys", check=False)
    sh("mount", "-t", "sysfs", "-o", "nosuid,nodev,noexec", "sysfs", "/sys")
    for d, mode in (("/run/lock", 0o1777), ("/run/sshd", 0o755), ("/run/user", 0o755)):
        Path(d).mkdir(exist_ok=True)
        os.chmod(d, mode)


def migrate_layers(lay: Path) -> None:
    """Layers of the first lab layout had separate var/lib, var/cache, var/log overlays: move their
    upper dirs into the one /var upper dir (same fs: whiteouts and opaque xattrs are kept)."""
    old = [lay / f"var_{x}.upper" for x in ("lib", "cache", "log")]
    if not any(p.is_dir() for p in old) or (lay / "var.upper").exists():
        return
    (lay / "var.upper").mkdir()
    for p in old:
        if p.is_dir():
            p.rename(lay / "var.upper" / p.name.removeprefix("var_").removesuffix(".upper"))
    for p in lay.glob("var_*.work"):
        shutil.rmtree(p, ignore_errors=True)
    log("migrated /var layers to the single /var overlay")


def write_if_changed(path: Path, text: str, mode: int = 0o644) -> None:
    if not path.exists() or path.is_symlink() or path.read_bytes() != text.encode():
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_symlink():
            path.unlink()
        tmp = path.with_name(path.name + ".rblab-tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        tmp.replace(path)


def first_boot(name: str) -> bool:
    """Once per host (marker in its /etc layer): forget what the shared root fs had enabled or
    generated."""
    marker = Path("/etc/rblab/first-boot")
    if marker.exists():
        return False
    log("first boot: whiteouts for root-ns enabled units, own host keys and machine-id")
    for wants in Path("/etc/systemd/system").glob("*.wants"):
        for link in wants.iterdir():
            link.unlink()
    for key in Path("/etc/ssh").glob("ssh_host_*"):
        key.unlink()
    sh(
        "ssh-keygen",
        "-q",
        "-t",
        "ed25519",
        "-N",
        "",
        "-C",
        f"root@{name}",
        "-f",
        "/etc/ssh/ssh_host_ed25519_key",
    )
    Path("/etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
    return True


def configure(cfg: dict[str, Any], name: str, *, first: bool) -> None:
    """Every boot: files that make this namespace look like a Hetzner server of the lab."""
    # like cloud-init on a fresh server: hostname, /etc/hosts and the apt sources are set on the
    # first boot only; later boots keep what the host's admin (the runbook) made of them
    if first:
        write_if_changed(Path("/etc/hostname"), name + "\n")
        lines = [
            "127.0.0.1 localhost",
            f"127.0.1.1 {name}",
            "::1 localhost ip6-localhost ip6-loopback",
        ]
        lines += [f"{h['private_ip']} {n}" for n, h in cfg["hosts"].items()]
        write_if_changed(Path("/etc/hosts"), "\n".join(lines) + "\n")
        # apt: only the lab repository (the removals become whiteouts in this host's /etc layer)
        apt = Path("/etc/apt")
        if (apt / "sources.list").exists():
            (apt / "sources.list").unlink()
        for f in (apt / "sources.list.d").glob("*"):
            if f.name != "rblab.list":
                f.unlink()
        write_if_changed(
            apt / "sources.list.d/rblab.list", "deb [trusted=yes] file:/run/labrepo ./\n"
        )
    write_if_changed(
        Path("/etc/ssh/sshd_config.d/rblab.conf"),
        "# rblab: lab host sshd\nHostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\n"
        "PermitRootLogin prohibit-password\nUseDNS no\nPidFile /run/sshd.pid\n"
        # one "Starting session: command|subsystem" line per session (no command text): bench/
        # counts connections and commands per host from these logs
        "LogLevel VERBOSE\n",
    )
    ssh_dir = Path("/root/.ssh")
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    pub = Path("/run/rblab/tools/lab_key.pub").read_text()
    write_if_changed(ssh_dir / "authorized_keys", pub, 0o600)
    # systemctl replacement + reboot family (they would otherwise be systemd's, talking to no
    # manager)
    tools = Path("/run/rblab/tools")
    lib = Path("/usr/lib/rblab")
    lib.mkdir(exist_ok=True)
    for fname in ("systemctl3.py", "journalctl3.py", "rblab-power", "hostunits.py"):
        src = (tools / fname).read_bytes()
        dst = lib / fname
        if not dst.exists() or dst.read_bytes() != src:
            dst.write_bytes(src)
            os.chmod(dst, 0o755)
        if fname.endswith("ctl3.py"):
            # the wrappers run the byte-compiled script: compiling 7000 lines on every
            # `systemctl` call cost ~0.2 s (a real systemctl answers in milliseconds)
            pyc = dst.with_suffix(".pyc")
            if not pyc.exists() or pyc.stat().st_mtime < dst.stat().st_mtime:
                py_compile.compile(str(dst), cfile=str(pyc), doraise=True)
    write_if_changed(Path("/usr/bin/systemctl"), (tools / "systemctl-wrapper").read_text(), 0o755)
    write_if_changed(Path("/usr/bin/journalctl"), (tools / "journalctl-wrapper").read_text(), 0o755)
    for cmd in ("reboot", "halt", "poweroff", "shutdown"):
        p = Path("/usr/sbin") / cmd
        if not (p.is_symlink() and os.readlink(p) == str(lib / "rblab-power")):
            if p.exists() or p.is_symlink():
                p.unlink()
            p.symlink_to(lib / "rblab-power")
    if not Path("/usr/sbin/policy-rc.d").exists():
        write_if_changed(Path("/usr/sbin/policy-rc.d"), POLICY_RC, 0o755)
    for dropin, text in cfg.get("dropins", {}).items():
        write_if_changed(Path("/etc/systemd/system") / dropin, text)


def apply_net_sysctls() -> None:
    """Boot-time sysctl, restricted to net.* keys: those are per network namespace (this host's);
    every
    other key is machine-wide and must not be changed by a lab host."""
    files = [Path("/etc/sysctl.conf"), *sorted(Path("/etc/sysctl.d").glob("*.conf"))]
    for f in files:
        try:
            lines = f.read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.strip()
            if not line.startswith("net.") or "=" not in line:
                continue
            key, value = (x.strip() for x in line.split("=", 1))
            try:
                Path("/proc/sys", *key.split(".")).write_text(value + "\n")
            except OSError as e:
                log(f"sysctl {key}={value}: {e}")


def apt_lists() -> None:
    """A server's package lists match its sources: without this a fresh host would still show the
    machine's lists (lower /var/lib/apt) until the first `apt-get update`."""
    lists = Path("/var/lib/apt/lists")
    if any(lists.glob("_run_labrepo_*Packages*")) and not any(lists.glob("deb.debian.org_*")):
        return
    r = sh("apt-get", "update", "-qq", check=False, timeout=60)
    log(f"apt-get update (lists for the lab repo): rc {r.returncode}")


def tmpfiles() -> None:
    """Create /run (and /var/lib, /var/log) entries of installed packages; never unrestricted (that
    would write into paths shared with the machine)."""
    if shutil.which("systemd-tmpfiles"):
        sh(
            "systemd-tmpfiles",
            "--create",
            "--prefix=/run",
            "--prefix=/var/lib",
            "--prefix=/var/log",
            check=False,
        )


class Init:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sshd: subprocess.Popen[bytes] | None = None
        self.sshd_starts: list[float] = []
        self.units = hostunits.Units()
        self.last_restart_check = 0.0

    def start_sshd(self) -> None:
        now = time.monotonic()
        self.sshd_starts = [t for t in self.sshd_starts if now - t < 10] + [now]
        if len(self.sshd_starts) > 5:
            return  # crash loop: retry after the window
        logf = open("/var/log/rblab-sshd.log", "ab")  # noqa: SIM115 (child keeps it)
        self.sshd = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e"],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=logf,
            close_fds=True,
            start_new_session=True,
        )
        logf.close()
        log(f"sshd started (pid {self.sshd.pid})")

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.sshd is not None and pid == self.sshd.pid:
                self.sshd.returncode = os.waitstatus_to_exitcode(status)
                log(f"sshd exited ({self.sshd.returncode})")
                self.sshd = None

    def boot(self) -> None:
        self.start_sshd()
        for unit in self.units.enabled_services():
            if _request:
                return
            self.units.start(unit)
        self.units.arm_timers(time.time())
        log("boot complete")
        Path("/run/rblab/booted").write_text(f"{time.time()}\n")

    def loop(self) -> str:
        while _request is None:
            self.reap()
            if self.sshd is None:
                self.start_sshd()
            now = time.time()
            self.units.run_due_timers(now)
            if now - self.last_restart_check >= 1.0:
                self.last_restart_check = now
                self.units.restart_failed()
            time.sleep(0.2)
        return _request

    def shutdown(self) -> None:
        """Stop services (bounded), then every process of the host (we are PID 1: kill(-1) spares
        us)."""
        self.units.stop_all()
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 2.0)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                self.reap()
                if not [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]:
                    return
                time.sleep(0.05)


def main() -> int:
    global HOST
    ap = argparse.ArgumentParser(description="lab host init (PID 1 of a lab host)")
    ap.add_argument("--config", required=True)
    ap.add_argument("--host", required=True)
    args = ap.parse_args()
    HOST = args.host
    for sig in [*REBOOT_SIGNALS, signal.SIGTERM, signal.SIGHUP]:
        signal.signal(sig, on_signal)
    if os.getpid() != 1:
        log("not PID 1 of a PID namespace; refusing")
        return 2
    cfg = json.loads(Path(args.config).read_text())
    socket.sethostname(HOST)
    mount_filesystems(cfg, Path(cfg["layers"]) / HOST)
    configure(cfg, HOST, first=first_boot(HOST))
    apply_net_sysctls()
    tmpfiles()
    apt_lists()
    os.chdir("/")
    init = Init(HOST)
    init.boot()
    request = init.loop()
    log(f"{request}: stopping services and processes")
    init.shutdown()
    log("down")
    return REBOOT_EXIT if request == "reboot" else 0


if __name__ == "__main__":
    sys.exit(main())
