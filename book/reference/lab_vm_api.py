"""The reference page's API listing: every public class and function of every lab_vm module.

Walks the package (pkgutil), so a new module or class is on the page without anyone editing
it. Public means: defined in that module (not imported into it) and not named with a leading
underscore. A module that only imports inside another program (lab_vm.debug.gdb_side runs inside
gdb) is read from its source with ast instead. Each entry has an HTML id, its dotted name
(`lab_vm.vm.pci.Resource`), which tests/test_book.py looks for.
"""
from __future__ import annotations

import ast
import html
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import lab_vm


def module_names() -> list[str]:
    """lab_vm and all its submodules, in dotted order."""
    names = [m.name for m in pkgutil.walk_packages(lab_vm.__path__, "lab_vm.")]
    return ["lab_vm"] + sorted(names)


def doc_html(doc: str | None) -> str:
    """A docstring as HTML: escaped, ``literals`` as code, paragraphs kept."""
    text = html.escape((inspect.cleandoc(doc) if doc else "(no docstring)").replace("::\n", ":\n"))
    text = re.sub(r"``(.+?)``", r"<code>\1</code>", text)
    text = re.sub(r":\w+:`~?(.+?)`", r"<code>\1</code>", text)      # :class:`LabVM`
    return f'<div style="white-space: pre-wrap">{text}</div>'


def entry(anchor: str, head: str, doc: str | None, members: str = "") -> str:
    return (f'<dt id="{html.escape(anchor)}"><code>{html.escape(head)}</code></dt>'
            f"<dd>{doc_html(doc)}{members}</dd>")


def signature(obj) -> str:
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):            # ctypes structures, some builtins
        return "(...)"


def class_members(cls) -> str:
    rows = []
    for name, member in vars(cls).items():
        if name.startswith("_"):
            continue
        if isinstance(member, (staticmethod, classmethod)):
            member = member.__func__
        if isinstance(member, property):
            rows.append(entry(f"{cls.__module__}.{cls.__qualname__}.{name}",
                              f"{cls.__name__}.{name}", member.__doc__))
        elif inspect.isfunction(member):
            rows.append(entry(f"{cls.__module__}.{cls.__qualname__}.{name}",
                              f"{cls.__name__}.{name}{signature(member)}", member.__doc__))
    return f"<dl>{''.join(rows)}</dl>" if rows else ""


def imported_module_html(module) -> str:
    items = []
    for name, obj in vars(module).items():
        if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
            continue
        if inspect.isclass(obj):
            bases = ", ".join(b.__name__ for b in obj.__bases__ if b is not object)
            items.append(entry(f"{module.__name__}.{name}",
                               f"class {name}{f'({bases})' if bases else ''}{signature(obj)}",
                               obj.__doc__, class_members(obj)))
        elif callable(obj):               # functions, lru_cache-wrapped ones too
            items.append(entry(f"{module.__name__}.{name}", f"{name}{signature(obj)}",
                               obj.__doc__))
    return "<dl>" + "".join(items) + "</dl>" if items else "<p>(no public classes or functions)</p>"


def source_module_html(name: str) -> str:
    """A module that cannot be imported here, listed from its source."""
    path = Path(lab_vm.__file__).parent.joinpath(*name.split(".")[1:]).with_suffix(".py")
    tree = ast.parse(path.read_text())
    items = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and not node.name.startswith("_"):
            if isinstance(node, ast.ClassDef):
                bases = ", ".join(ast.unparse(b) for b in node.bases)
                head = f"class {node.name}({bases})" if bases else f"class {node.name}"
            else:
                head = f"{node.name}({ast.unparse(node.args)})"
            items.append(entry(f"{name}.{node.name}", head, ast.get_docstring(node)))
    return "<dl>" + "".join(items) + "</dl>"


def page_html() -> str:
    """The whole API listing: an index of modules, then each module's classes and functions."""
    sections, index = [], []
    for name in module_names():
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            if exc.name and exc.name.startswith("lab_vm"):
                raise                          # a broken lab_vm module must fail the page
            doc = ast.get_docstring(ast.parse(Path(
                lab_vm.__file__).parent.joinpath(*name.split(".")[1:]).with_suffix(".py")
                .read_text()))
            body = (f"<p><i>Imports <code>{html.escape(exc.name or '?')}</code>, so it runs "
                    f"only inside that program; listed from its source.</i></p>"
                    + source_module_html(name))
        else:
            doc = module.__doc__
            body = imported_module_html(module)
            if name == "lab_vm":
                body = ("<p>Imported from <code>lab_vm</code> itself: "
                        + ", ".join(f'<a href="#{getattr(lab_vm, n).__module__}.{n}">'
                                    f"<code>{n}</code></a>" for n in lab_vm.__all__) + "</p>")
        index.append(f'<a href="#{name}"><code>{name}</code></a>')
        sections.append(f'<h3 id="{name}">{name}</h3>{doc_html(doc)}{body}')
    return "<p>" + " · ".join(index) + "</p>" + "".join(sections)
