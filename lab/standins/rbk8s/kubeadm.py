"""LAB STAND-IN — `kubeadm` for exactly what the runbook calls: version, init, join, token
create/delete, init phase upload-certs, reset. Preflight checks as kubeadm's (initialised host,
swap, ip_forward, container runtime); configs read strictly (kconfig); join verifies the CA pin,
the token and the certificate key against the cluster THROUGH the controlPlaneEndpoint.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from . import VERSION, client, coredns, etcd, kconfig, pki
from .apiserver import ETCD_DATA, empty_state

K = Path("/etc/kubernetes")
PKI = K / "pki"
MANIFESTS = K / "manifests"
CRI_SOCKET = Path("/run/containerd/containerd.sock")
REMOVED_FLAGS = ("insecure-port", "insecure-bind-address", "log-dir", "log-file")


class Fail(Exception):
    pass


def minor() -> int:
    return int(VERSION.split(".")[1])


def preflight(*, join: bool) -> None:
    errors = []
    for f in (K / "admin.conf", K / "kubelet.conf") if not join else (K / "kubelet.conf",):
        if f.exists():
            errors.append(f"[ERROR FileAvailable-{str(f).replace('/', '-')}]: {f} already exists")
    if join and (PKI / "ca.crt").exists():
        errors.append(
            f"[ERROR FileAvailable--etc-kubernetes-pki-ca.crt]: {PKI}/ca.crt already exists"
        )
    if MANIFESTS.exists() and any(MANIFESTS.iterdir()):
        errors.append(f"[ERROR DirAvailable--etc-kubernetes-manifests]: {MANIFESTS} is not empty")
    swaps = Path("/proc/swaps").read_text().strip().splitlines()[1:]
    if swaps:
        errors.append("[ERROR Swap]: running with swap on is not supported. Please disable swap")
    if Path("/proc/sys/net/ipv4/ip_forward").read_text().strip() != "1":
        errors.append(
            "[ERROR FileContent--proc-sys-net-ipv4-ip_forward]: "
            "/proc/sys/net/ipv4/ip_forward contents are not set to 1"
        )
    if not CRI_SOCKET.is_socket():
        errors.append(f"[ERROR CRI]: container runtime is not running: {CRI_SOCKET} missing")
    if errors:
        raise Fail("[preflight] Some fatal errors occurred:\n\t" + "\n\t".join(errors))


def _apiserver_manifest(ip: str, cluster: dict[str, Any]) -> str:
    flags = {
        "advertise-address": ip,
        "secure-port": "6443",
        "service-cluster-ip-range": cluster["networking"]["serviceSubnet"],
        "tls-cert-file": str(PKI / "apiserver.crt"),
        "tls-private-key-file": str(PKI / "apiserver.key"),
        "client-ca-file": str(PKI / "ca.crt"),
        **kconfig.args((cluster.get("apiServer") or {}).get("extraArgs")),
    }
    cmd = ["kube-apiserver", *(f"--{k}={v}" for k, v in flags.items())]
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "kube-apiserver", "namespace": "kube-system"},
            "spec": {
                "hostNetwork": True,
                "containers": [
                    {
                        "name": "kube-apiserver",
                        "image": "registry.k8s.io/kube-apiserver:"
                        + str(cluster.get("kubernetesVersion") or f"v{VERSION}"),
                        "command": cmd,
                    }
                ],
            },
        }
    )


def _etcd_manifest(name: str, ip: str, cluster: dict[str, Any]) -> str:
    local = (cluster.get("etcd") or {}).get("local") or {}
    etcd_pki = PKI / "etcd"
    flags = {
        "name": name,
        "data-dir": str(local.get("dataDir") or ETCD_DATA),
        "advertise-client-urls": f"https://{ip}:2379",
        "listen-client-urls": f"https://127.0.0.1:2379,https://{ip}:2379",
        "initial-advertise-peer-urls": f"https://{ip}:2380",
        "client-cert-auth": "true",
        "trusted-ca-file": str(etcd_pki / "ca.crt"),
        "cert-file": str(etcd_pki / "server.crt"),
        "key-file": str(etcd_pki / "server.key"),
        **kconfig.args(local.get("extraArgs")),
    }
    return yaml.safe_dump(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "etcd"},
            "spec": {
                "containers": [
                    {"name": "etcd", "command": ["etcd", *(f"--{k}={v}" for k, v in flags.items())]}
                ]
            },
        }
    )


PATCH_TARGETS = ("kube-apiserver", "etcd")


def _pointer(doc: Any, path: str) -> tuple[Any, str]:
    """The container and last token of a JSON pointer (RFC 6901)."""
    if not path.startswith("/"):
        raise Fail(f"error applying patches: invalid JSON pointer {path!r}")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    for part in parts[:-1]:
        try:
            doc = doc[int(part)] if isinstance(doc, list) else doc[part]
        except (KeyError, IndexError, ValueError) as exc:
            raise Fail(f"error applying patches: path {path!r} not found") from exc
    return doc, parts[-1]


def _json_patch(doc: Any, ops: Any, source: Path) -> None:
    """RFC 6902 add/replace/remove (what kubeadm's `+json` patches are used for here)."""
    if not isinstance(ops, list):
        raise Fail(f"error applying patches from {source}: a JSON patch is a list of operations")
    for op in ops:
        if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove"):
            raise Fail(f"error applying patches from {source}: unsupported operation {op!r}")
        parent, last = _pointer(doc, str(op.get("path", "")))
        if isinstance(parent, list):
            if op["op"] == "add" and last == "-":
                parent.append(op["value"])
                continue
            try:
                i = int(last)
                if op["op"] == "add":
                    parent.insert(i, op["value"])
                elif op["op"] == "replace":
                    parent[i] = op["value"]
                else:
                    del parent[i]
            except (ValueError, IndexError) as exc:
                raise Fail(f"error applying patches from {source}: bad index {last!r}") from exc
        elif op["op"] == "add":
            parent[last] = op["value"]
        elif last not in parent:
            raise Fail(f"error applying patches from {source}: {last!r} not found")
        elif op["op"] == "replace":
            parent[last] = op["value"]
        else:
            del parent[last]


def _apply_patches(directory: str | None) -> None:
    """kubeadm `patches.directory`: files `target[suffix][+patchtype].(yaml|json)` patch the
    static-pod manifests; this stand-in knows the json patch type (strict about the rest)."""
    if not directory:
        return
    folder = Path(directory)
    if not folder.is_dir():
        raise Fail(f"could not list patch files for path {directory!r}: no such directory")
    for f in sorted(folder.iterdir()):
        stem, _, ext = f.name.rpartition(".")
        if ext not in ("yaml", "json"):
            continue
        target, _, ptype = stem.partition("+")
        target = next((t for t in PATCH_TARGETS if target.startswith(t)), "")
        if not target:
            raise Fail(f"stand-in kubeadm: patch file {f} targets nothing this stand-in writes")
        if ptype != "json":
            raise Fail(f"stand-in kubeadm: patch type {ptype or 'strategic'!r} not supported")
        manifest = MANIFESTS / f"{target}.yaml"
        pod = yaml.safe_load(manifest.read_text())
        _json_patch(pod, yaml.safe_load(f.read_text()), f)
        manifest.write_text(yaml.safe_dump(pod))
        print(f'[patches] Applied patch of type "application/json-patch+json" to target "{target}"')


def _control_plane_files(name: str, ip: str, cluster: dict[str, Any], endpoint: str) -> None:
    net = cluster["networking"]
    import ipaddress

    svc_ip = str(next(ipaddress.ip_network(net["serviceSubnet"]).hosts()))
    domain = net.get("dnsDomain", "cluster.local")
    sans = (
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        f"kubernetes.default.svc.{domain}",
        name,
        svc_ip,
        ip,
        endpoint.rsplit(":", 1)[0],
        *(cluster.get("apiServer") or {}).get("certSANs", []),
    )
    crt, key = pki.issue(PKI, "/CN=kube-apiserver", sans=tuple(dict.fromkeys(sans)), server=True)
    pki.write_pair(PKI, "apiserver", crt, key)
    ca = (PKI / "ca.crt").read_bytes()
    acrt, akey = pki.issue(PKI, "/O=kubeadm:cluster-admins/CN=kubernetes-admin")
    pki.write_kubeconfig(
        K / "admin.conf", pki.kubeconfig(endpoint, ca, acrt, akey, "kubernetes-admin")
    )
    _etcd_certs(name, ip)
    MANIFESTS.mkdir(parents=True, exist_ok=True)
    (MANIFESTS / "kube-apiserver.yaml").write_text(_apiserver_manifest(ip, cluster))
    (MANIFESTS / "etcd.yaml").write_text(_etcd_manifest(name, ip, cluster))


def _etcd_certs(name: str, ip: str) -> None:
    """pki/etcd: CA, server and healthcheck-client certificates. Stand-in simplification: the
    etcd CA is a copy of the cluster CA (the certificate key carries only that one)."""
    etcd_pki = PKI / "etcd"
    etcd_pki.mkdir(parents=True, exist_ok=True)
    for f, mode in (("ca.crt", 0o644), ("ca.key", 0o600)):
        (etcd_pki / f).write_bytes((PKI / f).read_bytes())
        (etcd_pki / f).chmod(mode)
    crt, key = pki.issue(PKI, f"/CN={name}", sans=("localhost", name, "127.0.0.1", ip), server=True)
    pki.write_pair(etcd_pki, "server", crt, key)
    crt, key = pki.issue(PKI, "/O=system:masters/CN=kube-etcd-healthcheck-client")
    pki.write_pair(etcd_pki, "healthcheck-client", crt, key)


def _kubelet_flags(node_reg: dict[str, Any]) -> None:
    """/var/lib/kubelet/kubeadm-flags.env, as kubeadm writes it (node-ip from kubeletExtraArgs)."""
    extra = kconfig.args(node_reg.get("kubeletExtraArgs"))
    flags = [
        f"--container-runtime-endpoint={node_reg.get('criSocket', 'unix://' + str(CRI_SOCKET))}"
    ]
    flags += [f"--{k}={v}" for k, v in extra.items()]
    env = Path("/var/lib/kubelet/kubeadm-flags.env")
    env.parent.mkdir(parents=True, exist_ok=True)
    env.write_text(f'KUBELET_KUBEADM_ARGS="{" ".join(flags)}"\n')


def _start_kubelet() -> None:
    subprocess.run(["systemctl", "enable", "kubelet"], capture_output=True)
    subprocess.run(["systemctl", "restart", "kubelet"], check=True, capture_output=True)


def _wait_ready(ip: str, seconds: float) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(PKI / "ca.crt")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"https://{ip}:6443/readyz", timeout=2, context=ctx) as r:
                if r.read() == b"ok":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise Fail(
        f"[control-plane-check] kube-apiserver is not healthy after {seconds:.0f}s "
        "(see the kubelet stand-in's log: the apiserver may be crash-looping)"
    )


