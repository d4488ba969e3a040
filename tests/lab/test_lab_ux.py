"""Operator experience on the lab (issue 14), through the real CLI:

- the grouped plan of `inv prepare --dry-run` on 7 fresh hosts: short, every host and every
  change named (compared with the per-host `--verbose` plan);
- an inventory without `public_ip` and interface names converges the fresh lab (facts from the
  simulated API: public IPv4, the private NIC's MAC; the host's `ip link`), in a short output;
  a wrong interface name or a NIC whose MAC is not the API's is refused naming both values;
- `inv status` at 80 columns cuts no host name and no IP; `inv validate --online` all green;
- the guided rhythm under a pseudo-terminal: apply, skip, quit, resume, a checkpoint's [y/N],
  and `--only` on a step with nothing to change (no question).

Runs after the other lab modules (it resets the lab to fresh hosts twice) and leaves the lab
fresh-after-prepare for the teardown module.
"""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import yaml

from lab import labstate, netns, scenarios, topology

from .helpers import fresh_lab, measure, recap
from .test_k8s_walkthrough import ensure_standin_debs, inventory

pytestmark = pytest.mark.lab
REPO = Path(__file__).resolve().parents[2]
HOSTS = (
    "k8scontrol01",
    "k8scontrol02",
    "k8scontrol03",
    "k8slb01",
    "k8slb02",
    "k8node01",
    "k8node02",
)
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")
PLAN_LIMIT, WALK_LIMIT = 120, 600


