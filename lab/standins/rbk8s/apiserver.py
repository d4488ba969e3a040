"""LAB STAND-IN — a tiny API server: /readyz over real TLS on :6443, bootstrap tokens with TTL,
certificate keys that expire after 2 h, node registration and a small object store.

It is NOT Kubernetes: no scheduling, no pods, no controllers beyond two honest emulations — the
token controller (fills `kubernetes.io/service-account-token` Secrets) and node readiness (a node
is Ready while its kubelet stand-in reports and a CNI DaemonSet exists). `/api…` requests are
authenticated (admin client certificate or a ServiceAccount's bearer token) and authorized with
RBAC for the built-in ClusterRoles (`coreapi`); a ClusterRoleBinding's roleRef is immutable.
The state (the role etcd plays) is a JSON file, pushed synchronously to every other control
plane on each write, so any API server behind the load balancers answers the same and one can
fail.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import ssl
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from . import VERSION, coreapi, nodeops, pki
from .tlsserver import TlsThreadingServer

ETCD_DATA = Path("/var/lib/etcd")  # kubeadm's etcd data dir: the state is "etcd's database"
STATE = ETCD_DATA / "member" / "snap" / "db"
TOKEN_TTL = 24 * 3600
CERT_KEY_TTL = 2 * 3600
NODE_GRACE = 40.0
CNI_DAEMONSETS = (
    "daemonset/kube-system/weave-net",
    "daemonset/kube-system/calico-node",
    "daemonset/kube-flannel/kube-flannel-ds",
)
CLUSTER_SCOPED = {"clusterrolebinding", "clusterrole", "namespace", "node"}
ADMIN_GROUPS = coreapi.ADMIN_CNS


def empty_state() -> dict[str, Any]:
    return {
        "version": 0,
        "tokens": {},
        "certkey": None,
        "members": {},
        "nodes": {},
        "cordons": {},
        "objects": {},
        "stamps": {},
    }


def object_key(obj: dict[str, Any], namespace: str = "default") -> str:
    kind = str(obj.get("kind", "")).lower()
    meta = obj.get("metadata") or {}
    ns = "" if kind in CLUSTER_SCOPED else meta.get("namespace") or namespace
    return f"{kind}/{ns}/{meta.get('name', '')}"


def _minor(version: str) -> int:
    parts = version.removeprefix("v").split(".")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


class Invalid(Exception):
    """A write the real API server refuses with 422 Invalid."""


class Store:
    """The state file with a lock; `now` is injectable so tests can expire things."""

    def __init__(self, path: Path, *, self_name: str = "", now: Any = time.time) -> None:
        self.path, self.self_name, self.now = path, self_name, now
        self.lock = threading.RLock()
        self.data = {**empty_state(), **(json.loads(path.read_text()) if path.exists() else {})}
        self.peer_ctx: ssl.SSLContext | None = None
        self.dirty = False  # written since start: every later write pushes the whole state

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.data, fh)
        os.replace(tmp, self.path)

    def touch(self, entry: str) -> None:
        """Stamp an entry (`tokens/ID`, `objects/KEY`, `certkey`…) as written now."""
        last = max(self.data.setdefault("stamps", {}).values(), default=0.0)
        self.data["stamps"][entry] = max(time.time(), last + 1e-6)

    def merge(self, other: dict[str, Any]) -> bool:
        """Take every entry the other side wrote later (deleted entries included)."""
        changed = False
        with self.lock:
            stamps = self.data.setdefault("stamps", {})
            for entry, ts in (other.get("stamps") or {}).items():
                if ts <= stamps.get(entry, -1.0):
                    continue
                stamps[entry] = ts
                section, _, key = entry.partition("/")
                if section == "certkey":
                    self.data["certkey"] = other.get("certkey")
                elif key in other.get(section, {}):
                    self.data.setdefault(section, {})[key] = other[section][key]
                else:
                    self.data.setdefault(section, {}).pop(key, None)
                changed = True
            if changed:
                self.save()
        return changed

    def commit(self) -> None:
        """Persist a write (under the lock); the request handler pushes it to the other control
        planes before it answers (`replicate`), so a client that wrote here reads its write on
        every member (as with etcd), without holding the lock during the pushes."""
        self.data["version"] += 1
        self.save()
        self.dirty = True

    def replicate(self) -> None:
        """Push the current state to the other members (best effort, synchronous, outside the
        lock: concurrent writers push in parallel); members merge entry by entry, so pushes
        arriving out of order lose nothing."""
        if self.dirty:
            self.exchange()

    def catch_up(self) -> None:
        """Before a (re)started member answers anything: take what the others wrote while it
        was down, as a restarted etcd member catches up with the leader before it serves a
        read. Without it, the member served what it had before its restart until the next
        write anywhere (an upgrade restarts every API server in turn)."""
        self.exchange()

    def exchange(self) -> None:
        """Send this member's state to every other member and merge what each answers with:
        both sides end with the entries either wrote last. A member that is down misses it;
        it catches up when it starts."""
        with self.lock:
            if self.peer_ctx is None:
                return
            body = json.dumps(self.data).encode()
            peers = [ip for n, ip in self.data["members"].items() if n != self.self_name]
        for ip in peers:
            where = ip if ":" in ip else f"{ip}:6443"  # host:port only in unit tests
            req = urllib.request.Request(
                f"https://{where}/rb/v1/replicate", data=body, method="POST"
            )
            with contextlib.suppress(OSError, ValueError):
                got = json.loads(
                    urllib.request.urlopen(req, timeout=2, context=self.peer_ctx).read()
                )
                if isinstance(got.get("state"), dict):
                    self.merge(got["state"])

    # -- tokens and certificate keys ------------------------------------------------------
    def create_token(self, ttl: float = TOKEN_TTL) -> str:
        with self.lock:
            tid, sec = secrets.token_hex(3), secrets.token_hex(8)
            self.data["tokens"][tid] = {"secret": sec, "expires": self.now() + ttl}
            self.touch(f"tokens/{tid}")
            self.commit()
            return f"{tid}.{sec}"

    def delete_token(self, tid: str) -> bool:
        with self.lock:
            found = self.data["tokens"].pop(tid, None) is not None
            self.touch(f"tokens/{tid}")
            self.commit()
            return found

    def valid_token(self, token: str) -> bool:
        tid, _, sec = token.partition(".")
        t = self.data["tokens"].get(tid)
        return bool(t) and secrets.compare_digest(t["secret"], sec) and t["expires"] > self.now()

    def upload_certs(self, ca_crt: bytes, ca_key: bytes) -> str:
        with self.lock:
            key = secrets.token_hex(32)
            self.data["certkey"] = {
                "key": key,
                "expires": self.now() + CERT_KEY_TTL,
                "ca_crt": ca_crt.decode(),
                "ca_key": ca_key.decode(),
            }
            self.touch("certkey")
            self.commit()
            return key

    def certs_for(self, key: str) -> dict[str, str] | None:
        ck = self.data.get("certkey")
        if not ck or not secrets.compare_digest(ck["key"], key) or ck["expires"] <= self.now():
            return None
        return {"ca_crt": ck["ca_crt"], "ca_key": ck["ca_key"]}

    # -- nodes and objects ----------------------------------------------------------------
    def heartbeat(self, name: str, version: str, ip: str) -> None:
        """The kubelet's status report. Only the kubelet writes this entry; a cordon is a
        separate entry (`cordons/NAME`), so a report that reaches a member before a cordon
        written elsewhere has been pushed to it cannot undo the cordon on merge."""
        with self.lock:
            old = self.data["nodes"].get(name) or {}
            self.data["nodes"][name] = {
                "heartbeat": self.now(),
                "version": version,
                "ip": ip,
                "created": old.get("created") or self.now(),
            }
            self.touch(f"nodes/{name}")
            self.commit()

    def node_list(self) -> dict[str, Any]:
        cni = any(k in self.data["objects"] for k in CNI_DAEMONSETS)
        items = []
        for name, n in sorted(self.data["nodes"].items()):
            alive = self.now() - n["heartbeat"] < NODE_GRACE
            ready = alive and cni
            reason = (
                "KubeletReady"
                if ready
                else ("NetworkPluginNotReady" if alive else "NodeStatusUnknown")
            )
            items.append(
                {
                    "kind": "Node",
                    "apiVersion": "v1",
                    "metadata": {
                        "name": name,
                        # kubeadm labels the nodes it made control planes (the etcd members)
                        "labels": {
                            "kubernetes.io/hostname": name,
                            **(
                                {"node-role.kubernetes.io/control-plane": ""}
                                if name in self.data["members"]
                                else {}
                            ),
                        },
                        "creationTimestamp": time.strftime(
                            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(n.get("created") or n["heartbeat"])
                        ),
                    },
                    "spec": nodeops.node_fields(
                        cordoned=name in self.data["cordons"],
                        control_plane=name in self.data["members"],
                    ),
                    "status": {
                        "conditions": [
                            {
                                "type": "Ready",
                                "status": "True" if ready else "False",
                                "reason": reason,
                            }
                        ],
                        "nodeInfo": {"kubeletVersion": n["version"]},
                        "addresses": [{"type": "InternalIP", "address": n["ip"]}],
                    },
                }
            )
        return {"kind": "NodeList", "apiVersion": "v1", "items": items}

    def put(self, key: str, obj: dict[str, Any]) -> str:
        with self.lock:
            self.data["objects"][key] = obj
            self.touch(f"objects/{key}")
            self.commit()
        return key

    def delete(self, keys: list[str]) -> list[str]:
        """Remove objects (`node//NAME`: a Node); returns the keys that existed."""
        with self.lock:
            gone = []
            for k in keys:
                section, name = ("nodes", k[6:]) if k.startswith("node//") else ("objects", k)
                if self.data[section].pop(name, None) is not None:
                    gone.append(k)
                    self.touch(f"{section}/{name}")
                    if section == "nodes" and self.data["cordons"].pop(name, None):
                        self.touch(f"cordons/{name}")
            if gone:
                self.commit()
        return gone

    def apply(self, objects: list[dict[str, Any]], namespace: str) -> list[str]:
        out = []
        with self.lock:
            for obj in objects:
                old = self.data["objects"].get(object_key(obj, namespace))
                changed = old and old.get("roleRef") != obj.get("roleRef")
                if obj.get("kind") == "ClusterRoleBinding" and changed:
                    name = obj["metadata"]["name"]
                    raise Invalid(
                        f'ClusterRoleBinding.rbac.authorization.k8s.io "{name}" is invalid: '
                        f"roleRef: Invalid value: {json.dumps(obj.get('roleRef'))}: "
                        "cannot change roleRef"
                    )
            for obj in objects:
                key = object_key(obj, namespace)
                obj = json.loads(json.dumps(obj))
                if obj.get("kind") == "Secret" and obj.get("type") == (
                    "kubernetes.io/service-account-token"
                ):
                    old = self.data["objects"].get(key, {}).get("data", {}).get("token")
                    token = old or base64.b64encode(secrets.token_urlsafe(48).encode()).decode()
                    obj["data"] = {**(obj.get("data") or {}), "token": token}
                verb = "configured" if key in self.data["objects"] else "created"
                if self.data["objects"].get(key) == obj:
                    verb = "unchanged"
                self.data["objects"][key] = obj
                self.touch(f"objects/{key}")
                out.append(f"{obj['kind'].lower()}/{obj['metadata']['name']} {verb}")
            self.commit()
        return out


class Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def log_message(self, fmt: str, *args: Any) -> None:  # quiet; errors go to stderr
        pass

    def _send(self, code: int, body: Any) -> None:
        if self.command != "GET" and not self.path.startswith("/rb/v1/replicate"):
            self.server.store.replicate()  # before answering: the write is on every member
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header(
            "Content-Type", "text/plain" if isinstance(body, str) else "application/json"
        )
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n) or b"{}")

    def _client_cn(self) -> str:
        cert = self.connection.getpeercert()
        for rdn in (cert or {}).get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    return str(v)
        return ""

    def _admin(self) -> bool:
        if self._client_cn() in ADMIN_GROUPS:
            return True
        self._send(403, {"message": "forbidden: client certificate of an admin required"})
        return False

    def do_GET(self) -> None:
        store = self.server.store
        path, _, query = self.path.partition("?")
        if path in ("/readyz", "/livez", "/healthz"):
            return self._send(200, "ok")
        if path == "/rb/v1/cluster-info":
            return self._send(200, {"ca": self.server.ca_pem})
        if path == "/version":  # readable by anyone (system:public-info-viewer)
            v = self.server.version
            return self._send(200, {"major": "1", "minor": v.split(".")[1], "gitVersion": v})
        if path == "/api" or path.startswith("/api/"):
            return self._core()
        if not self._admin():
            return None
        if path == "/rb/v1/pods":
            node = query.removeprefix("node=")
            return self._send(200, {"items": nodeops.pods_on(store, node)})
        if path == "/rb/v1/objects":
            params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
            want = [k for k in params.get("keys", "").split(",") if k]
            found = {k: store.data["objects"][k] for k in want if k in store.data["objects"]}
            return self._send(200, {"items": found, "missing": [k for k in want if k not in found]})
        return self._send(404, {"message": f"not found: {path}"})

    def do_DELETE(self) -> None:
        if self.path == "/api" or self.path.startswith("/api/"):
            return self._core()
        if not self._admin():
            return None
        if self.path.startswith("/rb/v1/tokens/"):
            ok = self.server.store.delete_token(self.path.rsplit("/", 1)[1])
            return self._send(200 if ok else 404, {"deleted": ok})
        return self._send(404, {"message": "not found"})

    def do_PUT(self) -> None:
        if self.path == "/api" or self.path.startswith("/api/"):
            return self._core()
        return self._send(404, {"message": f"not found: {self.path}"})

    do_PATCH = do_PUT

    def _core(self) -> None:
        """`/api…`: authenticate (401 for a bad token), authorize (RBAC), serve (coreapi)."""
        auth = self.headers.get("Authorization")
        bearer = auth.removeprefix("Bearer ").strip() if auth else None
        store = self.server.store
        user = coreapi.authenticate(store.data, bearer=bearer, client_cn=self._client_cn())
        if user is None:
            return self._send(401, coreapi.status(401, "Unauthorized", "Unauthorized"))
        body = self._body() if self.command in ("POST", "PUT", "PATCH") else None
        code, out, _ = coreapi.serve(
            store,
            user,
            self.command,
            self.path,
            body,
            server_address=f"{self.connection.getsockname()[0]}:{self.server.server_address[1]}",
        )
        return self._send(code, out)

    def do_POST(self) -> None:
        store, path = self.server.store, self.path
        if path == "/api" or path.startswith("/api/"):
            return self._core()
        if path == "/rb/v1/bootstrap":
            return self._bootstrap()
        if path == "/rb/v1/replicate":
            if not self._client_cn():
                return self._send(403, {"message": "peer certificate required"})
            other = self._body()
            if other.get("cluster_id") != store.data.get("cluster_id"):
                # a member of another (e.g. restored) cluster is no peer, as etcd refuses it
                return self._send(412, {"message": "request cluster ID mismatch"})
            store.merge(other)
            with store.lock:  # the sender merges what it did not have (see `exchange`)
                state = json.loads(json.dumps(store.data))
            return self._send(200, {"version": state["version"], "state": state})
        m = path.removeprefix("/rb/v1/nodes/")
        if m != path and m.endswith("/status"):
            name = m.removesuffix("/status")
            if self._client_cn() != f"system:node:{name}":
                return self._send(403, {"message": f"node {name}: wrong client certificate"})
            b = self._body()
            kubelet = str(b.get("version", ""))
            if _minor(kubelet) > _minor(self.server.version):
                # the version skew policy: a kubelet must never be newer than the API server
                return self._send(
                    400,
                    {
                        "message": f"kubelet {kubelet} is newer than the API server "
                        f"{self.server.version}: unsupported version skew"
                    },
                )
            store.heartbeat(name, kubelet, b.get("ip", ""))
            return self._send(200, {"ok": True})
        if not self._admin():
            return None
        if m != path and m.endswith("/schedulable"):
            flag = bool(self._body().get("unschedulable"))
            if not nodeops.set_unschedulable(store, m.removesuffix("/schedulable"), flag):
                return self._send(404, {"message": "node not found"})
            return self._send(200, {"ok": True})
        if path == "/rb/v1/tokens":
            return self._send(
                201, {"token": store.create_token(self._body().get("ttl", TOKEN_TTL))}
            )
        if path == "/rb/v1/upload-certs":
            key = store.upload_certs(self.server.ca_pem.encode(), self.server.ca_key)
            return self._send(201, {"key": key})
        if path == "/rb/v1/apply":
            b = self._body()
            try:
                result = store.apply(b["objects"], b.get("namespace", "default"))
            except Invalid as exc:
                return self._send(422, {"message": str(exc), "reason": "Invalid"})
            return self._send(200, {"result": result})
        if path == "/rb/v1/delete":
            keys = [str(k) for k in self._body().get("keys") or []]
            gone = store.delete(keys)
            return self._send(200, {"deleted": gone, "missing": [k for k in keys if k not in gone]})
        return self._send(404, {"message": f"not found: {path}"})

    def _bootstrap(self) -> None:
        """kubeadm join: token → kubelet client certificate; + certificate key → the CA."""
        store = self.server.store
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        tid = token.partition(".")[0]
        if not store.valid_token(token):
            return self._send(
                401, {"message": f'token id "{tid}" is invalid for this cluster or it has expired'}
            )
        b = self._body()
        out: dict[str, Any] = {}
        if b.get("certificateKey") is not None:
            certs = store.certs_for(str(b["certificateKey"]))
            if certs is None:
                return self._send(
                    403,
                    {
                        "message": 'Secret "kubeadm-certs" was not found in the '
                        '"kube-system" Namespace. This Secret might have expired'
                    },
                )
            out["controlPlane"] = certs
            with store.lock:
                store.data["members"][b["node"]] = b["ip"]
                store.touch(f"members/{b['node']}")
                store.commit()
        out["crt"] = pki.sign_csr(self.server.pki, b["csr"].encode()).decode()
        out["state"] = store.data
        return self._send(200, out)


class ApiServer(TlsThreadingServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self, addr: tuple[str, int], store: Store, pki_dir: Path, *, cert: Path, key: Path
    ) -> None:
        super().__init__(addr, Handler)
        self.store, self.pki = store, pki_dir
        self.version = f"v{VERSION}"  # the image tag of the manifest, set by the kubelet's child
        self.ca_pem = (pki_dir / "ca.crt").read_text()
        self.ca_key = (pki_dir / "ca.key").read_bytes()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(pki_dir / "ca.crt")
        ctx.verify_mode = ssl.CERT_OPTIONAL
        self.tls = ctx
        peer = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        peer.load_verify_locations(pki_dir / "ca.crt")
        peer.check_hostname = False
        peer.load_cert_chain(cert, key)
        store.peer_ctx = peer