def _wait_endpoint(conf: dict[str, Any], seconds: float) -> None:
    """The API through the controlPlaneEndpoint (the load balancers' health checks need a
    moment to mark this server UP)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if client.call(conf, "GET", "/readyz", timeout=3) == "ok":
                return
        except client.ApiError as exc:
            if time.monotonic() > deadline:
                raise Fail(f"the API does not answer through the endpoint: {exc}") from exc
        time.sleep(0.5)


def init(conf_path: str, upload_certs: bool) -> None:
    docs = kconfig.parse(Path(conf_path).read_text(), minor=minor())
    init_c, cluster = docs.get("InitConfiguration") or {}, docs.get("ClusterConfiguration") or {}
    version = str(cluster.get("kubernetesVersion", ""))
    if not version.startswith("v1."):
        raise Fail(
            f"could not fetch a Kubernetes version from the internet: unable to get URL "
            f'"https://dl.k8s.io/release/{version}.txt": no network in the lab'
        )
    if version.split(".")[:2] != ["v1", str(minor())]:
        raise Fail(
            f"this version of kubeadm only supports deploying clusters with the control "
            f"plane version >= 1.{minor() - 1}.0. Current version: {version}"
        )
    preflight(join=False)
    name = (init_c.get("nodeRegistration") or {}).get("name") or socket.gethostname()
    ip = str((init_c.get("localAPIEndpoint") or {}).get("advertiseAddress") or "")
    if not ip:
        raise Fail("localAPIEndpoint.advertiseAddress is required by this stand-in")
    endpoint = cluster.get("controlPlaneEndpoint") or f"{ip}:6443"
    pki.make_ca(PKI)
    _control_plane_files(name, ip, cluster, endpoint)
    _apply_patches((init_c.get("patches") or {}).get("directory"))
    ca = (PKI / "ca.crt").read_bytes()
    kcrt, kkey = pki.issue(PKI, f"/O=system:nodes/CN=system:node:{name}")
    pki.write_kubeconfig(
        K / "kubelet.conf", pki.kubeconfig(endpoint, ca, kcrt, kkey, f"system:node:{name}")
    )
    state = empty_state()
    state["cluster_id"] = secrets.token_hex(8)
    state["members"][name] = ip
    state["stamps"][f"members/{name}"] = time.time()
    etcd.write_db(ETCD_DATA, state)
    _kubelet_flags(init_c.get("nodeRegistration") or {})
    _start_kubelet()
    _wait_ready(ip, 60)
    admin = client.load(K / "admin.conf")
    _wait_endpoint(admin, 60)
    dns_domain = str((cluster.get("networking") or {}).get("dnsDomain") or "cluster.local")
    client.call(
        admin,
        "POST",
        "/rb/v1/apply",
        {
            "namespace": "kube-system",
            "objects": [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
                    "data": {"ClusterConfiguration": yaml.safe_dump(cluster)},
                },
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": "coredns", "namespace": "kube-system"},
                    "data": {"Corefile": coredns.kubeadm_default(dns_domain)},
                },
            ],
        },
    )
    print("Your Kubernetes control-plane has initialized successfully!")
    if upload_certs:
        key = client.call(admin, "POST", "/rb/v1/upload-certs", {})["key"]
        print(f"[upload-certs] Using certificate key:\n{key}")
    token = client.call(admin, "POST", "/rb/v1/tokens", {})["token"]
    print(
        f"kubeadm join {endpoint} --token {token} --discovery-token-ca-cert-hash {pki.ca_hash(ca)}"
    )


def join(conf_path: str) -> None:
    docs = kconfig.parse(Path(conf_path).read_text(), minor=minor())
    j = docs.get("JoinConfiguration")
    if not j:
        raise Fail("no JoinConfiguration found in the config file")
    preflight(join=True)
    bt = j["discovery"]["bootstrapToken"]
    endpoint = bt["apiServerEndpoint"]
    host, _, port = endpoint.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise Fail(
            "couldn't validate the identity of the API Server: Get "
            f'"https://{endpoint}/api/v1/namespaces/kube-public/configmaps/cluster-info": '
            f"dial tcp {endpoint}: {exc}"
        ) from exc
    insecure = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    with urllib.request.urlopen(
        f"https://{endpoint}/rb/v1/cluster-info", timeout=10, context=insecure
    ) as r:
        ca = json.loads(r.read())["ca"].encode()
    found = pki.ca_hash(ca)
    if found not in bt.get("caCertHashes", []):
        raise Fail(
            f"cluster CA found in cluster-info ConfigMap is invalid: none of the public "
            f'keys "{found}" are pinned'
        )
    nr = j.get("nodeRegistration") or {}
    name = nr.get("name") or socket.gethostname()
    cp = j.get("controlPlane")
    ip = (cp or {}).get("localAPIEndpoint", {}).get("advertiseAddress") or kconfig.args(
        nr.get("kubeletExtraArgs")
    ).get("node-ip", "")
    csr, key = pki.new_csr(f"/O=system:nodes/CN=system:node:{name}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=ca.decode())
    body = {
        "node": name,
        "ip": ip,
        "csr": csr.decode(),
        "certificateKey": cp.get("certificateKey") if cp else None,
    }
    req = urllib.request.Request(
        f"https://{endpoint}/rb/v1/bootstrap",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {bt['token']}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30, context=ctx) as r:
            out = json.loads(r.read())
    except urllib.error.HTTPError as exc:
        msg = json.loads(exc.read() or b"{}").get("message", str(exc))
        phase = "download-certs" if exc.code == 403 else "preflight"
        raise Fail(f"error execution phase {phase}: {msg}") from exc
    PKI.mkdir(parents=True, exist_ok=True)
    (PKI / "ca.crt").write_bytes(ca)
    kubelet_conf = pki.kubeconfig(endpoint, ca, out["crt"].encode(), key, f"system:node:{name}")
    if cp:
        (PKI / "ca.key").write_text(out["controlPlane"]["ca_key"])
        (PKI / "ca.key").chmod(0o600)
        cluster = {"networking": {"serviceSubnet": "10.96.0.0/12"}, "apiServer": {}}
        cm = out["state"]["objects"].get("configmap/kube-system/kubeadm-config")
        if cm:
            cluster = yaml.safe_load(cm["data"]["ClusterConfiguration"])
        _control_plane_files(name, ip, cluster, endpoint)
        _apply_patches((j.get("patches") or {}).get("directory"))
        etcd.write_db(ETCD_DATA, out["state"])
    pki.write_kubeconfig(K / "kubelet.conf", kubelet_conf)
    _kubelet_flags(nr)
    _start_kubelet()
    if cp:
        _wait_ready(ip, 60)
    print("This node has joined the cluster")


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except (Fail, kconfig.ConfigError, client.ApiError) as exc:
        sys.stderr.write(
            f"{exc}\nTo see the stack trace of this error execute with --v=5 or higher\n"
        )
        return 1


def _main(argv: list[str]) -> int:
    if argv[:1] == ["version"]:
        print(
            f"v{VERSION}"
            if argv[1:] == ["-o", "short"]
            else f'kubeadm version: &version.Info{{GitVersion:"v{VERSION}" (rblab stand-in)}}'
        )
        return 0
    if argv[:3] == ["init", "phase", "upload-certs"]:
        if argv[3:] != ["--upload-certs"]:
            raise Fail("stand-in: use `kubeadm init phase upload-certs --upload-certs`")
        key = client.call(client.load(K / "admin.conf"), "POST", "/rb/v1/upload-certs", {})["key"]
        print(
            '[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the '
            f'"kube-system" Namespace\n[upload-certs] Using certificate key:\n{key}'
        )
        return 0
    if argv[:1] == ["certs"]:
        from . import certs

        return certs.main(argv[1:])
    if argv[:1] == ["upgrade"]:
        from . import upgrade

        return upgrade.main(argv[1:])
    if argv[:2] == ["token", "create"]:
        p = argparse.ArgumentParser(prog="kubeadm token create")
        p.add_argument("--print-join-command", action="store_true")
        p.add_argument("--ttl", default="24h0m0s")
        a = p.parse_args(argv[2:])
        ttl = _duration(a.ttl)
        admin = client.load(K / "admin.conf")
        token = client.call(admin, "POST", "/rb/v1/tokens", {"ttl": ttl})["token"]
        if a.print_join_command:
            endpoint = admin["clusters"][0]["cluster"]["server"].removeprefix("https://")
            ca = base64.b64decode(admin["clusters"][0]["cluster"]["certificate-authority-data"])
            print(
                f"kubeadm join {endpoint} --token {token} --discovery-token-ca-cert-hash "
                f"{pki.ca_hash(ca)} "
            )
        else:
            print(token)
        return 0
    if argv[:2] == ["token", "delete"] and len(argv) == 3:
        client.call(client.load(K / "admin.conf"), "DELETE", f"/rb/v1/tokens/{argv[2]}")
        print(f'bootstrap token "{argv[2]}" deleted')
        return 0
    if argv[:1] == ["reset"] and argv[1:] in (["-f"], ["--force"]):
        subprocess.run(["systemctl", "stop", "kubelet"], capture_output=True)
        for f in (K / "admin.conf", K / "kubelet.conf", K / "super-admin.conf"):
            f.unlink(missing_ok=True)
        for d in (PKI, MANIFESTS, ETCD_DATA):
            shutil.rmtree(d, ignore_errors=True)
        print("[reset] done (stand-in)")
        return 0
    if argv[:1] in (["init"], ["join"]):
        p = argparse.ArgumentParser(prog=f"kubeadm {argv[0]}")
        p.add_argument("--config", required=True)
        if argv[0] == "init":
            p.add_argument("--upload-certs", action="store_true")
        a = p.parse_args(argv[1:])
        if argv[0] == "init":
            init(a.config, a.upload_certs)
        else:
            join(a.config)
        return 0
    raise Fail(f"stand-in kubeadm: unsupported command: {' '.join(argv)}")


def _duration(text: str) -> float:
    import re

    total = 0.0
    for num, unit in re.findall(r"(\d+)([hms])", text):
        total += int(num) * {"h": 3600, "m": 60, "s": 1}[unit]
    if total <= 0:
        raise Fail(f"invalid --ttl {text}")
    return total
