"""The package layout is the architecture (docs/architecture.md): imports flow one way.

inventory → core → render / tools / cloud → status → steps → tasks → cli: a package imports only
from the layers before it (and from itself), so the engine never knows a step, a rendered file
never knows the cloud, and only `tasks` knows Invoke. Every module path a text names exists.
"""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RUNBOOK = REPO / "runbook"
# rank of each top-level part of `runbook`; parts of equal rank do not import each other
RANK = {
    "inventory": 0,
    "core": 1,
    "render": 2,
    "tools": 2,
    "cloud": 2,
    "status": 3,
    "steps": 4,
    "tasks": 5,
    "cli": 6,
}
# docs/architecture.md's worked example of adding a step names the module it would create
EXAMPLES = {"runbook/steps/timesync.py"}


def imported(text: str, package: list[str]) -> set[str]:
    """The parts of `runbook` a module in `package` imports (absolute or relative, anywhere)."""
    out = set()
    for node in ast.walk(ast.parse(text)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            if node.module:
                names = [".".join([*base, node.module])]
            else:  # `from .. import x`: x is the module
                names = [".".join([*base, a.name]) for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "runbook" and len(parts) > 1:
                out.add(parts[1])
    return out


def wrong_imports(own: str, parts: set[str]) -> list[str]:
    return sorted(p for p in parts - {own} if RANK[p] >= RANK[own])


def test_only_the_entry_point_is_a_module_at_the_top() -> None:
    assert sorted(p.name for p in RUNBOOK.glob("*.py")) == ["__init__.py", "cli.py"]
    packages = {p.name for p in RUNBOOK.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(RANK) - {"cli"}


def test_imports_flow_one_way() -> None:
    wrong = []
    for path in sorted(RUNBOOK.rglob("*.py")):
        rel = path.relative_to(REPO)
        if len(rel.parts) == 2 and rel.name == "__init__.py":
            continue
        own = rel.parts[1].removesuffix(".py")
        for other in wrong_imports(own, imported(path.read_text(), list(rel.parts[:-1]))):
            wrong.append(f"{rel} imports runbook.{other}")
    assert wrong == []


def test_the_check_sees_an_import_against_the_flow() -> None:
    engine = ["runbook", "core"]
    assert imported("from ..steps import built_steps\n", engine) == {"steps"}
    assert wrong_imports("core", {"steps", "inventory"}) == ["steps"]
    assert imported("def f():\n    from ..status import lbstatus\n", engine) == {"status"}
    assert imported("from .. import snapshots\n", ["runbook", "tasks"]) == {"snapshots"}
    assert wrong_imports("render", {"cloud", "core"}) == ["cloud"]


def resolves(dotted: str) -> bool:
    """`runbook.a.b.name`: some prefix (at least `runbook.a`) is a module or a package."""
    parts = dotted.split(".")
    for i in range(len(parts), 1, -1):
        base = REPO.joinpath(*parts[:i])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def test_texts_name_module_paths_that_exist() -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    cited: set[tuple[str, str]] = set()
    for name in files.split("\0"):
        path = REPO / name
        if not name or path.suffix not in (".py", ".md", ".toml") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8")
        cited |= {(name, m) for m in re.findall(r"(?<![\w./-])runbook/[\w/]+\.py\b", text)}
        cited |= {
            (name, m)
            for m in re.findall(r"(?<![\w.])runbook(?:\.[a-z_]\w*)+", text)
            if m.split(".")[1] in RANK
        }
    assert any(m.startswith("runbook/core/") for _, m in cited), "no text names a module"
    missing = sorted(
        f"{name}: {m}"
        for name, m in cited
        if m not in EXAMPLES and not ((REPO / m).is_file() if m.endswith(".py") else resolves(m))
    )
    assert missing == []
