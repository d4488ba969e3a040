"""Day 2 — remove: take one node out of the cluster, keeping the API serving and etcd's quorum.

In this order, each part only when still needed (a re-run changes nothing, an interrupted run
resumes): a control plane leaves HAProxy's rotation (`drain`) on both balancers;
`kubectl drain --ignore-daemonsets` (from another control plane); a control plane's etcd member is
removed (`etcdctl member remove`, refused when the started members left would be no quorum);
`kubeadm reset -f` on the host; `kubectl delete node`; the balancers' server goes back to `ready`
(its health check keeps it out while nothing answers there — the backend itself goes when the
inventory no longer lists the host and `inv lb.haproxy` runs). `inv cluster.join --host NAME`
brings the host back.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from ..core.engine import Step, StepContext, StepFailed
from ..core.plan import Change, TargetPlan
from ..core.remote import Fact, Host
from ..core.resources import Packages, Resource
from ..core.waiting import wait_until
from ..render.k8sfiles import KUBELET_CONF
from ..tools import etcdcli
from ._day2 import door, set_rotation
from ._k8s import KUBECTL, parse_nodes


def etcd_members(host: Host) -> dict[str, str]:
    """name -> member ID, from `etcdctl member list -w json`."""
    if host.query(etcdcli.HAS_ETCDCTL, ok_codes=None).exited != 0:
        raise NoEtcdctl(host.name)
    out = host.query(etcdcli.etcdctl("member", "list", "-w", "json")).stdout
    return {m["name"]: str(m["ID"]) for m in json.loads(out.strip().splitlines()[-1])["members"]}


def started_members(ctx: StepContext, door_host: Host, names: Sequence[str]) -> list[str]:
    """The members among `names` whose etcd answers (`endpoint health` from the door)."""
    up = []
    for n in names:
        ip = ctx.inventory.hosts[n].private_ip if n in ctx.inventory.hosts else None
        if ip is None:
            continue
        cmd = etcdcli.etcdctl("endpoint", "health").replace(
            "--endpoints=https://127.0.0.1:2379", f"--endpoints=https://{ip}:2379"
        )
        if door_host.query(cmd, ok_codes=None, timeout=30).exited == 0:
            up.append(n)
    return up


class NoEtcdctl(StepFailed):
    """The control plane that runs etcdctl has no etcdctl (`etcd-client` not installed)."""

    def __init__(self, name: str) -> None:
        super().__init__(
            f"{name}: etcdctl is not installed (`{etcdcli.PACKAGE}`; the remove-tools step "
            "installs it before the removal)"
        )
        self.name = name


@dataclass
class Removed(Resource[Host]):
    """The host is no node of the cluster, no etcd member, and reset."""

    ctx: StepContext
    name: str

    @property
    def key(self) -> str:
        return f"removed:{self.name}"

    def probe(self) -> str:
        return f"ls {KUBELET_CONF} {etcdcli.MANIFESTS}/*.yaml 2>/dev/null | wc -l"

    @property
    def control_plane(self) -> bool:
        return self.ctx.inventory.hosts[self.name].role == "control-plane"

    def _left(self, fact: Fact | None) -> list[str]:
        """What is still to do, in order."""
        d = self.ctx.targets[door(self.ctx, self.name)]
        nodes = parse_nodes(d.query(f"{KUBECTL} get nodes -o json").stdout)
        configured = int((fact.stdout.strip() if fact else "") or 0) > 0
        todo = []
        if self.name in nodes and not nodes[self.name].unschedulable:
            todo.append("drain")
        if self.control_plane and self._unknown_members(d):
            todo.append("etcd-member?")
        elif self.control_plane and self.name in etcd_members(d):
            todo.append("etcd-member")
        if configured:
            todo.append("reset")
        if self.name in nodes:
            todo.append("delete-node")
        return todo

    def _unknown_members(self, d: Host) -> bool:
        """A dry run before etcdctl is on the door (the remove-tools step would install it
        first): the membership and the quorum are read in the real run."""
        if not self.ctx.options.dry_run:
            return False
        return d.query(etcdcli.HAS_ETCDCTL, ok_codes=None).exited != 0

    def check(self, host: Host, fact: Fact | None) -> Change | None:
        todo = self._left(fact)
        if not todo:
            return None
        if "etcd-member" in todo:
            d = self.ctx.targets[door(self.ctx, self.name)]
            rest = [n for n in etcd_members(d) if n != self.name]
            up = started_members(self.ctx, d, rest)
            if not rest:
                raise StepFailed(f"{self.name} is the last etcd member: refusing to remove it")
            if len(up) < len(rest) // 2 + 1:
                raise StepFailed(
                    f"removing {self.name} would break etcd's quorum: of the {len(rest)} "
                    f"members left only {len(up)} ({', '.join(up) or 'none'}) are started, "
                    f"{len(rest) // 2 + 1} needed"
                )
        steps = {
            "drain": "cordon + drain (--ignore-daemonsets)"
            + (", out of HAProxy's rotation" if self.control_plane else ""),
            "etcd-member": "etcdctl member remove",
            "etcd-member?": "etcdctl member remove if a member (read, and the quorum checked, "
            f"once {etcdcli.PACKAGE} is installed)",
            "reset": "kubeadm reset -f",
            "delete-node": "kubectl delete node",
        }
        return Change(self.key, "remove", "; ".join(steps[t] for t in todo))

    def apply(self, host: Host) -> None:
        todo = self._left(host.probe(self.probe()))
        door_name = door(self.ctx, self.name)
        d = self.ctx.targets[door_name]
        q = shlex.quote(self.name)
        if self.control_plane:
            set_rotation(self.ctx, self.name, "drain")
        if "drain" in todo:
            d.run(f"{KUBECTL} drain {q} --ignore-daemonsets", timeout=600)
        if "etcd-member" in todo:
            member = etcd_members(d).get(self.name)
            if member:
                d.run(etcdcli.etcdctl("member", "remove", member), timeout=60)
        if "reset" in todo:
            host.run("kubeadm reset -f", timeout=600)
        if self.name in parse_nodes(d.query(f"{KUBECTL} get nodes -o json").stdout):
            d.run(f"{KUBECTL} delete node/{self.name}", timeout=120)
        if self.control_plane:
            # nothing answers there now: the health check keeps it out until a join brings it back
            _wait_down(self.ctx, self.name)
            set_rotation(self.ctx, self.name, "ready")


def _wait_down(ctx: StepContext, name: str) -> None:
    from ..tools import haproxyctl

    lbs = [lb.name for lb in ctx.inventory.hosts_with_role("lb")]

    def up_on() -> list[str]:
        state = haproxyctl.server_state(name)
        return [lb for lb in lbs if "DOWN" not in ctx.targets[lb].query(state).stdout]

    wait_until(
        lambda: not up_on(),
        seconds=30,
        interval=1,
        failure=lambda: f"{', '.join(up_on())}: HAProxy does not see {name} down after 30 s",
        ui=ctx.ui,
        what=f"HAProxy on {', '.join(lbs)} to see {name} down",
    )


class RemoveToolsStep(Step):
    """`etcd-client` on the control plane that runs etcdctl for a control plane's removal (the
    door): a kubeadm host has no etcdctl, and only the backup and restore steps installed it, so
    a removal on a cluster never backed up failed with "etcdctl: command not found"."""

    name = "remove-tools"
    title = "etcdctl on the control plane that removes the etcd member"

    def __init__(self, host: str) -> None:
        self.host = host

    def target_names(self, ctx: StepContext) -> list[str]:
        if ctx.inventory.hosts[self.host].role != "control-plane":
            return []
        return [door(ctx, self.host)]

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        return [Packages([etcdcli.PACKAGE])]


class RemoveStep(Step):
    name = "remove"
    title = "drain, etcd member, kubeadm reset, delete node (one host)"
    serial = True

    def __init__(self, host: str) -> None:
        self.host = host

    def target_names(self, ctx: StepContext) -> list[str]:
        return [self.host]

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        return [Removed(ctx, target)]

    def checkpoint(self, ctx: StepContext, plans: Sequence[TargetPlan]) -> str | None:
        name = self.host
        return (
            f"Remove {name} from the cluster (its pods are evicted, kubeadm reset wipes its "
            f"Kubernetes state; `inv cluster.join --host {name}` brings it back)?"
        )
