"""Jinja2 over the repository's ``files/`` directory: the files the runbook installs on hosts.

Templates end in ``.j2``; files without it (the failover script, the watchdog) are installed as
they are and read with :func:`source`. ``StrictUndefined`` turns a missing context value into an
error instead of an empty string in a config file, and the trailing newline is kept so an
installed file compares equal to its rendering on the next run (idempotence).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

FILES_DIR = Path(__file__).resolve().parents[2] / "files"


@cache
def environment() -> Environment:
    """One shared environment; no autoescape (these are config files, not HTML)."""
    return Environment(
        loader=FileSystemLoader(str(FILES_DIR)),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(name: str, **ctx: Any) -> str:
    """Render ``files/<name>`` with ``ctx``; a missing variable raises ``UndefinedError``."""
    return environment().get_template(name).render(**ctx)


def source(name: str) -> str:
    """A static file of ``files/`` (installed verbatim, no templating)."""
    return (FILES_DIR / name).read_text(encoding="utf-8")
