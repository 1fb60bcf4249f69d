"""Source excerpts for the book: a C function, a stretch of lines, an .rst note, read from the
kernel and QEMU trees at build time (so a page shows the code of the version it runs, never a
pasted listing)."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path


def c_function(path: Path, name: str) -> str:
    """The definition of C function ``name`` in ``path``: from its signature to the closing brace.

    QEMU and the kernel put the return type and name at column 0 and the opening brace of a
    function on a line of its own; the body ends at the first ``}`` at column 0.
    """
    lines = Path(path).read_text().splitlines()
    head = re.compile(rf"^(?:[A-Za-z_].*\b)?{re.escape(name)}\(")
    for i, line in enumerate(lines):
        if head.match(line) and not line.rstrip().endswith(";"):
            j = i
            while not lines[j].startswith("{"):
                j += 1
                if lines[j].rstrip().endswith(";"):      # a prototype after all
                    break
            else:
                end = next(k for k in range(j, len(lines)) if lines[k].startswith("}"))
                start = i - 1 if i and re.match(r"^(static\s+)?[\w\s\*]+$", lines[i - 1]) \
                    and lines[i - 1].strip() else i
                return "\n".join(lines[start:end + 1])
    raise LookupError(f"no definition of {name}() in {path}")


def excerpt(text: str, start: str, end: str, *, after: str | None = None,
            dedent: bool = True) -> str:
    """The lines from the first one containing ``start`` (after one containing ``after``, if
    given) to the first one from there containing ``end``, inclusive; ``dedent=False`` keeps the
    indentation (for pieces of one function shown together)."""
    lines = text.splitlines()
    i = 0
    if after is not None:
        i = next(n for n, line in enumerate(lines) if after in line)
    first = next(n for n in range(i, len(lines)) if start in lines[n])
    last = next(n for n in range(first, len(lines)) if end in lines[n])
    piece = "\n".join(lines[first:last + 1])
    return textwrap.dedent(piece) if dedent else piece


def rst_note(path: Path, containing: str) -> str:
    """The ``.. note::`` block of an .rst file whose text contains ``containing``, as text."""
    lines = Path(path).read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == ".. note::":
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and not nxt.startswith((" ", "\t")):
                    break
                body.append(nxt)
            text = textwrap.dedent("\n".join(body)).strip()
            if containing in " ".join(text.split()):
                return text
    raise LookupError(f"no note containing {containing!r} in {path}")
