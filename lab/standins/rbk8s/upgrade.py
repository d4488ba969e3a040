"""LAB STAND-IN — `kubeadm upgrade plan|apply|node` with Kubernetes' version-skew rules.

As kubeadm: the cluster's version is `kubernetesVersion` in the kubeadm-config ConfigMap; apply
refuses a target above kubeadm's own version ("upgrade kubeadm first"), more than one minor above
the cluster ("only 1 minor version at a time") or below it (no downgrades), asks for confirmation
unless `-y`/`--yes`, and refuses while a control-plane node is NotReady. It rewrites the API
server's static-pod manifest with the new image (the kubelet stand-in then restarts the "pod",
which serves the new version on /version), waits until the local API server answers with it,
and records the new version in kubeadm-config. `upgrade node` does the same for another control
plane (to the cluster's version; refused when kubeadm is older) and nothing on a worker.
"""

from __future__ import annotations

import re
import ssl
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from . import VERSION, client

K = Path("/etc/kubernetes")
APISERVER = K / "manifests" / "kube-apiserver.yaml"
CM_KEY = "configmap/kube-system/kubeadm-config"
VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)$")


class Fail(Exception):
    pass


def parse(version: str) -> tuple[int, int, int]:
    m = VERSION_RE.match(version)
    if not m:
        raise Fail(f'unable to parse version "{version}": expected vMAJOR.MINOR.PATCH')
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def show(v: tuple[int, int, int]) -> str:
    return "v" + ".".join(map(str, v))


def _admin() -> dict[str, Any]:
    return client.load(K / "admin.conf")


def _cluster_config(conf: dict[str, Any]) -> dict[str, Any]:
    got = client.call(conf, "GET", f"/rb/v1/objects?keys={CM_KEY}")
    if CM_KEY not in got["items"]:
        raise Fail(
            'unable to fetch the kubeadm-config ConfigMap: configmaps "kubeadm-config" not found'
        )
    return dict(yaml.safe_load(got["items"][CM_KEY]["data"]["ClusterConfiguration"]))


def cluster_version(conf: dict[str, Any]) -> tuple[int, int, int]:
    return parse(str(_cluster_config(conf).get("kubernetesVersion", "")))


def _check_target(target: tuple[int, int, int], cluster: tuple[int, int, int]) -> None:
    own = parse(VERSION)
    if target > own:
        raise Fail(
            f'Specified version to upgrade to "{show(target)}" is higher than the kubeadm '
            f'version "{show(own)}". Upgrade kubeadm first using the tool you used to install '
            "kubeadm"
        )
    if target < cluster:
        raise Fail(
            f'Specified version to upgrade to "{show(target)}" is equal to or lower than the '
            f'cluster version "{show(cluster)}". Downgrades are not supported yet'
        )
    if target[:2] > (cluster[0], cluster[1] + 1):
        raise Fail(
            f'Specified version to upgrade to "{show(target)}" is too high; kubeadm can upgrade '
            "only 1 minor version at a time"
        )


def _control_planes_ready(conf: dict[str, Any]) -> None:
    nodes = client.call(conf, "GET", "/api/v1/nodes")["items"]
    label = "node-role.kubernetes.io/control-plane"
    cps = [n for n in nodes if label in (n["metadata"].get("labels") or {})] or nodes
    bad = [n["metadata"]["name"] for n in cps if n["status"]["conditions"][0]["status"] != "True"]
    if bad:
        raise Fail(
            "[preflight] Some fatal errors occurred: [ERROR ControlPlaneNodesReady]: there are "
            f"NotReady control-planes in the cluster: {bad}"
        )


def _local_version(ca: Path, ip: str) -> str:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(ca)
    try:
        with urllib.request.urlopen(f"https://{ip}:6443/version", timeout=2, context=ctx) as r:
            return str(yaml.safe_load(r.read())["gitVersion"])
    except (OSError, ssl.SSLError, ValueError, KeyError, TypeError):
        return ""


