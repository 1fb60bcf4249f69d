"""lab_vm has no import cycles: every module's imports of the package, also the ones deferred
into functions, form a graph without loops — so its layers can be read off the imports."""
from __future__ import annotations

import ast
import concurrent.futures
import subprocess
import sys
from pathlib import Path

from conftest import REPO

PACKAGE = REPO / "lab_vm"


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = PACKAGE.parent / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports_in(text: str, name: str, is_package: bool = False) -> set[str]:
    """The lab_vm modules the source ``text`` of module ``name`` imports, anywhere in it.

    ``from X import a, b`` is an edge to each of a, b that is a module, and to X itself
    if it also takes a name X defines (``from lab_vm import LabVM`` runs lab_vm/__init__).
    """
    package = name if is_package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("lab_vm"):
                continue
            submodules = {f"{target}.{a.name}" for a in node.names
                          if is_module(f"{target}.{a.name}")}
            found |= submodules
            if len(submodules) < len(node.names):
                found.add(target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lab_vm")}
    found.discard(name)
    return found


def imports_of(path: Path) -> set[str]:
    """The lab_vm modules the file ``path`` imports (gdb_side's too: it runs inside gdb)."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {t for t in imports_of(path) if t in modules}
            for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_an_import_of_a_name_from_a_package_is_an_edge_to_its_init():
    assert imports_in("from .. import paths", "lab_vm.build.cache") == {"lab_vm.paths"}
    assert imports_in("from .. import LabVM, paths", "lab_vm.build.kernel") == \
        {"lab_vm", "lab_vm.paths"}
    assert imports_in("from . import test", "lab_vm.grading.x") == {"lab_vm.grading"}
    assert imports_in("from .checker import test", "lab_vm.grading.x") == \
        {"lab_vm.grading.checker"}
    edges = {"lab_vm": {"lab_vm.vm.machine"}, "lab_vm.vm.machine": {"lab_vm.build.kernel"},
             "lab_vm.build.kernel": {"lab_vm"}}
    assert cycles(edges)


def test_lab_vm_has_no_import_cycle():
    loops = cycles(graph())
    assert not loops, "import cycles in lab_vm:\n" + "\n".join(" -> ".join(c) for c in loops)


def test_every_module_imports_on_its_own():
    """Each module imports in a fresh interpreter (no module needs another imported first)."""
    names = sorted(n for n in graph() if n != "lab_vm.debug.gdb_side")   # gdb_side needs gdb's Python
    code = "import importlib, sys\nimportlib.import_module(sys.argv[1])\n"

    def fresh_import(name):
        proc = subprocess.run([sys.executable, "-c", code, name], capture_output=True,
                              text=True, cwd=REPO, timeout=300)
        return name, proc

    with concurrent.futures.ThreadPoolExecutor(4) as pool:       # one interpreter each
        failed = {name: proc.stderr[-800:] for name, proc in pool.map(fresh_import, names)
                  if proc.returncode != 0}
    assert not failed, failed


# The layers lab_vm/__init__.py describes, bottom first: a module imports only from its own
# layer or the ones below it.
LAYERS = ["errors paths", "build", "vm", "debug", "baremetal", "grading", "tools"]
# The one reference upwards, deferred into LabVM.gdb(): debug.guest needs nothing from vm/.
UPWARDS = {("lab_vm.vm.machine", "lab_vm.debug.guest")}


def layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    for rank, names in enumerate(LAYERS):
        if top in names.split():
            return rank
    return len(LAYERS)           # lab_vm itself (the package's public names): on top


def upward_imports(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b}" for a, targets in edges.items() for b in targets
                  if layer(b) > layer(a) and (a, b) not in UPWARDS)


def test_the_layer_check_finds_an_upward_import():
    assert upward_imports({"lab_vm.build.kernel": {"lab_vm.vm.machine"}}) == \
        ["lab_vm.build.kernel -> lab_vm.vm.machine"]
    assert upward_imports({"lab_vm.tools.cli": {"lab_vm.vm.machine", "lab_vm.errors"}}) == []


def test_every_module_sits_in_a_layer_and_imports_only_downwards():
    edges = graph()
    assert all(layer(m) < len(LAYERS) for m in edges if m != "lab_vm"), \
        [m for m in edges if layer(m) == len(LAYERS) and m != "lab_vm"]
    assert not upward_imports(edges), upward_imports(edges)
