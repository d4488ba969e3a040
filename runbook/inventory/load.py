"""Reading ``hosts.yaml``: YAML that refuses duplicate keys, then each section validated alone.

PyYAML silently keeps the last of two equal keys (a host listed twice would vanish), so the
document is composed first and its mappings are searched for duplicates before construction.
"""

from __future__ import annotations

import difflib
import os
import stat
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, TypeAdapter, ValidationError

from runbook.inventory import rules
from runbook.inventory.fields import MAX_HOSTS, is_hostname, show
from runbook.inventory.models import (
    ClusterSpec,
    FirewallSpec,
    HcloudSpec,
    HostSpec,
    Inventory,
    InventoryError,
    KubernetesSpec,
    LoadBalancerSpec,
    Problem,
    SSHSpec,
)

#: Top-level sections in file order with their models (``hosts`` is validated host by host).
SECTIONS: dict[str, type[BaseModel] | None] = {
    "cluster": ClusterSpec,
    "ssh": SSHSpec,
    "hcloud": HcloudSpec,
    "hosts": None,
    "load_balancer": LoadBalancerSpec,
    "kubernetes": KubernetesSpec,
    "firewall": FirewallSpec,
}
OPTIONAL_SECTIONS = frozenset({"ssh", "firewall"})
_MERGE_TAG = "tag:yaml.org,2002:merge"


def load_inventory(path: Path) -> Inventory:
    """Read and validate an inventory file; raises InventoryError listing every problem."""
    data, problems = read_yaml(path)
    return _parse(data, path=path, problems=problems)


def parse_inventory(data: object, *, path: Path) -> Inventory:
    """Validate already-loaded data as if it came from ``path`` (for tests and generators)."""
    return _parse(data, path=path, problems=[])


def read_yaml(path: Path) -> tuple[object, list[Problem]]:
    """The document and its duplicate-key problems; unreadable, oversized or hostile files raise.

    Hostile input is refused fast with bounded memory: only regular files (a FIFO would block,
    /dev/zero never ends), at most ``MAX_BYTES``, nesting at most ``MAX_DEPTH`` deep, and at
    most ``MAX_NODES`` values once aliases are expanded (an alias bomb is a few lines that
    expand to billions of values when validated or printed).
    """
    file = str(path)
    text = read_text(path)
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, []
        _check_expansion(file, node)
        duplicates = list(_duplicates(file, node, "", set()))
        return loader.construct_document(node), duplicates
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "(yaml)"
        reason = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.context_mark:
            reason = f"{reason} ({exc.context} at line {exc.context_mark.line + 1})"
        raise InventoryError([Problem(file, where, f"invalid YAML: {reason}")]) from None
    except yaml.YAMLError as exc:
        raise InventoryError([Problem(file, "(yaml)", f"invalid YAML: {exc}")]) from None
    except (RecursionError, MemoryError):
        raise InventoryError([Problem(file, "(file)", _TOO_BIG)]) from None
    finally:
        loader.dispose()


MAX_BYTES = 1 << 20  # 1 MiB; the example inventory is 4 KiB
MAX_DEPTH = 64
MAX_NODES = 50_000
_TOO_BIG = "too deeply nested or too large to load"


