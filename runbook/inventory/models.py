"""Models of ``hosts.yaml`` (docs/inventory.md) and the problem type every refusal is reported in.

Models are frozen: the validated inventory is a value that every step reads and none changes.
Cross-field rules live in ``rules``; here are only the checks a single field can make.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from runbook.inventory.fields import (
    MAX_LIST,
    MIN_MINOR,
    VERSION_RE,
    Address,
    AnyNet,
    Deadline,
    DNSName,
    EnvName,
    EtcdMillis,
    FetchUrl,
    HbKeepalive,
    HbSeconds,
    Interval,
    IPv4,
    K8sName,
    Label,
    Name,
    Net,
    NetTimeout,
    OptIface,
    Port,
    SSHEndpoint,
    StrictBool,
    SubjectAltName,
    Url,
    Zone,
    parse_endpoint,
    show,
)

Role = Literal["control-plane", "lb", "worker"]
ROLES: tuple[str, ...] = get_args(Role)
API_PORT = 6443
# characters a heartbeat.logfile may not hold: `#` starts a comment in ha.cf; logrotate reads
# `*?[]` as a glob and `{}` as a rule's braces, and `"'\` as quoting
LOGFILE_SPECIAL = "#*?[]{}\"'\\"
# what ssh reads without -F: the user's file, then the system's (missing ones are skipped)
DEFAULT_SSH_CONFIGS: tuple[str, ...] = ("~/.ssh/config", "/etc/ssh/ssh_config")


@dataclass(frozen=True)
class Problem:
    """One finding: where (file and dotted key path) and why, printed as ``file: key: reason``."""

    file: str
    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {_cap(self.key, 100)}: {_cap(self.reason, 400)}"


def _cap(text: str, limit: int) -> str:
    """Keys and reasons quote the input; a hostile file must not flood the terminal."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InventoryError(Exception):
    """Bad input (exit code 2); ``problems`` holds every problem found, not only the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ClusterSpec(_Model):
    name: Label


class SSHSpec(_Model):
    """How SSH reaches the hosts. Paths stay strings; ``~`` is expanded when they are used.

    Note for operators: in YAML a bare ``~`` means null, so write ``~/.ssh/id_ed25519``.
    """

    user: Name = "root"
    port: Port = 22
    identity: str | None = None
    known_hosts: str = ".runbook/known_hosts"
    proxy_command: str | None = None  # OpenSSH ProxyCommand, %h and %p expanded (the lab uses it)
    connect_timeout: NetTimeout = 10.0
    # the ssh_config to read: None (left out) = ~/.ssh/config and /etc/ssh/ssh_config as ssh
    # reads them; a path = that file only (ssh -F); false (or "none", as ssh -F none) = none
    config_file: str | Literal[False] | None = None

    @field_validator("config_file", mode="before")
    @classmethod
    def _config_file(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str | bool):
            raise ValueError(f"expected a file path, or false (none); got {show(value)}")
        if value is True:
            raise ValueError(
                "true is the default (~/.ssh/config and /etc/ssh/ssh_config): leave the key out, "
                "give a file, or false (none) to read no ssh_config"
            )
        if isinstance(value, str):
            if value.strip().lower() == "none":
                return False
            if not value.strip():
                raise ValueError("is empty: leave the key out for ~/.ssh/config, or write none")
            if not value.isprintable():
                raise ValueError("contains control characters (a NUL, tab or newline)")
        return value

    @field_validator("proxy_command")
    @classmethod
    def _proxy_command_parses(cls, value: str | None) -> str | None:
        """paramiko splits it with shlex: an unbalanced quote would fail only when connecting."""
        if value is None:
            return value
        if not value.isprintable():
            raise ValueError("contains control characters (a NUL, tab or newline)")
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot be parsed as a command: {exc}") from None
        if not argv:
            raise ValueError("is empty; leave the key out for a direct connection")
        return value


class NetworkSpec(_Model):
    name: Name
    ip_range: Net
    subnet: Net
    zone: Zone


class HcloudSpec(_Model):
    """The Hetzner Cloud API; the token is read from ``token_env``, never from this file."""

    token_env: EnvName = "HCLOUD_TOKEN"
    endpoint: Url = "https://api.hetzner.cloud/v1"
    host_endpoint: Url | None = None  # the API URL as the LB hosts reach it (failover script)
    timeout: NetTimeout = 10.0  # seconds per API request
    failover_deadline: Deadline = 30.0  # seconds the failover script keeps retrying
    retry_deadline: Deadline = 60.0  # seconds the runbook retries an API that does not answer
    network: NetworkSpec

    @property
    def lb_endpoint(self) -> str:
        """The URL the failover script on the LBs calls."""
        return self.host_endpoint or self.endpoint


class HostSpec(_Model):
    """One server; ``name`` is its key under ``hosts`` (= Hetzner server name = ``--host``)."""

    name: str
    role: Role
    private_ip: IPv4
    address: Address  # how SSH reaches the host
    gateway: str | None = None  # jump host: "user@host:port" or a host name of the inventory
    # lb hosts: read from the API when left out (runbook.cloud.discover)
    public_ip: IPv4 | None = None
    labels: dict[str, str] = Field(default_factory=dict, max_length=MAX_LIST)

    @field_validator("gateway")
    @classmethod
    def _gateway_syntax(cls, value: str | None) -> str | None:
        if value is not None:
            parse_endpoint(value)
        return value


class FloatingIPSpec(_Model):
    name: Name
    address: IPv4
    dns_ptr: DNSName | None = None


class HeartbeatSpec(_Model):
    """``ha.cf`` timing (whole seconds; the keepalive may be a fraction, down to 0.1 s) and the
    authkeys digest."""

    keepalive: HbKeepalive
    deadtime: HbSeconds
    udpport: Port = 694
    auth: Literal["sha1", "md5", "crc"] = "sha1"
    auto_failback: StrictBool = False
    warntime: HbSeconds | None = None
    initdead: Interval | None = None
    # Heartbeat's own log file besides syslog (ha.cf `logfile`); none by default
    logfile: str | None = None

    @field_validator("logfile")
    @classmethod
    def _logfile_under_var_log(cls, value: str | None) -> str | None:
        if value is not None and (
            not value.startswith("/var/log/")
            or value.endswith("/")
            or ".." in value.split("/")
            or any(c.isspace() or not c.isprintable() or c in LOGFILE_SPECIAL for c in value)
        ):
            raise ValueError(
                "must be a file under /var/log/ (no spaces, no '..', none of "
                f"{' '.join(LOGFILE_SPECIAL)}: ha.cf comments and logrotate's globs and braces)"
            )
        return value

    @field_validator("auth")
    @classmethod
    def _refuse_crc(cls, value: str) -> str:
        if value == "crc":
            raise ValueError(
                "crc is a checksum, not authentication: any host could forge "
                "heartbeats and steal the VIP; use sha1"
            )
        return value

    @property
    def effective_warntime(self) -> int:
        """Default: twice the keepalive (whole seconds, rounded up), kept below the deadtime."""
        if self.warntime is not None:
            return self.warntime
        return max(1, min(math.ceil(2 * self.keepalive), self.deadtime - 1))

    @property
    def effective_initdead(self) -> int:
        """Default: at least 10 s and twice the deadtime (the network may come up late at boot)."""
        return self.initdead if self.initdead is not None else max(10, 2 * self.deadtime)


class InsecureAPISpec(_Model):
    """The post's plain-HTTP endpoint, emulated by ``kubectl proxy`` under a ServiceAccount."""

    enabled: StrictBool = False
    role: K8sName = "view"
    port: Port = 6080


