"""The insecure-API emulation's files, rendered from the inventory (pure functions, no host).

docs/procedure.md: the post's `insecure-port: 6080` is gone (serving removed in Kubernetes 1.20, the
flags in 1.24). When `load_balancer.insecure_api.enabled`, each control plane runs
`kubectl proxy` on its private IP:port as a ServiceAccount bound to a chosen ClusterRole, and
HAProxy forwards VIP:port to them (lbfiles). The token lives only in a root 0600 kubeconfig; the
unit's command line names that file.
"""

from __future__ import annotations

import re

from runbook.core.resources import SECRET_MARKER
from runbook.inventory import API_PORT, Inventory
from runbook.render.templates import render

NAMESPACE = "kube-system"
SA_NAME = "insecure-api-proxy"
SECRET_NAME = f"{SA_NAME}-token"
UNIT = f"{SA_NAME}.service"
SERVICE = SA_NAME
UNIT_PATH = f"/etc/systemd/system/{UNIT}"
WANTS_LINK = f"/etc/systemd/system/multi-user.target.wants/{UNIT}"
MANIFEST_PATH = "/etc/kubernetes/runbook/insecure-api.yaml"
KUBECONFIG_PATH = f"/etc/kubernetes/{SA_NAME}.conf"
CA_FILE = "/etc/kubernetes/pki/ca.crt"
KUBECTL_BIN = "/usr/bin/kubectl"
OBJECTS = (f"serviceaccount/{SA_NAME}", f"clusterrolebinding/{SA_NAME}", f"secret/{SECRET_NAME}")
# what a ServiceAccount token can look like (a JWT: base64url parts joined by dots)
TOKEN_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def _control_plane(inv: Inventory, name: str) -> str:
    host = inv.hosts.get(name)
    if host is None or host.role != "control-plane":
        raise ValueError(f"{name!r} is not a control-plane host of the inventory")
    return str(host.private_ip)


def manifest(inv: Inventory) -> str:
    """ServiceAccount + ClusterRoleBinding (the chosen role) + explicit token Secret."""
    spec = inv.load_balancer.insecure_api
    return render(
        "k8s/insecure-api.yaml.j2",
        sa_name=SA_NAME,
        namespace=NAMESPACE,
        secret_name=SECRET_NAME,
        role=spec.role,
        port=spec.port,
    )


def kubeconfig(inv: Inventory, host_name: str, *, token: str) -> str:
    """The ServiceAccount's kubeconfig for `host_name`: its own API server, the cluster CA file.

    Each proxy talks to the API server on its own host, so HAProxy's check through the proxy
    reflects that control plane's health. A token of another shape is refused (the message
    never shows it).
    """
    ip = _control_plane(inv, host_name)
    if not TOKEN_RE.match(token) and token != SECRET_MARKER:
        raise ValueError("the ServiceAccount token has an unexpected form (not a JWT)")
    return render(
        "k8s/insecure-api-proxy.conf.j2",
        node=host_name,
        cluster=inv.cluster.name,
        server=f"{ip}:{API_PORT}",
        ca_file=CA_FILE,
        sa_name=SA_NAME,
        namespace=NAMESPACE,
        token=token,
    )


def _literal(text: str) -> str:
    """A regular expression matching `text` literally, without backslashes or `$` escapes a
    unit file would reinterpret: each special character becomes a one-character class."""
    return "".join(f"[{c}]" if c in ".+*?()|{}" else c for c in text)


def accept_hosts(inv: Inventory, host_name: str) -> list[str]:
    """The Host names `kubectl proxy` accepts: the VIP (through HAProxy), this host's own IP
    (direct), and the API DNS name when there is one."""
    names = [str(inv.load_balancer.vip), _control_plane(inv, host_name)]
    if inv.kubernetes.api_dns_name:
        names.append(inv.kubernetes.api_dns_name.lower().rstrip("."))
    return [f"^{_literal(n)}$" for n in dict.fromkeys(names)]


def unit(inv: Inventory, host_name: str) -> str:
    """``/etc/systemd/system/insecure-api-proxy.service`` for `host_name`."""
    spec = inv.load_balancer.insecure_api
    return render(
        "k8s/insecure-api-proxy.service.j2",
        address=_control_plane(inv, host_name),
        port=spec.port,
        role=spec.role,
        sa_name=SA_NAME,
        namespace=NAMESPACE,
        kubectl=KUBECTL_BIN,
        kubeconfig=KUBECONFIG_PATH,
        accept_hosts=",".join(accept_hosts(inv, host_name)),
    )


def warning(inv: Inventory) -> str:
    spec = inv.load_balancer.insecure_api
    return (
        f"WARNING: load_balancer.insecure_api is enabled: plain HTTP without authentication on "
        f"{inv.load_balancer.vip}:{spec.port} (HAProxy) and on every control plane's private "
        f"IP:{spec.port} (kubectl proxy). Anyone on the private network acts with ClusterRole "
        f'"{spec.role}" as ServiceAccount {NAMESPACE}/{SA_NAME}. This emulates the post\'s '
        "removed insecure port; turn it off unless something needs it. Go ahead?"
    )
