"""HTML tables for notebook cells: every cell's text escaped unless it is marked as HTML.

``html_table(header, rows)`` returns a :class:`Table`, which Jupyter displays as HTML (and
``str()`` gives the markup, for an ``ipywidgets.HTML``). A cell is any value: ``str()`` of it
is escaped; a :class:`Raw` (``code()`` makes one) goes in as it is; ``span()`` stretches one.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

# what a marked row looks like: the highlight the book uses for "this one differs"
MARK_STYLE = "background: #fff3cd"
# a standalone table's cells: what the page's table style would give, and no wrapping
CELL_STYLE = "padding: 1px 10px; text-align: left; vertical-align: top"


class Raw(str):
    """HTML for a cell, taken as it is: the caller vouches for it (html_table escapes the rest)."""


def code(text: object) -> Raw:
    """``text`` escaped, in monospace: a name, an address, a command."""
    return Raw(f"<code>{escape(str(text))}</code>")


@dataclass(frozen=True)
class Span:
    """A cell over ``cols`` columns and ``rows`` rows (colspan, rowspan)."""

    content: object
    cols: int = 1
    rows: int = 1


def span(content: object, *, cols: int = 1, rows: int = 1) -> Span:
    return Span(content, cols, rows)


class Table:
    """A rendered table: HTML for Jupyter, the markup as ``str()``."""

    def __init__(self, html: str, nrows: int) -> None:
        self.html = html
        self.nrows = nrows

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return f"<Table of {self.nrows} rows>"


def _cell(tag: str, value: object, style: str) -> str:
    attrs = ""
    if isinstance(value, Span):
        attrs += f' colspan="{value.cols}"' if value.cols != 1 else ""
        attrs += f' rowspan="{value.rows}"' if value.rows != 1 else ""
        value = value.content
    text = value if isinstance(value, Raw) else escape(str(value))
    return f"<{tag}{attrs}{style}>{text}</{tag}>"


def _row(tag: str, values: Sequence, standalone: bool, marked: bool = False) -> str:
    last = len(values) - 1
    cells = "".join(
        _cell(tag, v, "" if not standalone else f' style="{CELL_STYLE}"' if i == last
              else f' style="{CELL_STYLE}; white-space: nowrap"')
        for i, v in enumerate(values))
    return f'<tr style="{MARK_STYLE}">{cells}</tr>' if marked else f"<tr>{cells}</tr>"


def html_table(header: Sequence, rows: Iterable[Sequence], *, caption: str | None = None,
               marked: Iterable[int] = (), standalone: bool = False) -> Table:
    """A table with ``header`` (one row of cells, or a list of rows for a header of several
    rows) over ``rows``.

    ``marked``: indices of the rows to highlight (MARK_STYLE); ``standalone``: for a table
    shown where the page's table style does not reach (an ``ipywidgets.HTML``), the cells
    carry their own (CELL_STYLE) and only the last column wraps; ``caption``: text above the
    table, escaped.
    """
    heads = header if header and isinstance(header[0], (list, tuple)) else [header]
    marked = set(marked)
    body = [_row("td", row, standalone, i in marked) for i, row in enumerate(rows)]
    html = ("<table>" + (f"<caption>{escape(caption)}</caption>" if caption else "")
            + "".join(_row("th", h, standalone) for h in heads) + "".join(body) + "</table>")
    return Table(html, len(body))
