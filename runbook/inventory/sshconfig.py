"""An ssh_config file's text with its ``Include`` lines followed, as ssh follows them.

paramiko's parser reads one file and ignores ``Include``; Debian's own /etc/ssh/ssh_config
starts with ``Include /etc/ssh/ssh_config.d/*.conf``. Each ``Include`` line is replaced by the
text of the files it names: globs expanded and sorted, ``~`` expanded, a relative name taken
from ~/.ssh for a user's file and from /etc/ssh for the system's (ssh_config(5)), a missing
file skipped, nested includes followed up to ssh's depth limit.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from pathlib import Path

SYSTEM_DIR = Path("/etc/ssh")
MAX_DEPTH = 16  # ssh's READCONF_MAX_DEPTH
_INCLUDE = re.compile(r"^\s*include(?:\s*=\s*|\s+)(?P<args>.*)$", re.IGNORECASE)


class IncludeError(ValueError):
    """An Include that ssh would refuse too (too deep: a loop)."""


def ssh_config_text(path: Path, *, depth: int = 0) -> str:
    """`path`'s text, every ``Include`` replaced by the included files' text."""
    if depth > MAX_DEPTH:
        raise IncludeError(f"Include nested more than {MAX_DEPTH} deep (a loop?) at {path}")
    system = path.resolve().is_relative_to(SYSTEM_DIR)
    base = SYSTEM_DIR if system else Path("~/.ssh").expanduser()
    out = []
    for line in path.read_text().splitlines():
        m = _INCLUDE.match(line)
        if not m:
            out.append(line)
            continue
        for arg in shlex.split(m.group("args"), comments=True):
            pattern = os.path.expanduser(arg)
            if not os.path.isabs(pattern):
                pattern = str(base / pattern)
            for name in sorted(glob.glob(pattern)):
                if Path(name).is_file():
                    out.append(ssh_config_text(Path(name), depth=depth + 1))
    return "\n".join(out) + "\n"
