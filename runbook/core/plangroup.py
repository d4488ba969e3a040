"""Grouped plans and recaps: what several targets share is shown once, with the targets named.

A change is the same on two hosts when its resource, action, summary and diff are equal. The
changes a set of hosts shares are listed once under that set ("k8scontrol01-03, k8node01-02:
10 change(s)"); a resource whose summary or diff differs per host is listed once with one line
per variant. Targets with nothing to change share one "ok" line; errors stay one per target.
A long diff (a new 600-line script) shows its first `DIFF_LINES` lines and how many follow.
`--verbose` keeps the per-host form (console.Ui.show_plan).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rich.syntax import Syntax
from rich.text import Text
from rich.tree import Tree

from .plan import Change, Status, StepResult, TargetPlan

_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def host_ranges(names: Sequence[str]) -> str:
    """ "k8scontrol01, k8scontrol02, k8scontrol03, k8node01" → "k8scontrol01-03, k8node01".

    Names sharing a prefix and a number width fold into ranges of consecutive numbers; the
    prefixes keep the order they first appear in; a name without a number stays as it is.
    """
    families: dict[tuple[str, int], list[int]] = {}
    order: list[tuple[str, int] | str] = []
    for name in dict.fromkeys(names):
        m = _NUMBERED.match(name)
        if not m:
            order.append(name)
            continue
        key = (m.group(1), len(m.group(2)))
        if key not in families:
            families[key] = []
            order.append(key)
        families[key].append(int(m.group(2)))
    parts: list[str] = []
    for item in order:
        if isinstance(item, str):
            parts.append(item)
            continue
        prefix, width = item
        numbers = sorted(families[item])
        start = prev = numbers[0]
        for n in [*numbers[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            first = f"{prefix}{start:0{width}d}"
            parts.append(first if start == prev else f"{first}-{prev:0{width}d}")
            if n is not None:
                start = prev = n
    return ", ".join(parts)


@dataclass(frozen=True)
class Variant:
    """One form of a change and the hosts that would get it."""

    change: Change
    hosts: tuple[str, ...]


@dataclass(frozen=True)
class GroupedChange:
    """One resource's change over the hosts of its group; several variants if they differ."""

    resource: str
    action: str
    variants: tuple[Variant, ...]


@dataclass(frozen=True)
class PlanGroup:
    """Hosts that share the same list of changed resources."""

    hosts: tuple[str, ...]
    changes: tuple[GroupedChange, ...]


def changed_lines(diff: str) -> str:
    """A unified diff without its context: the file headers and the -/+ lines only."""
    keep = [
        ln
        for ln in diff.splitlines()
        if ln.startswith(("-", "+")) or (ln and not ln.startswith((" ", "@@")))
    ]
    return "\n".join(keep) + ("\n" if keep else "")


def _same(ch: Change) -> Change:
    """What makes two hosts' changes "the same": all but the diff's context lines, which may
    hold the host itself (e.g. /etc/hosts around a replaced line names the host)."""
    return Change(ch.resource, ch.action, ch.summary, changed_lines(ch.diff))


def group_plans(plans: Sequence[TargetPlan]) -> list[PlanGroup]:
    """Changed resources grouped by the set of hosts that change them, in plan order.

    A variant's change is the first host's; when its hosts' diffs differ only in context lines
    its diff is reduced to the changed lines (no host's context shown for another host)."""
    order: list[tuple[str, str]] = []
    variants: dict[tuple[str, str], dict[Change, list[Change]]] = {}
    owners: dict[tuple[str, str], dict[Change, list[str]]] = {}
    for plan in plans:
        if plan.error:
            continue
        for ch in plan.changes:
            key = (ch.resource, ch.action)
            if key not in variants:
                variants[key], owners[key] = {}, {}
                order.append(key)
            variants[key].setdefault(_same(ch), []).append(ch)
            owners[key].setdefault(_same(ch), []).append(plan.target)
    groups: dict[tuple[str, ...], list[GroupedChange]] = {}
    for key in order:
        having = {h for hs in owners[key].values() for h in hs}
        hosts = tuple(p.target for p in plans if p.target in having)
        forms = tuple(
            Variant(chs[0] if len(set(chs)) == 1 else same, tuple(owners[key][same]))
            for same, chs in variants[key].items()
        )
        groups.setdefault(hosts, []).append(GroupedChange(key[0], key[1], forms))
    return [PlanGroup(hosts, tuple(chs)) for hosts, chs in groups.items()]


