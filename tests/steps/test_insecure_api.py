"""The insecure-API step as data and as flows over a scripted cluster (tests/steps/k8s_fakes.py,
extended here with systemd, curl and the kubectl calls this step makes).

Off by default: no change, no mutating command, not even a kubectl call. Enabled: the
ServiceAccount objects on the first control plane, a 0600 kubeconfig and a kubectl-proxy unit on
every control plane, the token never in argv, plan or output; a second run changes nothing; a
role change re-creates the binding; disabling removes everything again, idempotently.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import io
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from runbook.core.console import Masker, NeedsPerson, Ui, make_console
from runbook.core.engine import RunOptions, StepContext, plan_target, run_step
from runbook.core.plan import Status
from runbook.core.remote import Fact, Result
from runbook.inventory import Inventory, load_inventory
from runbook.render import insecureapifiles as ia
from runbook.render import k8sfiles, lbfiles
from runbook.steps.insecure_api import InsecureApiStep
from runbook.tasks._render import render_host
from tests.steps.k8s_fakes import FakeCluster, FakeK8sHost

# a step run's other control planes wait (1 s polls) for the token that the first one creates
# in the same run, in another thread: whether they wait depends on the threads' timing, and
# that wait needs real time to pass in the other thread (a fake clock would run out at once)
pytestmark = pytest.mark.real_clock

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "eyJSECRET-TOKEN"  # what the scripted token controller puts into the Secret
CPS = ("k8scontrol01", "k8scontrol02", "k8scontrol03")


def inventory(tmp_path: Path, **insecure: Any) -> Inventory:
    data = yaml.safe_load((ROOT / "hosts.yaml").read_text())
    data["load_balancer"]["insecure_api"] = insecure
    p = tmp_path / f"hosts-{len(list(tmp_path.iterdir()))}.yaml"
    p.write_text(yaml.safe_dump(data))
    return load_inventory(p)


class Host(FakeK8sHost):
    """A control plane with systemd, curl and the proxy: strict like the scripted cluster."""

    def __init__(self, name: str, ip: str, cluster: FakeCluster, world: World) -> None:
        super().__init__(name, ip, cluster)
        self.world = world
        self.enabled: set[str] = set()
        self.active: set[str] = set()
        self.restarts = 0

    def proxy_ok(self) -> bool:
        """The proxy answers when it runs with a kubeconfig holding the Secret's token."""
        conf = self.files.get(ia.KUBECONFIG_PATH)
        if ia.SERVICE not in self.active or conf is None:
            return False
        token = yaml.safe_load(conf[0])["users"][0]["user"]["token"]
        return f"secret/{ia.SECRET_NAME}" in self.cluster.objects and token == TOKEN

    def _fact(self, probe: str) -> Fact:
        m = re.fullmatch(
            r"test -f (\S+) \|\| exit 3; stat -c '%a %U %G' \S+; sha256sum < \S+", probe
        )
        if m:
            f = self.files.get(m[1])
            if f is None:
                return Fact("", 3)
            return Fact(f"{f[1]:o} root root\n{hashlib.sha256(f[0]).hexdigest()}  -", 0)
        m = re.fullmatch(
            r"test -e (\S+) && echo unit-file; test -e \S+ && echo backup; "
            r"test -L (\S+) && echo enabled; systemctl is-active (\S+)",
            probe,
        )
        if m:
            out = [s for s, ok in (("unit-file", m[1] in self.files),
                                   ("enabled", m[3] in self.enabled)) if ok]  # fmt: skip
            return Fact("\n".join([*out, "active" if m[3] in self.active else "inactive"]), 3)
        m = re.fullmatch(r'for f in (\S+) (\S+); do test -e "\$f" && echo "\$f"; done; true', probe)
        if m:
            return Fact("\n".join(p for p in (m[1], m[2]) if p in self.files), 0)
        m = re.fullmatch(r"test -f (\S+) && test -f (\S+) && (kubectl .*)", probe)
        if m:
            if m[1] not in self.files or m[2] not in self.files:
                return Fact("", 1)
            r = self._command(m[3])
            return Fact(r.stdout, r.exited)
        m = re.fullmatch(r"systemctl is-enabled (\S+); echo '\|'; systemctl is-active (\S+)", probe)
        if m:
            en = "enabled" if m[1] in self.enabled else "disabled"
            return Fact(f"{en}\n|\n{'active' if m[2] in self.active else 'inactive'}", 0)
        return super()._fact(probe)

    def _command(self, cmd: str) -> Result:
        if cmd == "systemctl daemon-reload":
            return Result("", "", 0)
        m = re.fullmatch(r"systemctl (enable|start|restart|stop) (\S+)", cmd)
        if m:
            verb, unit = m[1], m[2]
            assert ia.UNIT_PATH in self.files, f"{verb} {unit} without a unit file"
            if verb == "enable":
                self.enabled.add(unit)
            elif verb == "stop":
                self.active.discard(unit)
            else:
                self.restarts += verb == "restart"
                self.active.add(unit)
            return Result("", "", 0)
        m = re.fullmatch(
            r"systemctl stop (\S+); systemctl disable \S+; rm -f (.*); systemctl daemon-reload", cmd
        )
        if m:
            self.active.discard(m[1])
            self.enabled.discard(m[1])
            for p in m[2].split():
                self.files.pop(p, None)
            return Result("", "", 0)
        m = re.fullmatch(r"rm -f (.*)", cmd)
        if m:
            for p in m[1].split():
                self.files.pop(p, None)
            return Result("", "", 0)
        m = re.fullmatch(
            r"curl -sS --max-time 5 -w '\\n%\{http_code\}' http://([\d.]+):(\d+)/api", cmd
        )
        if m:
            ip, port = m[1], int(m[2])
            hosts = self.world.hosts.values()
            vip = ip == str(self.world.inv.load_balancer.vip)
            answering = [h for h in hosts if (vip or h.ip == ip) and h.proxy_ok()]
            if port != self.world.inv.load_balancer.insecure_api.port or not answering:
                return Result("\n000", "curl: (7) Failed to connect", 7)
            return Result('{"kind":"APIVersions","versions":["v1"]}\n200', "", 0)
        return super()._command(cmd)

    def _kubectl(self, args: list[str]) -> Result:
        c = self.cluster
        rest = args[4:] if args[2:3] == ["-n"] else args[2:]
        if rest[:1] == ["delete"]:
            assert rest[-1] == "--ignore-not-found", rest
            for ref in rest[1:-1]:
                c.objects.pop(ref, None)
            return Result("deleted\n", "", 0)
        if rest[:2] == ["get", "clusterrolebinding"] and rest[3:] == [
            "-o",
            "jsonpath={.roleRef.name}",
        ]:
            o = c.objects.get(f"clusterrolebinding/{rest[2]}")
            return Result(o["roleRef"]["name"], "", 0) if o else Result("", "NotFound\n", 1)
        if rest[:2] == ["apply", "-f"]:
            for d in yaml.safe_load_all(self.files[rest[2]][0]):
                old = c.objects.get(f"clusterrolebinding/{d['metadata']['name']}")
                if d["kind"] == "ClusterRoleBinding" and old and old["roleRef"] != d["roleRef"]:
                    return Result("", "cannot change roleRef\n", 1)
        return super()._kubectl(args)


