"""Invoke collections of the runbook (the only place that knows about Invoke)."""

from __future__ import annotations

from invoke import Collection

from . import cluster, core, lb


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
    ):
        ns.add_task(t)
    ns.add_collection(Collection.from_module(lb, name="lb"))
    ns.add_collection(Collection.from_module(cluster, name="cluster"))
    ns.configure({"runbook": {"inventory": "hosts.yaml"}})
    return ns
