"""Reboots and interrupts on the lab, through the real CLI.

A stand-in kernel update (lab/standins/kernel.py: its postinst writes /var/run/reboot-required, as
Debian's linux-image does) is installed everywhere, then upgraded: the reboots it requires appear
only during the run's own upgrade. Checked here: without a TTY and without --yes the run asks and
reboots nothing (exit 3); Ctrl-C (the terminal's ^C on a pseudo-terminal, so the whole foreground
process group gets SIGINT) in the middle of the reboots ends the run within 5 s with exit 130, the
recap and "interrupted", no traceback; the re-run resumes and converges; and at no moment were two
hosts down at once (an independent monitor of the hosts' init processes).
"""

from __future__ import annotations

import itertools
import os
import pty
import re
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from lab import aptrepo, labstate, netns, topology
from lab.standins.kernel import NAME, kernel_package

from .helpers import measure, recap, wait_for
from .test_k8s_walkthrough import cli, ensure_standin_debs, inventory

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
ORDER = (
    "k8slb01",
    "k8slb02",
    "k8scontrol01",
    "k8scontrol02",
    "k8scontrol03",
    "k8node01",
    "k8node02",
)
ROLE = {"k8slb": 0, "k8scontrol": 1, "k8node": 2}


def publish(version: str) -> None:
    repo = labstate.paths().repo
    for old in repo.glob(f"{NAME}_*.deb"):
        old.unlink()
    kernel_package(repo, version)
    aptrepo.index(repo)


@dataclass
class Monitor:
    """Samples every host's init every 0.05 s: a host is down from the moment its init is gone
    until a new one runs. Records each host's down windows."""

    hosts: tuple[str, ...]
    windows: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    max_down: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        last: dict[str, int | None] = {h: self._pid(h) for h in self.hosts}
        since: dict[str, float] = {}
        while not self._stop.is_set():
            now = time.monotonic()
            for h in self.hosts:
                pid = self._pid(h)
                if (pid is None or pid != last[h]) and h not in since:
                    since[h] = now
                if pid is not None and pid != last[h]:
                    self.windows.setdefault(h, []).append((since.pop(h), now))
                    last[h] = pid
            self.max_down = max(self.max_down, len(since))
            self._stop.wait(0.05)

    @staticmethod
    def _pid(host: str) -> int | None:
        try:
            return netns.init_pid(host)
        except RuntimeError:
            return None

    def rebooted(self) -> list[str]:
        """Hosts in the order their reboots began."""
        starts = sorted((w[0], h) for h, ws in self.windows.items() for w in ws)
        return [h for _, h in starts]

    def overlaps(self) -> list[tuple[str, str]]:
        ws = sorted((a, b, h) for h, lst in self.windows.items() for a, b in lst)
        return [(h1, h2) for (_, b1, h1), (a2, _, h2) in itertools.pairwise(ws) if a2 < b1]


@pytest.fixture
def monitor() -> Iterator[Monitor]:
    m = Monitor(ORDER)
    t = threading.Thread(target=m.run, daemon=True)
    t.start()
    yield m
    m._stop.set()
    t.join(5)


def pids() -> dict[str, int]:
    return {h: netns.init_pid(h) for h in ORDER}


def reboot_required(host: str) -> bool:
    r = netns.host_exec(host, ["test", "-e", "/var/run/reboot-required"], check=False)
    return r.returncode == 0


@pytest.fixture(scope="module")
def cluster(lab_up: dict[str, float]) -> dict[str, str]:
    """The whole cluster by the walkthrough, with kernel-update 1.0 installed on every host."""
    version = yaml.safe_load((REPO / "lab" / "hosts.yaml").read_text())["kubernetes"]["version"]
    ensure_standin_debs(version)
    publish("1.0")
    for h in ORDER:
        netns.host_exec(h, ["sh", "-c", f"apt-get update -qq && apt-get install -y -qq {NAME}"])
        assert not reboot_required(h)
    r = cli("walkthrough", "--yes")
    assert recap(r.stdout)["failed"] == 0, r.stdout
    return {"inventory": str(inventory())}