class World:
    def __init__(self, inv: Inventory) -> None:
        self.inv = inv
        self.cluster = FakeCluster(initialised=True)
        self.hosts = {
            h.name: Host(h.name, str(h.private_ip), self.cluster, self)
            for h in inv.hosts_with_role("control-plane")
        }
        self.hosts["k8scontrol01"].files[k8sfiles.ADMIN_CONF] = (b"admin", 0o600)
        self.out = io.StringIO()

    def ctx(self, inv: Inventory | None = None, *, dry_run: bool = False, yes: bool = True,
            hosts: tuple[str, ...] = ()) -> StepContext:  # fmt: skip
        self.inv = inv or self.inv
        masker = Masker()
        ui = Ui(make_console(masker, file=self.out, width=120), masker, assume_yes=yes,
                interactive=False, stdin=io.StringIO(""))  # fmt: skip
        for h in self.hosts.values():
            h.dry_run = dry_run
            h.touched.clear()
        ctx = StepContext(self.inv, ui, RunOptions(dry_run=dry_run, yes=yes, hosts=hosts))
        ctx.targets.update(self.hosts)
        return ctx

    def argv(self) -> list[str]:
        return [cmd for h in self.hosts.values() for cmd, _, _ in h.sent]

    def mutations(self) -> list[str]:
        return [cmd for h in self.hosts.values() for cmd, _, mut in h.sent if mut]


