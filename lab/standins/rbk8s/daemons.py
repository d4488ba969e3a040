"""LAB STAND-IN — kubectl (the calls the runbook makes; `kubectl proxy` in proxy.py), kubelet,
containerd and the apiserver process the kubelet runs from its static-pod manifest.

kubelet: refuses to run without /etc/kubernetes/kubelet.conf (as the real one crash-loops before
kubeadm), needs the containerd socket, runs the kube-apiserver manifest as a child (restarting it
like a crash-looping static pod) and reports node status through the controlPlaneEndpoint.
apiserver: refuses flags Kubernetes removed (insecure port, klog file flags) like the real one.
containerd: in containerd.py.
"""

from __future__ import annotations

import calendar
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from . import VERSION, client
from .apiserver import STATE, ApiServer, Store

K = Path("/etc/kubernetes")
CRI_SOCKET = Path("/run/containerd/containerd.sock")
REMOVED = (
    "insecure-port",
    "insecure-bind-address",
    "log-dir",
    "log-file",
    "log-file-max-size",
    "logtostderr",
    "alsologtostderr",
    "skip-log-headers",
)


# ----- kubectl --------------------------------------------------------------------------------
def _short(key: str) -> str:
    kind, _, name = key.split("/", 2)[0], None, key.rsplit("/", 1)[1]
    group = {
        "daemonset": "daemonset.apps",
        "clusterrolebinding": "clusterrolebinding.rbac.authorization.k8s.io",
    }.get(kind, kind)
    return f"{group}/{name}"


def kubectl(argv: list[str]) -> int:
    conf_path = os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
    ns = "default"
    rest: list[str] = []
    i = 0
    while i < len(argv):
        flag, eq, value = argv[i].partition("=")
        if flag in ("--kubeconfig", "-n", "--namespace"):
            if not eq:
                if i + 1 >= len(argv):
                    sys.stderr.write(f"error: flag needs an argument: {flag}\n")
                    return 1
                value, i = argv[i + 1], i + 1
            if flag == "--kubeconfig":
                conf_path = value
            else:
                ns = value
        else:
            rest.append(argv[i])
        i += 1
    if rest[:1] == ["proxy"]:
        from . import proxy

        return proxy.main(conf_path, rest[1:])
    try:
        conf = client.load(conf_path)
        return _kubectl(conf, ns, rest)
    except client.ApiError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1


