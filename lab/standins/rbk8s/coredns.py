"""LAB STAND-IN — CoreDNS as far as the runbook touches it: kubeadm's default Corefile, a strict
reader of the Corefile (what CoreDNS refuses to load, this refuses: unbalanced braces, unknown
plugins, a plugin twice in one server block, a `hosts` line that is not `IP NAME…`), and the
answer a pod would get for a name (`resolve`): the `hosts` plugin runs before `kubernetes`
(CoreDNS's compiled plugin order), `kubernetes` is authoritative for its zones (NXDOMAIN for a
name it has no Service for), everything else goes to `forward`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

# what kubeadm's Corefile and the runbook use (CoreDNS has more; the stand-in knows these)
PLUGINS = {
    "errors", "health", "ready", "kubernetes", "prometheus", "forward", "cache", "loop",
    "reload", "loadbalance", "hosts", "log",
}  # fmt: skip
HOSTS_OPTIONS = {"fallthrough", "ttl", "reload", "no_reverse"}
_NAME = re.compile(r"^(?=.{1,253}\.?$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9-]{1,63}\.?$")


def kubeadm_default(dns_domain: str) -> str:
    """The Corefile `kubeadm init` puts into ConfigMap kube-system/coredns."""
    return f""".:53 {{
    errors
    health {{
       lameduck 5s
    }}
    ready
    kubernetes {dns_domain} in-addr.arpa ip6.arpa {{
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }}
    prometheus :9153
    forward . /etc/resolv.conf {{
       max_concurrent 1000
    }}
    cache 30 {{
       disable success {dns_domain}
       disable denial {dns_domain}
    }}
    loop
    reload
    loadbalance
}}
"""


class CorefileError(ValueError):
    pass


@dataclass
class Directive:
    name: str
    args: list[str]
    body: list[list[str]] = field(default_factory=list)


def parse(text: str) -> dict[str, list[Directive]]:
    """Server blocks (key → directives), refusing what CoreDNS refuses to load."""
    tokens = [ln.split("#", 1)[0].split() for ln in text.splitlines()]
    lines = [t for t in tokens if t]
    blocks: dict[str, list[Directive]] = {}
    i = 0
    while i < len(lines):
        head = lines[i]
        if head[-1:] != ["{"] or len(head) != 2:
            raise CorefileError(f"Corefile: expected a server block `KEY {{`, got {' '.join(head)}")
        key, i = head[0], i + 1
        directives: list[Directive] = []
        while True:
            if i >= len(lines):
                raise CorefileError(f"Corefile: server block {key} is not closed")
            ln = lines[i]
            if ln == ["}"]:
                i += 1
                break
            d = Directive(ln[0], [a for a in ln[1:] if a != "{"])
            if d.name not in PLUGINS:
                raise CorefileError(f"Corefile:{key}: unknown directive '{d.name}'")
            if any(x.name == d.name for x in directives):
                raise CorefileError(
                    f"plugin/{d.name}: this plugin can only be used once per Server Block"
                )
            i += 1
            if ln[-1] == "{":
                while True:
                    if i >= len(lines):
                        raise CorefileError(f"Corefile:{key}: {d.name} block is not closed")
                    if lines[i] == ["}"]:
                        i += 1
                        break
                    if "{" in lines[i] or "}" in lines[i]:
                        raise CorefileError(f"Corefile:{key}: unexpected brace in {d.name}")
                    d.body.append(lines[i])
                    i += 1
            directives.append(d)
        if key in blocks:
            raise CorefileError(f"Corefile: server block {key} defined twice")
        for x in directives:
            if x.name == "hosts":
                _check_hosts(x)
        blocks[key] = directives
    return blocks


def _check_hosts(d: Directive) -> None:
    for entry in d.body:
        if entry[0] in HOSTS_OPTIONS:
            continue
        try:
            ipaddress.ip_address(entry[0])
        except ValueError:
            raise CorefileError(f"plugin/hosts: unknown property '{entry[0]}'") from None
        if len(entry) < 2 or not all(_NAME.match(n.lower()) for n in entry[1:]):
            raise CorefileError(f"plugin/hosts: bad entry: {' '.join(entry)}")


def resolve(corefile: str, name: str) -> str | None:
    """The A record a pod gets for `name`: an IP, None (NXDOMAIN from the kubernetes plugin),
    or "forward" (asked upstream)."""
    root = parse(corefile).get(".:53")
    if root is None:
        raise CorefileError("Corefile: no .:53 server block")
    fqdn = name.lower().rstrip(".")
    hosts = next((d for d in root if d.name == "hosts"), None)
    if hosts is not None:
        for entry in hosts.body:
            if entry[0] not in HOSTS_OPTIONS and fqdn in (n.lower().rstrip(".") for n in entry[1:]):
                return entry[0]
    k8s = next((d for d in root if d.name == "kubernetes"), None)
    if k8s is not None:
        for zone in (z.lower().rstrip(".") for z in k8s.args):
            if fqdn == zone or fqdn.endswith("." + zone):
                return None
    return "forward"