def _upgrade_static_pods(target: tuple[int, int, int]) -> None:
    """New image in the manifest; wait until the restarted API server serves that version."""
    pod = yaml.safe_load(APISERVER.read_text())
    container = pod["spec"]["containers"][0]
    old = str(container.get("image", ""))
    container["image"] = old.rsplit(":", 1)[0] + ":" + show(target)
    tmp = APISERVER.with_name(".kube-apiserver.yaml.tmp")
    tmp.write_text(yaml.safe_dump(pod))
    tmp.replace(APISERVER)
    print(f"[upgrade/staticpods] Component kube-apiserver: {old} -> {container['image']}")
    ip = next(
        a.split("=", 1)[1] for a in container["command"] if a.startswith("--advertise-address=")
    )
    deadline = time.monotonic() + 120
    while _local_version(K / "pki" / "ca.crt", ip) != show(target):
        if time.monotonic() > deadline:
            raise Fail(
                "[upgrade/staticpods] kube-apiserver did not come back with "
                f"{show(target)} within 2m0s: rolling back is up to you (stand-in)"
            )
        time.sleep(0.3)
    print("[upgrade/staticpods] Component kube-apiserver upgraded and healthy")


def _record(conf: dict[str, Any], target: tuple[int, int, int]) -> None:
    cluster = _cluster_config(conf)
    cluster["kubernetesVersion"] = show(target)
    obj = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
        "data": {"ClusterConfiguration": yaml.safe_dump(cluster)},
    }
    client.call(conf, "POST", "/rb/v1/apply", {"namespace": "kube-system", "objects": [obj]})


def plan() -> None:
    conf = _admin()
    cluster = cluster_version(conf)
    own = parse(VERSION)
    print(f"[upgrade/versions] Cluster version: {show(cluster)}")
    print(f"[upgrade/versions] kubeadm version: {show(own)}")
    if own <= cluster:
        print("Awesome, you're up-to-date! Enjoy!")
        return
    _check_target(own, cluster)
    print(f"\n{'COMPONENT':<21}{'CURRENT':<10}TARGET")
    print(f"{'kube-apiserver':<21}{show(cluster):<10}{show(own)}")
    print(
        f"\nYou can now apply the upgrade by executing the following command:\n\n"
        f"\tkubeadm upgrade apply {show(own)}\n"
    )


def apply(version: str, *, yes: bool) -> None:
    conf = _admin()
    target, cluster = parse(version), cluster_version(conf)
    _check_target(target, cluster)
    _control_planes_ready(conf)
    if not yes:
        sys.stdout.write("[upgrade] Are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise Fail("won't proceed; the user didn't answer (Y|y) in order to continue")
    _upgrade_static_pods(target)
    _record(conf, target)
    print(
        f'[upgrade] SUCCESS! A control plane node of your cluster was upgraded to "{show(target)}".'
    )


def node() -> None:
    if not APISERVER.exists():
        print("[upgrade] Skipping phase. Not a control plane node.")
        print("[upgrade] The configuration for this node was successfully upgraded!")
        return
    conf = _admin()
    cluster = cluster_version(conf)
    own = parse(VERSION)
    if own[:2] < cluster[:2]:
        raise Fail(
            f'the kubeadm version "{show(own)}" is older than the cluster version '
            f'"{show(cluster)}": upgrade kubeadm first'
        )
    _upgrade_static_pods(cluster)
    print("[upgrade] The control plane instance for this node was successfully upgraded!")


def main(argv: list[str]) -> int:
    try:
        if argv == ["plan"]:
            plan()
            return 0
        if argv[:1] == ["apply"]:
            rest = argv[1:]
            yes = any(a in ("-y", "--yes") for a in rest)
            words = [a for a in rest if a not in ("-y", "--yes")]
            if len(words) != 1 or words[0].startswith("-"):
                raise Fail("stand-in: `kubeadm upgrade apply VERSION [-y]`")
            apply(words[0], yes=yes)
            return 0
        if argv == ["node"]:
            node()
            return 0
        raise Fail(f"stand-in kubeadm: unsupported: upgrade {' '.join(argv)}")
    except (Fail, client.ApiError) as exc:
        sys.stderr.write(
            f"{exc}\nTo see the stack trace of this error execute with --v=5 or higher\n"
        )
        return 1