class LoadBalancerSpec(_Model):
    """The LB pair. ``public_allow`` is HAProxy's allow-list for the floating IP frontend.

    An empty ``public_allow`` means the frontend on the floating IP refuses every source except
    loopback: the API is not reachable from the internet until the operator lists networks.
    """

    primary: str
    vip: IPv4
    floating_ip: FloatingIPSpec
    # "" (left out): found from the API's MAC of the private NIC / the public IPv4 on the host
    # (runbook.cloud.discover); a name given is verified the same way
    interface: OptIface = ""
    public_interface: OptIface = ""
    heartbeat: HeartbeatSpec
    public_allow: tuple[Net, ...] = Field(default=(), max_length=MAX_LIST)
    insecure_api: InsecureAPISpec = InsecureAPISpec()
    reassert_interval: Interval = 60  # the holder re-asserts the cloud assignment this often


FirewallProtocol = Literal["tcp", "udp", "icmp", "esp", "gre"]


class FirewallRuleSpec(_Model):
    """An extra inbound rule on the firewall of each of ``roles`` (e.g. NodePorts on workers)."""

    roles: tuple[Role, ...] = Field(min_length=1)
    protocol: FirewallProtocol
    port: str | None = None  # "80" or "30000-32767"; tcp and udp only
    sources: tuple[AnyNet, ...] = Field(min_length=1, max_length=MAX_LIST)
    description: str | None = Field(default=None, max_length=200)

    @field_validator("port")
    @classmethod
    def _port_syntax(cls, value: str | None) -> str | None:
        if value is None:
            return value
        low, dash, high = value.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{show(value)} is not a port (80) or a port range (30000-32767)")
        lo, hi = int(low), int(high) if dash else int(low)
        if not 1 <= lo <= hi <= 65535:
            raise ValueError(f"{show(value)}: ports are 1-65535, the range low to high")
        return value

    @model_validator(mode="after")
    def _port_for_protocol(self) -> FirewallRuleSpec:
        if self.protocol in ("tcp", "udp") and self.port is None:
            raise ValueError(f"port is required for {self.protocol} (a port or a range)")
        if self.protocol not in ("tcp", "udp") and self.port is not None:
            raise ValueError(f"port applies to tcp and udp only, not {self.protocol}")
        return self


