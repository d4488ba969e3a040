"""LAB STAND-IN — etcd for day-2 work: the client endpoint on :2379, `etcdctl` and `etcdutl`.

The lab has no etcd: the API server stand-in keeps the cluster's state in a JSON file, which sits
where etcd keeps its database (`/var/lib/etcd/member/snap/db`, the data dir of kubeadm's etcd
manifest). The API server process also serves etcd's client port (TLS, client certificate
required, signed by `/etc/kubernetes/pki/etcd/ca.crt`) for what the runbook asks etcd:
a snapshot, the member list, removing a member.

Strict as etcd's tools: `etcdctl snapshot save` needs exactly one endpoint and the client
certificates (no certificate: the TLS handshake fails); `snapshot status|restore` are etcdctl's in
3.4 (Debian 12's etcd-client 3.4.23, which ships no etcdutl: the lab package's client), also in 3.5
with a deprecation warning, and only etcdutl's in 3.6 (etcdctl 3.6 answers "unknown command");
`etcdctl(argv, version=…)` models each; a snapshot carries a sha256 trailer that `restore` checks;
a restore refuses a data dir that exists, a `--name` missing from `--initial-cluster` and peer URLs
that disagree with it, and gives the restored members a new cluster ID (a member that was not
restored is refused as a peer: "request cluster ID mismatch"). `member remove` refuses what etcd's
strict reconfiguration check refuses: a removal after which the started members are no quorum of
the remaining ones.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import ssl
import sys
import threading
import urllib.error
import urllib.request
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from .tlsserver import TlsThreadingServer

ETCD_VERSION = "3.6.4"  # the server (kubeadm's etcd image) and etcdutl
CLIENT_VERSION = "3.4.23"  # Debian 12's etcd-client: etcdctl only
MAGIC = b"RBETCD-SNAPSHOT-1\n"
DB = Path("member") / "snap" / "db"
CLIENT_PORT, PEER_PORT = 2379, 2380


class Fail(Exception):
    pass


# ----- snapshot files ----------------------------------------------------------------------------
def snapshot_blob(state: dict[str, Any]) -> bytes:
    """A snapshot: magic, the state, and (as etcdctl appends) the sha256 of what precedes it."""
    body = MAGIC + json.dumps(state, sort_keys=True).encode()
    return body + hashlib.sha256(body).digest()


def read_snapshot(path: Path, *, skip_hash_check: bool = False) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise Fail(f"open {path}: {exc.strerror}") from exc
    if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + 32:
        raise Fail(f"snapshot file {path} is not an etcd snapshot (invalid database)")
    body, trailer = raw[:-32], raw[-32:]
    if not skip_hash_check and hashlib.sha256(body).digest() != trailer:
        raise Fail("expected sha256 hash of the snapshot does not match: file corrupted")
    try:
        return dict(json.loads(body[len(MAGIC) :]))
    except ValueError as exc:
        raise Fail(f"snapshot file {path}: invalid database: {exc}") from exc


def member_id(name: str, cluster_id: str) -> str:
    return hashlib.sha256(f"{cluster_id}/{name}".encode()).hexdigest()[:16]


def members(state: dict[str, Any]) -> list[dict[str, Any]]:
    cid = str(state.get("cluster_id", "0"))
    return [
        {
            "ID": member_id(name, cid),
            "name": name,
            "peerURLs": [f"https://{ip}:{PEER_PORT}"],
            "clientURLs": [f"https://{ip}:{CLIENT_PORT}"],
        }
        for name, ip in sorted((state.get("members") or {}).items())
    ]


# ----- the endpoint (run inside the API server stand-in) ----------------------------------------
def started(ip: str, ctx: ssl.SSLContext) -> bool:
    """Is the member at `ip` up (its API server stand-in, which carries its etcd, answers)?"""
    try:
        with urllib.request.urlopen(f"https://{ip}:6443/livez", timeout=1, context=ctx) as r:
            return r.status == 200
    except (OSError, ssl.SSLError):
        return False


class _Handler(BaseHTTPRequestHandler):
    server: EtcdEndpoint

    def log_message(self, fmt: str, *args: Any) -> None:
        pass

    def _send(self, code: int, body: bytes | dict[str, Any]) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        store = self.server.store
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        with store.lock:
            state = json.loads(json.dumps(store.data))
        if self.path == "/v3/maintenance/snapshot":
            return self._send(200, snapshot_blob(state))
        if self.path == "/v3/cluster/member/list":
            return self._send(
                200, {"cluster_id": state.get("cluster_id"), "members": members(state)}
            )
        if self.path == "/v3/cluster/member/remove":
            return self._remove(state, str(body.get("ID", "")))
        if self.path == "/health":
            return self._send(200, {"health": "true"})
        return self._send(404, {"error": f"not found: {self.path}"})

    def _remove(self, state: dict[str, Any], mid: str) -> None:
        store = self.server.store
        found = {m["ID"]: m["name"] for m in members(state)}
        if mid not in found:
            return self._send(404, {"error": "etcdserver: member not found"})
        rest = {n: ip for n, ip in state["members"].items() if n != found[mid]}
        up = [n for n, ip in rest.items() if n == store.self_name or started(ip, self.server.peer)]
        if len(up) < len(rest) // 2 + 1:
            return self._send(
                412,
                {"error": "etcdserver: re-configuration failed due to not enough started members"},
            )
        with store.lock:
            store.data["members"].pop(found[mid], None)
            store.touch(f"members/{found[mid]}")
            store.commit()
        store.replicate()
        return self._send(200, {"members": members(store.data)})


class EtcdEndpoint(TlsThreadingServer):
    """etcd's client port for the stand-in's state: TLS with a required client certificate."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        store: Any,
        pki: Path,
        peer: ssl.SSLContext,
        *,
        address: str = "0.0.0.0",
        port: int = CLIENT_PORT,
    ) -> None:
        super().__init__((address, port), _Handler)
        self.store, self.peer = store, peer
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki / "etcd" / "server.crt", pki / "etcd" / "server.key")
        ctx.load_verify_locations(pki / "etcd" / "ca.crt")
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.tls = ctx

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, daemon=True).start()


