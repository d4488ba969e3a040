"""The load-balancer tier's files, rendered from the inventory (pure functions, no host access).

The steps (heartbeat, haproxy) install what these functions return; tests render
them without any host. Everything the inventory holds comes from the inventory: addresses,
interfaces, names, timings. Secrets (the Heartbeat key, the API token) are parameters, because
they live on the hosts, never in ``hosts.yaml``; files holding them are marked ``secret`` so
plans show that they change, never their content.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from runbook.inventory import API_PORT, HostSpec, Inventory
from runbook.render.templates import render, source

HA_CF_PATH = "/etc/ha.d/ha.cf"
AUTHKEYS_PATH = "/etc/ha.d/authkeys"
HARESOURCES_PATH = "/etc/ha.d/haresources"
FAILOVER_SCRIPT_PATH = "/etc/ha.d/resource.d/hcloud-failover"  # the launcher Heartbeat runs
FAILOVER_LIB_DIR = "/usr/local/lib/hcloud-failover"
FAILOVER_MODULE_PATH = f"{FAILOVER_LIB_DIR}/hcloud_failover.py"  # the script, run from its .pyc
FAILOVER_ENV_PATH = "/etc/hcloud-failover.env"
REASSERT_SERVICE_PATH = "/etc/systemd/system/hcloud-reassert.service"
REASSERT_TIMER_PATH = "/etc/systemd/system/hcloud-reassert.timer"
WATCHDOG_PATH = "/usr/local/sbin/haproxy-watchdog"
WATCHDOG_CLOCK_PATH = "/usr/local/sbin/haproxy-watchdog-clock"
WATCHDOG_SERVICE_PATH = "/etc/systemd/system/haproxy-watchdog.service"
HAPROXY_CFG_PATH = "/etc/haproxy/haproxy.cfg"
LOGROTATE_PATH = "/etc/logrotate.d/heartbeat"  # the heartbeat package's rule, replaced
# resource-agents' shell library, sourced by Heartbeat's scripts (mach_down, req_resource, ...)
SHELLFUNCS_PATH = "/etc/ha.d/shellfuncs"
MANAGED_MARK = "managed by the runbook"  # in the first line of each file the runbook writes
# for resources.File(validate=...): checked on the new content before it replaces the old one
HAPROXY_VALIDATE = "haproxy -c -q -f %s"
LOG_FACILITY = "local0"
HEARTBEAT_PID_PATH = "/var/run/heartbeat.pid"  # Debian's heartbeat writes its PID here
WATCHDOG_GRACE_S = 3  # haproxy down this long after one restart attempt → hb_standby
WATCHDOG_INTERVAL_S = 1
WATCHDOG_CUT_MARGIN_S = 3  # an active peer silent from here this long past deadtime → re-assert
WATCHDOG_WEDGE_MARGIN_S = 60  # "transition" this long past two failover deadlines → wedged
# "transition" with the script idle, the peer active and the cloud routing as the node has the
# VIP (both addresses here on the holder, neither on the other): wedged this long past initdead
# and the failover deadline (`wedge_idle_after`)
WATCHDOG_WEDGE_IDLE_MARGIN_S = 20
# the peer dead, "transition" without the VIP this long → a stalled takeover: run its start (a
# normal takeover's script holds its lock or has the VIP on well within it; a start that comes
# anyway waits for that run's lock and finds the work done)
WATCHDOG_STRANDED_S = 1


@dataclass(frozen=True)
class RenderedFile:
    """One file for a host: where, what, and with which owner/mode; ``secret``: mask in plans."""

    path: str
    content: str
    mode: int = 0o644
    owner: str = "root"
    group: str = "root"
    secret: bool = False


# ----- helpers ------------------------------------------------------------------------------
def lb_hosts(inv: Inventory) -> list[HostSpec]:
    """The load balancers in inventory order (= Heartbeat's node order)."""
    return inv.hosts_with_role("lb")


def _lb(inv: Inventory, host_name: str) -> HostSpec:
    host = inv.hosts.get(host_name)
    if host is None or host.role != "lb":
        raise ValueError(f"{host_name!r} is not a load balancer of the inventory")
    return host


def _public_ip(host: HostSpec) -> IPv4Address:
    if host.public_ip is None:
        raise ValueError(f"hosts.{host.name}.public_ip is required on lb hosts")
    return host.public_ip


def _peers(inv: Inventory, host_name: str) -> list[str]:
    return [h.name for h in lb_hosts(inv) if h.name != host_name]


def _check_secret(value: str, what: str) -> str:
    """Refuse values that would break the file's syntax; the message never shows the value."""
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise ValueError(f"the {what} must be non-empty, without whitespace or control characters")
    return value


def _common(inv: Inventory) -> dict[str, Any]:
    return {"inventory_file": inv.path.name, "cluster": inv.cluster.name}


# ----- Heartbeat ----------------------------------------------------------------------------
def heartbeat_time(seconds: float) -> str:
    """A time as ha.cf takes it: whole seconds bare (`1`), a fraction in milliseconds (`250ms`,
    Heartbeat's own suffix)."""
    if float(seconds).is_integer():
        return str(int(seconds))
    return f"{round(seconds * 1000)}ms"


def ha_cf(inv: Inventory) -> str:
    """``/etc/ha.d/ha.cf``: identical on every LB (both paths list every LB; Heartbeat skips
    its own address), ``auto_failback`` explicit, ``crm off``, syslog, no debug."""
    lbs = lb_hosts(inv)
    lb = inv.load_balancer
    hb = lb.heartbeat
    return render(
        "ha.cf.j2",
        **_common(inv),
        logfacility=LOG_FACILITY,
        logfile=hb.logfile,
        keepalive=heartbeat_time(hb.keepalive),
        warntime=hb.effective_warntime,
        deadtime=hb.deadtime,
        initdead=hb.effective_initdead,
        udpport=hb.udpport,
        interface=lb.interface,
        public_interface=lb.public_interface,
        private_ips=[str(h.private_ip) for h in lbs],
        public_ips=[str(_public_ip(h)) for h in lbs],
        auto_failback=hb.auto_failback,
        nodes=[h.name.lower() for h in lbs],
    )


def authkeys(inv: Inventory, *, authkey: str) -> str:
    """``/etc/ha.d/authkeys`` (mode 0600): one key, the inventory's digest method."""
    return render(
        "authkeys.j2",
        method=inv.load_balancer.heartbeat.auth,
        secret=_check_secret(authkey, "Heartbeat auth key"),
    )


def haresources(inv: Inventory) -> str:
    """``/etc/ha.d/haresources``: the primary and the one resource, the script (see the
    template; the addresses and their interfaces are in the script's env file)."""
    return render("haresources.j2", primary=inv.primary.name.lower())


def failover_script() -> str:
    """The resource script (static: all its settings come from the env file), installed as a
    module that :func:`failover_launcher` imports."""
    return source("hcloud-failover")


def failover_launcher() -> str:
    """What Heartbeat runs as the resource script: it imports the script from its compiled
    copy (a takeover runs it twice on its critical path; compiling it costs each run ~13 ms)."""
    return source("hcloud-failover-launcher")


def heartbeat_files(inv: Inventory, host_name: str, *, authkey: str) -> list[RenderedFile]:
    """Everything Heartbeat reads on ``host_name``: ha.cf, authkeys, haresources, the script
    (its module first: the launcher imports it)."""
    _lb(inv, host_name)
    return [
        RenderedFile(HA_CF_PATH, ha_cf(inv)),
        RenderedFile(AUTHKEYS_PATH, authkeys(inv, authkey=authkey), mode=0o600, secret=True),
        RenderedFile(HARESOURCES_PATH, haresources(inv)),
        RenderedFile(FAILOVER_MODULE_PATH, failover_script()),
        RenderedFile(FAILOVER_SCRIPT_PATH, failover_launcher(), mode=0o755),
    ]


def logrotate_files(inv: Inventory, host_name: str) -> list[RenderedFile]:
    """With ``heartbeat.logfile`` set: the rotation of that file, which Heartbeat holds open
    (``copytruncate``; it replaces the package's rule). Without it: nothing (the package's rule
    stays as it is; see :func:`package_logrotate_rule`)."""
    _lb(inv, host_name)
    logfile = inv.load_balancer.heartbeat.logfile
    if not logfile:
        return []
    rule = render("logrotate-heartbeat.j2", **_common(inv), logfile=logfile)
    return [RenderedFile(LOGROTATE_PATH, rule)]


def package_logrotate_rule() -> RenderedFile:
    """The heartbeat package's own ``/etc/logrotate.d/heartbeat`` (Debian 12, verbatim): what a
    rule the runbook wrote goes back to once ``heartbeat.logfile`` is unset, so dpkg sees its
    conffile unchanged again. A rule the runbook did not write (its first line lacks
    :data:`MANAGED_MARK`) is left alone."""
    return RenderedFile(LOGROTATE_PATH, source("logrotate-heartbeat-package"))


def clustermsg_override() -> str:
    """One line for the end of :data:`SHELLFUNCS_PATH`: ``ha_clustermsg`` (how Heartbeat's shell
    scripts send it a message through its FIFO) defined again, writing each message with one
    ``write(2)``. The package's version pipes ``>>>``, the body and ``<<<`` through a ``cat`` that
    passes on whatever it has read, so a message can reach the FIFO in pieces; another writer's
    message between two pieces (a takeover's ``mach_down`` beside the child acquiring the group)
    makes Heartbeat's reader drop both ("NV failure (msgfromsteam)") and the takeover stalls.
    ``dd iflag=fullblock`` collects the whole message (far below ``PIPE_BUF``, 4096 bytes, which
    a FIFO writes atomically) before its one write. A later definition wins in ``sh``: the
    package's lines stay as they are."""
    lines = [ln for ln in source("ha-clustermsg.sh").splitlines() if not ln.startswith("#")]
    if len(lines) != 1:
        raise ValueError("files/ha-clustermsg.sh must hold one line besides its comments")
    return lines[0]


# the override's line (MANAGED_MARK has no `re` specials)
CLUSTERMSG_MATCH = rf"^ha_clustermsg\(\) .*{MANAGED_MARK}"


# ----- failover settings, re-assert timer, HAProxy watchdog ---------------------------------
def failover_env(inv: Inventory, host_name: str, *, token: str) -> str:
    """``/etc/hcloud-failover.env`` (root 0600): the script's settings, the token among them."""
    _lb(inv, host_name)
    hc = inv.hcloud
    return render(
        "hcloud-failover.env.j2",
        token=_check_secret(token, "API token"),
        endpoint=hc.lb_endpoint,
        self_name=host_name,
        peers=_peers(inv, host_name),
        primary=inv.primary.name.lower(),
        network=hc.network.name,
        vip=str(inv.load_balancer.vip),
        floating_ip=inv.load_balancer.floating_ip.name,
        vip_interface=inv.load_balancer.interface,
        floating_ip_address=str(inv.load_balancer.floating_ip.address),
        floating_ip_interface=inv.load_balancer.public_interface,
        service_port=API_PORT,
        deadline=f"{hc.failover_deadline:g}",
        timeout=f"{hc.timeout:g}",
        logfile=inv.load_balancer.heartbeat.logfile,
    )


def failover_files(inv: Inventory, host_name: str, *, token: str) -> list[RenderedFile]:
    """The env file and the re-assert service + timer (enable ``hcloud-reassert.timer``)."""
    interval = inv.load_balancer.reassert_interval
    return [
        RenderedFile(
            FAILOVER_ENV_PATH, failover_env(inv, host_name, token=token), mode=0o600, secret=True
        ),
        RenderedFile(
            REASSERT_SERVICE_PATH,
            render(
                "hcloud-reassert.service.j2",
                env_path=FAILOVER_ENV_PATH,
                script_path=FAILOVER_SCRIPT_PATH,
            ),
        ),
        RenderedFile(REASSERT_TIMER_PATH, render("hcloud-reassert.timer.j2", interval=interval)),
    ]


def wedge_idle_after(inv: Inventory) -> float:
    """Seconds in "transition" with nothing at work before the watchdog restarts Heartbeat: past
    `initdead` (a Heartbeat that starts up has had its peer's answer by then) and past the
    failover deadline (the longest a start may run on either node; the taker of a hand-over may
    hold the giver in transition meanwhile), plus a margin."""
    hb = inv.load_balancer.heartbeat
    return max(hb.effective_initdead, inv.hcloud.failover_deadline) + WATCHDOG_WEDGE_IDLE_MARGIN_S


def watchdog_files(inv: Inventory, host_name: str) -> list[RenderedFile]:
    """The HAProxy watchdog loop and its unit (enable ``haproxy-watchdog.service``)."""
    _lb(inv, host_name)
    unit = render(
        "haproxy-watchdog.service.j2",
        vip=str(inv.load_balancer.vip),
        peers=_peers(inv, host_name),
        public_interface=inv.load_balancer.public_interface,
        private_interface=inv.load_balancer.interface,
        peer_addresses=[str(inv.hosts[n].private_ip) for n in _peers(inv, host_name)],
        port=API_PORT,
        # a peer that cannot hear this node declares it dead after deadtime, then moves the
        # routing (about a second): only then does the re-assert find something to take off
        cut_after=inv.load_balancer.heartbeat.deadtime + WATCHDOG_CUT_MARGIN_S,
        # longer than any start or stop may take (Heartbeat is in transition meanwhile)
        wedge_after=f"{2 * inv.hcloud.failover_deadline + WATCHDOG_WEDGE_MARGIN_S:g}",
        # longer than a Heartbeat's start-up and than a start on the peer may take (a hand-over's
        # taker may hold the giver in transition while it moves the routing)
        wedge_idle_after=f"{wedge_idle_after(inv):g}",
        stranded_after=WATCHDOG_STRANDED_S,
        grace=WATCHDOG_GRACE_S,
        interval=WATCHDOG_INTERVAL_S,
        # the reference clock for a pause this node's clocks do not show: any answer of the
        # control planes' API carries their time
        clock_sources=[f"{h.private_ip}:{API_PORT}" for h in inv.hosts_with_role("control-plane")],
        clock_path=WATCHDOG_CLOCK_PATH,
        script_path=WATCHDOG_PATH,
        logfile=inv.load_balancer.heartbeat.logfile,
    )
    return [
        RenderedFile(WATCHDOG_PATH, source("haproxy-watchdog"), mode=0o755),
        RenderedFile(WATCHDOG_CLOCK_PATH, source("clock-watch"), mode=0o755),
        RenderedFile(WATCHDOG_SERVICE_PATH, unit),
    ]


# ----- HAProxy ------------------------------------------------------------------------------
def haproxy_context(inv: Inventory, host_name: str) -> dict[str, Any]:
    """The values ``haproxy.cfg.j2`` needs (exposed for tests and ``inv lb.status``)."""
    host = _lb(inv, host_name)
    lb = inv.load_balancer
    insecure = lb.insecure_api
    return {
        **_common(inv),
        "vip": str(lb.vip),
        "own_private_ip": str(host.private_ip),
        "floating_ip": str(lb.floating_ip.address),
        "network_range": str(inv.hcloud.network.ip_range),
        # 127.0.0.0/8 always: an empty allow-list still parses, and `inv status` (curl bound
        # to 127.0.0.1 on the holder) gets in; a local client without that bind has the
        # floating IP as its source and is refused like any unlisted address
        "public_allow": ["127.0.0.0/8", *(str(n) for n in lb.public_allow)],
        "api_port": API_PORT,
        "control_planes": [
            {"name": h.name, "ip": str(h.private_ip)} for h in inv.hosts_with_role("control-plane")
        ],
        "insecure": {"role": insecure.role, "port": insecure.port} if insecure.enabled else None,
    }


def haproxy_cfg(inv: Inventory, host_name: str) -> str:
    """``/etc/haproxy/haproxy.cfg`` for ``host_name`` (its own private IP is bound too)."""
    return render("haproxy.cfg.j2", **haproxy_context(inv, host_name))


def haproxy_files(inv: Inventory, host_name: str) -> list[RenderedFile]:
    """Install with ``validate=HAPROXY_VALIDATE``, then ``systemctl reload haproxy``."""
    return [RenderedFile(HAPROXY_CFG_PATH, haproxy_cfg(inv, host_name))]
