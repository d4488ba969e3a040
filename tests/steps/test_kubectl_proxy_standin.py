"""The `kubectl proxy` stand-in and the API server stand-in's RBAC are strict: the proxy forwards
with the ServiceAccount's token (from the kubeconfig file, never argv), filters hosts like
kubectl, refuses unknown flags; the API server authenticates the token and lets `view` read but
never write, refuses a deleted ServiceAccount's token and a changed roleRef.

Everything over real sockets on 127.0.0.1: a TLS API server stand-in, the proxy in front of it,
and the stand-in `kubectl` as a subprocess for its command line.
"""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from lab.standins.rbk8s import client, coreapi, pki, proxy
from lab.standins.rbk8s.apiserver import ApiServer, Store

STANDINS = Path(__file__).resolve().parents[2] / "lab" / "standins"
SA, NS = "insecure-api-proxy", "kube-system"


def sa_objects(role: str, name: str = SA) -> list[dict[str, Any]]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": NS}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": NS}],
        },
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/service-account-token",
            "metadata": {
                "name": f"{name}-token",
                "namespace": NS,
                "annotations": {"kubernetes.io/service-account.name": name},
            },
        },
    ]


@dataclass
class Api:
    url: str
    port: int
    store: Store
    pki: Path
    tmp: Path

    def token(self, name: str = SA) -> str:
        import base64

        b64 = self.store.data["objects"][f"secret/{NS}/{name}-token"]["data"]["token"]
        return base64.b64decode(b64).decode()

    def kubeconfig(self, token: str, name: str = "sa.conf") -> Path:
        conf = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "c",
                    "cluster": {
                        "server": self.url,
                        "certificate-authority": str(self.pki / "ca.crt"),
                    },
                }
            ],
            "users": [{"name": "u", "user": {"token": token}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
        path = self.tmp / name
        path.write_text(yaml.safe_dump(conf))
        path.chmod(0o600)
        return path


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    p = tmp_path / "pki"
    pki.make_ca(p)
    crt, key = pki.issue(p, "/CN=kube-apiserver", sans=("127.0.0.1",), server=True)
    pki.write_pair(p, "apiserver", crt, key)
    store = Store(tmp_path / "state.json", self_name="cp1")
    srv = ApiServer(("127.0.0.1", 0), store, p, cert=p / "apiserver.crt", key=p / "apiserver.key")
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    port = srv.server_address[1]
    try:
        yield Api(f"https://127.0.0.1:{port}", port, store, p, tmp_path)
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def proxied(api: Api) -> Iterator[tuple[Api, str]]:
    """A `view` ServiceAccount and a proxy on 127.0.0.1 (accepting Host 127.0.0.1 only)."""
    api.store.apply(sa_objects("view"), NS)
    conf = client.load(api.kubeconfig(api.token()))
    opts = proxy.parse(["--address=127.0.0.1", "--port=0", r"--accept-hosts=^127[.]0[.]0[.]1$"])
    srv = proxy.ProxyServer(opts, conf)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield api, f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def http(
    method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            code, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        code, raw = exc.code, exc.read()
    try:
        return code, json.loads(raw)
    except ValueError:
        return code, raw.decode()


def test_view_reads_through_the_proxy_and_cannot_write(proxied: tuple[Api, str]) -> None:
    api, url = proxied
    code, body = http("GET", url + "/api")
    assert code == 200 and body["kind"] == "APIVersions" and body["versions"] == ["v1"]
    code, body = http("GET", url + "/api/v1/namespaces")
    assert code == 200 and body["kind"] == "NamespaceList"
    assert {i["metadata"]["name"] for i in body["items"]} >= {"default", "kube-system"}
    code, body = http("POST", url + "/api/v1/namespaces", {"metadata": {"name": "evil"}})
    assert code == 403 and body["reason"] == "Forbidden"
    assert body["message"] == (
        f'namespaces is forbidden: User "system:serviceaccount:{NS}:{SA}" cannot create '
        'resource "namespaces" in API group "" at the cluster scope'
    )
    assert "namespace//evil" not in api.store.data["objects"]
    assert http("DELETE", url + "/api/v1/namespaces/default")[0] == 403
    assert http("DELETE", url + f"/api/v1/namespaces/{NS}/secrets/{SA}-token")[0] == 403
    # view reads no Secrets and no nodes (those are not in the view ClusterRole)
    assert http("GET", url + f"/api/v1/namespaces/{NS}/secrets")[0] == 403
    assert http("GET", url + "/api/v1/nodes")[0] == 403
    code, body = http("GET", url + f"/api/v1/namespaces/{NS}/serviceaccounts")
    assert code == 200 and [i["metadata"]["name"] for i in body["items"]] == [SA]


def test_the_proxy_filters_hosts_like_kubectl(proxied: tuple[Api, str]) -> None:
    _, url = proxied
    assert http("GET", url + "/api", headers={"Host": "127.0.0.1:6080"})[0] == 200
    assert http("GET", url + "/api", headers={"Host": "127.0.0.1"})[0] == 200  # no port: as is
    code, body = http("GET", url + "/api", headers={"Host": "evil.example:6080"})
    assert (code, body) == (403, "Forbidden\n")
    assert proxy.extract_host("") == "" and proxy.extract_host("[::1]:80") == "::1"
    opts = proxy.parse([r"--accept-hosts=^127[.]0[.]0[.]1$"])
    assert not proxy.accept(opts, "GET", "/api", "")  # no Host header: refused
    assert not proxy.accept(opts, "POST", "/api/v1/namespaces/x/pods/y/exec", "127.0.0.1")


def test_other_roles_and_tokens(api: Api, proxied: tuple[Api, str]) -> None:
    _, url = proxied
    api.store.apply(sa_objects("cluster-admin", "root-sa"), NS)
    api.store.apply(sa_objects("edit", "editor"), NS)
    api.store.apply(sa_objects("no-such-role", "nobody"), NS)

    def as_(name: str, method: str, path: str, body: Any = None) -> int:
        ctx = ssl.create_default_context(cafile=str(api.pki / "ca.crt"))
        ctx.check_hostname = False
        h = {"Authorization": f"Bearer {api.token(name)}"}
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(api.url + path, method=method, headers=h, data=data)
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                return int(r.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    ns = {"metadata": {"name": "team"}}
    assert as_("nobody", "GET", "/api/v1/namespaces") == 403  # a missing ClusterRole grants nothing
    assert as_("nobody", "GET", "/api") == 200  # discovery: any authenticated user
    assert as_("editor", "POST", "/api/v1/namespaces", ns) == 403  # edit: namespaced writes only
    cm = {"metadata": {"name": "cfg"}, "data": {"a": "b"}}
    assert as_("editor", "POST", "/api/v1/namespaces/default/configmaps", cm) == 201
    assert as_("root-sa", "POST", "/api/v1/namespaces", ns) == 201
    assert as_("root-sa", "POST", "/api/v1/namespaces", ns) == 409
    assert as_("root-sa", "DELETE", "/api/v1/namespaces/kube-system") == 403
    assert as_("root-sa", "DELETE", "/api/v1/namespaces/team") == 200
    # a wrong token is 401 (not treated as anonymous), as is a deleted ServiceAccount's token
    with client.session(client.load(api.kubeconfig("wrong-token", "wrong.conf"))) as s:
        req = urllib.request.Request(api.url + "/api", headers=s.headers)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10, context=s.ctx)
    assert err.value.code == 401
    api.store.delete([f"serviceaccount/{NS}/{SA}"])  # the SA is gone: its token no longer works
    code, body = http("GET", url + "/api/v1/namespaces")
    assert code == 401 and body["reason"] == "Unauthorized"


def test_anonymous_gets_health_but_not_the_api(api: Api) -> None:
    data = api.store.data
    user = coreapi.authenticate(data, bearer=None, client_cn="")
    assert user is coreapi.ANONYMOUS
    assert not coreapi.allowed(data, user, coreapi.parse("GET", "/api"))
    assert coreapi.authenticate(data, bearer="not-a-token", client_cn="kubernetes-admin") is None
    req = coreapi.parse("DELETE", "/api/v1/namespaces/kube-system/secrets/x")
    assert (req.verb, req.resource, req.namespace, req.name) == ("delete", "secrets", NS, "x")
    assert coreapi.parse("GET", "/api/v1/namespaces").verb == "list"


def test_role_ref_is_immutable(api: Api) -> None:
    from lab.standins.rbk8s.apiserver import Invalid

    api.store.apply(sa_objects("view"), NS)
    with pytest.raises(Invalid, match="cannot change roleRef"):
        api.store.apply(sa_objects("edit"), NS)
    assert api.store.data["objects"][f"clusterrolebinding//{SA}"]["roleRef"]["name"] == "view"
    api.store.delete([f"clusterrolebinding//{SA}"])
    api.store.apply(sa_objects("edit"), NS)  # delete + create is how a role changes


# ----- the command line ---------------------------------------------------------------------
def kubectl(*args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(STANDINS)}
    return subprocess.run(
        [sys.executable, "-m", "rbk8s", "kubectl", *args],
        capture_output=True, text=True, env=env, timeout=timeout,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--insecure-port=6080"], "error: unknown flag: --insecure-port"),
        (["--address", "10.0.0.1", "--bogus"], "error: unknown flag: --bogus"),
        (["-x"], "unknown shorthand flag: 'x'"),
        (["now"], 'unknown command "now" for "kubectl proxy"'),
        (["--port=http"], 'invalid argument "http" for "-p, --port" flag'),
        (["--port"], "flag needs an argument: --port"),
        (["--accept-hosts=^(unclosed$"], "error parsing regexp"),
        (["--www=/srv"], "--www is not emulated"),
        (["--disable-filter=maybe"], 'invalid argument "maybe"'),
    ],
)
def test_kubectl_proxy_refuses_what_kubectl_refuses(
    api: Api, args: list[str], message: str
) -> None:
    conf = api.kubeconfig("unused")
    r = kubectl("proxy", f"--kubeconfig={conf}", *args)
    assert r.returncode == 1 and message in r.stderr, r.stderr


def test_kubectl_proxy_serves_from_the_command_line(api: Api) -> None:
    api.store.apply(sa_objects("view"), NS)
    conf = api.kubeconfig(api.token())
    env = {**os.environ, "PYTHONPATH": str(STANDINS)}
    argv = [sys.executable, "-m", "rbk8s", "kubectl", "proxy", "--address=127.0.0.1",
            "-p", "0", r"--accept-hosts=^127[.]0[.]0[.]1$", "--kubeconfig", str(conf)]  # fmt: skip
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        assert line.startswith("Starting to serve on 127.0.0.1:"), line
        port = int(line.rsplit(":", 1)[1])
        code, body = http("GET", f"http://127.0.0.1:{port}/api/v1/namespaces")
        assert code == 200 and body["kind"] == "NamespaceList"
        assert http("POST", f"http://127.0.0.1:{port}/api/v1/namespaces", {})[0] == 403
    finally:
        p.terminate()
        p.wait(10)
    assert api.token() not in " ".join(argv)


def test_kubectl_proxy_cannot_bind_a_foreign_address(api: Api) -> None:
    r = kubectl(
        "proxy", "--address=192.0.2.1", "--port=6080", f"--kubeconfig={api.kubeconfig('x')}"
    )
    assert r.returncode == 1 and "listen tcp 192.0.2.1:6080: bind:" in r.stderr, r.stderr


def test_kubectl_delete_and_jsonpath(api: Api, tmp_path: Path) -> None:
    acrt, akey = pki.issue(api.pki, "/O=kubeadm:cluster-admins/CN=kubernetes-admin")
    admin = tmp_path / "admin.conf"
    admin.write_text(
        pki.kubeconfig(f"127.0.0.1:{api.port}", (api.pki / "ca.crt").read_bytes(), acrt, akey,
                       "kubernetes-admin")
    )  # fmt: skip
    api.store.apply(sa_objects("view"), NS)
    kc = f"--kubeconfig={admin}"
    r = kubectl(kc, "get", "clusterrolebinding", SA, "-o", "jsonpath={.roleRef.name}")
    assert (r.returncode, r.stdout) == (0, "view"), r.stderr
    refs = [f"serviceaccount/{SA}", f"clusterrolebinding/{SA}", f"secret/{SA}-token"]
    r = kubectl(kc, "-n", NS, "delete", *refs, "--ignore-not-found")
    assert r.returncode == 0, r.stderr
    assert f'clusterrolebinding "{SA}" deleted' in r.stdout
    assert not [k for k in api.store.data["objects"] if SA in k]
    r = kubectl(kc, "-n", NS, "delete", *refs, "--ignore-not-found")
    assert (r.returncode, r.stdout) == (0, "")
    r = kubectl(kc, "-n", NS, "delete", *refs)
    assert r.returncode == 1 and "NotFound" in r.stderr
    r = kubectl(kc, "get", "clusterrolebinding", SA, "-o", "jsonpath={.roleRef.name}")
    assert r.returncode == 1 and "NotFound" in r.stderr