def changes(ctx: StepContext, target: str) -> list[tuple[str, str]]:
    plan = plan_target(InsecureApiStep(), ctx, target)
    assert not plan.error, plan.error
    return [(c.resource, c.action) for c in plan.changes]


@pytest.fixture
def off(tmp_path: Path) -> Inventory:
    return inventory(tmp_path)


@pytest.fixture
def on(tmp_path: Path) -> Inventory:
    return inventory(tmp_path, enabled=True)


# ----- plans as data --------------------------------------------------------------------------
def test_off_by_default_nothing_planned_nothing_sent(off: Inventory) -> None:
    assert off.load_balancer.insecure_api.enabled is False
    w = World(off)
    ctx = w.ctx()
    assert InsecureApiStep().target_names(ctx) == list(CPS)
    for cp in CPS:
        assert changes(ctx, cp) == []
    res = run_step(InsecureApiStep(), w.ctx())
    assert [r.status for r in res.results] == [Status.OK] * 3
    assert w.mutations() == [] and not any("kubectl" in c for c in w.argv())
    assert w.cluster.objects == {}


def test_enabled_plan_first_control_plane_and_the_others(on: Inventory) -> None:
    w = World(on)
    ctx = w.ctx()
    tail = [
        (f"file:{ia.KUBECONFIG_PATH}", "create"),
        (f"file:{ia.UNIT_PATH}", "create"),
        ("systemd:daemon-reload", "daemon-reload"),
        (f"service:{ia.SERVICE}", "enable+start"),
    ]
    assert changes(ctx, "k8scontrol01") == [
        (f"file:{ia.MANIFEST_PATH}", "create"),
        ("kubectl-apply:insecure-api", "apply"),
        *tail,
    ]
    assert changes(ctx, "k8scontrol02") == tail
    assert w.mutations() == []


def test_enabled_run_then_clean_token_never_in_argv_plan_or_output(on: Inventory) -> None:
    w = World(on)
    res = run_step(InsecureApiStep(), w.ctx())
    assert [r.status for r in res.results] == [Status.CHANGED] * 3, res
    assert set(w.cluster.objects) == {f"serviceaccount/{ia.SA_NAME}",
                                      f"clusterrolebinding/{ia.SA_NAME}",
                                      f"secret/{ia.SECRET_NAME}"}  # fmt: skip
    assert w.cluster.objects[f"clusterrolebinding/{ia.SA_NAME}"]["roleRef"]["name"] == "view"
    for cp in CPS:
        h = w.hosts[cp]
        content, mode = h.files[ia.KUBECONFIG_PATH]
        conf = yaml.safe_load(content)
        assert mode == 0o600 and conf["users"][0]["user"]["token"] == TOKEN
        assert conf["clusters"][0]["cluster"]["server"] == f"https://{h.ip}:6443"
        assert ia.KUBECONFIG_PATH + ".rb-bak" not in h.files
        assert h.enabled == h.active == {ia.SERVICE}
        assert TOKEN.encode() not in h.files[ia.UNIT_PATH][0]
    assert "kubectl-apply" in w.out.getvalue() and "checkpoint" in w.out.getvalue()
    assert not any(TOKEN in c for c in w.argv())
    assert TOKEN not in w.out.getvalue()
    assert base64.b64encode(TOKEN.encode()).decode() not in w.out.getvalue()
    again = run_step(InsecureApiStep(), w.ctx())
    assert [r.status for r in again.results] == [Status.OK] * 3, again
    assert sum(h.restarts for h in w.hosts.values()) == 0


def test_a_changed_token_rewrites_the_kubeconfig_and_restarts(on: Inventory) -> None:
    w = World(on)
    run_step(InsecureApiStep(), w.ctx())
    h = w.hosts["k8scontrol02"]
    h.files[ia.KUBECONFIG_PATH] = (b"stale", 0o644)
    assert changes(w.ctx(), "k8scontrol02") == [
        (f"file:{ia.KUBECONFIG_PATH}", "update"),
        (f"service:{ia.SERVICE}", "restart"),
    ]
    res = run_step(InsecureApiStep(), w.ctx())
    assert res.count(Status.CHANGED) == 1 and h.restarts == 1
    assert h.files[ia.KUBECONFIG_PATH][1] == 0o600


