"""Hetzner Cloud Firewalls: the wanted rules per role (pure) and the cloud resources applying them.

One firewall per role, named `<cluster>-<role>`, applied by label selector to the servers the
runbook labels `hetzner-ha-runbook/cluster=<cluster>` and `hetzner-ha-runbook/role=<role>`.
Hetzner firewalls filter inbound public traffic only (never the private network) and are
stateful: answers to a server's own connections always come back. Inbound, per role:
- every role: TCP 22 from `firewall.admin_networks`; ICMP from anywhere (`firewall.icmp`);
- lb: TCP 6443 from `load_balancer.public_allow` (the floating IP's frontend; a floating IP is
  filtered by the firewall of the server it is assigned to), and Heartbeat's UDP port from the
  LBs' public IPs (the second heartbeat path);
- plus `firewall.rules` of that role. Anything else from the internet is dropped.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hcloud.firewalls import FirewallResource, FirewallResourceLabelSelector, FirewallRule

from ..core.plan import Change
from ..core.remote import Fact
from ..core.resources import Resource
from ..inventory.models import API_PORT
from .api import CloudError, CloudTarget

if TYPE_CHECKING:
    from ..inventory import Inventory

LABEL_PREFIX = "hetzner-ha-runbook"
CLUSTER_LABEL = f"{LABEL_PREFIX}/cluster"
ROLE_LABEL = f"{LABEL_PREFIX}/role"
ANYWHERE = ("0.0.0.0/0", "::/0")


@dataclass(frozen=True, order=True)
class Rule:
    """One inbound rule, normalised (sorted canonical sources) so equal rules compare equal."""

    protocol: str
    port: str | None
    sources: tuple[str, ...]
    description: str = ""

    @classmethod
    def of(
        cls, protocol: str, port: str | None, sources: Sequence[object], description: str
    ) -> Rule:
        nets = sorted(
            {ipaddress.ip_network(str(s), strict=False) for s in sources},
            key=lambda n: (n.version, n),
        )
        return cls(protocol, port, tuple(str(n) for n in nets), description)

    def text(self) -> str:
        port = f" {self.port}" if self.port else ""
        note = f"  ({self.description})" if self.description else ""
        return f"{self.protocol}{port} from {', '.join(self.sources)}{note}"

    def to_hcloud(self) -> FirewallRule:
        return FirewallRule(
            direction="in",
            protocol=self.protocol,
            source_ips=list(self.sources),
            port=self.port,
            description=self.description or None,
        )


def firewall_name(inv: Inventory, role: str) -> str:
    return f"{inv.cluster.name}-{role}"


def selector(inv: Inventory, role: str) -> str:
    return f"{CLUSTER_LABEL}={inv.cluster.name},{ROLE_LABEL}={role}"


def server_labels(inv: Inventory, role: str) -> dict[str, str]:
    return {CLUSTER_LABEL: inv.cluster.name, ROLE_LABEL: role}


def roles(inv: Inventory) -> list[str]:
    """The roles present in the inventory, in inventory order (one firewall each)."""
    return list(dict.fromkeys(h.role for h in inv.hosts.values()))


def wanted_rules(inv: Inventory, role: str) -> tuple[Rule, ...]:
    """The complete inbound rule set of `role`'s firewall (sorted; what `set_rules` sends)."""
    fw = inv.firewall
    if fw is None:
        return ()
    rules = [Rule.of("tcp", str(inv.ssh.port), fw.admin_networks, "SSH from admin networks")]
    if fw.icmp:
        rules.append(Rule.of("icmp", None, ANYWHERE, "ICMP"))
    if role == "lb":
        lb = inv.load_balancer
        if lb.public_allow:
            rules.append(
                Rule.of("tcp", str(API_PORT), lb.public_allow, "Kubernetes API on the floating IP")
            )
        peers = [f"{h.public_ip}/32" for h in inv.hosts_with_role("lb") if h.public_ip]
        if peers:
            rules.append(
                Rule.of("udp", str(lb.heartbeat.udpport), peers, "Heartbeat between the LBs")
            )
    for extra in fw.rules:
        if role in extra.roles:
            note = extra.description or ""
            rules.append(Rule.of(extra.protocol, extra.port, extra.sources, note))
    return tuple(sorted(rules))


def rules_of(fw: Any) -> tuple[Rule, ...]:
    """The inbound rules of a firewall as the API returns it."""
    return tuple(
        sorted(
            Rule.of(r.protocol, r.port, r.source_ips or [], r.description or "")
            for r in (fw.rules or [])
            if r.direction == "in"
        )
    )


def rules_diff(have: Sequence[Rule], want: Sequence[Rule]) -> str:
    """`- rule` / `+ rule` lines (unchanged rules as `  rule`), for the plan."""
    lines = [f"- {r.text()}" for r in have if r not in want]
    lines += [f"  {r.text()}" for r in want if r in have]
    lines += [f"+ {r.text()}" for r in want if r not in have]
    return "\n".join(lines)


