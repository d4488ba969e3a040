"""The Kubernetes tier's files, rendered from the inventory (pure functions, no host access).

The steps (prepare for k8s hosts, init, join, cni, admin-user) install what these functions
return; tests render and parse them without any host. Secrets (bootstrap token, certificate key)
are parameters: they are issued by the cluster at join time and never stored in ``hosts.yaml``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import yaml

from runbook.inventory import API_PORT, HostSpec, Inventory
from runbook.render.containerd import CONTAINERD_2_FROM_MINOR, DOCKER_KEYRING, DOCKER_URL
from runbook.render.templates import render, source

KUBEADM_CONFIG_PATH = "/etc/kubernetes/runbook/kubeadm-config.yaml"
JOIN_CONFIG_PATH = "/run/runbook-kubeadm-join.yaml"  # tmpfs: gone at reboot, deleted after join
CONTAINERD_CONFIG_PATH = "/etc/containerd/config.toml"
MODULES_PATH = "/etc/modules-load.d/runbook-k8s.conf"
SYSCTL_FILE = "/etc/sysctl.d/60-runbook-k8s.conf"
ADMIN_USER_PATH = "/etc/kubernetes/runbook/admin-user.yaml"
CNI_MANIFEST_PATH = "/etc/kubernetes/runbook/cni.yaml"
COREDNS_MANIFEST_PATH = "/etc/kubernetes/runbook/coredns.yaml"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"
APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
PATCHES_DIR = "/etc/kubernetes/runbook/patches"  # kubeadm `patches.directory` (control planes)
APISERVER_PATCH = f"{PATCHES_DIR}/kube-apiserver+json.yaml"
CRI_SOCKET = "unix:///run/containerd/containerd.sock"
KEYRING = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg"
K8S_PACKAGES = ("kubelet", "kubeadm", "kubectl")
K8S_MODULES = ("overlay", "br_netfilter")
# present when loaded OR built into the kernel (/sys/module/NAME is missing for some built-ins)
MODULE_PRESENT = {
    "overlay": "grep -qw overlay /proc/filesystems",
    "br_netfilter": "test -e /proc/sys/net/bridge/bridge-nf-call-iptables",
}
K8S_SYSCTLS = (
    ("net.ipv4.ip_forward", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
)
ADMIN_NAMESPACE = "kube-system"
# The pause image each kubeadm minor pulls (`kubeadm config images list`); pinned in containerd
# so the sandbox image containerd uses is the one kubeadm expects (no preflight warning, no
# second image). Source: kubeadm's `PauseVersion` constant in
# cmd/kubeadm/app/constants/constants.go of each release branch (release-1.31 … release-1.36).
PAUSE_VERSIONS = {31: "3.10", 32: "3.10", 33: "3.10", 34: "3.10.1", 35: "3.10.1", 36: "3.10.2"}
PREREQUISITES = ("ca-certificates", "curl", "gpg")  # the keyring fetch: curl … | gpg --dearmor

CNI_DEFAULT_URLS = {
    # Weave Net is archived: 2.8.1 (2021) is its last release; cloud.weave.works is gone.
    "weave": "https://github.com/weaveworks/weave/releases/download/v2.8.1/weave-daemonset-k8s.yaml",
    # Calico v3.33.0 and Flannel v0.28.9: the newest releases (2026) the runbook was checked with
    "calico": "https://raw.githubusercontent.com/projectcalico/calico/v3.33.0/manifests/calico.yaml",
    "flannel": "https://github.com/flannel-io/flannel/releases/download/v0.28.9/kube-flannel.yml",
}
# (namespace, DaemonSet) whose pods make the nodes Ready, per CNI
CNI_DAEMONSETS = {
    "weave": ("kube-system", "weave-net"),
    "calico": ("kube-system", "calico-node"),
    "flannel": ("kube-flannel", "kube-flannel-ds"),
}

TOKEN_RE = re.compile(r"^[a-z0-9]{6}\.[a-z0-9]{16}$")
CA_HASH_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
CERT_KEY_RE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class AptSource:
    """The apt source of the Kubernetes packages (``keyring``/``key_url`` None: trusted mirror)."""

    name: str
    line: str
    keyring: str | None
    key_url: str | None


@dataclass(frozen=True)
class JoinCredentials:
    """What `kubeadm token create --print-join-command` prints (the token is a secret)."""

    endpoint: str
    token: str
    ca_cert_hash: str


def _common(inv: Inventory) -> dict[str, Any]:
    return {"inventory_file": inv.path.name, "cluster": inv.cluster.name}


def _k8s_host(inv: Inventory, name: str, *roles: str) -> HostSpec:
    host = inv.hosts.get(name)
    allowed = roles or ("control-plane", "worker")
    if host is None or host.role not in allowed:
        raise ValueError(f"{name!r} is not a {' or '.join(allowed)} host of the inventory")
    return host


# ----- prepare ------------------------------------------------------------------------------
def containerd_major(inv: Inventory) -> int:
    return 2 if inv.kubernetes.minor >= CONTAINERD_2_FROM_MINOR else 1


def pause_image(minor: int) -> str:
    """registry.k8s.io/pause:<the version kubeadm 1.<minor> expects> (newest known beyond)."""
    known = max(PAUSE_VERSIONS)
    return f"registry.k8s.io/pause:{PAUSE_VERSIONS[min(minor, known)]}"


def apt_source(inv: Inventory) -> AptSource:
    """pkgs.k8s.io for the configured minor (keyring + signed-by), or the inventory's mirror."""
    k8s = inv.kubernetes
    repo = k8s.package_repo
    if repo is None:
        base = f"https://pkgs.k8s.io/core:/stable:/v{k8s.version}/deb/"
        return AptSource(
            "kubernetes", f"deb [signed-by={KEYRING}] {base} /", KEYRING, f"{base}Release.key"
        )
    url = repo.url if repo.url.endswith("/") else repo.url + "/"
    if repo.trusted:
        return AptSource("kubernetes", f"deb [trusted=yes] {url} /", None, None)
    return AptSource("kubernetes", f"deb [signed-by={KEYRING}] {url} /", KEYRING, repo.key_url)


