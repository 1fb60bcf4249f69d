"""TODO markers in a lab's solution, and hidden tests in its checker.

A solution marks what students write with numbered regions (see labs/README.md)::

    /* TODO 3: map BAR0 and keep its address in edu->regs */
    ret = pcim_iomap_regions(pdev, BIT(0), DRV_NAME);
    ...
    /* END TODO 3 */

Kbuild and Makefiles use ``# TODO 3: ...`` / ``# END TODO 3``. A TODO line may
end in ``| stub: <line>`` (before the ``*/`` in C): the skeleton then gets
that line in place of the solution, so that it still compiles. Rendering with
``reveal=N`` keeps the solution of TODOs 1..N, to hand out a lab in steps.

Hidden tests are ``@test(..., hidden=True)`` functions at the top level of a
checker; :func:`strip_hidden` removes them (and the comment lines right above
them) from the checker's source.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError


class MarkerError(ConfigError):
    """A solution's markers are malformed: unclosed, nested, duplicated or mismatched."""


@dataclass(frozen=True)
class Syntax:
    todo: re.Pattern
    end: re.Pattern
    comment: str            # how the skeleton's TODO line is written: "{indent}{text}"


C = Syntax(
    re.compile(r"^(?P<indent>[ \t]*)/\*\s*TODO\s+(?P<num>\d+):\s*(?P<text>.*?)"
               r"(?:\s*\|\s*stub:\s*(?P<stub>.*?))?\s*\*/[ \t]*$"),
    re.compile(r"^[ \t]*/\*\s*END\s+TODO\s+(?P<num>\d+)\s*\*/[ \t]*$"),
    "/* TODO {num}: {text} */")
HASH = Syntax(
    re.compile(r"^(?P<indent>[ \t]*)#\s*TODO\s+(?P<num>\d+):\s*(?P<text>.*?)"
               r"(?:\s*\|\s*stub:\s*(?P<stub>.*?))?[ \t]*$"),
    re.compile(r"^[ \t]*#\s*END\s+TODO\s+(?P<num>\d+)[ \t]*$"),
    "# TODO {num}: {text}")
LOOSE = re.compile(r"\bTODO\s+\d+\b")       # a number after TODO: meant as a marker


def syntax_for(path: Path) -> Syntax | None:
    """C for .c/.h, ``#`` comments for Kbuild/Makefiles/.mk/.py; None: the file has no markers."""
    if path.suffix in (".c", ".h"):
        return C
    if path.name in ("Kbuild", "Makefile", "GNUmakefile") or path.suffix in (".mk", ".py"):
        return HASH
    return None


@dataclass
class Todo:
    """One TODO: its number, what the student is asked, and the solution lines it replaces."""

    number: int
    text: str
    stub: str | None
    file: str
    line: int                                   # 1-based line of the TODO marker
    solution: list[str] = field(default_factory=list)


def parse(text: str, syntax: Syntax, filename: str = "<text>") -> list[Todo]:
    """The TODO regions of a file, checked: closed, not nested, END matches, not empty."""
    regions: list[Todo] = []
    current: Todo | None = None
    for lineno, line in enumerate(text.splitlines(), 1):
        todo, end = syntax.todo.match(line), syntax.end.match(line)
        where = f"{filename}:{lineno}"
        if todo:
            if current is not None:
                raise MarkerError(f"{where}: TODO {todo['num']} starts inside TODO "
                                  f"{current.number} (regions cannot nest)")
            current = Todo(int(todo["num"]), todo["text"], todo["stub"], filename, lineno)
        elif end:
            if current is None:
                raise MarkerError(f"{where}: END TODO {end['num']} without a TODO")
            if int(end["num"]) != current.number:
                raise MarkerError(f"{where}: END TODO {end['num']} closes TODO {current.number}")
            if not any(s.strip() for s in current.solution):
                raise MarkerError(f"{where}: TODO {current.number} has no solution lines")
            regions.append(current)
            current = None
        elif LOOSE.search(line):
            raise MarkerError(f"{where}: this looks like a marker but is not one: {line.strip()!r}"
                              " (see labs/README.md for the syntax)")
        elif current is not None:
            current.solution.append(line)
    if current is not None:
        raise MarkerError(f"{filename}:{current.line}: TODO {current.number} is never closed")
    return regions


def render(text: str, syntax: Syntax, *, reveal: int = 0, filename: str = "<text>") -> str:
    """The skeleton of ``text``: TODOs numbered above ``reveal`` lose their solution lines."""
    parse(text, syntax, filename)        # validate first: errors name the line
    out: list[str] = []
    hiding = False
    for line in text.splitlines():
        todo, end = syntax.todo.match(line), syntax.end.match(line)
        if todo:
            hiding = int(todo["num"]) > reveal
            if hiding:
                out.append(todo["indent"] + syntax.comment.format(num=todo["num"],
                                                                  text=todo["text"]))
                if todo["stub"]:
                    out.append(todo["indent"] + todo["stub"])
        elif end:
            hiding = False
        elif not hiding:
            out.append(line)
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def solution_lines(text: str, syntax: Syntax, filename: str = "<text>", *,
                   reveal: int = 0) -> set[str]:
    """The lines only a hidden TODO's solution holds (stripped): what a handout must not contain.

    Lines that the rendered file has anyway (``}``, ``return 0;``, or the
    solution of a TODO revealed with ``reveal``) are not secrets, so they are left out.
    """
    regions = parse(text, syntax, filename)
    inside = {s.strip() for r in regions if r.number > reveal for s in r.solution if s.strip()}
    outside = {line.strip() for line in render(text, syntax, reveal=reveal).splitlines()}
    return inside - outside


# -- hidden tests ------------------------------------------------------------------------------
def _is_hidden_test(decorator: ast.expr, filename: str) -> bool:
    if not isinstance(decorator, ast.Call):
        return False
    func = decorator.func
    name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(
        func, ast.Attribute) else None
    if name != "test":
        return False
    for kw in decorator.keywords:
        if kw.arg == "hidden":
            if not isinstance(kw.value, ast.Constant):
                raise MarkerError(f"{filename}:{decorator.lineno}: hidden= must be the literal "
                                  "True or False, so that handouts can leave the test out")
            return kw.value.value is True
    return False


def hidden_tests(source: str, filename: str = "<checker>") -> list[str]:
    """Names of the top-level functions decorated with ``@test(..., hidden=True)``."""
    tree = ast.parse(source, filename)
    return [node.name for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and any(_is_hidden_test(d, filename) for d in node.decorator_list)]


def strip_hidden(source: str, filename: str = "<checker>") -> str:
    """``source`` without its hidden tests (decorators, bodies, and the comments just above)."""
    tree = ast.parse(source, filename)
    lines = source.splitlines(keepends=True)
    drop: set[int] = set()                 # 0-based line indexes
    for node in tree.body:
        if not (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and any(_is_hidden_test(d, filename) for d in node.decorator_list)):
            continue
        start = min(d.lineno for d in node.decorator_list) - 1
        while start > 0 and lines[start - 1].lstrip().startswith("#"):
            start -= 1
        drop.update(range(start, node.end_lineno))
    kept = [line for i, line in enumerate(lines) if i not in drop]
    text = re.sub(r"\n{4,}", "\n\n\n", "".join(kept)).rstrip("\n") + "\n"
    if hidden_tests(text, filename):       # the cut must be clean and complete
        raise MarkerError(f"{filename}: hidden tests survived stripping")
    return text