class FirewallSpec(_Model):
    """Hetzner Cloud Firewalls, one per role (``inv firewall``): inbound public traffic only.

    Every server accepts SSH from ``admin_networks``, the LBs the API port from
    ``load_balancer.public_allow`` and Heartbeat's UDP port from the LBs' public IPs, ICMP from
    anywhere (``icmp``), plus ``rules``; everything else from the internet is dropped.
    ``ssh_from_anywhere: true`` is the explicit confirmation 0.0.0.0/0 or ::/0 in
    ``admin_networks`` needs.
    """

    admin_networks: tuple[AnyNet, ...] = Field(min_length=1, max_length=MAX_LIST)
    ssh_from_anywhere: StrictBool = False
    icmp: StrictBool = True
    rules: tuple[FirewallRuleSpec, ...] = Field(default=(), max_length=MAX_LIST)


class EtcdSpec(_Model):
    heartbeat_interval_ms: EtcdMillis = 250
    election_timeout_ms: EtcdMillis = 5000


class BackupSpec(_Model):
    """Local etcd snapshots (`inv cluster.backup`): how many the operator's machine keeps."""

    keep: Annotated[int, Field(strict=True, ge=1, le=1000)] = 7  # older ones are pruned


class PackageRepoSpec(_Model):
    """Where kubelet/kubeadm/kubectl (``package_repo``, default pkgs.k8s.io for ``version``) or
    containerd.io (``containerd_repo``, default Docker's repository) come from.

    ``trusted`` (an unsigned mirror, e.g. the lab's local repository) replaces ``signed-by``
    with ``trusted=yes``; it is refused together with a ``key_url``, and a mirror that is not
    trusted needs a ``key_url``.
    """

    url: FetchUrl
    key_url: FetchUrl | None = None
    trusted: StrictBool = False

    @model_validator(mode="after")
    def _key_or_trusted(self) -> PackageRepoSpec:
        if self.trusted and self.key_url:
            raise ValueError("key_url and trusted: true exclude each other")
        if not self.trusted and not self.key_url:
            raise ValueError("key_url is required (or trusted: true for an unsigned mirror)")
        return self


class KubernetesSpec(_Model):
    version: str
    pod_subnet: Net
    service_subnet: Net
    dns_domain: DNSName = "cluster.local"
    api_dns_name: DNSName | None = None
    cert_sans: tuple[SubjectAltName, ...] = Field(default=(), max_length=MAX_LIST)
    etcd: EtcdSpec = EtcdSpec()
    backup: BackupSpec = BackupSpec()
    cni: Literal["weave", "calico", "flannel"] = "weave"
    admin_user: K8sName = "admin-user"
    package_repo: PackageRepoSpec | None = None  # None: pkgs.k8s.io/core:/stable:/v1.NN/deb/
    # None: Docker's https://download.docker.com/linux/<ID> <codename> stable (containerd.io)
    containerd_repo: PackageRepoSpec | None = None
    cni_manifest_url: FetchUrl | None = None  # None: the pinned upstream manifest of ``cni``

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        if isinstance(value, int | float):
            raise ValueError(
                f'quote the version, e.g. "1.36": unquoted YAML reads {show(value)} as '
                "a number (1.30 would become 1.3)"
            )
        if isinstance(value, str):
            match = VERSION_RE.match(value)
            if not match:
                raise ValueError(f'{show(value)} is not a minor version of the form "1.NN"')
            if int(match.group(1)) < MIN_MINOR:
                raise ValueError(f"{value} is too old: kubeadm.k8s.io/v1beta4 needs 1.{MIN_MINOR}+")
        return value

    @property
    def minor(self) -> int:
        return int(self.version.split(".")[1])


