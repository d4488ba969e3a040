"""`inv status` on one screen: hosts, the LB pair, the API through the VIP, the nodes.

`run_status` connects (read-only hosts), collects a `ClusterStatus`, renders it and returns the
exit code: 0 healthy, 1 degraded (every problem named). Tables go through the Ui's masker.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text

from ..cloud.api import CloudTarget
from ..core.console import Ui
from ..core.remote import Host, connect_all
from ..core.screen import fitted_table
from ..inventory import Inventory
from .certexpiry import WARN_DAYS, soonest
from .clusterfacts import CloudLookup, cloud_lookup, collect_status, firewall_view
from .clusterstatus import ClusterStatus, FirewallView, short, uptime_text

GOOD, BAD, MEH = "green", "bold red", "yellow"
Cell = str | Text


def _held(flag: bool) -> Text:
    return Text("yes", style=GOOD) if flag else Text("no")


def _table(
    ui: Ui,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    caption: str = "",
    whole: Sequence[str] = (),
    drop: Sequence[str] = (),
) -> None:
    """A table fitted to the screen: `whole` columns (names, IPs) are never cut, `drop`
    columns (least valuable first) are left out while a row would not fit on one line."""
    table = fitted_table(
        ui.console,
        ui.masker.mask(title),
        columns,
        rows,
        whole=whole,
        drop=drop,
        caption=ui.masker.mask(caption),
        cell=lambda v: Text(ui.masker.mask(v)),
    )
    ui.console.print(table)


def _hosts(ui: Ui, st: ClusterStatus, verbose: bool) -> None:
    rows: list[list[Cell]] = []
    for h in st.hosts:
        if not h.reachable:
            err = h.error if verbose else short(h.error, 60, host=h.name)
            rows.append(
                [h.name, h.role, h.private_ip, Text(f"no: {err}", style=BAD), "", "", "", ""]
            )
            continue
        kubelet: Cell = ""
        if h.kubelet:
            kubelet = Text(h.kubelet, style=GOOD if h.kubelet == "active" else BAD)
        rows.append(
            [
                h.name,
                h.role,
                h.private_ip,
                Text("yes", style=GOOD),
                h.os if verbose else h.os.replace(" GNU/Linux", ""),
                h.kernel,
                uptime_text(h.uptime_s),
                kubelet,
            ]
        )
    reachable = sum(h.reachable for h in st.hosts)
    _table(
        ui,
        f"hosts ({reachable}/{len(st.hosts)} reachable over SSH)",
        ["host", "role", "private IP", "SSH", "OS", "kernel", "uptime", "kubelet"],
        rows,
        whole=("host", "role", "private IP"),
        drop=() if verbose else ("kernel", "uptime"),
    )


def _lbs(ui: Ui, st: ClusterStatus, verbose: bool) -> None:
    rows: list[list[Cell]] = []
    for n in st.lbs:
        if not n.reachable:
            rows.append([n.name, Text("UNREACHABLE", style=BAD), "", "", "", ""])
            continue
        up = [s for s, state in n.backends if state.startswith("UP")]
        down = [
            f"{s.split('/', 1)[-1]} {state}"
            for s, state in n.backends
            if not state.startswith("UP")
        ]
        backends = Text(f"{len(up)}/{len(n.backends)} UP", style=GOOD if not down else BAD)
        if down:
            backends.append(f" ({', '.join(down)})")
        rows.append(
            [
                n.name,
                Text(n.heartbeat, style=GOOD if n.heartbeat == "running" else BAD),
                _held(n.holds_vip),
                _held(n.holds_fip),
                Text(n.haproxy, style=GOOD if n.haproxy == "active" else BAD),
                backends,
            ]
        )
    routes = f"cloud API routes: VIP → {st.api_vip}, floating IP → {st.api_fip}"
    if st.api_vip == "?" and st.api_fip == "?":
        routes = "cloud API routes: not known" + (
            " (see the warning below)" if st.cloud_note else ""
        )
    _table(
        ui,
        "load balancers",
        ["node", "heartbeat", "VIP here", "floating IP here", "haproxy", "backends"],
        rows,
        caption=routes,
        whole=("node",),
    )
    if verbose:
        for n in st.lbs:
            if n.backends:
                _table(ui, f"{n.name} backends", ["server", "status"], n.backends)


def _api(ui: Ui, st: ClusterStatus, verbose: bool) -> None:
    rows: list[list[Cell]] = []
    for c in st.checks:
        if c.ok is None:
            result = Text(c.detail, style=MEH)
        else:
            result = Text(c.detail if verbose else short(c.detail, 70), style=GOOD if c.ok else BAD)
        ms = f"{c.seconds * 1000:.0f} ms" if c.seconds is not None and c.code else ""
        rows.append([c.via, c.probe_host, result, str(c.code or ""), ms, c.tls, c.server_version])
    _table(
        ui,
        "API server health (GET /readyz)",
        ["through", "asked from", "result", "HTTP", "latency", "TLS", "server version"],
        rows,
        whole=("through", "asked from"),
        drop=() if verbose else ("server version", "latency"),
    )


def _nodes(ui: Ui, st: ClusterStatus) -> None:
    nv = st.nodes
    if nv.error and not nv.nodes:
        ui.print(f"nodes: {nv.error}", style=MEH if nv.not_initialised else BAD)
        return
    rows: list[list[Cell]] = []
    for n in nv.nodes:
        ready = (
            Text("Ready", style=GOOD)
            if n.ready == "True"
            else Text("NotReady" if n.ready == "False" else n.ready, style=BAD)
        )
        note = n.reason
        if not n.inventory_role:
            note = "not in the inventory"
        elif n.internal_ip and n.internal_ip != st.inventory_ips.get(n.name, n.internal_ip):
            note = (note + "; " if note else "") + "IP differs from the inventory"
        rows.append(
            [
                n.name,
                ready,
                ",".join(n.roles) or "<none>",
                n.version,
                n.internal_ip,
                n.inventory_role or "-",
                Text(note, style=MEH if note else ""),
            ]
        )
    for m in nv.missing:
        rows.append(
            [
                m,
                Text("missing", style=BAD),
                "",
                "",
                st.inventory_ips.get(m, ""),
                st.inventory_roles.get(m, ""),
                Text("in the inventory, not in the cluster", style=BAD),
            ]
        )
    n_ready = sum(n.ready == "True" for n in nv.nodes)
    _table(
        ui,
        f"nodes ({n_ready}/{len(nv.nodes)} Ready; kubectl on {nv.source})",
        ["node", "status", "roles", "kubelet", "internal IP", "inventory role", "note"],
        rows,
        whole=("node", "internal IP"),
        drop=("inventory role", "kubelet"),
    )


def _certs(ui: Ui, st: ClusterStatus) -> None:
    rows: list[list[Cell]] = []
    for h in st.hosts:
        first = soonest(list(h.certs))
        if first is None:
            continue
        style = BAD if first.days < 0 else MEH if first.days < WARN_DAYS else GOOD
        rows.append([h.name, first.name, first.expires, Text(first.residual, style=style)])
    if rows:
        _table(
            ui,
            "certificates (the soonest per control plane)",
            ["control plane", "certificate", "expires", "residual"],
            rows,
        )


def _firewalls(ui: Ui, st: ClusterStatus) -> None:
    fw = st.firewalls
    if fw is None or fw.error:
        return  # not asked (--no-cloud), or unknown: a warning says why
    rows: list[list[str | Text]] = [
        [r.name, str(r.rules), ", ".join(r.servers)] for r in fw.firewalls
    ]
    if fw.uncovered:
        rows.append([Text("none", style=BAD), "-", ", ".join(fw.uncovered)])
    _table(
        ui,
        "cloud firewalls (inbound rules; servers covered)",
        ["firewall", "rules", "servers"],
        rows,
    )


def render(ui: Ui, st: ClusterStatus, *, title: str, verbose: bool = False) -> int:
    """Print the screen; return 0 (healthy) or 1 (degraded)."""
    ui.console.rule(Text(ui.masker.mask(title), style="bold"))
    _hosts(ui, st, verbose)
    _lbs(ui, st, verbose)
    _api(ui, st, verbose)
    _nodes(ui, st)
    _certs(ui, st)
    _firewalls(ui, st)
    for w in st.warnings():
        ui.warn(w)
    problems = st.problems()
    if problems:
        ui.print(f"degraded: {len(problems)} problem(s)", style=BAD)
        for p in problems:
            ui.print(f"  - {p}", style="red")
        ui.print(f"status: degraded problems={len(problems)}")
        return 1
    holder = next(n.name for n in st.lbs if n.holds_vip)
    vip = st.checks[0]
    ms = f" in {vip.seconds * 1000:.0f} ms" if vip.seconds is not None else ""
    ui.print(
        f"healthy: {len(st.hosts)} hosts reachable, {holder} holds the VIP, API ready through "
        f"the VIP{ms}, {len(st.nodes.nodes)}/{len(st.nodes.nodes)} nodes Ready",
        style=GOOD,
    )
    ui.print("status: healthy problems=0")
    return 0


def with_cloud_facts(inv: Inventory, ui: Ui, hosts: dict[str, Host]) -> Inventory:
    """The LBs' interfaces and public IPs from the cloud when the inventory leaves them out
    (runbook.cloud.discover); a disagreement is a warning here (status only reads)."""
    from ..cloud.discover import DiscoveryFailed, discover, needs_discovery

    if not needs_discovery(inv):
        return inv  # status does not verify given names (validate --online does)
    try:
        return discover(inv, ui, hosts)
    except DiscoveryFailed as exc:
        for p in exc.problems:
            ui.warn(p)
        return inv


def run_status(
    inv: Inventory,
    ui: Ui,
    *,
    accept_new_host_keys: bool = False,
    ask_cloud: bool = True,
    cloud: CloudLookup | None = None,
    firewalls: Callable[[], FirewallView] | None = None,
    factory: Callable[..., Host] | None = None,
) -> int:
    """Connect every host read-only (dry-run hosts), collect, render; the exit code (0/1).

    `cloud`: who the API routes the VIP/floating IP to (default: asked with the inventory's
    token, unless `ask_cloud` is false); `firewalls`: the cloud firewalls of the servers (by
    default asked with the same client); `factory`: Host maker for tests (see `connect_all`).
    """
    if cloud is None and ask_cloud:

        def client() -> object:
            if not made:
                made.append(CloudTarget.from_inventory(inv, dry_run=True, ui=ui).client)
            return made[0]

        made: list[object] = []
        cloud = cloud_lookup(inv, client)
        if firewalls is None:
            firewalls = lambda: firewall_view(inv, client)  # noqa: E731
    hosts = connect_all(
        inv,
        list(inv.hosts),
        dry_run=True,
        accept_new_host_keys=accept_new_host_keys,
        log=ui.command,
        factory=factory,
    )
    try:
        inv = with_cloud_facts(inv, ui, hosts)
        with ui.status("asking the hosts, the load balancers and the API …"):
            st = collect_status(inv, hosts, cloud=cloud, firewalls=firewalls)
    finally:
        for h in hosts.values():
            h.close()
    title = f"status of {inv.cluster.name}: API endpoint {inv.control_plane_endpoint}"
    return render(ui, st, title=title, verbose=ui.verbose)
