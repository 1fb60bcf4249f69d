"""A submission's source files: found by the lab's rule, copied beside the lab's build files.

Shared by the module labs' runner, the Python labs' host runner and ``lab-vm pack``, so that
all three take exactly the same files from a working copy.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import LabVMError, ModuleBuildError
from .lab import Lab

SEARCH_DEPTH = 4                 # how deep in a submission a source file is looked for


class NoModule(LabVMError):
    """There is nothing to test: no source file, or the build made no module."""


def find_sources(lab: Lab, tree: Path) -> dict[str, Path]:
    """{name: path} of the lab's source files in ``tree`` (the shallowest wins; no links)."""
    found: dict[str, Path] = {}
    for name in lab.sources:
        candidates = [p for p in tree.rglob(name)
                      if p.is_file() and not p.is_symlink()
                      and len(p.relative_to(tree).parts) <= SEARCH_DEPTH]
        if candidates:
            found[name] = min(candidates, key=lambda p: (len(p.parts), str(p)))
    return found


def prepare(lab: Lab, tree: Path, work: Path) -> None:
    """Fill the empty ``work`` folder with the copy's sources and the lab's build files."""
    sources = find_sources(lab, tree)
    if not sources:
        raise NoModule(f"no {', '.join(lab.sources)} found in the submission")
    missing = [name for name in lab.sources if name not in sources]
    if missing:
        raise ModuleBuildError(f"the submission lacks {', '.join(missing)}",
                               errors=[f"{name}: missing" for name in missing])
    work.mkdir(parents=True, exist_ok=True)
    for name, path in sources.items():
        shutil.copyfile(path, work / name)       # contents only: no links, no modes
    for name in lab.build:
        shutil.copyfile(lab.build_file(name), work / name)
