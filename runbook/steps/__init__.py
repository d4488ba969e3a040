"""One module per procedure step; `built_steps()` lists those that exist, in document order."""

from __future__ import annotations

from ..core.engine import Step


def built_steps() -> list[Step]:
    """Instances of every built step, in the procedure's order."""
    from .admin_user import AdminUserStep
    from .certs import CertsStep
    from .cni import CniStep
    from .haproxy import HaproxyStep
    from .heartbeat import HeartbeatStep
    from .init import InitStep
    from .insecure_api import InsecureApiStep
    from .join import JoinStep
    from .lb import LbStep
    from .network import NetworkStep
    from .prepare import PrepareStep

    return [
        PrepareStep(),
        NetworkStep(),
        LbStep(),
        HaproxyStep(),  # before Heartbeat: configured before its watchdog may start it
        HeartbeatStep(),
        InitStep(),
        JoinStep("control-plane"),
        JoinStep("worker"),
        CniStep(),
        AdminUserStep(),
        InsecureApiStep(),
        CertsStep(),
    ]
