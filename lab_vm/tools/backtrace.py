"""Backtraces as lab_vm.debug gives them (a list of frame dicts, innermost first: function,
file, line, args), rendered: a table, two of them side by side, or text as gdb prints it."""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from html import escape
from pathlib import Path

from lab_vm.tools.tables import Raw, Table, code, html_table


def where(frame: dict, *, short: bool = False, no_source: str = "?") -> str:
    """``file:line`` of a frame (just the file's name if ``short``); ``no_source`` if gdb knows
    no source for it (generated code, a function without debug information)."""
    if not frame.get("file"):
        return no_source
    name = Path(frame["file"]).name if short else frame["file"]
    return f"{name}:{frame.get('line') or '?'}"


def arguments(frame: dict, names: Iterable[str] | None = None,
              value: Callable[[str], str] = str) -> str:
    """``name=value, …`` of a frame's arguments (only ``names``, if given), each value
    passed through ``value``."""
    args = frame.get("args") or {}
    return ", ".join(f"{k}={value(v)}" for k, v in args.items() if names is None or k in names)


def _code_or_nothing(text: str):
    return code(text) if text else ""


def backtrace_table(frames: list[dict], *, args: bool | Iterable[str] = False,
                    value: Callable[[str], str] = str, marked: Iterable[int] = (),
                    no_source: str = "?", caption: str | None = None) -> Table:
    """One row per frame, innermost first: #n, function, source; and the arguments if ``args``
    (True: all of them; else the names to show, each value passed through ``value``).
    ``marked``: indices of frames to highlight."""
    names = None if args is True else set(args or ())
    header = ["", "function", "source"] + (["arguments"] if args else [])
    rows = [[f"#{i}", code(f["function"] or "??"), where(f, no_source=no_source)]
            + ([_code_or_nothing(arguments(f, names, value))] if args else [])
            for i, f in enumerate(frames)]
    return html_table(header, rows, marked=marked, caption=caption)


def align(left: list[str], right: list[str]) -> list[tuple[str | None, str | None]]:
    """Pairs of function names, innermost first: equal runs side by side, the rest opposite
    a gap (None)."""
    rows = []
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    for op, a0, a1, b0, b1 in matcher.get_opcodes():
        if op == "equal":
            rows += list(zip(left[a0:a1], right[b0:b1]))
        else:
            rows += [(f, None) for f in left[a0:a1]] + [(None, f) for f in right[b0:b1]]
    return rows


def compare_backtraces(a: list[dict], b: list[dict], titles: tuple[str, str]) -> Table:
    """Two backtraces as one table, lined up on the functions they share; the frames only one
    of them has are marked."""
    def names(frames):
        return [f["function"] or "??" for f in frames]

    def cell(name, frames):
        if name is None:
            return ""
        f = next(f for f in frames if (f["function"] or "??") == name)
        return Raw(f"{code(name)} <small>{escape(where(f, short=True, no_source=''))}</small>")

    pairs = align(names(a), names(b))
    rows = [(cell(x, a), Raw("<small>◀ differs ▶</small>" if x is None or y is None
                             else "<small>same</small>"), cell(y, b)) for x, y in pairs]
    marked = [i for i, (x, y) in enumerate(pairs) if x is None or y is None]
    return html_table([titles[0], "", titles[1]], rows, marked=marked)


def backtrace_text(frames: list[dict]) -> str:
    """The backtrace as gdb prints one: ``#n function(args) at file:line``, a line per frame."""
    return "\n".join(f"#{n:<2} {f['function']}({arguments(f)}) at {where(f, short=True)}"
                     for n, f in enumerate(frames))
