"""Private tests: an instructor's checker files kept outside the repository.

The repository must hold the solutions (the book builds from them), so its
hidden tests are not hidden from a student who reads it. A course keeps more
tests in a folder of its own: ``check_*.py`` files written with the same
``@test`` API, and ``*.c`` helper programs if they need any. Graders add them
(``scripts/grade --private-tests DIR``): they run after the lab's own tests,
in the same VM session and with the same rules, and their points add to the
total. They are hidden tests by definition (``hidden=True`` whatever the
decorator says), so ``lab-vm check`` and handouts never see them: handouts
are made from the repository's lab folder alone.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import sys
from pathlib import Path

from ..errors import ConfigError
from .checker import TestSpec, collect

LOG = logging.getLogger(__name__)
PATTERN = "check_*.py"


def with_private_tests(lab, folder: str | Path):
    """``lab`` with the private tests of ``folder`` (and its ``*.c`` helpers) added."""
    folder = Path(folder).resolve()
    if not folder.is_dir():
        raise ConfigError(f"--private-tests {folder}: not a folder")
    if not sorted(folder.glob(PATTERN)):
        raise ConfigError(f"--private-tests {folder}: it holds no {PATTERN} file")
    if folder == lab.root or lab.root in folder.parents:
        LOG.warning("the private tests %s are inside the lab folder %s: a handout or the "
                    "public repository may carry them", folder, lab.root)
    helpers = tuple(sorted(folder.glob("*.c")))
    taken = {h.stem for h in lab.helpers}
    clash = [h.name for h in helpers if h.stem in taken]
    if clash:
        raise ConfigError(f"--private-tests {folder}: the helper(s) {', '.join(clash)} have "
                          "the name of one of the lab's own")
    lab = dataclasses.replace(lab, private_tests=folder, helpers=lab.helpers + helpers)
    lab.tests()            # import them now: a typo is an error before anything is graded
    return lab


def private_files(folder: Path) -> list[Path]:
    """What the private tests are made of (for the results' cache key)."""
    return sorted(folder.glob(PATTERN)) + sorted(folder.glob("*.c"))


def private_tests(lab, taken: list[str]) -> list[TestSpec]:
    """The @test functions of the lab's private folder, hidden, in file then line order."""
    assert lab.private_tests is not None
    specs: list[TestSpec] = []
    names = set(taken)
    for path in sorted(lab.private_tests.glob(PATTERN)):
        module = _load(lab, path)
        found = collect(module)
        if not found:
            raise ConfigError(f"{path} defines no @test functions")
        for spec in found:
            if spec.name in names:
                raise ConfigError(f"{path}: the test {spec.name!r} has the name of another "
                                  "test of the lab; rename it")
            names.add(spec.name)
            specs.append(dataclasses.replace(spec, hidden=True))
    return specs


def _load(lab, path: Path):
    """Import one private checker file as a module (the instructor's, trusted code)."""
    name = f"vmexit_private_{lab.name.replace('-', '_')}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import the private checker {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses look their module up in sys.modules
    try:
        spec.loader.exec_module(module)
    except Exception as exc:            # noqa: BLE001 — the instructor's file: say which
        raise ConfigError(f"the private checker {path} does not import: "
                          f"{type(exc).__name__}: {exc}") from exc
    return module