# ----- etcdctl -----------------------------------------------------------------------------------
def _ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="etcdctl", exit_on_error=False, add_help=False)
    p.add_argument("--endpoints", default="127.0.0.1:2379")
    p.add_argument("--cacert", default="")
    p.add_argument("--cert", default="")
    p.add_argument("--key", default="")
    p.add_argument("-w", "--write-out", default="simple", choices=("simple", "table", "json"))
    p.add_argument("--command-timeout", default="5s")
    p.add_argument("--dial-timeout", default="2s")
    p.add_argument("words", nargs="+")
    return p


def _post(args: argparse.Namespace, endpoint: str, path: str, body: Any = None) -> bytes:
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    if url.startswith("http://"):
        # etcd of kubeadm serves TLS only: plain HTTP gets no answer it understands
        raise Fail(
            f'{{"level":"warn","msg":"retrying of unary invoker failed","target":"{endpoint}",'
            '"error":"rpc error: code = DeadlineExceeded desc = context deadline exceeded"}\n'
            "Error: context deadline exceeded"
        )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # etcd's server cert carries the IPs; the CA pin is what matters
    try:
        if args.cacert:
            ctx.load_verify_locations(args.cacert)
        else:
            ctx.load_default_certs()
        if args.cert or args.key:
            if not (args.cert and args.key):
                raise Fail("Error: KeyFile and CertFile must both be present[key: , cert: ]")
            ctx.load_cert_chain(args.cert, args.key)
    except (OSError, ssl.SSLError) as exc:
        raise Fail(f"Error: open {args.cacert or args.cert or args.key}: {exc}") from exc
    req = urllib.request.Request(
        url.rstrip("/") + path, data=json.dumps(body or {}).encode(), method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
            return bytes(r.read())
    except urllib.error.HTTPError as exc:
        msg = json.loads(exc.read() or b"{}").get("error", str(exc))
        raise Fail(f"Error: {msg}") from exc
    except (OSError, ssl.SSLError) as exc:
        raise Fail(
            f"Error: context deadline exceeded (connection to {endpoint} failed: {exc})"
        ) from exc


def etcdctl(argv: list[str], version: str = CLIENT_VERSION) -> int:
    """etcdctl of `version` (3.4, 3.5 or 3.6: where `snapshot status|restore` live)."""
    try:
        return _etcdctl(argv, version)
    except (Fail, argparse.ArgumentError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1


def _etcdctl(argv: list[str], version: str) -> int:
    api = version.rsplit(".", 1)[0]
    if argv == ["version"]:
        print(f"etcdctl version: {version} (rblab stand-in)\nAPI version: {api}")
        return 0
    if os.environ.get("ETCDCTL_API", "3") != "3":
        raise Fail(f"Error: ETCDCTL_API={os.environ['ETCDCTL_API']}: only the v3 API is modelled")
    args, extra = _ctl_parser().parse_known_args(argv)
    words = args.words
    if words[:2] in (["snapshot", "status"], ["snapshot", "restore"]) and api in ("3.4", "3.5"):
        if api == "3.5":
            sys.stderr.write(f"Deprecated: Use `etcdutl snapshot {words[1]}` instead.\n\n")
        offline = [*words, *extra]
        if words[1] == "status":
            offline += ["-w", args.write_out]
        return _etcdutl(offline, version)
    if words[:1] == ["snapshot"] and words[1:2] != ["save"]:
        sub = words[1] if len(words) > 1 else ""
        raise Fail(  # cobra resolves the command before its flags
            f'Error: unknown command "{sub}" for "etcdctl snapshot" '
            f"(etcdctl {api}: snapshot status and restore are `etcdutl` commands)"
        )
    if extra:
        raise Fail(f"Error: unknown flag: {extra[0]}")
    endpoints = [e for e in args.endpoints.split(",") if e]
    if words[:2] == ["snapshot", "save"]:
        if len(words) != 3:
            raise Fail("Error: snapshot save expects one argument")
        if len(endpoints) != 1:
            raise Fail("Error: snapshot must be requested to one selected node, not multiple")
        blob = _post(args, endpoints[0], "/v3/maintenance/snapshot")
        path = Path(words[2])
        part = path.with_name(path.name + ".part")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.replace(part, path)
        print(f"Snapshot saved at {path}")
        return 0
    if words[:2] == ["member", "list"]:
        out = json.loads(_post(args, endpoints[0], "/v3/cluster/member/list"))
        if args.write_out == "json":
            print(json.dumps(out))
        else:
            for m in out["members"]:
                print(
                    f"{m['ID']}, started, {m['name']}, {m['peerURLs'][0]}, "
                    f"{m['clientURLs'][0]}, false"
                )
        return 0
    if words[:2] == ["member", "remove"] and len(words) == 3:
        out = json.loads(_post(args, endpoints[0], "/v3/cluster/member/remove", {"ID": words[2]}))
        print(f"Member {words[2]} removed from cluster")
        return 0
    if words[:2] == ["endpoint", "health"]:
        for e in endpoints:
            _post(args, e, "/health")
            print(f"{e} is healthy: successfully committed proposal")
        return 0
    raise Fail(f"Error: unknown command {' '.join(words)!r} (rblab etcdctl stand-in)")


# ----- etcdutl -----------------------------------------------------------------------------------
def etcdutl(argv: list[str]) -> int:
    try:
        return _etcdutl(argv, ETCD_VERSION)
    except (Fail, argparse.ArgumentError) as exc:
        sys.stderr.write(f"{exc}\n")
        return 1


def _status(path: Path, write_out: str, version: str) -> None:
    raw = path.read_bytes() if path.exists() else b""
    state = read_snapshot(path)
    info: dict[str, int | str] = {
        "hash": zlib.crc32(raw),
        "revision": int(state.get("version", 0)),
        "totalKey": sum(len(v) for v in state.values() if isinstance(v, dict)),
        "totalSize": len(raw),
    }
    if not version.startswith("3.4."):  # etcdctl 3.4 does not report the storage version
        info["version"] = version.rsplit(".", 1)[0] + ".0"
    if write_out == "json":
        print(json.dumps(info))
    else:
        print(", ".join(str(info[k]) for k in ("hash", "revision", "totalKey", "totalSize")))


def _restore(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="etcdutl snapshot restore", exit_on_error=False)
    p.add_argument("file")
    p.add_argument("--data-dir", default="")
    p.add_argument("--wal-dir", default="")
    p.add_argument("--name", default="default")
    p.add_argument("--initial-cluster", default="default=http://localhost:2380")
    p.add_argument("--initial-cluster-token", default="etcd-cluster")
    p.add_argument("--initial-advertise-peer-urls", default="http://localhost:2380")
    p.add_argument("--skip-hash-check", action="store_true")
    a = p.parse_args(argv)
    data_dir = Path(a.data_dir or f"{a.name}.etcd")
    if data_dir.exists() and any(data_dir.iterdir()):
        raise Fail(f'Error: data-dir "{data_dir}" not empty or could not be read')
    cluster: dict[str, str] = {}
    for entry in a.initial_cluster.split(","):
        name, eq, url = entry.partition("=")
        if not eq or "://" not in url:
            raise Fail(f"Error: invalid --initial-cluster entry {entry!r}")
        cluster[name] = url
    if a.name not in cluster:
        raise Fail(
            f'Error: couldn\'t find local name "{a.name}" in the initial cluster configuration'
        )
    if cluster[a.name] not in a.initial_advertise_peer_urls.split(","):
        raise Fail(
            f"Error: --initial-cluster has {a.name}={cluster[a.name]} but missing from "
            f"--initial-advertise-peer-urls={a.initial_advertise_peer_urls}"
        )
    state = read_snapshot(Path(a.file), skip_hash_check=a.skip_hash_check)
    state["members"] = {n: u.split("://", 1)[1].rsplit(":", 1)[0] for n, u in cluster.items()}
    state["cluster_id"] = hashlib.sha256(
        f"{a.initial_cluster}/{a.initial_cluster_token}".encode()
    ).hexdigest()[:16]
    db = data_dir / DB
    db.parent.mkdir(parents=True, exist_ok=True)
    (data_dir / "member" / "wal").mkdir(exist_ok=True)
    for d in (data_dir, data_dir / "member", db.parent):
        d.chmod(0o700)
    fd = os.open(db, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(state, fh)
    print(
        f'{{"level":"info","msg":"restored snapshot","path":"{a.file}",'
        f'"wal-dir":"{data_dir}/member/wal","data-dir":"{data_dir}","snap-dir":"{db.parent}"}}'
    )


def _etcdutl(argv: list[str], version: str) -> int:
    """`snapshot status|restore` (etcdutl's, and etcdctl's before 3.6)."""
    if argv == ["version"]:
        print(f"etcdutl version: {version} (rblab stand-in)\nAPI version: 3.6")
        return 0
    if argv[:2] == ["snapshot", "status"]:
        rest = argv[2:]
        write_out = "simple"
        for flag in ("-w", "--write-out"):
            if flag in rest:
                i = rest.index(flag)
                write_out = rest[i + 1] if i + 1 < len(rest) else ""
                del rest[i : i + 2]
        if write_out not in ("simple", "table", "json") or len(rest) != 1:
            raise Fail("Error: snapshot status expects one file ([-w simple|table|json])")
        _status(Path(rest[0]), write_out, version)
        return 0
    if argv[:2] == ["snapshot", "restore"]:
        _restore(argv[2:])
        return 0
    raise Fail(f"Error: unknown command {' '.join(argv)!r} (rblab etcdutl stand-in)")


def write_db(data_dir: Path, state: dict[str, Any]) -> None:
    """For kubeadm init/join: the member's database in its data dir (0700, as etcd wants)."""
    db = data_dir / DB
    db.parent.mkdir(parents=True, exist_ok=True)
    for d in (data_dir, data_dir / "member", db.parent):
        with contextlib.suppress(OSError):
            d.chmod(0o700)
    db.write_text(json.dumps(state))
