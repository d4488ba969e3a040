"""Lab hosts: reachable over SSH like servers, private, rebootable, unable to touch the machine."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import paramiko
import pytest
import yaml
from fabric import Connection

from lab import control, labstate, netns, topology

from .helpers import wait_for

pytestmark = pytest.mark.lab


def fabric_conn(name: str) -> Connection:
    """A Fabric connection built only from the lab inventory (as the runbook builds it)."""
    p = labstate.paths()
    inv_path = control.write_inventory(p, topology.load())
    inv = yaml.safe_load(inv_path.read_text())
    ssh, host = inv["ssh"], inv["hosts"][name]
    conn = Connection(
        host["address"],
        user=ssh["user"],
        port=ssh["port"],
        gateway=ssh["proxy_command"],
        connect_timeout=ssh["connect_timeout"],
        connect_kwargs={
            "key_filename": ssh["identity"],
            "look_for_keys": False,
            "allow_agent": False,
        },
    )
    conn.client.load_host_keys(ssh["known_hosts"])
    conn.client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return conn


def test_fabric_reaches_every_host_with_its_own_hostname(lab_up: dict[str, float]) -> None:
    for name in topology.load().names:
        with fabric_conn(name) as c:
            assert c.run("hostname", hide=True, in_stream=False).stdout.strip() == name


def test_root_namespace_has_no_lab_address_or_route(lab_up: dict[str, float]) -> None:
    addrs = subprocess.run(["ip", "-4", "-o", "addr"], text=True, capture_output=True).stdout
    routes = subprocess.run(
        ["ip", "route", "show", "table", "all"], text=True, capture_output=True
    ).stdout
    for prefix in ("10.143.", "203.0.113.", "10.0.0."):
        assert prefix not in addrs and prefix not in routes


@pytest.mark.parametrize(
    "where", ["/etc", "/var", "/var/lib", "/root", "/usr/local", "/srv", "/dev/shm"]
)
def test_writes_are_private_per_host(lab_up: dict[str, float], where: str) -> None:
    name = f"{where}/rblab-test-{uuid.uuid4().hex[:8]}"
    netns.host_exec("k8scontrol01", ["sh", "-c", f"echo hello >{name}"])
    assert netns.host_exec("k8scontrol01", ["cat", name]).stdout == "hello\n"
    assert netns.host_exec("k8scontrol02", ["test", "-e", name], check=False).returncode == 1
    assert not Path(name).exists()
    netns.host_exec("k8scontrol01", ["rm", name])


def test_state_dir_is_hidden_inside_hosts(lab_up: dict[str, float]) -> None:
    p = labstate.paths()
    assert p.token.exists()
    r = netns.host_exec("k8slb01", ["ls", "-A", str(p.root)], check=False)
    assert r.stdout.strip() == ""


def dpkg_installed(argv_prefix: list[str], pkg: str) -> bool:
    r = subprocess.run(
        [*argv_prefix, "dpkg-query", "-W", "-f=${Status}", pkg], text=True, capture_output=True
    )
    return r.returncode == 0 and "install ok installed" in r.stdout


def test_apt_installs_haproxy_from_lab_repo_into_one_host_only(lab_up: dict[str, float]) -> None:
    t0 = time.monotonic()
    r = netns.host_exec(
        "k8node02",
        [
            "sh",
            "-c",
            "apt-get update -q && DEBIAN_FRONTEND=noninteractive "
            "apt-get install -y -q --no-install-recommends haproxy",
        ],
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    print(f"apt install haproxy in a host: {time.monotonic() - t0:.1f}s")
    assert "file:/run/labrepo" in r.stdout
    assert dpkg_installed(netns.host_argv("k8node02", []), "haproxy")
    assert not dpkg_installed(netns.host_argv("k8node01", []), "haproxy")
    assert not dpkg_installed([], "haproxy")
    assert not Path("/usr/sbin/haproxy").exists()
    # the unit runs under the systemctl replacement (lab drop-in: forking)
    netns.host_exec("k8node02", ["systemctl", "start", "haproxy"], timeout=60)
    state = netns.host_exec("k8node02", ["systemctl", "is-active", "haproxy"]).stdout.strip()
    assert state == "active"
    # leave the host as found (the runbook's tests use the same lab afterwards)
    netns.host_exec("k8node02", ["systemctl", "stop", "haproxy"], timeout=60)
    purge = "DEBIAN_FRONTEND=noninteractive apt-get purge -y -q haproxy"
    netns.host_exec("k8node02", ["sh", "-c", purge], timeout=120)
    assert not dpkg_installed(netns.host_argv("k8node02", []), "haproxy")


REBOOT_SYSCALL = """
import ctypes, os
assert os.readlink("/proc/self/ns/pid") != "ROOT_PIDNS" and os.getpid() != 1
ctypes.CDLL(None, use_errno=True).reboot(0x01234567)  # LINUX_REBOOT_CMD_RESTART
"""


def init_of(name: str) -> tuple[int, int]:
    pid, _start, boots = labstate.paths().init_pid_file(name).read_text().split()
    return int(pid), int(boots)


@pytest.mark.parametrize(
    "argv",
    [
        ["reboot"],
        ["reboot", "-nf"],  # Heartbeat after a failed resource stop
        ["systemctl", "halt"],  # the replacement's own path: SIGQUIT to PID 1
        ["systemctl", "reboot"],
        ["shutdown", "-r", "now"],
        ["poweroff"],
        ["kill", "-TERM", "1"],
        [
            "python3",
            "-c",
            "REBOOT_SYSCALL",
        ],  # reboot(2) itself, as `reboot -f` of real systemd does
    ],
)
def test_reboot_inside_a_host_reboots_only_that_host(
    lab_up: dict[str, float], argv: list[str]
) -> None:
    host = "k8node01"
    marker = f"/etc/rblab-reboot-{uuid.uuid4().hex[:6]}"
    netns.host_exec(host, ["sh", "-c", f"touch {marker} /tmp/gone-after-reboot"])
    others = {h: init_of(h) for h in ("k8node02", "k8scontrol01")}
    _pid, boots = init_of(host)
    if argv[-1] == "REBOOT_SYSCALL":
        # only ever inside a PID namespace other than the machine's (there the kernel ends just that
        # namespace's init); the guard runs in the same process right before the call
        root_pidns = os.readlink("/proc/self/ns/pid")
        argv = [*argv[:-1], REBOOT_SYSCALL.replace("ROOT_PIDNS", root_pidns)]
    netns.host_exec(host, argv, check=False, timeout=30)
    took = wait_for(
        f"{host} rebooted",
        lambda: (
            control.host_running(host) and init_of(host)[1] > boots and control.sshd_listening(host)
        ),
        timeout=30,
    )
    print(f"{' '.join(argv)}: host back with sshd after {took:.1f}s")
    with fabric_conn(host) as c:
        assert c.run("hostname", hide=True, in_stream=False).stdout.strip() == host
        assert c.run(f"test -e {marker}", warn=True, hide=True, in_stream=False).ok  # layers kept
        assert not c.run(
            "test -e /tmp/gone-after-reboot", warn=True, hide=True, in_stream=False
        ).ok  # fresh /tmp
    assert {h: init_of(h) for h in others} == others


def test_host_cannot_signal_machine_processes(lab_up: dict[str, float]) -> None:
    victim = subprocess.Popen(["sleep", "300"])
    try:
        host = "k8scontrol03"
        assert (
            netns.host_exec(host, ["test", "-e", f"/proc/{victim.pid}"], check=False).returncode
            == 1
        )
        r = netns.host_exec(host, ["kill", "-9", str(victim.pid)], check=False)
        assert r.returncode != 0
        netns.host_exec(host, ["kill", "-9", "-1"], check=False)  # every process the host can see
        netns.host_exec(host, ["kill", "-HUP", "1"], check=False)
        time.sleep(0.5)
        assert victim.poll() is None
        assert labstate.ProcRef.of("x", os.getpid()).alive()
        # the host's init survives and respawns sshd
        wait_for("sshd back", lambda: control.sshd_listening(host), timeout=15)
        with fabric_conn(host) as c:
            assert c.run("hostname", hide=True, in_stream=False).stdout.strip() == host
    finally:
        victim.kill()
        victim.wait()


UNIT = """[Unit]
Description=rblab test service
[Service]
ExecStart=/usr/bin/python3 -c "import time; time.sleep(3600)"
Restart=always
RestartSec=0.5
[Install]
WantedBy=multi-user.target
"""
TIMER_SVC = """[Unit]
Description=rblab test tick
[Service]
Type=oneshot
ExecStart=/bin/sh -c "echo tick >>/var/log/rblab-tick.log"
"""
TIMER = """[Unit]
Description=rblab test timer
[Timer]
OnBootSec=1
OnUnitActiveSec=2
[Install]
WantedBy=timers.target
"""


def test_restart_always_and_timers_are_honoured(lab_up: dict[str, float]) -> None:
    host = "k8node02"
    for name, text in (
        ("rblab-sleeper.service", UNIT),
        ("rblab-tick.service", TIMER_SVC),
        ("rblab-tick.timer", TIMER),
    ):
        netns.host_exec(host, ["sh", "-c", f"cat >/etc/systemd/system/{name}"], input=text)
    netns.host_exec(host, ["systemctl", "enable", "--now", "rblab-sleeper.service"])
    netns.host_exec(host, ["systemctl", "enable", "rblab-tick.timer"])

    def main_pid() -> int:
        out = netns.host_exec(host, ["systemctl", "show", "-p", "MainPID", "rblab-sleeper"]).stdout
        return int(out.strip().split("=")[1] or 0)

    first = main_pid()
    assert first > 0
    netns.host_exec(host, ["kill", "-9", str(first)])
    took = wait_for("restart", lambda: main_pid() not in (0, first), timeout=15, step=0.3)
    print(f"Restart=always: restarted {took:.1f}s after kill -9")
    wait_for(
        "timer ran twice",
        lambda: (
            len(
                netns.host_exec(
                    host, ["cat", "/var/log/rblab-tick.log"], check=False
                ).stdout.split()
            )
            >= 2
        ),
        timeout=20,
        step=0.5,
    )
    netns.host_exec(host, ["systemctl", "disable", "--now", "rblab-sleeper.service"])
    netns.host_exec(host, ["systemctl", "disable", "rblab-tick.timer"])
    netns.host_exec(
        host,
        [
            "sh",
            "-c",
            "cd /etc/systemd/system && rm -f rblab-sleeper.service "
            "rblab-tick.service rblab-tick.timer /var/log/rblab-tick.log",
        ],
    )


def test_start_runs_a_finished_oneshot_again(lab_up: dict[str, float]) -> None:
    host = "k8scontrol02"
    unit = '[Service]\nType=oneshot\nExecStart=/bin/sh -c "echo run >>/var/log/rblab-once.log"\n'
    netns.host_exec(host, ["sh", "-c", "cat >/etc/systemd/system/rblab-once.service"], input=unit)
    for _ in range(3):
        netns.host_exec(host, ["systemctl", "start", "rblab-once.service"])
    assert netns.host_exec(host, ["cat", "/var/log/rblab-once.log"]).stdout.split() == ["run"] * 3
    netns.host_exec(
        host,
        [
            "rm",
            "-f",
            "/etc/systemd/system/rblab-once.service",
            "/var/log/rblab-once.log",
            "/run/rblab-once.service.status",
        ],
    )


PIDFILE_UNIT = """[Service]
ExecStart=/bin/sh -c "echo $$ > /run/rblab-pid.pid; exec sleep 3599"
PIDFile=/run/rblab-pid.pid
"""


def test_start_of_a_unit_whose_main_process_lives_without_its_pid_file_starts_no_second(
    lab_up: dict[str, float],
) -> None:
    """systemd tracks the process it started; the lab's systemctl replacement judged a unit with
    PIDFile= by the file alone, and a start while the file was gone (Heartbeat's own restart
    unlinks it before its exec) started a second daemon beside the first (official CI, stop
    46: two Heartbeats on k8slb02). A start while the main process lives is a no-op; once it
    is gone, a start starts one."""
    host = "k8scontrol03"
    netns.host_exec(
        host, ["sh", "-c", "cat >/etc/systemd/system/rblab-pid.service"], input=PIDFILE_UNIT
    )

    def sleepers() -> list[str]:
        r = netns.host_exec(host, ["pgrep", "-f", "^sleep 3599$"], check=False)
        return r.stdout.split()  # this unit's daemons (nothing else sleeps 3599 s)

    try:
        netns.host_exec(host, ["systemctl", "start", "rblab-pid.service"], timeout=60)
        wait_for("the service runs", lambda: len(sleepers()) == 1, timeout=10, step=0.2)
        first = sleepers()
        netns.host_exec(host, ["rm", "-f", "/run/rblab-pid.pid"])
        netns.host_exec(host, ["systemctl", "start", "rblab-pid.service"], timeout=60)
        time.sleep(1)
        assert sleepers() == first
        netns.host_exec(host, ["kill", "-9", first[0]])
        wait_for("the first one gone", lambda: sleepers() == [], timeout=10, step=0.2)
        netns.host_exec(host, ["systemctl", "start", "rblab-pid.service"], timeout=60)
        wait_for("a new one", lambda: len(sleepers()) == 1, timeout=10, step=0.2)
    finally:
        netns.host_exec(host, ["systemctl", "stop", "rblab-pid.service"], check=False, timeout=60)
        for pid in sleepers():  # a second one, if the start made it
            netns.host_exec(host, ["kill", "-9", pid], check=False)
        netns.host_exec(
            host,
            [
                "rm",
                "-f",
                "/etc/systemd/system/rblab-pid.service",
                "/run/rblab-pid.pid",
                "/run/rblab-pid.service.status",
            ],
            check=False,
        )