class Inventory(_Model):
    """A validated cluster description; ``path``/``base_dir``/``warnings`` come from loading."""

    cluster: ClusterSpec
    ssh: SSHSpec = SSHSpec()
    hcloud: HcloudSpec
    hosts: dict[str, HostSpec]
    load_balancer: LoadBalancerSpec
    kubernetes: KubernetesSpec
    firewall: FirewallSpec | None = None  # None: no cloud firewall is managed (a warning)
    _path: Path = PrivateAttr(default=Path("hosts.yaml"))
    _warnings: tuple[Problem, ...] = PrivateAttr(default=())

    @property
    def path(self) -> Path:
        return self._path

    @property
    def base_dir(self) -> Path:
        """Relative paths in the file (known_hosts, identity) resolve against this directory."""
        return self._path.absolute().parent

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return self._warnings

    def resolve_path(self, value: str) -> Path:
        """Expand ``~`` now (not at load time) and anchor relative paths at ``base_dir``."""
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    @property
    def known_hosts_path(self) -> Path:
        return self.resolve_path(self.ssh.known_hosts)

    @property
    def identity_path(self) -> Path | None:
        return None if self.ssh.identity is None else self.resolve_path(self.ssh.identity)

    @property
    def ssh_config_files(self) -> tuple[Path, ...]:
        """The ssh_config files read, in order (the first value obtained wins, as in ssh):
        ``ssh.config_file`` alone when given; left out, those of ``DEFAULT_SSH_CONFIGS`` that
        exist; none for ``false``/``none``."""
        value = self.ssh.config_file
        if value is False:
            return ()
        if value is None:
            return tuple(Path(p).expanduser() for p in DEFAULT_SSH_CONFIGS)
        return (self.resolve_path(value),)

    def hosts_with_role(self, *roles: str) -> list[HostSpec]:
        """Hosts having one of ``roles`` (all hosts when none given), in inventory order."""
        check_roles(roles)
        return [h for h in self.hosts.values() if not roles or h.role in roles]

    def host(self, name: str) -> HostSpec:
        return self.hosts[name]

    @property
    def primary(self) -> HostSpec:
        """The LB that holds the VIP and the floating IP first."""
        return self.hosts[self.load_balancer.primary]

    @property
    def first_control_plane(self) -> HostSpec:
        """Where ``kubeadm init`` runs: the first control plane in inventory order."""
        return self.hosts_with_role("control-plane")[0]

    @property
    def control_plane_endpoint(self) -> str:
        return f"{self.load_balancer.vip}:{API_PORT}"

    def gateway_for(self, host: HostSpec) -> HostSpec | SSHEndpoint | None:
        """The jump host of ``host``: another inventory host, an explicit endpoint, or none."""
        if host.gateway is None:
            return None
        if host.gateway in self.hosts:
            return self.hosts[host.gateway]
        return parse_endpoint(host.gateway)

    def token(self, environ: Mapping[str, str]) -> str:
        """The Hetzner API token from the environment. Messages never contain its value."""
        name = self.hcloud.token_env
        value = environ.get(name)
        if value is None:
            reason = f"the environment variable {name} is not set"
        elif not value.strip():
            reason = f"the environment variable {name} is empty"
        elif any(c.isspace() or not c.isprintable() for c in value):
            reason = f"the environment variable {name} contains whitespace or control characters"
        else:
            return value
        hint = "; export the Hetzner API token there (the inventory never holds it)"
        raise InventoryError([Problem(str(self.path), "hcloud.token_env", reason + hint)])


def check_roles(roles: Collection[str]) -> None:
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown roles {unknown}; known: {', '.join(ROLES)}")
