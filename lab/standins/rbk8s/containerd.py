"""LAB STAND-IN — Docker's containerd.io 2.x: reads its config as containerd 2 does, prints what
it read (`config dump`), serves the CRI socket and runs nothing.

What containerd 2.1 does with a config file, as far as the runbook depends on it:
- `version = 3` is read as is; `version = 2` and a file without `version` (1, what the
  containerd.io package ships) are migrated in memory (sandbox_image of the CRI plugin becomes
  the images plugin's pinned `sandbox`, the runc options move to the runtime plugin); any other
  version is refused (`unsupported config version`), so is bad TOML;
- an explicit `--config` that does not exist is an error; a missing default file means defaults;
- defaults: SystemdCgroup = false and the pause image 3.10 (containerd 2.1's own);
- `disabled_plugins = ["cri"]` (what the containerd.io package ships) keeps the daemon up but
  without CRI: the stand-in then serves no CRI socket, so a kubelet finds no runtime.
"""

from __future__ import annotations

import socket
import sys
import tomllib
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = Path("/etc/containerd/config.toml")
CRI_SOCKET = Path("/run/containerd/containerd.sock")
CONTAINERD_VERSION = "2.1.4"
REVISION = "75cb2b7193e4e490e9fbdc236c0e811ccaba3376"  # shown like the real `--version`
DEFAULT_SANDBOX = "registry.k8s.io/pause:3.10"
CRI_NAMES = {"cri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"}
V3_IMAGES = "io.containerd.cri.v1.images"
V3_RUNTIME = "io.containerd.cri.v1.runtime"
V2_CRI = "io.containerd.grpc.v1.cri"


class ConfigError(Exception):
    pass


def _dig(d: Any, *keys: str) -> Any:
    for k in keys:
        d = d.get(k) if isinstance(d, dict) else None
    return d


def load(path: Path, *, explicit: bool) -> dict[str, Any]:
    """The effective settings: disabled plugins, SystemdCgroup, the sandbox image."""
    eff: dict[str, Any] = {"disabled": [], "systemd": False, "sandbox": DEFAULT_SANDBOX}
    if not path.exists():
        if explicit:
            missing = f"open {path}: no such file or directory"
            raise ConfigError(f"failed to load TOML: {path}: {missing}")
        return eff
    try:
        conf = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"failed to load TOML from {path}: {exc}") from exc
    version = conf.get("version", 1)
    if version not in (1, 2, 3):
        raise ConfigError(f"unsupported config version `{version}`")
    plugins = conf.get("plugins") or {}
    if version == 3:
        sandbox = _dig(plugins, V3_IMAGES, "pinned_images", "sandbox")
        opts = _dig(plugins, V3_RUNTIME, "containerd", "runtimes", "runc", "options")
    else:
        cri = V2_CRI if version == 2 else "cri"
        sandbox = _dig(plugins, cri, "sandbox_image")
        opts = _dig(plugins, cri, "containerd", "runtimes", "runc", "options")
    eff["disabled"] = [str(p) for p in conf.get("disabled_plugins") or []]
    if isinstance(sandbox, str):
        eff["sandbox"] = sandbox
    if isinstance(opts, dict) and isinstance(opts.get("SystemdCgroup"), bool):
        eff["systemd"] = opts["SystemdCgroup"]
    return eff


def _q(s: str) -> str:
    return "'" + s.replace("'", "") + "'"


def dump(eff: dict[str, Any]) -> str:
    """What `containerd config dump` prints (the parts the stand-in models), version 3 keys."""
    rt = f"plugins.{_q(V3_RUNTIME)}.containerd.runtimes.runc"
    return "\n".join(
        [
            f"disabled_plugins = [{', '.join(_q(p) for p in eff['disabled'])}]",
            "root = '/var/lib/containerd'",
            "state = '/run/containerd'",
            "version = 3",
            "",
            "[grpc]",
            f"  address = {_q(str(CRI_SOCKET))}",
            "",
            "[plugins]",
            "",
            f"  [plugins.{_q(V3_IMAGES)}]",
            "",
            f"    [plugins.{_q(V3_IMAGES)}.pinned_images]",
            f"      sandbox = {_q(eff['sandbox'])}",
            "",
            f"  [plugins.{_q(V3_RUNTIME)}]",
            "",
            f"    [{rt}]",
            "      runtime_type = 'io.containerd.runc.v2'",
            "",
            f"      [{rt}.options]",
            f"        SystemdCgroup = {'true' if eff['systemd'] else 'false'}",
            "",
        ]
    )


def main(argv: list[str]) -> int:
    if argv in (["--version"], ["-v"]):
        print(f"containerd containerd.io v{CONTAINERD_VERSION} {REVISION}")
        return 0
    path, explicit, rest = DEFAULT_CONFIG, False, list(argv)
    if rest[:1] in (["--config"], ["-c"]):
        if len(rest) < 2:
            sys.stderr.write("containerd: flag needs an argument: --config\n")
            return 1
        path, explicit, rest = Path(rest[1]), True, rest[2:]
    elif rest[:1] and rest[0].startswith("--config="):
        path, explicit, rest = Path(rest[0].split("=", 1)[1]), True, rest[1:]
    if rest and rest != ["config", "dump"]:
        sys.stderr.write(f"containerd (stand-in): unsupported: {' '.join(argv)}\n")
        return 1
    try:
        eff = load(path, explicit=explicit)
    except ConfigError as exc:
        sys.stderr.write(f"containerd: {exc}\n")
        return 1
    if rest == ["config", "dump"]:
        print(dump(eff))
        return 0
    return serve(eff)


def serve(eff: dict[str, Any]) -> int:
    """The daemon: with CRI, the socket the kubelet needs; without, none (CRI is off)."""
    import signal

    CRI_SOCKET.parent.mkdir(parents=True, exist_ok=True)
    CRI_SOCKET.unlink(missing_ok=True)

    def _term(*_: object) -> None:
        CRI_SOCKET.unlink(missing_ok=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, _term)
    if CRI_NAMES & set(eff["disabled"]):
        sys.stderr.write('containerd: plugin "io.containerd.grpc.v1.cri" disabled by config\n')
        while True:
            signal.pause()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(CRI_SOCKET))
    sock.listen(8)
    while True:
        conn, _ = sock.accept()
        conn.close()