def cloud_inventory(**lb: str) -> Path:
    """The lab inventory with every public_ip and both interface names left out (`lb` set)."""
    data = yaml.safe_load(inventory().read_text())
    for h in data["hosts"].values():
        h.pop("public_ip", None)
    data["load_balancer"].pop("interface", None)
    data["load_balancer"].pop("public_interface", None)
    data["load_balancer"].update(lb)
    out = labstate.paths().root / "hosts-cloud.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def run(inv: Path, *args: str, columns: int = 80, timeout: float = 1200) -> tuple[int, str]:
    r = scenarios.inv_runner(
        inventory=inv,
        columns=columns,
        extra_env={"RUNBOOK_P12_PASSWORD": "lab-p12-password"},
    )(*args, check=False, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def expand(text: str) -> set[str]:
    """Host names in `text`, ranges like k8scontrol01-03 expanded."""
    names = set()
    for prefix, a, b in re.findall(r"\b(k8s?[a-z]+?)(\d\d)(?:-(\d\d))?\b", text):
        for n in range(int(a), int(b or a) + 1):
            names.add(f"{prefix}{n:02d}")
    return names


def change_lines(text: str) -> set[str]:
    """'action resource' of every change line of a plan tree."""
    out = set()
    for line in text.splitlines():
        m = re.match(r"^[│ ]*[├└]── ([a-z+-]+ [a-z-]+:\S+|[a-z+-]+ [a-z-]+)(?: — | \(|$)", line)
        if m and ":" not in m.group(1).split()[0]:
            out.add(m.group(1))
    return out


@pytest.fixture(scope="module")
def fresh(lab_up: dict[str, float]) -> None:
    version = yaml.safe_load((REPO / "lab" / "hosts.yaml").read_text())["kubernetes"]["version"]
    ensure_standin_debs(version)
    fresh_lab()


def test_grouped_prepare_plan_is_short_and_names_every_host_and_change(fresh: None) -> None:
    code, grouped = run(cloud_inventory(), "prepare", "--dry-run")
    assert code == 0, grouped
    code, full = run(cloud_inventory(), "prepare", "--dry-run", "--verbose")
    assert code == 0, full
    lines = grouped.splitlines()
    print(grouped)
    print(
        f"prepare --dry-run on 7 fresh hosts: {len(lines)} lines grouped, "
        f"{len(full.splitlines())} per host (--verbose), 80 columns"
    )
    assert len(lines) <= PLAN_LIMIT, grouped
    assert expand(grouped) >= set(HOSTS), grouped
    wanted = change_lines(full)
    assert len(wanted) >= 10, full
    assert wanted <= change_lines(grouped), sorted(wanted - change_lines(grouped))
    assert max(len(ln) for ln in lines) <= 80


def test_cloud_facts_inventory_converges_the_fresh_lab_in_a_short_output(fresh: None) -> None:
    inv = cloud_inventory()
    t0 = time.monotonic()
    code, out = run(inv, "walkthrough", "--yes")
    took = time.monotonic() - t0
    print(f"fresh walkthrough --yes: {len(out.splitlines())} lines at 80 columns, {took:.0f} s")
    measure("fresh walkthrough --yes: lines at 80 columns", len(out.splitlines()))
    print(out)
    assert code == 0 and recap(out)["failed"] == 0, out
    assert "load_balancer.interface: ens10 (found from the API)" in out
    assert "hosts.k8slb01.public_ip: 203.0.113.14 (from the API)" in out
    assert len(out.splitlines()) <= WALK_LIMIT
    for lb in ("k8slb01", "k8slb02"):  # the lab NIC carries the API's MAC (lab/sdn.py)
        link = netns.host_exec(lb, ["cat", "/sys/class/net/ens10/address"]).stdout.strip()
        assert link.startswith("86:00:00:"), link
    code, again = run(inv, "walkthrough", "--yes")
    assert code == 0 and recap(again)["changed"] == 0, again


def test_status_at_80_columns_cuts_no_name_or_ip(fresh: None) -> None:
    code, out = run(cloud_inventory(), "status", columns=80)
    assert code == 0, out
    assert max(len(ln) for ln in out.splitlines()) <= 80, out
    assert "…" not in out, out
    words = set(re.findall(r"[\w.:/-]+", out))
    for i, name in enumerate(HOSTS):
        assert name in words and f"10.143.0.{i + 2}" in words, (name, out)
    assert {"10.143.0.50:6443", "203.0.113.100:6443"} <= words, out
    print(out)


def test_validate_online_is_green_and_one_table(fresh: None) -> None:
    code, out = run(cloud_inventory(), "validate", "--online", columns=100)
    print(out)
    assert code == 0, out
    assert "online: the inventory against the cloud and the hosts" in out
    assert re.search(r"interfaces\W+LBs\W+ok\W+private ens10, public eth0", out), out
    for name in HOSTS:
        assert re.search(rf"server\W+{name}\W+ok", out), (name, out)
        assert re.search(rf"OS release\W+{name}\W+ok", out), (name, out)


def _ns_mac(name: str) -> str:
    return netns.host_exec(name, ["cat", "/sys/class/net/ens10/address"]).stdout.strip()


def test_wrong_interface_or_mac_is_refused_naming_both(fresh: None) -> None:
    code, out = run(cloud_inventory(interface="enp7s0"), "lb.heartbeat", "--dry-run", columns=250)
    assert code == 2, out
    mac = _ns_mac("k8slb01")
    assert "the inventory says enp7s0 (MAC not present on k8slb01)" in out, out
    assert f"the API's private NIC is ens10 ({mac})" in out, out
    ns = topology.host_ns("k8slb01")
    subprocess.run(
        ["ip", "-n", ns, "link", "set", "dev", "ens10", "address", "86:00:00:de:ad:01"], check=True
    )
    try:
        code, out = run(cloud_inventory(), "lb.heartbeat", "--dry-run", columns=250)
        assert code == 2, out
        assert f"no interface on k8slb01 has the MAC the API gives for its private NIC ({mac})" in (
            out
        ), out
        assert "ens10 86:00:00:de:ad:01" in out, out
    finally:
        subprocess.run(["ip", "-n", ns, "link", "set", "dev", "ens10", "address", mac], check=True)
        subprocess.run(
            [
                "ip",
                "-n",
                topology.ROUTER_NS,
                "neigh",
                "flush",
                "dev",
                topology.router_link("k8slb01"),
            ],
            check=False,
        )


class Pty:
    """`inv ARGS` on a pseudo-terminal: read until a pattern, answer, collect everything."""

    def __init__(self, inv: Path, args: Sequence[str]) -> None:
        import pty

        self.master, slave = pty.openpty()
        os.set_blocking(self.master, False)
        root = labstate.paths().root
        env = dict(
            os.environ,
            INVOKE_RUNBOOK_INVENTORY=str(inv),
            RBLAB_HCLOUD_TOKEN=(root / "hcloud-token").read_text().strip(),
            RUNBOOK_P12_PASSWORD="lab-p12-password",
            TERM="dumb",
            NO_COLOR="1",
            COLUMNS="120",
        )
        exe = str(Path(sys.executable).parent / "inv")
        self.proc = subprocess.Popen(
            [exe, "-r", str(REPO), *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            close_fds=True,
        )
        os.close(slave)
        self.text = ""
        self.seen = 0

    def _read(self, timeout: float) -> bool:
        r, _, _ = select.select([self.master], [], [], timeout)
        if not r:
            return self.proc.poll() is None
        try:
            chunk = os.read(self.master, 65536)
        except OSError:
            return False
        if not chunk:
            return False
        self.text += ANSI.sub("", chunk.decode(errors="replace"))
        return True

    def expect(self, pattern: str, timeout: float = 600) -> str:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            m = rx.search(self.text, self.seen)
            if m:
                self.seen = m.end()
                return m.group(0)
            if not self._read(1):
                m = rx.search(self.text, self.seen)
                if m:
                    self.seen = m.end()
                    return m.group(0)
                raise AssertionError(f"exited before {pattern!r}:\n{self.text[-3000:]}")
        raise AssertionError(f"no {pattern!r} within {timeout} s:\n{self.text[-3000:]}")

    def send(self, line: str) -> None:
        os.write(self.master, (line + "\n").encode())

    def finish(self, timeout: float = 300) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(1)
        while self._read(0.2):
            pass
        os.close(self.master)
        return self.proc.wait(timeout=5)


ASK = re.compile(r"([a-z-]+): apply these changes on [^\n]*APPLY / skip / quit\? ")
# the prompt is one line however narrow the terminal (soft wrap): the patterns rely on it
CONFIRM = re.compile(r"confirm\? \[y/N\] ")


def answer(p: Pty, policy: dict[str, str], *, confirm: str = "y") -> list[str]:
    """Answer every step question by `policy` (default: Enter = apply) and every checkpoint with
    `confirm`, until the run ends; the steps asked, in order."""
    asked = []
    while True:
        m = p.expect(r"APPLY / skip / quit\? |confirm\? \[y/N\] |recap: ok=", timeout=900)
        if m.startswith("recap"):
            return asked
        if m.startswith("confirm"):
            asked.append("confirm")
            p.send(confirm)
            continue
        step = ASK.findall(p.text[: p.seen])[-1]
        asked.append(step)
        p.send(policy.get(step, ""))


def test_guided_rhythm_under_a_pseudo_terminal(fresh: None) -> None:
    fresh_lab()
    inv = inventory()
    # 1: prepare (and the reboot, if asked) applied with Enter, network skipped, quit at the next
    p = Pty(inv, ["walkthrough"])
    asked = answer(p, {"network": "s", "firewall": "q"})
    assert p.finish() == 3, p.text
    assert asked[0] == "prepare" and asked[-2:] == ["network", "firewall"], asked
    assert "quit at step firewall; a re-run resumes here (--from firewall)" in p.text
    assert re.search(r"network\W+hcloud\W+skipped", p.text), p.text
    assert re.search(r"prepare\W+k8scontrol01-03[^\n]*\W+changed", p.text), p.text
    # 2: the re-run resumes: prepare has nothing to change and does not ask; network applied;
    # the firewall's checkpoint shows its text once and its choices, and "n" declines (exit 3)
    p = Pty(inv, ["walkthrough"])
    asked = answer(p, {"network": "apply", "firewall": "a"}, confirm="n")
    assert p.finish() == 3, p.text
    assert asked == ["network", "firewall", "confirm"], asked
    assert p.text.count("Apply the cloud firewalls?") == 1, p.text
    assert "declined at the checkpoint: this step changed nothing" in p.text
    # 3: --only a step with nothing to change: no question at all
    p = Pty(inv, ["walkthrough", "--only", "network"])
    assert p.finish() == 0, p.text
    assert "APPLY / skip / quit" not in p.text
    assert "walkthrough 1/1: step 2 (network)" in p.text
