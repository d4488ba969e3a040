"""Step 2 — network: the private network + cloud subnet; every server attached at its fixed IP.

Never touches the hosts' DHCP-managed private interface (the post: editing it breaks routing).
"""

from __future__ import annotations

from ..cloud.api import Network, ServerAttached
from ..core.engine import Step, StepContext
from ..core.plan import CLOUD
from ..core.resources import Resource
from ._select import hosts_with


class NetworkStep(Step):
    name = "network"
    title = "Hetzner private network, subnet, servers attached with fixed IPs"

    def target_names(self, ctx: StepContext) -> list[str]:
        return [CLOUD]

    def resources(self, ctx: StepContext, target: str) -> list[Resource]:
        net = ctx.inventory.hcloud.network
        res: list[Resource] = [Network(net.name, str(net.ip_range), str(net.subnet), net.zone)]
        for name in hosts_with(ctx):
            host = ctx.inventory.hosts[name]
            res.append(ServerAttached(name, net.name, str(host.private_ip)))
        return res