def _line(action: str, resource: str, summary: str) -> str:
    return f"{action} {resource}" + (f" — {summary}" if summary else "")


#: a diff longer than this shows its first lines and how many more (all with --verbose)
DIFF_LINES = 16
#: the same for a file's whole new content (nothing removed): its headers and first lines say
#: what it is; reading all of it is `inv render`'s job (a fresh walkthrough creates ~20 files)
NEW_CONTENT_LINES = 8


def is_new_content(lines: list[str]) -> bool:
    """A diff that only adds (a new file): no removed line below the headers."""
    body = [ln for ln in lines if not ln.startswith(("---", "+++", "@@"))]
    return bool(body) and not any(ln.startswith("-") for ln in body)


def clip_diff(diff: str, limit: int | None = None) -> str:
    """The first `limit` lines of a long diff and a line saying how to see the rest."""
    lines = diff.rstrip("\n").splitlines()
    new = is_new_content(lines)
    if limit is None:
        limit = NEW_CONTENT_LINES if new else DIFF_LINES
    if len(lines) <= limit + 2:  # never hide just one or two lines behind a note
        return "\n".join(lines)
    rest = len(lines) - limit
    what = "more lines of the new content" if new else "more diff lines"
    return "\n".join(
        [*lines[:limit], f"… {rest} {what} (--verbose shows all; inv render writes it)"]
    )


def _diff(diff: str, mask: Callable[[str], str]) -> Syntax:
    return Syntax(mask(clip_diff(diff)), "diff", theme="ansi_dark", word_wrap=True)


def grouped_tree(step: str, plans: Sequence[TargetPlan], mask: Callable[[str], str]) -> Tree:
    """The plan tree of one step in grouped form (see the module docstring)."""
    changed = [p for p in plans if p.changes and not p.error]
    n_changes = sum(len(p.changes) for p in changed)
    title = f"plan: {step}"
    if len(plans) > 1:
        title += f" ({len(changed)}/{len(plans)} targets to change, {n_changes} change(s))"
    tree = Tree(Text(title, style="bold"))
    for plan in plans:
        if plan.error:
            label = "UNREACHABLE" if plan.unreachable else "ERROR"
            tree.add(Text(mask(f"{plan.target}: {label}: {plan.error}"), style="bold red"))
    for group in group_plans(plans):
        branch = tree.add(
            Text(f"{host_ranges(group.hosts)}: {len(group.changes)} change(s)", style="yellow")
        )
        for gc in group.changes:
            if len(gc.variants) == 1:
                ch = gc.variants[0].change
                node = branch.add(Text(mask(_line(ch.action, ch.resource, ch.summary))))
                if ch.diff:
                    node.add(_diff(ch.diff, mask))
                continue
            node = branch.add(Text(mask(f"{gc.action} {gc.resource} (differs per host)")))
            for v in gc.variants:
                sub = node.add(
                    Text(mask(f"{host_ranges(v.hosts)}: {v.change.summary or v.change.action}"))
                )
                if v.change.diff:
                    sub.add(_diff(v.change.diff, mask))
    ok = [p.target for p in plans if not p.error and not p.changes]
    if ok:
        tree.add(Text(f"{host_ranges(ok)}: ok (no changes)", style="green"))
    return tree


def recap_rows(results: Sequence[StepResult]) -> list[tuple[str, str, Status, int, str]]:
    """(step, targets, status, changes, message): targets of a step with the same status,
    change count and message share one row."""
    rows: list[tuple[str, str, Status, int, str]] = []
    for sr in results:
        same: dict[tuple[Status, int, str], list[str]] = {}
        for r in sr.results:
            same.setdefault((r.status, len(r.changes), r.message), []).append(r.target)
        for (status, n, message), targets in same.items():
            rows.append((sr.step, host_ranges(targets), status, n, message))
    return rows