def docker_apt_source(inv: Inventory) -> AptSource:
    """Docker's repository for containerd.io, in the host's suite (`{id}`/`{codename}` are
    filled from its os-release by `AptRepo`), or the inventory's mirror of it."""
    repo = inv.kubernetes.containerd_repo
    if repo is None:
        url = DOCKER_URL
        return AptSource(
            "docker", f"deb [signed-by={DOCKER_KEYRING}] {url} {{codename}} stable",
            DOCKER_KEYRING, f"{url}/gpg",
        )  # fmt: skip
    url = repo.url.rstrip("/")
    if repo.trusted:
        return AptSource("docker", f"deb [trusted=yes] {url} {{codename}} stable", None, None)
    return AptSource(
        "docker", f"deb [signed-by={DOCKER_KEYRING}] {url} {{codename}} stable",
        DOCKER_KEYRING, repo.key_url,
    )  # fmt: skip


def containerd_config(inv: Inventory) -> str:
    """``/etc/containerd/config.toml``: SystemdCgroup = true, the pause image pinned."""
    return render(
        "k8s/containerd-config.toml.j2",
        **_common(inv),
        containerd_major=containerd_major(inv),
        k8s_version=inv.kubernetes.version,
        pause_image=pause_image(inv.kubernetes.minor),
    )


def modules_load() -> str:
    return source("k8s/modules-load.conf")


# ----- init / join --------------------------------------------------------------------------
def cert_sans(inv: Inventory) -> list[str]:
    """Floating IP, API DNS name, the inventory's extra SANs and the VIP; each once."""
    k8s, lb = inv.kubernetes, inv.load_balancer
    names = [str(lb.floating_ip.address)]
    if k8s.api_dns_name:
        names.append(k8s.api_dns_name)
    names += list(k8s.cert_sans)
    names.append(str(lb.vip))
    return list(dict.fromkeys(names))


