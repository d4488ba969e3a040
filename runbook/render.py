"""`inv render`: every file the built steps would write to a host, touching no host."""

from __future__ import annotations

from pathlib import Path

from .console import Masker, Ui, make_console
from .engine import RunOptions, StepContext
from .inventory import Inventory
from .resources import File
from .steps import built_steps


def render_host(inv: Inventory, host: str, out: Path) -> list[tuple[str, str, str]]:
    """Write the files under OUT (mirroring host paths); return (path, mode, bytes) rows.

    Steps see `ctx.extra["render"] = True` and put SECRET_MARKER where a secret goes.
    """
    masker = Masker()
    ui = Ui(make_console(masker), masker, interactive=False)
    ctx = StepContext(
        inventory=inv, ui=ui, options=RunOptions(dry_run=True), extra={"render": True}
    )
    rows: list[tuple[str, str, str]] = []
    for step in built_steps():
        if host not in step.target_names(ctx):
            continue
        for res in step.resources(ctx, host):
            if not isinstance(res, File):
                continue
            dest = out / res.path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(res.content)
            dest.chmod(res.mode)
            rows.append((res.path, f"{res.mode:04o}", str(len(res.content.encode()))))
    return rows
