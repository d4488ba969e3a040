"""`inv render`: every file the built steps would write to a host, touching no host."""

from __future__ import annotations

from ..core.console import Masker, Ui, make_console
from ..core.engine import RunOptions, RunState, StepContext
from ..core.resources import File
from ..inventory import Inventory
from ..render.outdir import OutFile, write_tree
from ..steps.registry import rendering_steps


def rendered_files(inv: Inventory, host: str) -> list[OutFile]:
    """Every file the built steps would write to HOST, as paths below an output directory.

    Steps see `ctx.run.render` and put SECRET_MARKER where a secret goes.
    """
    masker = Masker()
    ui = Ui(make_console(masker), masker, interactive=False)
    ctx = StepContext(
        inventory=inv, ui=ui, options=RunOptions(dry_run=True), run=RunState(render=True)
    )
    files: list[OutFile] = []
    for step in rendering_steps():
        if host not in step.target_names(ctx):
            continue
        for res in step.resources(ctx, host):
            if isinstance(res, File):
                files.append(OutFile(res.path.lstrip("/"), res.content.encode(), res.mode))
    return files


def render_host(
    inv: Inventory, host: str, out: str, *, force: bool = False
) -> list[tuple[str, str, str]]:
    """Write the files under OUT (mirroring host paths); return (path, mode, bytes) rows.

    OUT is checked first (not a system directory, empty unless `force`, see outdir);
    raises OutDirError with the reason.
    """
    files = rendered_files(inv, host)
    write_tree(out, files, force=force)
    return [(f"/{f.path}", f"{f.mode:04o}", str(len(f.content))) for f in files]