def read_text(path: Path, *, limit: int = MAX_BYTES) -> str:
    """A regular file's UTF-8 text, at most ``limit`` bytes (InventoryError otherwise).

    Opened non-blocking so a FIFO cannot hang the open; its type is checked on the open file.
    """
    file = str(path)

    def refuse(reason: str) -> InventoryError:
        return InventoryError([Problem(file, "(file)", reason)])

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror or exc}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise refuse(f"not a regular file (it is {_file_kind(st.st_mode)})")
        if st.st_size > limit:
            raise refuse(f"{st.st_size} bytes, more than the limit of {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 16, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise refuse(f"more than the limit of {limit} bytes")
    except OSError as exc:
        raise refuse(f"cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise refuse(f"not UTF-8 text (byte {exc.start})") from None


def _file_kind(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "not a regular file")


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader that stops past MAX_DEPTH levels or MAX_NODES nodes (no RecursionError)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._count = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        self._count += 1
        try:
            for limit, value, what in (
                (MAX_DEPTH, self._depth, f"nested more than {MAX_DEPTH} levels deep"),
                (MAX_NODES, self._count, f"more than {MAX_NODES} values"),
            ):
                if value > limit:
                    mark = self.peek_event().start_mark
                    raise yaml.composer.ComposerError(None, None, what, mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(file: str, root: yaml.Node) -> None:
    """Refuse recursive aliases and documents larger than MAX_NODES once aliases are expanded.

    Composing shares an aliased node instead of copying it, so this counts each node's
    expanded size once (iteratively, memoised): linear in the composed document.
    """
    sizes: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose children are still being counted (the DFS path)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            sizes[key] = min(MAX_NODES + 1, 1 + sum(sizes[id(c)] for c in _children(node)))
            continue
        if key in sizes:
            continue
        open_.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in open_:
                line = child.start_mark.line + 1
                raise InventoryError(
                    [Problem(file, f"line {line}", "a recursive alias (refers to itself)")]
                )
            if id(child) not in sizes:
                stack.append((child, False))
    if sizes[id(root)] > MAX_NODES:
        raise InventoryError(
            [
                Problem(
                    file,
                    "(yaml)",
                    f"more than {MAX_NODES} values once its aliases are expanded (an alias bomb?)",
                )
            ]
        )


def _duplicates(file: str, node: yaml.Node, path: str, seen: set[int]) -> Iterator[Problem]:
    if id(node) in seen:  # anchors/aliases: visit each node once (also stops recursive aliases)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        first: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            name = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            sub = f"{path}.{name}" if path else name
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode) and name in first:
                yield Problem(
                    file,
                    sub,
                    f"listed twice (lines {first[name]} and {line}); YAML "
                    "would silently keep only the last one",
                )
            else:
                first.setdefault(name, line)
            yield from _duplicates(file, value_node, sub, seen)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicates(file, item, f"{path}[{i}]", seen)


def _parse(data: object, *, path: Path, problems: list[Problem]) -> Inventory:
    file = str(path)
    problems = list(problems)
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"got {show(data)}"
        problems.append(
            Problem(
                file,
                "(top level)",
                f"expected a mapping with the keys {', '.join(SECTIONS)}; {what}",
            )
        )
        raise InventoryError(problems)
    for key in data:
        if key not in SECTIONS:
            problems.append(Problem(file, str(key), _unknown(str(key), list(SECTIONS))))
    parts: dict[str, Any] = {}
    partial = False
    for section, model in SECTIONS.items():
        if section not in data:
            if section not in OPTIONAL_SECTIONS:
                problems.append(Problem(file, section, "required key is missing"))
            continue
        if model is None:
            continue
        parts[section], bad = _validate(file, model, data[section], (section,), problems)
        partial = partial or bad
    hosts, complete = _hosts(file, data.get("hosts"), problems) if "hosts" in data else ({}, False)
    partial = partial or not complete
    view = rules.Parts(
        hcloud=parts.get("hcloud"),
        hosts=hosts,
        hosts_complete=complete,
        load_balancer=parts.get("load_balancer"),
        kubernetes=parts.get("kubernetes"),
        partial=partial,
        firewall=parts.get("firewall"),
        firewall_given="firewall" in data,
    )
    warnings: list[Problem] = []
    for finding in rules.findings(view):
        (warnings if finding.warning else problems).append(
            Problem(file, finding.key, finding.reason)
        )
    if problems:
        raise InventoryError(problems)
    inventory = Inventory(**{k: v for k, v in parts.items() if v is not None}, hosts=hosts)
    inventory._path = path
    inventory._warnings = tuple(warnings)
    return inventory


def _hosts(file: str, raw: object, problems: list[Problem]) -> tuple[dict[str, HostSpec], bool]:
    """Validate host by host, so one bad host does not hide the problems of the others."""
    if not isinstance(raw, dict):
        problems.append(
            Problem(file, "hosts", f"expected a mapping of host name to host, got {show(raw)}")
        )
        return {}, False
    if not raw:
        problems.append(Problem(file, "hosts", "no hosts"))
    if len(raw) > MAX_HOSTS:
        problems.append(
            Problem(file, "hosts", f"{len(raw)} hosts; at most {MAX_HOSTS} (one Hetzner network)")
        )
        return {}, False
    hosts: dict[str, HostSpec] = {}
    complete = True
    for name, value in raw.items():
        key = f"hosts.{name}"
        if not isinstance(name, str) or not is_hostname(name):
            problems.append(Problem(file, key, _bad_hostname(name)))
            complete = False
            if not isinstance(name, str):
                continue
        if isinstance(value, dict):
            if "name" in value:
                problems.append(
                    Problem(
                        file, f"{key}.name", "unknown key: a host's name is its key under hosts"
                    )
                )
                complete = False
            value = {**value, "name": name}
        host, bad = _validate(file, HostSpec, value, ("hosts", name), problems)
        complete = complete and not bad
        if host is not None:
            hosts[name] = host  # salvaged hosts too: the per-host rules still check them
    return hosts, complete


def _bad_hostname(name: object) -> str:
    if not isinstance(name, str):
        return f"host names must be strings, got {show(name)} (quote it)"
    if is_hostname(name.lower()):
        return (
            f"{show(name)} has upper-case letters: use {show(name.lower())} (Kubernetes node names "
            "must be lower-case and Heartbeat compares them lower-case)"
        )
    if len(name) > 63:
        return f"{show(name)} is longer than 63 characters"
    return (
        f"{show(name)} is not a valid host name: an RFC 1123 label of lower-case letters, digits "
        "and '-', not starting or ending with '-'"
    )


def _validate(
    file: str, model: type[BaseModel], raw: object, loc: tuple[str, ...], problems: list[Problem]
) -> tuple[Any, bool]:
    """(validated model, False), or (what could be salvaged for the rules, True) on errors."""
    try:
        return model.model_validate(raw), False
    except ValidationError as exc:
        for err in exc.errors():
            full = (*loc, *err["loc"])
            problems.append(Problem(file, _key(full), _reason(err, model, tuple(err["loc"]))))
        return _salvage(model, raw), True


def _salvage(model: type[BaseModel], raw: object) -> BaseModel | None:
    """The fields of ``raw`` that are valid on their own, for the semantic rules only.

    Invalid fields are left out (reading them raises AttributeError, which skips the rule);
    field validators of the model itself do not run: their errors are already reported.
    """
    if not isinstance(raw, dict):
        return None
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        if name not in raw:
            continue
        nested = _nested_model(field.annotation)
        if nested is not None and isinstance(raw[name], dict):
            value, _ = _validate("", nested, raw[name], (), [])
            if value is not None:
                values[name] = value
            continue
        try:
            field_type: Any = Annotated[field.annotation, field]  # FieldInfo carries the metadata
            values[name] = TypeAdapter(field_type).validate_python(raw[name])
        except ValidationError:
            continue
    salvaged = model.model_construct(**values)
    for name in model.model_fields:
        if name in raw and name not in values:
            salvaged.__dict__.pop(name, None)  # not the default: the file said something invalid
    return salvaged


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *typing.get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _reason(err: Any, model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        return _unknown(str(loc[-1]), _fields_at(model, loc[:-1]))
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return f"expected a mapping of keys, got {show(value)}"
    if kind == "value_error":
        return str(msg).removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{show(value)} is not allowed; expected {err['ctx']['expected']}"
    text = str(msg)
    return f"{text[:1].lower()}{text[1:]} (got {show(value)})"


def _unknown(name: str, allowed: list[str]) -> str:
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    listing = f" (allowed: {', '.join(allowed)})" if allowed else ""
    return f"unknown key{hint}{listing}"


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys allowed at ``loc`` inside ``model`` (for 'did you mean' hints)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = current.model_fields.get(str(part)) if current else None
        current = _nested_model(field.annotation) if field else None
    if current is None:
        return []
    return [f for f in current.model_fields if not (current is HostSpec and f == "name")]
