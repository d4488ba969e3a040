"""Bring the lab up and down (the logic behind `inv lab.up/status/down`; tests call it directly).

Why a record-driven design: `down` must remove exactly what `up` made and end only processes the lab
started (recorded PID + start time). `up` is idempotent: with the lab running it changes nothing;
after a crash it refuses with a message pointing at `inv lab.down` rather than guessing.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from lab import aptrepo, hosttools, labstate, netns, sdn, topology
from lab.labstate import LabPaths, ProcRef, Record

REPO_ROOT = Path(__file__).resolve().parent.parent
NEEDED = (
    "/usr/sbin/sshd",
    "/usr/bin/nc",
    "/usr/bin/dpkg-scanpackages",
    "/usr/bin/nsenter",
    "/usr/bin/unshare",
    "/usr/bin/python3",
    "/usr/bin/ssh-keygen",
)
Progress = Callable[[str], None]


class LabError(RuntimeError):
    """A clear, user-facing reason why the lab cannot do what was asked."""


@dataclass(frozen=True)
class UpResult:
    changed: bool
    inventory: Path
    api_url: str
    seconds: float
    repo: aptrepo.RepoResult | None


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network, mount and PID namespaces)")


def check_machine() -> None:
    missing = [p for p in NEEDED if not Path(p).exists()]
    if missing:
        raise LabError(
            f"missing {', '.join(missing)}: run `sudo bash lab/install-machine.sh` first"
        )


def running(p: LabPaths, topo: topology.Topology) -> bool:
    """The lab is complete and alive: supervisor, API, every netns and host init."""
    rec = Record.load(p.record)
    procs_ok = all(
        rec.proc(n) is not None and rec.proc(n).alive()  # type: ignore[union-attr]
        for n in ("supervisor", "api")
    )
    nets_ok = all(netns.netns_exists(n) for n in rec.netns) and bool(rec.netns)
    return procs_ok and nets_ok and all(host_running(h) for h in topo.names)


def host_running(name: str) -> bool:
    try:
        netns.init_pid(name)
    except RuntimeError:
        return False
    return True


OWNER = Path(
    "/run/rblab-owner"
)  # which state dir's lab owns the rbl-* namespaces (tmpfs: no reboot)


def live_owner(p: LabPaths) -> Path | None:
    """The state dir of another lab that is running on this machine (namespace names are global)."""
    try:
        other = Path(OWNER.read_text().strip())
    except OSError:
        return None
    if other == p.root:
        return None
    rec = Record.load(LabPaths(other).record)
    return other if any(r.alive() for r in rec.procs) else None


def stale_reason(p: LabPaths) -> str | None:
    rec = Record.load(p.record)
    leftovers = netns.lab_netns()
    if not leftovers and not any(r.alive() for r in rec.procs):
        # nothing of an earlier lab is left (e.g. the machine rebooted): forget its record
        if p.run.exists():
            shutil.rmtree(p.run)
        p.record.unlink(missing_ok=True)
        return None
    dead = [r.name for r in rec.procs if not r.alive()]
    return (
        f"a previous lab is incomplete (netns: {', '.join(leftovers) or 'none'}; "
        f"dead processes: {', '.join(dead) or 'none'})"
    )


def ensure_files(p: LabPaths, topo: topology.Topology) -> None:
    for d in (p.root, p.layers, p.run, p.logs, p.tools):
        d.mkdir(parents=True, exist_ok=True)
    os.chmod(p.root, 0o711)
    if not p.key.exists():
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "rblab-operator",
                "-f",
                str(p.key),
            ],
            check=True,
        )
    if not p.token.exists():
        fd = os.open(p.token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32) + "\n")
    hosttools.write_tools(p.tools, p.key.with_suffix(".pub"))
    cfg = {
        "state": str(p.root),
        "layers": str(p.layers),
        "repo": str(p.repo),
        "docker_repo": str(p.docker_repo),
        "tools": str(p.tools),
        "inventory": str(topo.inventory),
        "hosts": {
            h.name: {"role": h.role, "private_ip": h.private_ip, "public_ip": h.public_ip}
            for h in topo.hosts
        },
        "dropins": hosttools.DROPINS,
    }
    p.host_config.write_text(json.dumps(cfg, indent=1))


def seed_cloud(p: LabPaths, topo: topology.Topology) -> None:
    from lab.fakecloud.state import SeedFloatingIP, SeedServer, seed

    seed(
        p.cloud_state,
        servers=[
            SeedServer(h.name, h.public_ip, {"role": h.role, "lab": "rblab"}) for h in topo.hosts
        ],
        floating_ips=[SeedFloatingIP(topo.floating_ip_name, topo.floating_ip)],
    )


def _spawn(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=fh,
            close_fds=True,
            start_new_session=True,
            cwd=REPO_ROOT,
            env=env,
        )


def _wait(what: str, ok: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ok():
        if time.monotonic() > deadline:
            raise LabError(
                f"timed out after {timeout:.0f}s waiting for {what} (logs: "
                f"{labstate.paths().logs}); clean up with `inv lab.down`"
            )
        time.sleep(0.1)


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def start_api(p: LabPaths, rec: Record) -> None:
    argv = [
        sys.executable,
        "-m",
        "lab.fakecloud",
        "serve",
        "--state",
        str(p.cloud_state),
        "--token-file",
        str(p.token),
        "--listen",
        f"127.0.0.1:{topology.API_ADMIN_PORT}:admin",
        "--listen",
        f"{topology.INET_NS}={topology.API_IP}:80",
        "--on-change",
        "lab.sdn:apply_state",
    ]
    env = {k: v for k, v in os.environ.items() if "TOKEN" not in k} | {"RBLAB_STATE": str(p.root)}
    proc = _spawn(argv, p.logs / "api.log", env)
    rec.add_proc(ProcRef.of("api", proc.pid))
    rec.save(p.record)
    _wait(
        "the API on 127.0.0.1:8780",
        lambda: proc.poll() is None and _port_open("127.0.0.1", topology.API_ADMIN_PORT),
        20,
    )


def start_supervisor(p: LabPaths, rec: Record) -> None:
    env = {k: v for k, v in os.environ.items() if "TOKEN" not in k} | {"RBLAB_STATE": str(p.root)}
    proc = _spawn(
        [sys.executable, "-m", "lab.supervisor", "--config", str(p.host_config)],
        p.logs / "supervisor.log",
        env,
    )
    rec.add_proc(ProcRef.of("supervisor", proc.pid))
    rec.save(p.record)


def sshd_listening(name: str) -> bool:
    r = netns.run(
        "ip", "netns", "exec", topology.host_ns(name), "ss", "-Hltn", "sport = :22", check=False
    )
    return bool(r.stdout.strip())


def host_pubkey(p: LabPaths, name: str) -> str | None:
    f = p.host_layer(name) / "etc.upper/ssh/ssh_host_ed25519_key.pub"
    if not f.exists():
        return None
    parts = f.read_text().split()
    return " ".join(parts[:2]) if len(parts) >= 2 else None


def write_known_hosts(p: LabPaths, topo: topology.Topology) -> None:
    lines = []
    for h in topo.hosts:
        key = host_pubkey(p, h.name)
        if key:
            lines.append(f"{h.public_ip},{h.private_ip},{h.name} {key}")
    p.known_hosts.write_text("\n".join(lines) + "\n")


def write_inventory(p: LabPaths, topo: topology.Topology) -> Path:
    """The inventory the runbook uses: lab/hosts.yaml, or a copy pointing at a non-default state
    dir."""
    data = yaml.safe_load(topo.inventory.read_text())
    data["ssh"]["identity"] = str(p.key)
    data["ssh"]["known_hosts"] = str(p.known_hosts)
    # the CNI manifest stand-in ships with this checkout: an absolute file URL of it
    manifest = Path(__file__).resolve().parent / "standins" / "manifests"
    cni = data["kubernetes"].get("cni", "weave")
    name = {
        "weave": "weave-daemonset-k8s.yaml",
        "calico": "calico.yaml",
        "flannel": "kube-flannel.yml",
    }[cni]
    data["kubernetes"].setdefault("cni_manifest_url", (manifest / name).as_uri())
    out = p.root / "hosts.yaml"
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _boot_ok(p: LabPaths, name: str) -> bool:
    """True once the host's init runs; raises when it keeps failing (boot loop), with its log's
    tail."""
    try:
        boots = int(p.init_pid_file(name).read_text().split()[2])
    except (OSError, ValueError, IndexError):
        boots = 0
    if boots >= 3:
        log = p.logs / f"{name}.log"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:]) if log.exists() else ""
        raise LabError(
            f"host {name} does not boot (boot {boots}); {log}:\n{tail}\n"
            "clean up with `inv lab.down`"
        )
    return host_running(name) and Path(p.host_layer(name) / "etc.upper/rblab/first-boot").exists()


def _ready(p: LabPaths, name: str, *, sshd: bool) -> Callable[[], bool]:
    def ok() -> bool:
        if not _boot_ok(p, name):
            return False
        return not sshd or (sshd_listening(name) and host_pubkey(p, name) is not None)

    return ok


def up(progress: Progress = lambda _m: None, *, timeout: float = 90) -> UpResult:
    require_root()
    t0 = time.monotonic()
    p, topo = labstate.paths(), topology.load()
    api_url = f"http://127.0.0.1:{topology.API_ADMIN_PORT}/v1"
    if running(p, topo):
        return UpResult(False, write_inventory(p, topo), api_url, time.monotonic() - t0, None)
    other = live_owner(p)
    if other is not None:
        raise LabError(
            f"a lab with state dir {other} is running; only one lab fits a machine "
            f"(`RBLAB_STATE={other} inv lab.down` first)"
        )
    reason = stale_reason(p)
    if reason:
        raise LabError(f"{reason}; run `inv lab.down` first, then `inv lab.up`")
    check_machine()
    progress("state dir, keys, token, host tools")
    ensure_files(p, topo)
    progress("apt repository")
    repo = aptrepo.build(p.apt_cache, p.repo, k8s_version=topo.k8s_version)
    if topo.k8s_version is not None:
        aptrepo.build_docker(p.docker_repo, p.docker_key, topo.k8s_version)
    seed_cloud(p, topo)
    rec = Record(started=time.time())
    rec.save(p.record)
    OWNER.write_text(f"{p.root}\n")
    progress("namespaces and links")
    netns.build_network(topo, rec)
    rec.save(p.record)
    progress("simulated API")
    start_api(p, rec)
    sdn.apply_from_file()
    progress("hosts")
    start_supervisor(p, rec)
    for h in topo.names:
        progress(f"waiting for {h} (init, sshd)")
        _wait(f"host {h} init", _ready(p, h, sshd=False), timeout)
        _wait(f"host {h} sshd", _ready(p, h, sshd=True), timeout)
    write_known_hosts(p, topo)
    return UpResult(True, write_inventory(p, topo), api_url, time.monotonic() - t0, repo)


def down(progress: Progress = lambda _m: None, *, purge: bool = False) -> list[str]:
    """Remove what `up` created; keep layers and apt cache unless `purge`. Idempotent."""
    require_root()
    p = labstate.paths()
    rec = Record.load(p.record)
    done: list[str] = []
    other = live_owner(p)
    if other is not None:
        if rec.empty():
            return done  # nothing of ours; the namespaces belong to the lab of `other`
        raise LabError(
            f"the lab namespaces belong to the running lab of {other}; not touching them"
        )
    sup = rec.proc("supervisor")
    if sup is not None:
        progress("stopping hosts (supervisor)")
        if sup.stop(timeout=45):
            done.append(f"stopped supervisor {sup.pid}")
    # inits left by a crashed supervisor: recorded in run/<host>.init (every host of the lab that
    # ran, whichever topology it was built from)
    for f in sorted(p.run.glob("*.init")) if p.run.is_dir() else []:
        h = f.name.removesuffix(".init")
        try:
            pid, start = (int(x) for x in f.read_text().split()[:2])
        except (OSError, ValueError):
            continue
        if ProcRef(f"init-{h}", pid, start).stop(timeout=10):
            done.append(f"stopped init of {h} ({pid})")
    api = rec.proc("api")
    if api is not None and api.stop(timeout=10):
        done.append(f"stopped API {api.pid}")
    progress("namespaces")
    for ns in sorted(set(rec.netns) | set(netns.lab_netns())):
        # processes started inside a lab namespace (e.g. a probe), never outside
        for pid in netns.netns_pids(ns):
            try:
                os.kill(pid, 9)
                done.append(f"killed leftover pid {pid} in {ns}")
            except ProcessLookupError:
                pass
        netns.delete_netns(ns)
        done.append(f"deleted netns {ns}")
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4]
        if mnt.startswith(str(p.root) + "/") or mnt == str(p.root):
            subprocess.run(["umount", "-l", mnt], check=False)
            done.append(f"unmounted {mnt}")
    if p.run.exists():
        shutil.rmtree(p.run)
    p.record.unlink(missing_ok=True)
    OWNER.unlink(missing_ok=True)
    if purge and p.root.exists():
        shutil.rmtree(p.root)
        done.append(f"purged {p.root}")
    return done
