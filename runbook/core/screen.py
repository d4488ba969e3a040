"""Tables that fit the operator's screen (80 columns and up) without cutting a name or an IP.

Columns listed in `whole` never get narrower than their longest word, so a host name or an
address wraps at a space or not at all; columns listed in `drop` (least valuable first) are
left out while the table would not fit on one line per row; whatever is still too wide wraps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

Cell = str | Text


def _longest_word(cells: Sequence[Cell]) -> int:
    words = [w for c in cells for w in (c.plain if isinstance(c, Text) else c).split()]
    return max((len(w) for w in words), default=1)


def _cell(value: Cell, make: Callable[[str], Text]) -> Text:
    return make(value) if isinstance(value, str) else value


def fitted_table(
    console: Console,
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    whole: Sequence[str] = (),
    drop: Sequence[str] = (),
    caption: str = "",
    cell: Callable[[str], Text] = Text,
) -> Table:
    """A rich Table of `rows` fitted to `console.width` (see the module docstring).

    `cell` turns a plain string into a Text (the caller's masker goes here).
    """
    shown = list(range(len(columns)))
    for name in [None, *drop]:
        if name is not None and name in columns:
            shown.remove(columns.index(name))
        table = Table(
            title=title or None,
            title_justify="left",
            caption=caption or None,
            caption_justify="left",
        )
        for i in shown:
            col = [columns[i], *(row[i] for row in rows)]
            if columns[i] in whole:
                table.add_column(columns[i], min_width=_longest_word(col), overflow="fold")
            else:
                table.add_column(columns[i], overflow="fold")
        for row in rows:
            table.add_row(*(_cell(row[i], cell) for i in shown))
        need = Measurement.get(console, console.options.update_width(1 << 16), table).maximum
        if need <= console.width:
            break
    return table
