"""The repository stands alone and its docs stay true to the code.

- nothing points outside the repository (the reference notes it was built from are not in it);
- every `docs/*.md` a file cites exists, and every link between the docs lands on a heading;
- docs/inventory.md names every key the inventory models accept, and its example validates.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from runbook.inventory import Inventory, parse_inventory
from runbook.inventory.load import _nested_model

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
# built from parts, so this file does not match itself
_NOTES = ("SPEC", "DESIGN")
OUTSIDE = re.compile(
    "|".join(
        [re.escape("shared" + "/"), re.escape("../" + "shared")]
        + [re.escape(n + s) for n in _NOTES for s in (" §", ".md")]
    ),
    re.IGNORECASE,
)


def repo_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout
    return [REPO / name for name in out.decode().split("\0") if name]


def texts() -> Iterator[tuple[Path, str]]:
    for path in repo_files():
        if not path.is_file() or path.suffix in (".json", ".gpg", ".deb"):
            continue
        try:
            yield path, path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue


def test_nothing_points_outside_the_repository() -> None:
    found = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path, text in texts()
        for n, line in enumerate(text.splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []


def test_every_cited_doc_exists() -> None:
    cited = {
        (path.relative_to(REPO), m.group(0))
        for path, text in texts()
        for m in re.finditer(r"\bdocs/[\w.-]+\.md\b", text)
    }
    assert cited, "no file cites docs/*.md"
    missing = sorted(f"{where}: {doc}" for where, doc in cited if not (REPO / doc).is_file())
    assert missing == []


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(doc: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, re.M)}


def test_links_between_docs_land_on_headings() -> None:
    bad = []
    for src in [REPO / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([\w./-]*\.md)?(?:#([\w-]+))?\)", src.read_text()):
            if not target and not anchor:
                continue
            doc = (src.parent / target) if target else src
            if not doc.is_file():
                bad.append(f"{src.name}: {target} does not exist")
            elif anchor and anchor not in anchors(doc):
                bad.append(f"{src.name}: no heading #{anchor} in {doc.name}")
    assert bad == []


def test_slug_matches_github() -> None:
    assert slug("The VIP is nowhere (no LB holds it, VIP:6443 does not answer)") == (
        "the-vip-is-nowhere-no-lb-holds-it-vip6443-does-not-answer"
    )
    assert slug("`kubernetes`") == "kubernetes"


def keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        if model.__name__ == "HostSpec" and name == "name":
            continue  # a host's name is its key under hosts
        if name == "hosts":
            yield "hosts.NAME"
            nested = _nested_model(field.annotation.__args__[1])  # type: ignore[union-attr]
            assert nested is not None
            yield from keys(nested, "hosts.NAME.")
            continue
        nested = _nested_model(field.annotation)
        if nested is not None:
            yield path
            yield from keys(nested, f"{path}.")
        else:
            yield path


def test_inventory_doc_names_every_key() -> None:
    text = (DOCS / "inventory.md").read_text()
    all_keys = list(keys(Inventory))
    assert "load_balancer.heartbeat.deadtime" in all_keys and "hosts.NAME.role" in all_keys
    # every value (a section, such as `kubernetes.etcd`, is covered by its keys)
    leaves = [k for k in all_keys if not any(o.startswith(k + ".") for o in all_keys)]
    missing = [k for k in [*leaves, "hosts.NAME"] if f"`{k}`" not in text]
    assert missing == []


def test_inventory_doc_example_validates_without_warnings() -> None:
    text = (DOCS / "inventory.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert blocks
    inv = parse_inventory(yaml.safe_load(blocks[-1]), path=DOCS / "inventory.md")
    assert inv.warnings == ()


@pytest.mark.parametrize("name", ["procedure", "inventory", "architecture", "operations"])
def test_the_four_docs_exist(name: str) -> None:
    assert (DOCS / f"{name}.md").read_text().startswith("# ")
