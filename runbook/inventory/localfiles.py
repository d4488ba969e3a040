"""Checks of the operator's own files the inventory names (``ssh.identity``, ``known_hosts``).

Separate from loading: they depend on this machine, not on the file, so ``validate`` and the
tasks that connect run them, while rendering and tests of the file itself do not.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping

from runbook.inventory.models import Inventory, Problem


def local_file_findings(
    inv: Inventory, environ: Mapping[str, str]
) -> tuple[list[Problem], list[Problem]]:
    """(problems, warnings) about ``ssh.identity`` and ``ssh.known_hosts`` on this machine."""
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
    return problems, warnings


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
