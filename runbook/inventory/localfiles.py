"""Checks of the operator's own files the inventory names (``ssh.identity``, ``known_hosts``,
the ssh_config files of ``ssh.config_file``).

Separate from loading: they depend on this machine, not on the file, so ``validate`` and the
tasks that connect run them, while rendering and tests of the file itself do not.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path

import paramiko

from runbook.inventory.models import Inventory, Problem
from runbook.inventory.sshconfig import IncludeError, ssh_config_text


def local_file_findings(
    inv: Inventory, environ: Mapping[str, str]
) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) about ``ssh.identity``, ``ssh.known_hosts`` and the ssh_config files
    (``ssh.config_file``) on this machine."""
    file = str(inv.path)
    problems: list[Problem] = []
    warnings: list[Problem] = []
    identity = inv.identity_path
    if identity is not None:
        reason = _unusable(str(identity), must_exist=True)
        if reason == "does not exist" and environ.get("SSH_AUTH_SOCK"):
            warnings.append(
                Problem(
                    file,
                    "ssh.identity",
                    f"{identity} does not exist; SSH_AUTH_SOCK is set, so an ssh agent may hold "
                    "the key",
                )
            )
        elif reason:
            problems.append(Problem(file, "ssh.identity", f"{identity} {reason}"))
    known = inv.known_hosts_path
    reason = _unusable(str(known), must_exist=False)
    if reason:
        problems.append(Problem(file, "ssh.known_hosts", f"{known} {reason}"))
    explicit = isinstance(inv.ssh.config_file, str)
    parsed = paramiko.SSHConfig()
    for path in inv.ssh_config_files:
        finding = _ssh_config_finding(path, must_exist=explicit)
        if finding:
            problems.append(Problem(file, "ssh.config_file", finding))
            continue
        if path.is_file():
            parsed.parse(ssh_config_text(path).splitlines())
    warnings += _unused_ports(inv, parsed)
    return problems, warnings


def _unused_ports(inv: Inventory, config: paramiko.SSHConfig) -> list[Problem]:
    """An ssh_config ``Port`` for a host is not used: hosts are reached on ``ssh.port``, the port
    the cloud firewall opens (only jump hosts take their port from ssh_config)."""
    out = []
    for host in inv.hosts.values():
        port = config.lookup(host.address).get("port")
        if port is not None and port != str(inv.ssh.port):
            out.append(
                Problem(
                    str(inv.path),
                    f"hosts.{host.name}.address",
                    f"the ssh_config's Port {port} for {host.address} is not used: hosts are "
                    f"reached on ssh.port ({inv.ssh.port}), the port the cloud firewall opens",
                )
            )
    return out


def _ssh_config_finding(path: Path, *, must_exist: bool) -> str | None:
    """Why one ssh_config file is unusable (ssh would refuse it too): unreadable, unparsable
    (its ``Include``d files with it), or None."""
    reason = _unusable(str(path), must_exist=must_exist)
    if reason:
        return f"{path} {reason}"
    if not path.exists():
        return None
    try:
        paramiko.SSHConfig.from_text(ssh_config_text(path))
    except (OSError, UnicodeDecodeError) as exc:
        return f"{path} cannot be read: {exc}"
    except IncludeError as exc:
        return f"{path}: {exc}"
    except paramiko.ConfigParseError as exc:  # an unparsable line, a bad Match
        return f"{path} is not a valid ssh_config: {exc}"
    return None


def _unusable(path: str, *, must_exist: bool) -> str | None:
    """Why ``path`` cannot be read as a file, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "does not exist" if must_exist else None
    except OSError as exc:
        return f"cannot be checked: {exc.strerror or exc}"
    except ValueError:  # an embedded NUL byte
        return "is not a valid path (it contains a NUL character)"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a file"
    if not stat.S_ISREG(st.st_mode):
        return "is not a regular file"
    if not os.access(path, os.R_OK):
        return "is not readable (permission denied)"
    return None
