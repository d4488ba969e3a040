"""Day 2 on the lab: `inv patch` — rolling OS updates with a host whose update requires a reboot.

The stand-in kernel update (lab/standins/kernel.py) 1.0 is installed on both load balancers and
one worker, then 2.0 is published: `inv patch --yes` upgrades exactly those three, one at a
time — the standby LB, then the VIP holder after a planned hand-over, then the worker (drained,
rebooted, Ready, uncordoned) — never two hosts down at once; kubelet/kubeadm/kubectl stay held;
the API through the floating IP is probed all along (failed requests reported); a re-run changes
nothing.
"""

from __future__ import annotations

import json
import threading

import pytest

from lab import netns, scenarios, topology
from lab.apiprobe import ReadyzProbe
from lab.standins.kernel import NAME
from tests.lab.test_k8s_walkthrough import KUBECTL, cli, cluster, recap
from tests.lab.test_lab_reboot_interrupt import ORDER, Monitor, publish, reboot_required

__all__ = ["cluster"]
pytestmark = pytest.mark.lab
PATCHED = ("k8slb01", "k8slb02", "k8node01")


def test_patch_rolls_one_host_at_a_time_with_a_hand_over(cluster: dict[str, float]) -> None:
    # from a known start: no kernel update anywhere (an earlier module may have left one)
    for h in ORDER:
        netns.host_exec(
            h,
            ["sh", "-c", f"dpkg --purge {NAME} >/dev/null 2>&1; rm -f /var/run/reboot-required*"],
        )
    publish("1.0")
    for h in PATCHED:
        netns.host_exec(h, ["sh", "-c", f"apt-get update -qq && apt-get install -y -qq {NAME}"])
    holder = scenarios.holders()[0]
    standby = next(h for h in ("k8slb01", "k8slb02") if h != holder)
    publish("2.0")
    # a --dry-run reads the package lists as they are (it changes nothing, apt's lists included):
    # make them current, as they are on a server that refreshed them since the update came out
    for h in ORDER:
        netns.host_exec(h, ["apt-get", "update", "-qq"])
    before = {h: netns.init_pid(h) for h in PATCHED}

    r = cli("patch", "--dry-run")
    assert recap(r.stdout)["changed"] == 3, r.stdout
    monitor = Monitor(ORDER)
    watch = threading.Thread(target=monitor.run, daemon=True)
    watch.start()
    probe = ReadyzProbe(topology.load().floating_ip, interval=0.2).start()
    try:
        r = cli("patch", "--yes")
    finally:
        probe.stop()
        monitor._stop.set()
        watch.join(5)
    print(probe.summary())
    out = r.stdout
    assert recap(out)["failed"] == 0 and recap(out)["changed"] == 3, out
    # the standby first, the holder after the hand-over, then the worker; never two at once
    assert monitor.rebooted() == [standby, holder, "k8node01"], monitor.windows
    assert monitor.max_down <= 1 and not monitor.overlaps(), monitor.windows
    assert scenarios.holders() == [standby]  # the planned hand-over moved the VIP for good
    for h in PATCHED:
        assert netns.init_pid(h) != before[h], f"{h} did not reboot"
        assert not reboot_required(h)
    nodes = json.loads(
        netns.host_exec("k8scontrol01", [*KUBECTL, "get", "nodes", "-o", "json"]).stdout
    )["items"]
    assert all(n["status"]["conditions"][0]["status"] == "True" for n in nodes)
    assert not any((n.get("spec") or {}).get("unschedulable") for n in nodes)
    held = netns.host_exec("k8node01", ["apt-mark", "showhold"]).stdout.split()
    assert {"kubelet", "kubeadm", "kubectl"} <= set(held)

    r = cli("patch", "--yes")
    assert recap(r.stdout)["changed"] == 0, r.stdout
