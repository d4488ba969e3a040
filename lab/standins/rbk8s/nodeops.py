"""LAB STAND-IN — node maintenance: `kubectl cordon|uncordon|drain` and what the API server
stand-in needs for them (a node's `spec.unschedulable`, the pods bound to a node).

Pods: the stand-in runs none, so the pods on a node are (a) one per DaemonSet in the store on
every node (as a CNI DaemonSet has), owned by that DaemonSet, and (b) Pod objects in the store
whose `spec.nodeName` is the node. `kubectl drain` behaves as kubectl's: it cordons first, then
refuses (nothing evicted) while DaemonSet-managed pods are there without `--ignore-daemonsets`
or pods without a controller are there without `--force`; otherwise it evicts (deletes) every
other pod and prints `node/NAME drained`. A node that does not exist is NotFound.
"""

from __future__ import annotations

import hashlib
import sys
from typing import Any

from . import client

UNSCHEDULABLE_TAINT = {"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}


# ----- API server side -----------------------------------------------------------------------
def set_unschedulable(store: Any, name: str, flag: bool) -> bool:
    """False when the node does not exist. The cordon is its own replicated entry
    (`cordons/NAME`): the kubelet's reports rewrite `nodes/NAME` and must not carry an old
    `spec.unschedulable` back over a newer cordon or uncordon (real etcd serialises the two
    writers; the lab's replicas merge entry by entry)."""
    with store.lock:
        if name not in store.data["nodes"]:
            return False
        cordons = store.data["cordons"]
        if (name in cordons) != flag:
            if flag:
                cordons[name] = True
            else:
                del cordons[name]
            store.touch(f"cordons/{name}")
            store.commit()
    return True


def pods_on(store: Any, name: str) -> list[dict[str, Any]]:
    """The pods bound to node `name` (DaemonSet pods first)."""
    out = []
    objects = store.data["objects"]
    for key in sorted(objects):
        kind, ns, ds = key.split("/", 2)
        if kind == "daemonset":
            suffix = hashlib.sha256(f"{ds}/{name}".encode()).hexdigest()[:5]
            out.append(
                {
                    "metadata": {
                        "name": f"{ds}-{suffix}",
                        "namespace": ns,
                        "ownerReferences": [{"kind": "DaemonSet", "name": ds}],
                    },
                    "spec": {"nodeName": name},
                    "virtual": True,
                }
            )
    for key in sorted(objects):
        obj = objects[key]
        if key.startswith("pod/") and (obj.get("spec") or {}).get("nodeName") == name:
            out.append({**obj, "key": key})
    return out


CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def node_fields(*, cordoned: bool = False, control_plane: bool = False) -> dict[str, Any]:
    """A Node's `spec`: kubeadm's taint on control planes (its mark-control-plane phase; the
    etcd members are the control planes kubeadm made), and a cordon."""
    taints = [CONTROL_PLANE_TAINT] if control_plane else []
    spec: dict[str, Any] = {}
    if cordoned:
        spec["unschedulable"] = True
        taints.append(UNSCHEDULABLE_TAINT)
    if taints:
        spec["taints"] = taints
    return spec


# ----- kubectl side ----------------------------------------------------------------------------
def kubectl(conf: dict[str, Any], args: list[str]) -> int:
    verb, rest = args[0], args[1:]
    flags = [a for a in rest if a.startswith("-")]
    names = [a for a in rest if not a.startswith("-")]
    allowed = {"cordon": set(), "uncordon": set(), "drain": {"--ignore-daemonsets", "--force"}}
    allowed["drain"] |= {"--delete-emptydir-data", "--timeout=5m0s"}
    bad = [f for f in flags if f.split("=")[0] not in {a.split("=")[0] for a in allowed[verb]}]
    if bad:
        sys.stderr.write(f"error: unknown flag: {bad[0]}\nSee 'kubectl {verb} --help' for usage.\n")
        return 1
    if len(names) != 1:
        sys.stderr.write(f"error: USAGE: {verb} NODE [flags]\n")
        return 1
    node = names[0].removeprefix("node/").removeprefix("nodes/")
    want = verb != "uncordon"
    try:
        client.call(conf, "POST", f"/rb/v1/nodes/{node}/schedulable", {"unschedulable": want})
    except client.ApiError as exc:
        if exc.code == 404:
            sys.stderr.write(f'Error from server (NotFound): nodes "{node}" not found\n')
            return 1
        raise
    print(f"node/{node} {'cordoned' if want else 'uncordoned'}")
    if verb != "drain":
        return 0
    pods = client.call(conf, "GET", f"/rb/v1/pods?node={node}")["items"]
    owned = lambda p: (p["metadata"].get("ownerReferences") or [{}])[0].get("kind")  # noqa: E731
    ref = lambda p: f"{p['metadata'].get('namespace', 'default')}/{p['metadata']['name']}"  # noqa: E731
    ds = [ref(p) for p in pods if owned(p) == "DaemonSet"]
    bare = [ref(p) for p in pods if owned(p) is None]
    errors = []
    if ds and "--ignore-daemonsets" not in flags:
        errors.append(
            "cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "
            + ", ".join(ds)
        )
    if bare and "--force" not in flags:
        errors.append(
            "cannot delete Pods that declare no controller (use --force to override): "
            + ", ".join(bare)
        )
    if errors:
        sys.stderr.write(
            f'error: unable to drain node "{node}" due to error: {"; ".join(errors)}, '
            "continuing command...\nThere are pending nodes to be drained:\n "
            f"{node}\nerror: {errors[0]}\n"
        )
        return 1
    if ds:
        print(f"Warning: ignoring DaemonSet-managed Pods: {', '.join(ds)}")
    evict = [p for p in pods if owned(p) != "DaemonSet"]
    if bare:
        print(f"Warning: deleting Pods that declare no controller: {', '.join(bare)}")
    for p in evict:
        print(f"evicting pod {ref(p)}")
    if evict:
        client.call(conf, "POST", "/rb/v1/delete", {"keys": [p["key"] for p in evict]})
    for p in evict:
        print(f"pod/{p['metadata']['name']} evicted")
    print(f"node/{node} drained")
    return 0