def test_a_role_change_recreates_the_binding(tmp_path: Path, on: Inventory) -> None:
    w = World(on)
    run_step(InsecureApiStep(), w.ctx())
    edit = inventory(tmp_path, enabled=True, role="edit")
    assert changes(w.ctx(edit), "k8scontrol01")[:3] == [
        (f"file:{ia.MANIFEST_PATH}", "update"),
        (f"binding-role:{ia.SA_NAME}", "delete"),
        ("kubectl-apply:insecure-api", "apply"),
    ]
    res = run_step(InsecureApiStep(), w.ctx(edit))
    assert not res.failed, res
    assert w.cluster.objects[f"clusterrolebinding/{ia.SA_NAME}"]["roleRef"]["name"] == "edit"
    # the unit says which role it serves: changed, so every proxy restarts
    assert all(h.restarts == 1 for h in w.hosts.values())


def test_disabling_removes_everything_idempotently(tmp_path: Path, on: Inventory) -> None:
    w = World(on)
    run_step(InsecureApiStep(), w.ctx())
    off = inventory(tmp_path, enabled=False)
    assert changes(w.ctx(off), "k8scontrol01") == [
        (f"unit-absent:{ia.SERVICE}", "stop+disable+remove"),
        (f"absent:{ia.KUBECONFIG_PATH}", "remove"),
        ("kubectl-delete:insecure-api", "delete"),
        (f"absent:{ia.MANIFEST_PATH}", "remove"),
    ]
    res = run_step(InsecureApiStep(), w.ctx(off))
    assert [r.status for r in res.results] == [Status.CHANGED] * 3, res
    assert w.cluster.objects == {}
    for h in w.hosts.values():
        assert not h.active and not h.enabled
        assert not {ia.UNIT_PATH, ia.KUBECONFIG_PATH, ia.MANIFEST_PATH} & set(h.files)
    again = run_step(InsecureApiStep(), w.ctx(off))
    assert [r.status for r in again.results] == [Status.OK] * 3


def test_dry_run_and_checkpoint(on: Inventory) -> None:
    w = World(on)
    res = run_step(InsecureApiStep(), w.ctx(dry_run=True))
    assert res.dry_run and [r.status for r in res.results] == [Status.CHANGED] * 3
    assert w.mutations() == [] and w.cluster.objects == {}
    with pytest.raises(NeedsPerson, match=r"WARNING: load_balancer\.insecure_api is enabled"):
        run_step(InsecureApiStep(), w.ctx(yes=False))
    assert w.mutations() == []


def test_one_other_control_plane_needs_the_token_first(on: Inventory) -> None:
    w = World(on)
    res = run_step(InsecureApiStep(), w.ctx(hosts=("k8scontrol02",)))
    assert res.failed and "has no token" in res.results[0].message
    run_step(InsecureApiStep(), w.ctx())
    w.hosts["k8scontrol02"].files.pop(ia.KUBECONFIG_PATH)
    res = run_step(InsecureApiStep(), w.ctx(hosts=("k8scontrol02",)))
    assert [r.status for r in res.results] == [Status.CHANGED]


