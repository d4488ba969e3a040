"""Invoke collection `lab`: `inv lab.up`, `inv lab.status`, `inv lab.down` (imported by the repo's
tasks.py)."""

from __future__ import annotations

import json
import time

from invoke.collection import Collection
from invoke.context import Context
from invoke.exceptions import Exit
from invoke.tasks import task
from rich.console import Console
from rich.table import Table

from lab import control, labstate, netns, topology

console = Console()


def _progress() -> tuple[control.Progress, object]:
    status = console.status("lab")
    status.start()

    def step(msg: str) -> None:
        status.update(f"[bold]lab:[/] {msg}")

    return step, status


@task(
    help={"install": "run lab/install-machine.sh first (apt packages the lab needs on the machine)"}
)
def up(c: Context, install: bool = False) -> None:
    """Build and start the namespace lab (idempotent: a running lab is left as it is)."""
    try:
        if install:
            netns.ensure_machine()
        step, status = _progress()
        try:
            res = control.up(step)
        finally:
            status.stop()  # type: ignore[attr-defined]
    except (control.LabError, RuntimeError) as e:
        raise Exit(f"lab.up: {e}", code=2) from e
    p = labstate.paths()
    if res.changed:
        repo = res.repo
        extra = (
            f"; apt repo {repo.debs} debs {'downloaded' if repo.downloaded else 'cached'}"
            if repo
            else ""
        )
        console.print(f"[green]lab is up[/] in {res.seconds:.1f}s{extra}")
    else:
        console.print("[yellow]lab already running: nothing changed[/]")
    console.print(f"inventory:  {res.inventory}")
    console.print(f"API:        {res.api_url}  (in the lab: http://{topology.API_IP}/v1)")
    console.print(f'token:      export RBLAB_HCLOUD_TOKEN="$(cat {p.token})"')
    console.print("a host:     ip netns exec rbl-k8slb01 ...   (network only)   or")
    console.print(
        "            nsenter -t \"$(cut -d' ' -f1 "
        + str(p.run)
        + '/k8slb01.init)" -a  (all namespaces)'
    )
    console.print(
        f"ssh:        ssh -i {p.key} -o UserKnownHostsFile={p.known_hosts} "
        f"-o ProxyCommand='ip netns exec rbl-op nc %h %p' root@203.0.113.14"
    )


@task
def status(c: Context) -> None:
    """Show the lab: hosts (init PID, boots, sshd), VIP and floating IP routes and who holds them
    per
    API."""
    p, topo = labstate.paths(), topology.load()
    rec = labstate.Record.load(p.record)
    procs = ", ".join(
        f"{r.name} {r.pid} {'alive' if r.alive() else '[red]dead[/]'}" for r in rec.procs
    )
    console.print(f"state {p.root}; processes: {procs or 'none (lab down)'}")
    table = Table(box=None)
    for col in ("host", "role", "public", "private", "init pid", "boots", "sshd"):
        table.add_column(col, no_wrap=True)
    state = json.loads(p.cloud_state.read_text()) if p.cloud_state.exists() else {}
    servers = {s["name"]: s for s in state.get("servers", [])}
    for h in topo.hosts:
        try:
            parts = p.init_pid_file(h.name).read_text().split()
            pid, boots = parts[0], parts[2]
        except (OSError, IndexError):
            pid, boots = "-", "-"
        alive = control.host_running(h.name)
        sshd = (
            control.sshd_listening(h.name)
            if netns.netns_exists(topology.host_ns(h.name))
            else False
        )
        priv = ", ".join(pn["ip"] for pn in servers.get(h.name, {}).get("private_net", [])) or "-"
        table.add_row(
            h.name,
            h.role,
            h.public_ip,
            priv,
            pid if alive else f"[red]{pid}[/]",
            boots,
            "[green]up[/]" if sshd else "[red]down[/]",
        )
    console.print(table)
    routes = Table(box=None)
    for col in ("address", "API holder", "route in lab"):
        routes.add_column(col, no_wrap=True)
    holders = {
        a: s["name"]
        for s in state.get("servers", [])
        for pn in s.get("private_net", [])
        for a in pn.get("alias_ips", [])
    }
    by_id = {s["id"]: s["name"] for s in state.get("servers", [])}
    fip = next((f for f in state.get("floating_ips", []) if f["ip"] == topo.floating_ip), None)
    for addr, ns, holder in (
        (topo.vip, topology.ROUTER_NS, holders.get(topo.vip, "-")),
        (topo.floating_ip, topology.INET_NS, by_id.get(fip.get("server")) if fip else "-"),
    ):
        r = (
            netns.run("ip", "-n", ns, "route", "show", f"{addr}/32", check=False)
            if netns.netns_exists(ns)
            else None
        )
        routes.add_row(addr, holder or "-", (r.stdout.strip() if r else "") or "-")
    console.print(routes)


@task(
    help={
        "purge": "also delete the host layers, apt cache, keys, token and API state (the state dir)"
    }
)
def down(c: Context, purge: bool = False) -> None:
    """Stop the lab: end recorded processes, delete its namespaces (keeps layers and apt cache)."""
    t0 = time.monotonic()
    step, st = _progress()
    try:
        done = control.down(step, purge=purge)
    except control.LabError as e:
        raise Exit(f"lab.down: {e}", code=2) from e
    finally:
        st.stop()  # type: ignore[attr-defined]
    for line in done:
        console.print(f"  {line}")
    console.print(
        f"[green]lab is down[/] ({time.monotonic() - t0:.1f}s)"
        + ("" if done else ": nothing was running")
    )


ns = Collection("lab", up, status, down)