def kubeadm_init_config(inv: Inventory, host_name: str, *, kubernetes_version: str = "") -> str:
    """kubeadm v1beta4 Init- and ClusterConfiguration for the first control plane.

    ``kubernetes_version`` is what the installed kubeadm reports (``v1.36.2``); without it the
    label ``stable-1.NN`` is written (what ``inv render`` shows without asking a host).
    """
    host = _k8s_host(inv, host_name, "control-plane")
    k8s = inv.kubernetes
    version = kubernetes_version or f"stable-{k8s.version}"
    if kubernetes_version and not re.match(rf"^v1\.{k8s.minor}\.\d+$", kubernetes_version):
        raise ValueError(
            f"installed kubeadm is {kubernetes_version}, the inventory wants {k8s.version}"
        )
    return render(
        "k8s/kubeadm-init.yaml.j2",
        **_common(inv),
        node_name=host.name,
        advertise_address=str(host.private_ip),
        api_port=API_PORT,
        cri_socket=CRI_SOCKET,
        kubernetes_version=version,
        control_plane_endpoint=inv.control_plane_endpoint,
        pod_subnet=str(k8s.pod_subnet),
        service_subnet=str(k8s.service_subnet),
        dns_domain=k8s.dns_domain,
        cert_sans=cert_sans(inv),
        etcd_heartbeat_interval_ms=k8s.etcd.heartbeat_interval_ms,
        etcd_election_timeout_ms=k8s.etcd.election_timeout_ms,
        patches_dir=PATCHES_DIR,
    )


def apiserver_patch(inv: Inventory, host_name: str) -> str:
    """The JSON patch that binds this control plane's kube-apiserver to its private IP."""
    host = _k8s_host(inv, host_name, "control-plane")
    return render(
        "k8s/kube-apiserver-patch.yaml.j2", node_name=host.name, bind_address=str(host.private_ip)
    )


def kubeadm_join_config(
    inv: Inventory,
    host_name: str,
    *,
    token: str,
    ca_cert_hash: str,
    certificate_key: str | None = None,
) -> str:
    """JoinConfiguration (v1beta4) through the VIP; control planes advertise their own IP.

    The values are checked against kubeadm's formats so a garbled credential fails here, with
    a message that never shows it, instead of in the middle of a join.
    """
    host = _k8s_host(inv, host_name)
    if not TOKEN_RE.match(token):
        raise ValueError("bootstrap token has not the form [a-z0-9]{6}.[a-z0-9]{16}")
    if not CA_HASH_RE.match(ca_cert_hash):
        raise ValueError(f"CA cert hash {ca_cert_hash!r} is not sha256:<64 hex>")
    if host.role == "control-plane":
        if not certificate_key or not CERT_KEY_RE.match(certificate_key):
            raise ValueError("a control plane join needs a certificate key of 64 hex digits")
    elif certificate_key:
        raise ValueError(f"{host_name} is a worker: it takes no certificate key")
    return render(
        "k8s/kubeadm-join.yaml.j2",
        node_name=host.name,
        role=host.role,
        control_plane_endpoint=inv.control_plane_endpoint,
        token=token,
        ca_cert_hash=ca_cert_hash,
        cri_socket=CRI_SOCKET,
        advertise_address=str(host.private_ip),
        api_port=API_PORT,
        certificate_key=certificate_key or "",
        patches_dir=PATCHES_DIR,
    )


_JOIN_CMD = re.compile(
    r"kubeadm join (?P<endpoint>\S+)\s+--token (?P<token>\S+)\s+"
    r"--discovery-token-ca-cert-hash (?P<hash>\S+)"
)


def parse_join_command(text: str) -> JoinCredentials:
    """Token and CA hash from `kubeadm token create --print-join-command` (error never shows it)."""
    m = _JOIN_CMD.search(text)
    if not m or not TOKEN_RE.match(m["token"]) or not CA_HASH_RE.match(m["hash"]):
        raise ValueError("unexpected output of kubeadm token create --print-join-command")
    return JoinCredentials(m["endpoint"], m["token"], m["hash"])


