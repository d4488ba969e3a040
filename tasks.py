"""Invoke entry point: the runbook's namespace plus the lab (`inv --list`)."""

from runbook.tasks import namespace

ns = namespace()

try:  # the lab is optional on an operator's workstation
    from lab.tasks import ns as lab_ns
except ImportError:  # pragma: no cover - lab package absent
    lab_ns = None
if lab_ns is not None:
    ns.add_collection(lab_ns, name="lab")