def source_allowed(source: str, inv: Inventory) -> bool:
    """Does SSH from `source` pass the wanted firewalls? Private sources are never filtered."""
    addr = ipaddress.ip_address(source)
    if addr in inv.hcloud.network.ip_range:
        return True
    fw = inv.firewall
    return fw is not None and any(
        addr.version == n.version and addr in n for n in fw.admin_networks
    )


def _firewall(target: CloudTarget, name: str) -> Any:
    return target.retrier.call(lambda: target.client.firewalls.get_by_name(name))


def _wait_all(actions: Sequence[Any]) -> None:
    for a in actions:
        a.wait_until_finished(max_retries=300)


@dataclass
class ServerLabels(Resource[CloudTarget]):
    """The runbook's labels on a server (other labels are kept); firewalls select by them."""

    server: str
    labels: dict[str, str]

    @property
    def key(self) -> str:
        return f"labels:{self.server}"

    def check(self, target: CloudTarget, fact: Fact | None) -> Change | None:
        have = target.server(self.server).labels or {}
        missing = {k: v for k, v in self.labels.items() if have.get(k) != v}
        if not missing:
            return None
        return Change(self.key, "label", ", ".join(f"{k}={v}" for k, v in sorted(missing.items())))

    def apply(self, target: CloudTarget) -> None:
        srv = target.server(self.server)
        labels = {**(srv.labels or {}), **self.labels}
        target.write(
            f"label server {self.server}", lambda: target.client.servers.update(srv, labels=labels)
        )


@dataclass
class FirewallRules(Resource[CloudTarget]):
    """A firewall by name with exactly `rules` inbound (and no outbound rule: all out allowed)."""

    name: str
    labels: dict[str, str]
    rules: tuple[Rule, ...]

    @property
    def key(self) -> str:
        return f"firewall:{self.name}"

    def check(self, target: CloudTarget, fact: Fact | None) -> Change | None:
        fw = _firewall(target, self.name)
        if fw is None:
            return Change(
                self.key, "create", f"{len(self.rules)} inbound rules", rules_diff((), self.rules)
            )
        have = rules_of(fw)
        outbound = [r for r in (fw.rules or []) if r.direction == "out"]
        if have == self.rules and not outbound:
            return None
        summary = f"rules {len(have)} → {len(self.rules)}"
        if outbound:
            summary += f", {len(outbound)} outbound rule(s) removed"
        return Change(self.key, "set rules", summary, rules_diff(have, self.rules))

    def apply(self, target: CloudTarget) -> None:
        fw = _firewall(target, self.name)
        rules = [r.to_hcloud() for r in self.rules]
        if fw is None:
            target.write(
                f"create firewall {self.name}",
                # hcloud annotates `labels` as str; it sends (and documents) a dict
                lambda: target.client.firewalls.create(
                    name=self.name,
                    rules=rules,
                    labels=self.labels,  # type: ignore[arg-type]
                ),
            )
            return
        _wait_all(
            target.write(
                f"set_rules firewall {self.name} ({len(rules)} rules)",
                lambda: target.client.firewalls.set_rules(fw, rules),
            )
        )


@dataclass
class FirewallApplied(Resource[CloudTarget]):
    """The firewall applies to exactly one label selector (servers of one role of this cluster)."""

    name: str
    selector: str

    @property
    def key(self) -> str:
        return f"firewall-applied:{self.name}"

    def _entries(self, target: CloudTarget) -> tuple[Any, bool, list[Any]]:
        fw = _firewall(target, self.name)
        if fw is None:
            return None, False, []
        ours = False
        others = []
        for entry in fw.applied_to or []:
            if entry.type == "label_selector" and entry.label_selector.selector == self.selector:
                ours = True
            else:
                others.append(entry)
        return fw, ours, others

    def check(self, target: CloudTarget, fact: Fact | None) -> Change | None:
        fw, ours, others = self._entries(target)
        if fw is not None and ours and not others:
            return None
        extra = f"; remove {len(others)} other target(s)" if others else ""
        return Change(self.key, "apply", f"to label selector {self.selector}{extra}")

    def apply(self, target: CloudTarget) -> None:
        fw, ours, others = self._entries(target)
        if fw is None:
            raise CloudError(f"firewall {self.name} does not exist")
        if others:
            plain = [
                FirewallResource(type=e.type, server=e.server, label_selector=e.label_selector)
                for e in others
            ]
            _wait_all(
                target.write(
                    f"remove firewall {self.name} from {len(plain)} other target(s)",
                    lambda: target.client.firewalls.remove_from_resources(fw, plain),
                )
            )
        if not ours:
            res = FirewallResource(
                type="label_selector",
                label_selector=FirewallResourceLabelSelector(selector=self.selector),
            )
            _wait_all(
                target.write(
                    f"apply firewall {self.name} to {self.selector}",
                    lambda: target.client.firewalls.apply_to_resources(fw, [res]),
                )
            )


def covering(server: Any) -> list[int]:
    """Ids of the firewalls applied to a server (hcloud `public_net.firewalls`)."""
    return [f.firewall.id for f in (server.public_net.firewalls or []) if f.status == "applied"]