def test_verify_fails_when_the_proxy_does_not_answer(
    on: Inventory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import runbook.steps.insecure_api as step

    w = World(on)
    monkeypatch.setattr(w.hosts["k8scontrol03"], "proxy_ok", lambda: False)
    monkeypatch.setattr(step, "VERIFY_WAIT_S", 0)
    res = run_step(InsecureApiStep(), w.ctx())
    bad = [r for r in res.results if r.status is Status.FAILED]
    assert [r.target for r in bad] == ["k8scontrol03"]
    assert "GET http://10.143.0.4:6080/api" in bad[0].message


# ----- the files ------------------------------------------------------------------------------
def _exec_start(unit: str) -> list[str]:
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(unit)
    return shlex.split(cp["Service"]["ExecStart"])


def go_host(header: str) -> str:
    """kubectl's extractHost (net.SplitHostPort, else the header)."""
    host, sep, _ = header.rpartition(":")
    return host if sep and ":" not in host else header


def test_unit_runs_kubectl_proxy_on_the_private_ip_with_the_kubeconfig(on: Inventory) -> None:
    text = ia.unit(on, "k8scontrol02")
    argv = _exec_start(text)
    flags = dict(a.split("=", 1) for a in argv[2:])
    assert argv[:2] == ["/usr/bin/kubectl", "proxy"]
    assert flags == {
        "--address": "10.143.0.3",
        "--port": "6080",
        "--accept-hosts": flags["--accept-hosts"],
        "--kubeconfig": ia.KUBECONFIG_PATH,
    }
    assert "\\" not in flags["--accept-hosts"] and "%" not in text  # nothing systemd rewrites
    hosts = [re.compile(r) for r in flags["--accept-hosts"].split(",")]
    ok = lambda h: any(r.search(go_host(h)) for r in hosts)  # noqa: E731
    vip = str(on.load_balancer.vip)
    assert ok(f"{vip}:6080") and ok("10.143.0.3:6080") and ok(vip)
    assert not ok("10.143.0.2:6080") and not ok(f"{vip}0:6080") and not ok("10x143x0x50")
    assert not ok("") and not ok("evil.example:6080")
    cp = configparser.ConfigParser(interpolation=None)
    cp.read_string(text)
    assert cp["Service"]["Restart"] == "always" and "token" not in cp["Service"]["ExecStart"]
    assert "WARNING" in text and '"view"' in text
    # HAProxy's check sends a Host the proxy accepts (without one kubectl proxy answers 403)
    cfg = lbfiles.haproxy_cfg(on, "k8slb01")
    m = re.search(r"http-check send meth GET uri /readyz ver HTTP/1.1 hdr Host (\S+)", cfg)
    assert m and ok(m[1]) and m[1] == f"{vip}:6080"


def test_manifest_and_kubeconfig(on: Inventory, tmp_path: Path) -> None:
    docs = list(yaml.safe_load_all(ia.manifest(on)))
    assert [d["kind"] for d in docs] == ["ServiceAccount", "ClusterRoleBinding", "Secret"]
    assert docs[1]["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": "view"}  # fmt: skip
    assert docs[2]["type"] == "kubernetes.io/service-account-token"
    assert docs[2]["metadata"]["annotations"] == {"kubernetes.io/service-account.name": ia.SA_NAME}
    conf = yaml.safe_load(ia.kubeconfig(on, "k8scontrol01", token="a.b-c_d"))
    ctx = conf["contexts"][0]["context"]
    assert conf["current-context"] == conf["contexts"][0]["name"]
    assert ctx["user"] == conf["users"][0]["name"] and ctx["cluster"] == conf["clusters"][0]["name"]
    assert conf["users"][0]["user"] == {"token": "a.b-c_d"}
    assert conf["clusters"][0]["cluster"]["certificate-authority"] == ia.CA_FILE
    with pytest.raises(ValueError, match="unexpected form") as err:
        ia.kubeconfig(on, "k8scontrol01", token='x"\n  evil: 1')
    assert "evil" not in str(err.value)
    with pytest.raises(ValueError, match="not a control-plane"):
        ia.unit(on, "k8slb01")


def test_render_shows_the_files_with_the_secret_marker(on: Inventory, off: Inventory,
                                                       tmp_path: Path) -> None:  # fmt: skip
    rows = {path: mode for path, mode, _ in render_host(on, "k8scontrol01", tmp_path / "on")}
    assert rows[ia.KUBECONFIG_PATH] == "0600" and rows[ia.MANIFEST_PATH] == "0600"
    assert ia.UNIT_PATH in rows
    conf = (tmp_path / "on" / ia.KUBECONFIG_PATH.lstrip("/")).read_text()
    assert yaml.safe_load(conf)["users"][0]["user"]["token"] == "<secret>"
    rows2 = {p for p, _, _ in render_host(on, "k8scontrol02", tmp_path / "on2")}
    assert ia.MANIFEST_PATH not in rows2 and ia.KUBECONFIG_PATH in rows2
    assert not {ia.UNIT_PATH, ia.KUBECONFIG_PATH} & {
        p for p, _, _ in render_host(off, "k8scontrol01", tmp_path / "off")
    }
