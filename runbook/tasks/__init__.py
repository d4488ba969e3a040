"""Invoke collections of the runbook (the only place that knows about Invoke)."""

from __future__ import annotations

from invoke import Collection

from . import cluster, core, day2, lb


def namespace() -> Collection:
    """The runbook's whole namespace (without the lab)."""
    ns = Collection()
    for t in (
        core.validate,
        core.render,
        core.prepare,
        core.network,
        core.firewall,
        core.walkthrough,
        core.status,
        day2.patch,
    ):
        ns.add_task(t)
    ns.add_collection(Collection.from_module(lb, name="lb"))
    cluster_ns = Collection.from_module(cluster, name="cluster")
    for t in (day2.backup, day2.restore, day2.upgrade, day2.remove, day2.renew_certs):
        cluster_ns.add_task(t)
    ns.add_collection(cluster_ns)
    ns.configure({"runbook": {"inventory": "hosts.yaml"}})
    return ns