def parse_certificate_key(text: str) -> str:
    """The key from `kubeadm init phase upload-certs --upload-certs` (its last line)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines or not CERT_KEY_RE.match(lines[-1]):
        raise ValueError("unexpected output of kubeadm init phase upload-certs --upload-certs")
    return lines[-1]


# ----- admin user ---------------------------------------------------------------------------
def token_secret_name(inv: Inventory) -> str:
    return f"{inv.kubernetes.admin_user}-token"


def admin_user_manifest(inv: Inventory) -> str:
    """ServiceAccount + ClusterRoleBinding (cluster-admin) + explicit token Secret."""
    return render(
        "k8s/admin-user.yaml.j2",
        sa_name=inv.kubernetes.admin_user,
        namespace=ADMIN_NAMESPACE,
        secret_name=token_secret_name(inv),
    )


# ----- CNI ----------------------------------------------------------------------------------
def cni_manifest_url(inv: Inventory) -> str:
    return inv.kubernetes.cni_manifest_url or CNI_DEFAULT_URLS[inv.kubernetes.cni]


def _documents(text: str) -> list[Any]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def _objects(docs: list[Any]) -> list[dict[str, Any]]:
    """Every object, looking into `kind: List` (Weave's manifest is one List)."""
    out: list[dict[str, Any]] = []
    for d in docs:
        if not isinstance(d, dict):
            continue
        if d.get("kind") == "List":
            out += [i for i in d.get("items") or [] if isinstance(i, dict)]
        else:
            out.append(d)
    return out


def _find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for o in objs:
        if o.get("kind") == kind and (o.get("metadata") or {}).get("name") == name:
            return o
    raise ValueError(f"CNI manifest has no {kind} {name}: not the manifest the runbook knows")


def _set_env(ds: dict[str, Any], container: str, values: dict[str, str]) -> None:
    containers = ds["spec"]["template"]["spec"]["containers"]
    c = next((c for c in containers if c.get("name") == container), None)
    if c is None:
        raise ValueError(f"CNI manifest: DaemonSet has no container {container}")
    env = c.setdefault("env", [])
    for name, value in values.items():
        entry = next((e for e in env if e.get("name") == name), None)
        if entry is None:
            env.append({"name": name, "value": value})
        else:
            entry.clear()
            entry.update({"name": name, "value": value})


def _set_flannel_iface(ds: dict[str, Any], can_reach: str) -> None:
    """flanneld's `--iface-can-reach`: without it flannel takes the default route's interface,
    the PUBLIC one on Hetzner; by what it reaches, not by name (ens10 or enp7s0 per server
    type). Any `--iface*` flag already there is replaced."""
    containers = ds["spec"]["template"]["spec"]["containers"]
    c = next((c for c in containers if c.get("name") == "kube-flannel"), None)
    if c is None:
        raise ValueError("CNI manifest: DaemonSet has no container kube-flannel")
    args = [a for a in c.get("args") or [] if not str(a).startswith("--iface")]
    c["args"] = [*args, f"--iface-can-reach={can_reach}"]


def patch_cni_manifest(inv: Inventory, text: str) -> str:
    """The upstream manifest with the pod subnet and the private network set (never the CNI's
    own default range, never the public interface).

    Weave: IPALLOC_RANGE (its default 10.32.0.0/12 is the post's collision); it peers over the
    nodes' InternalIPs, which kubeadm sets to the private IPs (`node-ip`). Calico:
    CALICO_IPV4POOL_CIDR and IP_AUTODETECTION_METHOD=cidr=<hcloud subnet> (so it picks the
    private interface). Flannel: net-conf.json's Network and `--iface-can-reach=<VIP>`.
    """
    k8s = inv.kubernetes
    docs = _documents(text)
    objs = _objects(docs)
    pods = str(k8s.pod_subnet)
    if k8s.cni == "weave":
        _set_env(_find(objs, "DaemonSet", "weave-net"), "weave", {"IPALLOC_RANGE": pods})
    elif k8s.cni == "calico":
        _set_env(
            _find(objs, "DaemonSet", "calico-node"),
            "calico-node",
            {
                "CALICO_IPV4POOL_CIDR": pods,
                "IP_AUTODETECTION_METHOD": f"cidr={inv.hcloud.network.subnet}",
            },
        )
    else:
        cm = _find(objs, "ConfigMap", "kube-flannel-cfg")
        conf = json.loads(cm["data"]["net-conf.json"])
        conf["Network"] = pods
        cm["data"]["net-conf.json"] = json.dumps(conf, indent=2) + "\n"
        _set_flannel_iface(_find(objs, "DaemonSet", "kube-flannel-ds"), str(inv.load_balancer.vip))
    header = f"# {k8s.cni} manifest from {cni_manifest_url(inv)}, pod subnet {pods} (runbook)\n"
    return header + yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)


