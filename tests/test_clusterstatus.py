"""`inv status` as data: a scripted cluster answers the exact probes status sends; the rendered
screen and the exit code are asserted for healthy, host down, no cluster, NotReady, missing node,
API failing through the VIP. The curl probe itself runs for real against a local HTTP server."""

from __future__ import annotations

import http.server
import io
import json
import re
import subprocess
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runbook.core.console import Masker, Ui, make_console
from runbook.core.remote import Fact, Host, HostUnreachable, Result
from runbook.inventory import Inventory, load_inventory
from runbook.render.k8sfiles import ADMIN_CONF
from runbook.status.clusterfacts import (
    CERTS_CHECK,
    KUBECTL_NODES,
    api_check,
    http_probe,
    parse_http,
)
from runbook.status.clusterstatus import FirewallRow, FirewallView
from runbook.status.clusterview import run_status
from runbook.status.lbstatus import SHOW_STAT

REPO = Path(__file__).resolve().parents[1]
K8S = ("k8scontrol01", "k8scontrol02", "k8scontrol03", "k8node01", "k8node02")
CPS = K8S[:3]
TOKEN = "tok-" + "5ec7e7" * 8


@dataclass
class Model:
    """What the hosts, HAProxy and the API server would say."""

    inv: Inventory
    down: set[str] = field(default_factory=set)
    initialised: set[str] = field(default_factory=lambda: set(CPS))
    nodes: dict[str, tuple[str, str]] = field(
        default_factory=lambda: dict.fromkeys(K8S, ("True", "KubeletReady"))
    )
    vip_on: str = "k8slb01"
    fip_on: str = "k8slb01"
    readyz: tuple[int, str] = (200, "ok")
    backends_down: set[str] = field(default_factory=set)
    kubelet: str = "active"
    cert_residual: dict[str, str] = field(default_factory=dict)  # control plane -> apiserver's

    def check_expiration(self, name: str) -> str:
        """`kubeadm certs check-expiration` as kubeadm prints it."""
        rows = [
            (
                "CERTIFICATE",
                "EXPIRES",
                "RESIDUAL TIME",
                "CERTIFICATE AUTHORITY",
                "EXTERNALLY MANAGED",
            ),
            ("admin.conf", "Nov 30, 2027 10:00 UTC", "364d", "ca", "no"),
            (
                "apiserver",
                "Dec 10, 2026 10:00 UTC",
                self.cert_residual.get(name, "364d"),
                "ca",
                "no",
            ),
            (),
            ("CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "EXTERNALLY MANAGED"),
            ("ca", "Nov 28, 2036 10:00 UTC", "9y", "no"),
        ]
        return "\n".join("   ".join(r) for r in rows) + "\n"

    def stat_csv(self) -> str:
        rows = ["# pxname,svname,status,", "k8s-api-private,FRONTEND,OPEN,"]
        rows += [
            f"k8s-control-plane,{cp},{'DOWN' if cp in self.backends_down else 'UP'}," for cp in CPS
        ]
        rows.append("k8s-control-plane,BACKEND,UP,")
        return "\n".join(rows) + "\n"

    def nodes_json(self) -> str:
        items = [
            {
                "metadata": {
                    "name": n,
                    "labels": {"node-role.kubernetes.io/control-plane": ""} if n in CPS else {},
                },
                "status": {
                    "conditions": [
                        {"type": "MemoryPressure", "status": "False"},
                        {"type": "Ready", "status": ready, "reason": reason},
                    ],
                    "nodeInfo": {"kubeletVersion": "v1.36.1"},
                    "addresses": [
                        {"type": "InternalIP", "address": self.ip(n)},
                        {"type": "Hostname", "address": n},
                    ],
                },
            }
            for n, (ready, reason) in self.nodes.items()
        ]
        return json.dumps({"kind": "NodeList", "items": items})

    def ip(self, name: str) -> str:
        spec = self.inv.hosts.get(name)
        return str(spec.private_ip) if spec else "10.143.0.99"


def http_answer(code: int, body: str, tls: str = "verified") -> Fact:
    """What `http_probe` prints: a TLS line, the body, then curl's -w line (as measured below)."""
    if code == 0:
        return Fact(f"tls={tls}\ncurl: (7) Failed to connect\n\n@@rb-http@@ 000 0.001\n", 7)
    return Fact(f"tls={tls}\n{body}\n@@rb-http@@ {code} 0.012\n", 0)


class StatusHost(Host):
    """Answers exactly the probes `inv status` sends; anything else fails the test."""

    def __init__(self, spec, *, dry_run: bool, log=None, model: Model) -> None:  # type: ignore[no-untyped-def]
        super().__init__(spec.name, dry_run=dry_run, log=log)
        self.m, self.role = model, spec.role
        self.batches: list[list[str]] = []

    def gather(self, probes: Sequence[str | None]) -> list[Fact | None]:
        if self.name in self.m.down:
            raise HostUnreachable(f"{self.name}: unreachable: [Errno 111] Connection refused")
        self.batches.append([p for p in probes if p])
        return [None if p is None else self.answer(p) for p in probes]

    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        raise AssertionError(f"status ran a command outside gather: {cmd}")

    def answer(self, p: str) -> Fact:
        m, lb = self.m, self.m.inv.load_balancer
        if p == '. /etc/os-release && echo "$PRETTY_NAME"':
            return Fact("Debian GNU/Linux 12 (bookworm)", 0)
        if p == "uname -r":
            return Fact("6.1.0-28-amd64", 0)
        if p == "cut -d' ' -f1 /proc/uptime":
            return Fact("93784.51", 0)
        if p == "systemctl is-active kubelet":
            return Fact(m.kubelet, 0 if m.kubelet == "active" else 3)
        if p == f"test -f {ADMIN_CONF}":
            return Fact("", 0 if self.name in m.initialised else 1)
        if p == f"test -f {ADMIN_CONF} || exit 0; {CERTS_CHECK}":
            assert self.role == "control-plane"
            return Fact(m.check_expiration(self.name) if self.name in m.initialised else "", 0)
        if p.startswith("systemctl is-active heartbeat"):
            return Fact("active\nhb-running", 0)
        if p == f"ip -o -4 addr show dev {lb.interface}":
            ips = [str(self.m.inv.hosts[self.name].private_ip)]
            ips += [str(lb.vip)] if m.vip_on == self.name else []
            return Fact("".join(f"3: ens10    inet {a}/32 scope global ens10\n" for a in ips), 0)
        if p == f"ip -o -4 addr show dev {lb.public_interface}":
            fip = f"2: eth0    inet {lb.floating_ip.address}/32 scope global eth0\n"
            return Fact(fip if m.fip_on == self.name else "", 0)
        if p == "systemctl is-active haproxy":
            return Fact("active", 0)
        if p == SHOW_STAT:
            return Fact(m.stat_csv(), 0)
        if p == KUBECTL_NODES:
            assert self.name in m.initialised, "kubectl on a host without admin.conf"
            if m.readyz[0] != 200:
                return Fact("The connection to the server 10.143.0.50:6443 was refused", 1)
            return Fact(m.nodes_json(), 0)
        if "curl " in p and "/version" in p:
            return http_answer(200, json.dumps({"gitVersion": "v1.36.1"}))
        if "curl " in p and f"https://{lb.floating_ip.address}:6443/readyz" in p:
            assert "--interface 127.0.0.1" in p and self.name == m.fip_on
            return http_answer(*m.readyz, tls="unverified")
        if "curl " in p and f"https://{lb.vip}:6443/readyz" in p:
            return http_answer(*m.readyz)
        raise AssertionError(f"unknown probe on {self.name}: {p}")


@pytest.fixture
def model() -> Model:
    return Model(load_inventory(REPO / "hosts.yaml"))


@dataclass
class Run:
    code: int
    out: str
    hosts: dict[str, StatusHost]

    def row(self, first: str, table: str = "") -> str:
        """The row (one line at width 200) starting with `first` in the table titled `table`
        (hosts, load balancers, API server health, nodes)."""
        lines = self.out.splitlines()
        start = next(i for i, ln in enumerate(lines) if ln.startswith(table)) if table else 0
        for line in lines[start:]:
            cells = [c.strip() for c in line.strip("│┃ ").split("│")]
            if cells and cells[0] == first:
                return " | ".join(cells)
        raise AssertionError(f"no row {first!r} in:\n{self.out}")

    def problems(self) -> list[str]:
        return re.findall(r"^  - (.*)$", self.out, re.M)


def status(
    model: Model,
    *,
    cloud: tuple[str, str] | Exception | None = None,
    firewalls: FirewallView | None = None,
    width: int = 200,
) -> Run:
    out = io.StringIO()
    masker = Masker()
    masker.register(TOKEN)
    ui = Ui(make_console(masker, file=out, width=width), masker)
    hosts: dict[str, StatusHost] = {}

    def factory(spec, *, dry_run: bool, log=None) -> StatusHost:  # type: ignore[no-untyped-def]
        assert dry_run, "status must connect read-only hosts"
        hosts[spec.name] = StatusHost(spec, dry_run=dry_run, log=log, model=model)
        return hosts[spec.name]

    def lookup() -> tuple[str, str]:
        if isinstance(cloud, Exception):
            raise cloud
        return cloud or (model.vip_on, model.fip_on)

    code = run_status(
        model.inv,
        ui,
        cloud=lookup,
        firewalls=None if firewalls is None else lambda: firewalls,
        factory=factory,
    )
    text = out.getvalue()
    assert "Traceback" not in text and TOKEN not in text
    return Run(code, text, hosts)


def test_healthy_cluster_is_one_screen_and_exit_0(model: Model) -> None:
    r = status(model)
    assert r.code == 0, r.out
    assert "hosts (7/7 reachable over SSH)" in r.out
    assert "Debian 12 (bookworm)" in r.row("k8slb02") and "1d 2h" in r.row("k8slb02")
    assert r.row("k8slb01", "load balancers").split(" | ")[1:6] == [
        "running",
        "yes",
        "yes",
        "active",
        "3/3 UP",
    ]
    assert r.row("k8slb02", "load balancers").split(" | ")[1:6] == [
        "running",
        "no",
        "no",
        "active",
        "3/3 UP",
    ]
    assert "cloud API routes: VIP → k8slb01, floating IP → k8slb01" in r.out
    vip = r.row("VIP 10.143.0.50:6443")
    assert "k8scontrol01 | ok | 200 | 12 ms | verified (cluster CA) | v1.36.1" in vip
    assert "k8slb01 | ok | 200 | 12 ms | not verified" in r.row("floating IP 116.202.6.21:6443")
    assert "nodes (5/5 Ready; kubectl on k8scontrol01)" in r.out
    assert r.row("k8scontrol02", "nodes").startswith(
        "k8scontrol02 | Ready | control-plane | v1.36.1 | 10.143.0.3 | control-plane"
    )
    assert r.row("k8node01", "nodes").startswith(
        "k8node01 | Ready | <none> | v1.36.1 | 10.143.0.7 | worker"
    )
    assert "healthy: 7 hosts reachable, k8slb01 holds the VIP" in r.out
    assert r.out.rstrip().endswith("status: healthy problems=0")
    assert not r.problems() and "warning" not in r.out


def test_certificates_shown_warned_under_30_days_expired_degrades(model: Model) -> None:
    r = status(model)
    assert "k8scontrol02 | admin.conf | Nov 30, 2027 10:00 UTC | 364d" in r.row(
        "k8scontrol02", "certificates"
    )
    model.cert_residual = {"k8scontrol02": "29d"}
    r = status(model)
    assert r.code == 0, r.out
    assert (
        "k8scontrol02: certificate apiserver expires in 29d (Dec 10, 2026 10:00 UTC), under 30 days"
        in (" ".join(r.out.split()))
    )
    model.cert_residual = {"k8scontrol03": "<invalid>"}
    r = status(model)
    assert r.code == 1
    want = "k8scontrol03: certificate apiserver expired (Dec 10, 2026 10:00 UTC)"
    assert f"{want}: `inv cluster.renew-certs`" in r.problems()


def test_one_connection_and_read_only_probes_per_host(model: Model) -> None:
    r = status(model)
    assert r.code == 0
    batches = {n: len(h.batches) for n, h in r.hosts.items()}
    # facts everywhere; LBs add lbstatus' batch, the holder the floating-IP probe, the first
    # control plane the API probes + kubectl
    assert batches == {
        "k8scontrol01": 2,
        "k8scontrol02": 1,
        "k8scontrol03": 1,
        "k8slb01": 3,
        "k8slb02": 2,
        "k8node01": 1,
        "k8node02": 1,
    }
    assert KUBECTL_NODES in r.hosts["k8scontrol01"].batches[1]


def test_unreachable_worker_is_shown_and_degrades(model: Model) -> None:
    model.down = {"k8node02"}
    model.nodes["k8node02"] = ("Unknown", "NodeStatusUnknown")
    r = status(model)
    assert r.code == 1
    assert "hosts (6/7 reachable over SSH)" in r.out
    # facts it could not give stay empty
    assert (
        r.row("k8node02") == "k8node02 | worker | 10.143.0.8 | no: [Errno 111] Connection refused"
    )
    assert "Unknown" in r.out and "NodeStatusUnknown" in r.out
    assert r.problems() == [
        "k8node02: unreachable over SSH: [Errno 111] Connection refused",
        "node k8node02: Ready=Unknown (NodeStatusUnknown)",
    ]
    assert "status: degraded problems=2" in r.out


def test_unreachable_first_control_plane_asks_the_next(model: Model) -> None:
    model.down = {"k8scontrol01"}
    model.backends_down = {"k8scontrol01"}
    model.nodes["k8scontrol01"] = ("Unknown", "NodeStatusUnknown")
    r = status(model)
    assert r.code == 1
    assert "kubectl on k8scontrol02" in r.out and "k8scontrol02 | ok" in r.row(
        "VIP 10.143.0.50:6443"
    )
    assert "2/3 UP (k8scontrol01 DOWN)" in r.row("k8slb01", "load balancers")
    assert "k8slb01: backends not UP: k8s-control-plane/k8scontrol01" in r.problems()


def test_unreachable_vip_holder_and_no_cloud_answer(model: Model) -> None:
    model.down = {"k8slb01"}
    r = status(model, cloud=RuntimeError(f"API unavailable (token {TOKEN})"))
    assert r.code == 1
    assert "UNREACHABLE" in r.row("k8slb01", "load balancers")
    assert "VIP held locally by 0 reachable LBs" in r.problems()
    assert "not checked: no reachable LB holds it" in r.row("floating IP 116.202.6.21:6443")
    assert "warning: cloud API not asked or not reachable: API unavailable (token ********)" in (
        r.out
    )


def test_no_cluster_yet(model: Model) -> None:
    model.initialised = set()
    model.nodes = {}
    model.kubelet = "inactive"
    model.readyz = (0, "")
    model.backends_down = set(CPS)
    r = status(model)
    assert r.code == 1
    assert "nodes: no control plane has /etc/kubernetes/admin.conf: run `inv cluster.init`" in r.out
    assert "inactive" in r.row("k8node01")
    assert "curl: (7) Failed to connect" in r.row("VIP 10.143.0.50:6443")
    assert all(KUBECTL_NODES not in b for h in r.hosts.values() for b in h.batches)
    assert "cluster not initialised: no control plane has /etc/kubernetes/admin.conf" in (
        r.problems()
    )
    assert "hosts (7/7 reachable over SSH)" in r.out  # what is known is still shown


def test_not_ready_node(model: Model) -> None:
    model.nodes["k8node01"] = ("False", "NetworkPluginNotReady")
    r = status(model)
    assert r.code == 1
    assert "nodes (4/5 Ready" in r.out
    assert r.row("k8node01", "nodes") == (
        "k8node01 | NotReady | <none> | v1.36.1 | 10.143.0.7 | worker | NetworkPluginNotReady"
    )
    assert r.problems() == ["node k8node01: NotReady (NetworkPluginNotReady)"]


def test_missing_node_and_a_node_not_in_the_inventory(model: Model) -> None:
    del model.nodes["k8node02"]
    model.nodes["k8node99"] = ("True", "KubeletReady")
    r = status(model)
    assert r.code == 1
    assert r.row("k8node02", "nodes") == (
        "k8node02 | missing |  |  | 10.143.0.8 | worker | in the inventory, not in the cluster"
    )
    assert r.row("k8node99", "nodes").endswith("| - | not in the inventory")
    assert r.problems() == ["k8node02: in the inventory but not a node of the cluster"]
    assert "warning: node k8node99: in the cluster but not in the inventory" in r.out


def test_api_failing_through_the_vip(model: Model) -> None:
    model.readyz = (500, "[+]ping ok\n[-]etcd failed: reason withheld\nreadyz check failed")
    r = status(model)
    assert r.code == 1
    assert "HTTP 500: [-]etcd failed: reason withheld" in r.row("VIP 10.143.0.50:6443")
    assert "nodes unknown: kubectl get nodes on k8scontrol01: exit 1: The connection to the" in (
        r.out
    )
    assert (
        "API through the VIP 10.143.0.50:6443 (from k8scontrol01): HTTP 500: "
        "[-]etcd failed: reason withheld" in r.problems()
    )


def test_cloud_routing_disagreeing_with_the_holder(model: Model) -> None:
    r = status(model, cloud=("k8slb02", "k8slb01"))
    assert r.code == 1
    assert r.problems() == ["API routes the VIP to k8slb02, but k8slb01 holds it"]


def test_nothing_reachable_no_traceback(model: Model) -> None:
    model.down = set(model.inv.hosts)
    r = status(model)
    assert r.code == 1
    assert "hosts (0/7 reachable over SSH)" in r.out
    assert "no host reachable" in r.row("VIP 10.143.0.50:6443")
    assert len(r.problems()) == 7 + 1  # the hosts, the nodes unknown (no holder noise)
    assert r.problems()[-1].startswith("nodes unknown: no reachable control plane has")


# -- the curl probe for real, against a local server ----------------------------------------
class BashHost(Host):
    def _exec(self, cmd: str, *, stdin: str | None, timeout: float | None) -> Result:
        p = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
        return Result(p.stdout, p.stderr, p.returncode)


@pytest.fixture
def server() -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path == "/readyz"
            body = b"ok" if ok else b"[+]ping ok\n[-]etcd failed: reason withheld\nfailed"
            self.send_response(200 if ok else 500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield srv.server_address[1]
    srv.shutdown()


@pytest.mark.skipif(subprocess.run(["which", "curl"], capture_output=True).returncode != 0,
                    reason="needs curl")  # fmt: skip
def test_http_probe_with_real_curl(server: int) -> None:
    host = BashHost("local", dry_run=True)
    base = f"http://127.0.0.1:{server}"
    ok, bad, refused = host.gather([
        http_probe(f"{base}/readyz", verify=True),
        http_probe(f"{base}/other", verify=False, source="127.0.0.1"),
        http_probe("http://127.0.0.1:1/readyz", verify=False),
    ])  # fmt: skip
    code, seconds, body, _ = parse_http(ok)
    assert (code, body) == (200, "ok") and seconds is not None and seconds < 5
    assert api_check("VIP", base, "local", ok).ok is True
    failed = api_check("VIP", base, "local", bad)
    assert failed.ok is False and failed.detail == "HTTP 500: [-]etcd failed: reason withheld"
    assert failed.tls == "not verified"
    refused_check = api_check("VIP", base, "local", refused)
    assert refused_check.ok is False and refused_check.code == 0
    assert "Failed to connect" in refused_check.detail


@pytest.mark.parametrize("width", [80, 120])
@pytest.mark.parametrize("down", [set(), {"k8scontrol02", "k8slb01"}])
def test_status_fits_the_screen_without_cutting_a_name_or_an_ip(
    model: Model, width: int, down: set[str]
) -> None:
    model.down = down
    r = status(model, width=width)
    lines = r.out.splitlines()
    assert max(len(line) for line in lines) <= width
    assert "…" not in r.out
    words = set(re.findall(r"[\w.:/-]+", r.out))
    for h in model.inv.hosts.values():
        assert h.name in words, h.name
        assert str(h.private_ip) in words, h.private_ip
    ips = {model.inv.load_balancer.vip, model.inv.load_balancer.floating_ip.address}
    assert {f"{ip}:6443" for ip in ips} <= words
    if not down:
        for name in K8S:
            assert re.search(rf"│ {name} +│ Ready", r.out), name


def test_firewalls_shown_and_a_server_without_one_degrades(model: Model) -> None:
    lbs = FirewallRow("skgm-lb", 4, ("k8slb01", "k8slb02"))
    cps = FirewallRow("skgm-control-plane", 2, ("k8scontrol01", "k8scontrol02", "k8scontrol03"))
    workers = FirewallRow("skgm-worker", 2, ("k8node01", "k8node02"))
    ok = status(model, firewalls=FirewallView((lbs, cps, workers)))
    assert ok.code == 0, ok.out
    assert ok.row("skgm-lb") == "skgm-lb | 4 | k8slb01, k8slb02"
    open_node = status(model, firewalls=FirewallView((lbs, cps), uncovered=("k8node01",)))
    assert open_node.code == 1
    assert open_node.row("none") == "none | - | k8node01"
    assert open_node.problems() == [
        "k8node01: no cloud firewall applied: every port is open to the internet "
        "(run `inv firewall`)"
    ]
    unmanaged = status(model, firewalls=FirewallView(uncovered=("k8node01",), managed=False))
    assert unmanaged.code == 0 and "no cloud firewall on k8node01" in unmanaged.out
