"""Files `lab.up` prepares in <state>/tools for hostinit to install into every host.

Why: the systemctl replacement (docker-systemctl-replacement, EUPL-1.2, by Guido U. Draheim) is
taken from the installed wheel at up time (pinned in pyproject's `lab` extra), not vendored; hosts
get it unmodified as /usr/lib/rblab/systemctl3.py behind a small wrapper. The wrapper sends the
power verbs (reboot, halt, poweroff) to the host's init, as systemd's systemctl would; the
replacement itself has no `reboot` and its `halt` signals PID 1 with SIGQUIT (also caught by
hostinit).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

POWER = '''#!/usr/bin/python3 -IS
"""rblab: reboot/halt/poweroff/shutdown of a lab host: ask the host's init (PID 1 of its PID
namespace).
hostinit stops services, ends every process of the host and the lab boots it again."""
import os, signal, sys

args = sys.argv[1:]
verb = os.path.basename(sys.argv[0])
if args[:1] == ["--as"]:
    verb, args = args[1], args[2:]
if "--help" in args or "-h" in args:
    print(f"{verb} [-f] [-n] [-w]: rblab host power control (signals the host init)")
    sys.exit(0)
if verb == "shutdown":
    if "-c" in args:
        print("shutdown: nothing scheduled")
        sys.exit(0)
    verb = "reboot" if ("-r" in args or "--reboot" in args) else "poweroff"
if "-w" in args or "--wtmp-only" in args:
    sys.exit(0)
sig = {"reboot": signal.SIGINT, "halt": signal.SIGRTMIN + 3, "poweroff": signal.SIGRTMIN + 4,
       "kexec": signal.SIGRTMIN + 6}.get(verb, signal.SIGINT)
os.kill(1, sig)
sys.exit(0)
'''

SYSTEMCTL = '''#!/usr/bin/python3 -IS
"""rblab: systemctl of a lab host = docker-systemctl-replacement (/usr/lib/rblab/systemctl3.py); the
power
verbs go to the host init (/usr/lib/rblab/rblab-power)."""
import os, sys

words = [a for a in sys.argv[1:] if not a.startswith("-")]
if words and words[0] in ("reboot", "halt", "poweroff", "kexec"):
    os.execv("/usr/lib/rblab/rblab-power", ["rblab-power", "--as", words[0]])
def enabled(unit):
    return any(os.path.exists(f"{d}/{w}/{unit}") for d in ("/etc/systemd/system",)
               for w in ("timers.target.wants", "multi-user.target.wants"))
if len(words) == 2 and words[0] == "show" and words[1].endswith(".timer"):
    # `show` agrees with `is-active` below (the replacement says ActiveState=unknown for every
    # timer; systemd says active/waiting for a started one): Ansible's systemd module reads it
    import subprocess
    r = subprocess.run(["/usr/bin/python3", "-IS", "/usr/lib/rblab/systemctl3.pyc", *sys.argv[1:]],
                       capture_output=True, text=True)
    on = enabled(words[1])
    fix = {"ActiveState": "active" if on else "inactive", "SubState": "waiting" if on else "dead"}
    print("\\n".join(f"{k}={fix[k]}" if k in fix else line
                    for line in r.stdout.splitlines() for k in [line.partition("=")[0]]))
    sys.stderr.write(r.stderr)
    sys.exit(r.returncode)
if len(words) > 1 and words[0] in ("is-active", "start", "stop", "restart", "try-restart") and all(
        w.endswith(".timer") for w in words[1:]):
    # the replacement has no timers: the host init runs every ENABLED timer (it rescans), so an
    # enabled timer is active; start/stop follow enable/disable (a lab simplification)
    if words[0] != "is-active":
        sys.exit(0)
    states = ["active" if enabled(u) else "inactive" for u in words[1:]]
    if "--quiet" not in sys.argv and "-q" not in sys.argv:
        print("\\n".join(states))
    sys.exit(0 if all(x == "active" for x in states) else 3)
if "--no-block" in sys.argv[1:] and len(words) > 1 and words[0] in (
        "start", "stop", "restart", "try-restart", "reload", "reload-or-restart", "condrestart"):
    # systemd queues the job and returns at once; a start of a unit whose job is running merges
    # into that job. The replacement would run it here and now (a Heartbeat resource script's
    # `--no-block start` of a oneshot would block the resource's stop for as long as it runs)
    import fcntl, subprocess
    if words[0] == "start":
        for unit in {w if "." in w else w + ".service" for w in words[1:]}:
            try:
                fh = open(f"/run/rblab/jobs/{unit.replace('/', '_')}.lock", "w")
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fh.close()
            except BlockingIOError:
                sys.exit(0)  # a job of this unit runs: merged
            except OSError:
                pass
    subprocess.Popen(
        [sys.argv[0], *[a for a in sys.argv[1:] if a != "--no-block"]],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        close_fds=True, start_new_session=True,
    )
    sys.exit(0)
quick = []  # options for the replacement that make it act as fast as systemd (below)
if words[:1] == ["start"] and len(words) > 1:
    # systemd runs a finished oneshot (without RemainAfterExit=yes) again on start; the replacement
    # keeps it "active" and does nothing: restart it instead
    sys.path.insert(0, "/usr/lib/rblab")
    import hostunits

    def rerun(unit):
        u = hostunits.read_unit(unit if "." in unit else unit + ".service")
        keep = hostunits.last(u, "Service", "RemainAfterExit", "no") in ("yes", "true", "1")
        return hostunits.last(u, "Service", "Type") == "oneshot" and not keep

    if all(rerun(w) for w in words[1:]):
        sys.argv[1:] = ["restart" if a == "start" else a for a in sys.argv[1:]]
        words = [a for a in sys.argv[1:] if not a.startswith("-")]
        # the replacement's restart sleeps MinimumYield (0.5 s) after the stop of the finished
        # run, to see a daemon go; systemd starts a oneshot at once (the watchdog's kick of the
        # re-assert took 0.65 s idle and 1-1.5 s on a busy lab until its script ran, for this)
        quick = ["-c", "MinimumYield=0.05"]
JOBS = ("start", "stop", "restart", "try-restart", "reload", "reload-or-restart", "condrestart")
if len(words) > 1 and words[0] in JOBS:
    # systemd runs one job per unit at a time; the replacement does not, and two concurrent starts
    # (a watchdog, Restart=, an operator) leave two daemons behind, the PID file naming only one.
    # Hold a lock per unit while the replacement runs (as a child: a daemon it forks must not
    # inherit the lock).
    import fcntl, subprocess, time
    os.makedirs("/run/rblab/jobs", exist_ok=True)
    locks = []
    for unit in sorted({w if "." in w else w + ".service" for w in words[1:]}):
        fh = open(f"/run/rblab/jobs/{unit.replace('/', '_')}.lock", "w")
        end = time.monotonic() + 300
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > end:
                    sys.exit(f"systemctl: another job for {unit} has run for 300 s; giving up")
                time.sleep(0.05)
        locks.append(fh)
    cmd = ["/usr/bin/python3", "-IS", "/usr/lib/rblab/systemctl3.pyc"]
    if words[0] == "start":  # systemd: starting an active unit is a no-op (no second daemon)
        states = subprocess.run([*cmd, "is-active", *words[1:]], capture_output=True, text=True)
        lines = states.stdout.split()
        if len(lines) == len(words) - 1 and all(x == "active" for x in lines):
            sys.exit(0)

        def main_alive(unit):
            # systemd tracks the process it started: while it lives the unit is active, also
            # when its PID file is gone (Heartbeat's own restart unlinks the file before its
            # exec). The replacement judges a unit with PIDFile= by the file alone and started
            # a second Heartbeat beside the first (official CI, stop 46: two masters, each
            # dropping the other's messages as replays)
            name = unit if "." in unit else unit + ".service"
            try:
                with open(f"/run/{name}.status") as f:
                    pid = int(next(l for l in f if l.startswith("MainPID="))[8:])
                with open(f"/proc/{pid}/stat") as f:
                    return pid > 1 and f.read().rsplit(")", 1)[1].split()[0] not in "ZX"
            except (OSError, ValueError, StopIteration, IndexError):
                return False

        if all(main_alive(u) for u in words[1:]):
            sys.exit(0)
    sys.exit(subprocess.run([*cmd, *quick, *sys.argv[1:]], check=False).returncode)
os.execv("/usr/bin/python3", ["python3", "-IS", "/usr/lib/rblab/systemctl3.pyc", *sys.argv[1:]])
'''

JOURNALCTL = '''#!/usr/bin/python3 -IS
"""rblab: journalctl of a lab host (docker-systemctl-replacement's journalctl3.py)."""
import os, sys

os.execv("/usr/bin/python3", ["python3", "-IS", "/usr/lib/rblab/journalctl3.pyc", *sys.argv[1:]])
'''

# Lab-only drop-ins (named lab-*.conf): the replacement polls Type=notify in 1 s steps (~3 s per
# start);
# forking with a PID file returns in ~0.7 s. It reads the FIRST value of a key: reset with an empty
# one first.
DROPINS = {
    "haproxy.service.d/lab-forking.conf": (
        "# rblab: lab-only (docker-systemctl-replacement polls Type=notify slowly)\n"
        "[Service]\nType=\nType=forking\nPIDFile=/run/haproxy.pid\nExecStart=\n"
        "ExecStart=/usr/sbin/haproxy -W -D -f $CONFIG -p $PIDFILE $EXTRAOPTS\n"
    ),
}


def systemctl_package_dir() -> Path:
    spec = importlib.util.find_spec("systemctl2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "docker-systemctl-replacement is missing (pip install '.[lab]'); lab hosts need it"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def write_tools(tools: Path, pubkey: Path) -> None:
    """(Re)write the tools dir; cheap and idempotent."""
    tools.mkdir(parents=True, exist_ok=True)
    pkg = systemctl_package_dir()
    for name in ("systemctl3.py", "journalctl3.py"):
        text = (pkg / name).read_text()
        lines = text.split("\n", 1)
        if lines[0].startswith("#!"):
            text = "#! /usr/bin/python3\n" + lines[1]
        (tools / name).write_text(text)
    (tools / "rblab-power").write_text(POWER)
    (tools / "systemctl-wrapper").write_text(SYSTEMCTL)
    (tools / "journalctl-wrapper").write_text(JOURNALCTL)
    shutil.copyfile(pubkey, tools / "lab_key.pub")
    shutil.copyfile(Path(__file__).with_name("hostunits.py"), tools / "hostunits.py")
    for f in tools.iterdir():
        f.chmod(0o644 if f.name in ("lab_key.pub", "hostunits.py") else 0o755)