def human_duration(seconds: float) -> str:
    """k8s.io/apimachinery/pkg/util/duration.HumanDuration, which kubectl's AGE column uses."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    if h < 24 * 8:
        return f"{h // 24}d{h % 24}h" if h % 24 else f"{h // 24}d"
    if h < 24 * 365 * 2:
        return f"{h // 24}d"
    if h < 24 * 365 * 8:
        dy = (h // 24) % 365
        return f"{h // 24 // 365}y{dy}d" if dy else f"{h // 24 // 365}y"
    return f"{h // 24 // 365}y"


def node_table(nodes: dict[str, Any], *, headers: bool, now: float) -> str:
    """`kubectl get nodes` as kubectl prints it: NAME STATUS ROLES AGE VERSION, columns padded
    by tabwriter (3 blanks after the widest cell), `<none>` without a role label."""
    rows = [["NAME", "STATUS", "ROLES", "AGE", "VERSION"]] if headers else []
    for n in nodes["items"]:
        meta = n["metadata"]
        ready = any(
            c["type"] == "Ready" and c["status"] == "True" for c in n["status"]["conditions"]
        )
        roles = sorted(
            k.removeprefix("node-role.kubernetes.io/")
            for k in meta.get("labels") or {}
            if k.startswith("node-role.kubernetes.io/")
        )
        created = calendar.timegm(time.strptime(meta["creationTimestamp"], "%Y-%m-%dT%H:%M:%SZ"))
        rows.append(
            [
                meta["name"],
                "Ready" if ready else "NotReady",
                ",".join(roles) or "<none>",
                human_duration(now - created),
                n["status"]["nodeInfo"]["kubeletVersion"],
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)] if rows else []
    return "".join(
        "   ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=False)) + "   " + r[-1] + "\n"
        for r in rows
    )


def _key(ref: str, ns: str) -> str:
    """`kind/name` (or `kind.group/name`) → the store key `kind/namespace/name`."""
    from .apiserver import CLUSTER_SCOPED

    kind, _, name = ref.partition("/")
    kind = {"sa": "serviceaccount", "ds": "daemonset"}.get(kind, kind.split(".")[0].lower())
    return f"{kind}/{'' if kind in CLUSTER_SCOPED else ns}/{name}"


def _jsonpath(obj: Any, expr: str) -> str | None:
    """`{.a.b}` on an object (kubectl prints nothing for a missing field); None: unsupported."""
    if not (expr.startswith("{.") and expr.endswith("}")) or not all(
        p.replace("-", "").replace("_", "").isalnum() for p in expr[2:-1].split(".")
    ):
        return None
    for part in expr[2:-1].split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    if obj is None:
        return ""
    return obj if isinstance(obj, str) else json.dumps(obj)


def _kubectl(conf: dict[str, Any], ns: str, args: list[str]) -> int:
    if args == ["get", "--raw=/readyz"]:
        print(client.call(conf, "GET", "/readyz"), end="")
        return 0
    if args[:1] in (["cordon"], ["uncordon"], ["drain"]):
        from . import nodeops

        return nodeops.kubectl(conf, args)
    if args[:2] == ["get", "nodes"]:
        if args[2:] not in ([], ["-o", "json"], ["--no-headers"]):
            bad = next((a for a in args[2:] if a.startswith("-")), " ".join(args[2:]))
            sys.stderr.write(f"stand-in kubectl: unsupported for get nodes: {bad}\n")
            return 1
        nodes = client.call(conf, "GET", "/api/v1/nodes")
        if args[2:] == ["-o", "json"]:
            print(json.dumps(nodes, indent=2))
            return 0
        print(node_table(nodes, headers=args[2:] != ["--no-headers"], now=time.time()), end="")
        return 0
    if args[:2] == ["apply", "-f"] and len(args) == 3:
        objs: list[dict[str, Any]] = []
        for d in yaml.safe_load_all(Path(args[2]).read_text()):
            if d:
                objs += d.get("items", []) if d.get("kind") == "List" else [d]
        for o in objs:
            o.setdefault("metadata", {}).setdefault("namespace", ns)
        for line in client.call(conf, "POST", "/rb/v1/apply", {"namespace": ns, "objects": objs})[
            "result"
        ]:
            print(line)
        return 0
    if args[:1] == ["get"] and args[-2:] == ["-o", "name"]:
        keys = [_key(ref, ns) for ref in args[1:-2]]
        got = client.call(conf, "GET", "/rb/v1/objects?keys=" + ",".join(keys))
        for k in keys:
            if k in got["items"]:
                print(_short(k))
        for k in got["missing"]:
            sys.stderr.write(f'Error from server (NotFound): "{k.rsplit("/", 1)[1]}" not found\n')
        return 1 if got["missing"] else 0
    if args[:1] == ["get"] and len(args) == 5 and args[3] == "-o":
        key = _key(f"{args[1]}/{args[2]}", ns)
        value = _jsonpath({}, args[4].removeprefix("jsonpath="))
        if not args[4].startswith("jsonpath=") or value is None:
            sys.stderr.write("stand-in kubectl: only -o jsonpath={.field.path}\n")
            return 1
        got = client.call(conf, "GET", "/rb/v1/objects?keys=" + key)
        if key not in got["items"]:
            plural = key.split("/")[0] + "s"
            sys.stderr.write(f'Error from server (NotFound): {plural} "{args[2]}" not found\n')
            return 1
        print(_jsonpath(got["items"][key], args[4].removeprefix("jsonpath=")), end="")
        return 0
    if args[:1] == ["delete"] and len(args) > 1:
        refs = [a for a in args[1:] if not a.startswith("-")]
        flags = [a for a in args[1:] if a.startswith("-")]
        if any(f not in ("--ignore-not-found", "--ignore-not-found=true") for f in flags) or any(
            "/" not in r for r in refs
        ):
            sys.stderr.write(f"stand-in kubectl: unsupported: {' '.join(args)}\n")
            return 1
        keys = [_key(r, ns) for r in refs]
        got = client.call(conf, "POST", "/rb/v1/delete", {"keys": keys})
        for k in keys:
            kind, name = k.split("/")[0], k.rsplit("/", 1)[1]
            if k in got["deleted"]:
                print(f'{kind} "{name}" deleted')
            elif not flags:
                sys.stderr.write(f'Error from server (NotFound): {kind}s "{name}" not found\n')
        return 1 if got["missing"] and not flags else 0
    sys.stderr.write(f"stand-in kubectl: unsupported: {' '.join(args)}\n")
    return 1


# ----- apiserver (run by the kubelet from the static-pod manifest) ----------------------------
def apiserver(manifest: Path) -> int:
    pod = yaml.safe_load(manifest.read_text())
    flags: dict[str, str] = {}
    for arg in pod["spec"]["containers"][0]["command"][1:]:
        name, _, value = arg.removeprefix("--").partition("=")
        if name in REMOVED:
            sys.stderr.write(f"Error: unknown flag: --{name}\n")
            return 1
        flags[name] = value
    name = socket.gethostname()
    store = Store(STATE, self_name=name)
    # --bind-address as kube-apiserver: listen there only (default 0.0.0.0, every address)
    srv = ApiServer(
        (flags.get("bind-address") or "0.0.0.0", int(flags.get("secure-port", "6443"))),
        store,
        Path(flags["client-ca-file"]).parent,
        cert=Path(flags["tls-cert-file"]),
        key=Path(flags["tls-private-key-file"]),
    )
    image = str(pod["spec"]["containers"][0].get("image", ""))
    if ":" in image:  # registry.k8s.io/kube-apiserver:v1.NN.P — what this "API server" is
        srv.version = image.rsplit(":", 1)[1]
    pki_dir = Path(flags["client-ca-file"]).parent
    if (pki_dir / "etcd" / "server.crt").exists() and (K / "manifests" / "etcd.yaml").exists():
        # the stand-in's etcd lives in this process (see etcd.py)
        from .etcd import EtcdEndpoint

        assert store.peer_ctx is not None
        EtcdEndpoint(store, pki_dir, store.peer_ctx).start()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    store.catch_up()  # bound already: clients wait in the backlog, not refused
    srv.serve_forever()
    return 0


# ----- kubelet --------------------------------------------------------------------------------
def kubelet(argv: list[str]) -> int:
    conf_path = K / "kubelet.conf"
    if not conf_path.exists():
        sys.stderr.write(f"failed to load Kubelet config file {conf_path}: no such file\n")
        return 1
    if not CRI_SOCKET.is_socket():
        sys.stderr.write(f"container runtime is down: {CRI_SOCKET} missing\n")
        return 1
    conf = client.load(conf_path)
    name = conf["users"][0]["name"].removeprefix("system:node:")
    ip = _node_ip()
    child: subprocess.Popen[bytes] | None = None
    manifest = K / "manifests" / "kube-apiserver.yaml"
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    backoff, last, started_from = 1.0, 0.0, b""
    while not stop:
        # as the kubelet watches its static-pod directory: a removed manifest stops the pod,
        # a changed one replaces it (kubeadm upgrade, certificate renewal, etcd restore)
        wanted = _manifest(manifest)
        if child is not None and child.poll() is None and wanted != started_from:
            child.terminate()
            child.wait(10)
            child, backoff, last = None, 1.0, 0.0
        down = child is None or child.poll() is not None
        if wanted is not None and down and time.monotonic() - last >= backoff:
            if child is not None:  # it died: back off like a crash-looping static pod
                backoff = min(backoff * 2, 10)
            child = subprocess.Popen(
                [sys.executable, "-m", "rbk8s", "apiserver", str(manifest)],
                cwd=str(Path(__file__).parent.parent),
            )
            last, started_from = time.monotonic(), wanted
        try:
            client.call(
                conf,
                "POST",
                f"/rb/v1/nodes/{name}/status",
                {"version": f"v{VERSION}", "ip": ip},
                timeout=3,
            )
            pause = 10  # half-seconds until the next report
        except client.ApiError as exc:
            sys.stderr.write(f"kubelet: node status not reported: {exc}\n")
            pause = 2  # the API may be starting: retry soon
        for _ in range(pause):
            running = child is not None and child.poll() is None
            if stop or (running and _manifest(manifest) != started_from):
                break
            time.sleep(0.5)
    if child is not None and child.poll() is None:
        child.terminate()
        child.wait(10)
    return 0


def _manifest(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _node_ip() -> str:
    env = Path("/var/lib/kubelet/kubeadm-flags.env")
    if env.exists():
        for part in env.read_text().split():
            if part.startswith("--node-ip="):
                return part.split("=", 1)[1].strip('"')
    return ""
