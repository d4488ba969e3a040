"""Step 5 — haproxy: haproxy.cfg validated with `haproxy -c` before install, reload (not restart).

Verification reads the runtime socket: every control plane must be a server of the backend.
Backends DOWN are expected until `cluster.init` runs; that is a warning, not a failure.
"""

from __future__ import annotations

from ..core.engine import Step, StepContext
from ..core.resources import File, Resource, Service
from ..core.waiting import wait_until
from ..render.lbfiles import HAPROXY_VALIDATE, haproxy_files
from ..status.lbstatus import SHOW_STAT, parse_stat
from ._select import hosts_with


class HaproxyStep(Step):
    name = "haproxy"
    title = "HAProxy: explicit binds, /readyz checks over TLS, allow-list; validated, reloaded"

    def target_names(self, ctx: StepContext) -> list[str]:
        return hosts_with(ctx, "lb")

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        files = [
            File(
                f.path,
                f.content,
                mode=f.mode,
                owner=f.owner,
                group=f.group,
                validate=HAPROXY_VALIDATE,
            )
            for f in haproxy_files(ctx.inventory, target)
        ]
        return [*files, Service("haproxy", watch=[f.key for f in files], on_change="reload")]

    def verify(self, ctx: StepContext, target: str) -> None:
        host = ctx.targets[target]
        wanted = {
            f"k8s-control-plane/{h.name}" for h in ctx.inventory.hosts_with_role("control-plane")
        }
        last: list[str] = []

        def listed() -> dict[str, str]:
            """The runtime socket's servers once it lists every control plane ({} until then)."""
            res = host.query(SHOW_STAT, ok_codes=None)
            servers = dict(parse_stat(res.stdout))
            last[:] = [str(sorted(servers) or "nothing"), res.stderr.strip()[:200]]
            return servers if wanted <= servers.keys() else {}

        servers = wait_until(
            listed,
            seconds=15,
            interval=1,
            failure=lambda: (
                f"{target}: runtime socket shows {last[0]}, expected {sorted(wanted)} ({last[1]})"
            ),
        )
        down = sorted(k for k in wanted if not servers[k].startswith("UP"))
        if down:
            ctx.ui.warn(
                f"{target}: backends not UP yet: {', '.join(down)} (expected until the "
                "control planes run: cluster.init / cluster.join)"
            )