def test_reboot_required_by_the_upgrade_is_asked_and_nothing_reboots_without_a_person(
    cluster: dict[str, str], monitor: Monitor
) -> None:
    publish("2.0")
    before = pids()
    r = cli("prepare", check=False)  # stdin is not a TTY, no --yes
    out = r.stdout + r.stderr
    assert r.returncode == 3, out
    assert "checkpoint needs a person: Reboot k8slb0" in out, out
    assert all(reboot_required(h) for h in ORDER)  # the upgrade ran; the reboot was asked
    assert pids() == before and monitor.windows == {}
    assert "Traceback" not in out


def test_ctrl_c_during_the_reboots_stops_within_5_s_with_a_recap(
    cluster: dict[str, str], monitor: Monitor
) -> None:
    exe = str(Path(sys.executable).parent / "inv")
    root = labstate.paths().root
    env = dict(
        os.environ,
        INVOKE_RUNBOOK_INVENTORY=cluster["inventory"],
        RBLAB_HCLOUD_TOKEN=(root / "hcloud-token").read_text().strip(),
        RUNBOOK_P12_PASSWORD="lab-p12-password",
        COLUMNS="160",
        LINES="50",
        TERM="xterm",
    )
    pid, fd = pty.fork()  # the child leads a new session on the pty: the terminal's job
    if pid == 0:  # pragma: no cover - child
        os.execve(exe, [exe, "-r", str(REPO), "walkthrough", "--yes"], env)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    status = None
    try:
        # the second reboot has begun: the first host is back and ready, one is in the middle
        wait_for("a second host rebooting", lambda: len(monitor.rebooted()) >= 2, 600, 0.05)
        time.sleep(1.0)
        t0 = time.monotonic()
        os.write(fd, b"\x03")  # ^C: the line discipline sends SIGINT to the foreground group
        while status is None and time.monotonic() - t0 < 30:
            done, st = os.waitpid(pid, os.WNOHANG)
            status = st if done else None
            time.sleep(0.02)
        stopped = time.monotonic() - t0
    finally:
        if status is None:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
    reader.join(5)
    os.close(fd)
    out = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert status is not None and os.waitstatus_to_exitcode(status) == 130, out[-3000:]
    measure("ctrl-c stop time (s)", stopped)
    assert stopped <= 5.0, f"{stopped:.2f} s from ^C to exit"
    assert "interrupted (SIGINT): no new work starts" in out
    assert "recap (interrupted by SIGINT" in out and "recap: ok=" in out
    assert re.search(r"reboot\W+k8s\w+\W+changed", out), out[-3000:]  # what was done
    assert "Traceback" not in out and "ProxyCommandFailure" not in out
    assert monitor.overlaps() == [] and monitor.max_down <= 1, monitor.windows


def test_rerun_resumes_one_host_at_a_time_and_converges(
    cluster: dict[str, str], monitor: Monitor
) -> None:
    r = cli("walkthrough", "--yes")
    assert recap(r.stdout)["failed"] == 0, r.stdout
    assert not any(reboot_required(h) for h in ORDER)
    assert monitor.overlaps() == [] and monitor.max_down <= 1, monitor.windows
    rebooted = monitor.rebooted()
    ranks = [ROLE[h[:-2]] for h in rebooted]
    assert ranks == sorted(ranks), rebooted  # LBs, then control planes, then workers
    assert len(set(rebooted)) == len(rebooted)  # each at most once
    again = cli("prepare", "--yes")
    assert recap(again.stdout)["changed"] == 0, again.stdout
    status = cli("status", check=False)
    assert status.returncode == 0, status.stdout + status.stderr
    vip = topology.load().vip
    wait_for(
        "one VIP holder",
        lambda: (
            sum(
                f" {vip}/" in netns.host_exec(h, ["ip", "-4", "-o", "addr", "show", "ens10"]).stdout
                for h in ORDER[:2]
            )
            == 1
        ),
        timeout=30,
    )