# ----- CoreDNS: the API name inside the cluster ---------------------------------------------
COREFILE_MARK = "# runbook: kubernetes.api_dns_name on the VIP, as in the hosts' /etc/hosts"


def corefile_with_api_host(corefile: str, name: str, vip: str) -> str:
    """kubeadm's Corefile with a `hosts` entry NAME → VIP in the `.:53` block (before
    `kubernetes`; CoreDNS runs `hosts` first anyway), `fallthrough` for every other name.

    Why: CoreDNS is authoritative for `dns_domain`, so with the post's `api.k8s.skgm.de` inside
    `k8s.skgm.de` a pod gets NXDOMAIN; outside it a pod would get the public floating IP. Pods
    now resolve it as the hosts do. A `hosts` block that is not the runbook's is refused (CoreDNS
    allows one per server block): merge the entry by hand. Idempotent: an earlier entry of the
    runbook is replaced.
    """
    lines = corefile.splitlines()
    out: list[str] = []
    i, depth, in_root, placed = 0, 0, False, False
    while i < len(lines):
        ln = lines[i]
        words = ln.split("#", 1)[0].split()
        if depth == 0 and words[:1] == [".:53"]:
            in_root = True
        if in_root and depth == 1 and ln.strip() == COREFILE_MARK:
            i += 1  # drop our earlier block: the mark, `hosts {`, its lines, `}`
            while i < len(lines) and lines[i].strip() != "}":
                i += 1
            i += 1
            continue
        if in_root and depth == 1 and words[:1] == ["hosts"]:
            raise ValueError(
                "the CoreDNS Corefile already has a hosts block that is not the runbook's: add "
                f"`{vip} {name}` to it by hand (CoreDNS allows one hosts block per server block)"
            )
        if in_root and depth == 1 and words[:1] == ["kubernetes"] and not placed:
            pad = ln[: len(ln) - len(ln.lstrip())]
            out += [
                f"{pad}{COREFILE_MARK}",
                f"{pad}hosts {{",
                f"{pad}   {vip} {name}",
                f"{pad}   fallthrough",
                f"{pad}}}",
            ]
            placed = True
        depth += ln.count("{") - ln.count("}")
        if depth == 0:
            in_root = False
        out.append(ln)
        i += 1
    if not placed:
        raise ValueError("the CoreDNS Corefile has no .:53 block with a kubernetes plugin")
    return "\n".join(out) + "\n"


def coredns_configmap(corefile: str) -> str:
    """ConfigMap kube-system/coredns with this Corefile (its only key, as kubeadm makes it)."""
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "coredns", "namespace": "kube-system"},
        "data": {"Corefile": corefile},
    }
    return yaml.dump(cm, Dumper=_BlockDumper, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks (a Corefile stays readable in the file and the diff)."""


_BlockDumper.add_representer(
    str,
    lambda d, s: d.represent_scalar("tag:yaml.org,2002:str", s, style="|" if "\n" in s else None),
)
