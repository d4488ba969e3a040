"""A scripted cluster for the Kubernetes steps' unit tests: hosts answer the exact probes and
commands the steps send, from a small in-memory model of kubeadm/kubectl behaviour.

Strict on purpose: a command it does not know fails the test (so a new command is a conscious
change), kubeadm refuses init on an initialised host and joins with unknown/used tokens or cert
keys, and every command and its stdin is recorded so tests can prove secrets stay out of argv.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import shlex
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lab.standins.rbk8s.coredns import kubeadm_default as kubeadm_corefile
from runbook.core.remote import Fact, Host, Result
from runbook.render import k8sfiles

ADMIN = k8sfiles.ADMIN_CONF


def _client_pair() -> tuple[bytes, bytes]:
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
             "-subj", "/O=kubeadm:cluster-admins/CN=kubernetes-admin",
             "-keyout", f"{d}/k", "-out", f"{d}/c"],
            check=True, capture_output=True,
        )  # fmt: skip
        return Path(d, "c").read_bytes(), Path(d, "k").read_bytes()


@dataclass
class FakeCluster:
    """What the API server and etcd would know."""

    initialised: bool = False
    nodes: dict[str, bool] = field(default_factory=dict)  # name -> Ready
    tokens: set[str] = field(default_factory=set)
    cert_keys: set[str] = field(default_factory=set)
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # kind/name -> object
    ca_hash: str = "sha256:" + "0f" * 32
    joins: list[tuple[str, str]] = field(default_factory=list)  # (node, role)
    client: tuple[bytes, bytes] = field(default_factory=_client_pair)

    def ready_all_if_cni(self) -> None:
        if any(k.startswith("daemonset/") for k in self.objects):
            for n in self.nodes:
                self.nodes[n] = True


class FakeK8sHost(Host):
    """One control plane or worker. `files`: path -> (bytes, mode)."""

    def __init__(self, name: str, ip: str, cluster: FakeCluster, *, dry_run: bool = False):
        super().__init__(name, dry_run=dry_run)
        self.ip, self.cluster = ip, cluster
        self.files: dict[str, tuple[bytes, int]] = {}
        self.sent: list[tuple[str, str | None, bool]] = []  # (cmd, stdin, mutating)
        self.kubeadm_version = "v1.36.1"

    # -- the Host interface ----------------------------------------------------------------
    def _call(self, cmd, *, mutating, timeout, ok_codes, stdin):  # type: ignore[no-untyped-def]
        self.sent.append((cmd, stdin, mutating))
        return super()._call(
            cmd, mutating=mutating, timeout=timeout, ok_codes=ok_codes, stdin=stdin
        )

    def gather(self, probes):  # type: ignore[no-untyped-def]
        return [None if p is None else self._fact(p) for p in probes]

    def write_file(self, path, content, *, mode=0o644, owner="root", group="root", backup=True):  # type: ignore[no-untyped-def]
        if isinstance(content, Path):  # a local file streamed by the real host
            content = content.read_bytes()
        self.run(f"WRITE {path}", stdin=base64.b64encode(content).decode())
        self.files[path] = (content, mode)

    def read_file(self, path: str) -> bytes | None:
        self.query(f"READ {path}", ok_codes=None)
        f = self.files.get(path)
        return f[0] if f else None

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        if cmd.startswith(("WRITE ", "READ ")):
            return Result("", "", 0)
        return self._command(cmd)

    # -- probes ----------------------------------------------------------------------------
    def _fact(self, probe: str) -> Fact:
        m = re.match(r"test -f (\S+) \|\| exit 3; stat", probe)
        if m:
            f = self.files.get(m[1])
            if f is None:
                return Fact("", 3)
            return Fact(f"{f[1]:o} root root\n{base64.b64encode(f[0]).decode()}", 0)
        m = re.match(r"(.*) >/dev/null 2>&1; echo \$\?$", probe)
        if m:
            return Fact(str(self._guard(m[1])), 0)
        if probe == f"test -f {k8sfiles.KUBELET_CONF} && echo present":
            ok = k8sfiles.KUBELET_CONF in self.files
            return Fact("present" if ok else "", 0 if ok else 1)
        if probe.startswith("kubectl "):
            r = self._command(probe)
            return Fact(r.stdout, r.exited)
        raise AssertionError(f"unknown probe on {self.name}: {probe}")

    def _guard(self, guard: str) -> int:
        m = re.fullmatch(r"test -f (\S+)", guard)
        if m:
            return 0 if m[1] in self.files else 1
        m = re.fullmatch(r"cmp -s (\S+) (\S+)", guard)
        if m:
            a, b = self.files.get(m[1]), self.files.get(m[2])
            return 0 if a and b and a[0] == b[0] else 1
        raise AssertionError(f"unknown guard: {guard}")

    # -- commands --------------------------------------------------------------------------
    def _command(self, cmd: str) -> Result:
        c = self.cluster
        if cmd == "kubeadm version -o short":
            return Result(self.kubeadm_version + "\n", "", 0)
        m = re.fullmatch(r"kubeadm init --config (\S+) --upload-certs", cmd)
        if m:
            if ADMIN in self.files:
                return Result("", "error: /etc/kubernetes/admin.conf already exists\n", 1)
            conf = list(yaml.safe_load_all(self.files[m[1]][0]))
            assert conf[0]["apiVersion"] == "kubeadm.k8s.io/v1beta4"
            ip = conf[0]["localAPIEndpoint"]["advertiseAddress"]
            crt, key = c.client
            admin = {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "k", "cluster": {"server": "https://10.143.0.50:6443"}}],
                "users": [{"name": "kubernetes-admin", "user": {
                    "client-certificate-data": base64.b64encode(crt).decode(),
                    "client-key-data": base64.b64encode(key).decode()}}],
            }  # fmt: skip
            self.files[ADMIN] = (yaml.safe_dump(admin).encode(), 0o600)
            self._manifest(ip)
            self.files[k8sfiles.KUBELET_CONF] = (b"kubelet", 0o600)
            c.initialised, c.nodes[self.name] = True, False
            domain = yaml.safe_load_all(self.files[m[1]][0])
            dns = next(d for d in domain if d["kind"] == "ClusterConfiguration")
            c.objects["configmap/coredns"] = {
                "kind": "ConfigMap",
                "metadata": {"name": "coredns"},
                "data": {"Corefile": kubeadm_corefile(dns["networking"]["dnsDomain"])},
            }
            return Result("Your Kubernetes control-plane has initialized successfully!\n", "", 0)
        if (
            cmd
            == "install -d -m 0700 /root/.kube && install -m 0600 " + ADMIN + " /root/.kube/config"
        ):
            self.files["/root/.kube/config"] = (self.files[ADMIN][0], 0o600)
            return Result("", "", 0)
        if cmd == "kubeadm token create --print-join-command":
            assert ADMIN in self.files
            tok = f"{secrets.token_hex(3)}.{secrets.token_hex(8)}"
            c.tokens.add(tok)
            line = (
                f"kubeadm join 10.143.0.50:6443 --token {tok} "
                f"--discovery-token-ca-cert-hash {c.ca_hash} \n"
            )
            return Result(line, "", 0)
        if cmd == "kubeadm init phase upload-certs --upload-certs":
            key = secrets.token_hex(32)
            c.cert_keys.add(key)
            return Result(f"[upload-certs] Using certificate key:\n{key}\n", "", 0)
        m = re.fullmatch(r"kubeadm token delete (\S+)", cmd)
        if m:
            c.tokens = {t for t in c.tokens if not t.startswith(m[1] + ".")}
            return Result("", "", 0)
        m = re.fullmatch(r"kubeadm join --config (\S+); rc=\$\?; rm -f (\S+); exit \$rc", cmd)
        if m:
            return self._join(m[1])
        m = re.fullmatch(
            r"if \[ -f (\S+) \]; then umask 077; mkdir -p \S+ && cp -p \S+ (\S+); fi", cmd
        )
        if m:  # resources.File's backup of the version it replaces
            if m[1] in self.files:
                self.files[m[2]] = self.files[m[1]]
            return Result("", "", 0)
        m = re.fullmatch(r"rm -f (\S+)", cmd)
        if m:
            self.files.pop(m[1], None)
            return Result("", "", 0)
        m = re.fullmatch(r"test -f (\S+)", cmd)
        if m:
            return Result("", "", self._guard(cmd))
        if cmd.startswith("kubectl "):
            return self._kubectl(shlex.split(cmd)[1:])
        m = re.fullmatch(r"grep -q -- --advertise-address=(\S+) (\S+)", cmd)
        if m:
            f = self.files.get(m[2])
            return Result("", "", 0 if f and f"--advertise-address={m[1]}".encode() in f[0] else 1)
        raise AssertionError(f"unknown command on {self.name}: {cmd}")

    def _manifest(self, ip: str) -> None:
        text = (
            "spec:\n  containers:\n  - command:\n    - kube-apiserver\n"
            f"    - --advertise-address={ip}\n"
        )
        self.files[k8sfiles.APISERVER_MANIFEST] = (text.encode(), 0o600)

    def _join(self, path: str) -> Result:
        c = self.cluster
        content, mode = self.files.pop(path)
        assert mode == 0o600, f"join config written with mode {mode:o}"
        doc = yaml.safe_load(content)
        if doc["apiVersion"] != "kubeadm.k8s.io/v1beta4":
            return Result("", "no kind JoinConfiguration for v1beta3\n", 1)
        bt = doc["discovery"]["bootstrapToken"]
        if bt["token"] not in c.tokens:
            return Result("", "error: token not found / expired\n", 1)
        if bt["caCertHashes"] != [c.ca_hash]:
            return Result("", "error: CA hash mismatch\n", 1)
        cp = doc.get("controlPlane")
        if cp:
            if cp["certificateKey"] not in c.cert_keys:
                return Result("", "error: certificate key not found / expired\n", 1)
            self._manifest(cp["localAPIEndpoint"]["advertiseAddress"])
        self.files[k8sfiles.KUBELET_CONF] = (b"kubelet", 0o600)
        c.nodes[self.name] = False
        c.ready_all_if_cni()
        c.joins.append((self.name, "control-plane" if cp else "worker"))
        return Result("This node has joined the cluster\n", "", 0)

    def _kubectl(self, args: list[str]) -> Result:
        c = self.cluster
        assert args[:2] == ["--kubeconfig", ADMIN], args
        if ADMIN not in self.files:
            return Result("", "error: stat /etc/kubernetes/admin.conf: no such file\n", 1)
        args = args[2:]
        if args[:1] == ["-n"]:
            args = args[2:]  # one flat namespace in this model
        if args == ["get", "--raw=/readyz"]:
            return Result("ok", "", 0)
        if args == ["get", "nodes", "-o", "json"]:
            items = [
                {"metadata": {"name": n}, "status": {
                    "conditions": [{"type": "Ready", "status": str(r)}],
                    "nodeInfo": {"kubeletVersion": "v1.36.1"}}}
                for n, r in c.nodes.items()
            ]  # fmt: skip
            return Result(json.dumps({"items": items}), "", 0)
        if args[:2] == ["apply", "-f"]:
            for d in yaml.safe_load_all(self.files[args[2]][0]):
                for o in d.get("items", [d]) if d else []:
                    key = f"{o['kind'].lower()}/{o['metadata']['name']}"
                    if o.get("type") == "kubernetes.io/service-account-token":
                        o = {**o, "data": {"token": base64.b64encode(b"eyJSECRET-TOKEN").decode()}}
                    c.objects[key] = o
            c.ready_all_if_cni()
            return Result("applied\n", "", 0)
        if args[0] == "get" and args[-2:] == ["-o", "name"]:
            found = [a for a in args[1:-2] if a.lower() in c.objects]
            return Result(
                "".join(f"{a}\n" for a in found), "", 0 if len(found) == len(args) - 3 else 1
            )
        if args == ["get", "configmap", "coredns", "-o", "jsonpath={.data.Corefile}"]:
            cm = c.objects.get("configmap/coredns")
            if cm is None:
                return Result("", 'Error from server (NotFound): configmaps "coredns"\n', 1)
            return Result(cm["data"]["Corefile"], "", 0)
        if args[:2] == ["get", "secret"] and args[3:] == ["-o", "jsonpath={.data.token}"]:
            o = c.objects.get(f"secret/{args[2]}")
            if o is None:
                return Result("", "NotFound\n", 1)
            return Result(o["data"]["token"], "", 0)
        raise AssertionError(f"unknown kubectl call: {args}")
