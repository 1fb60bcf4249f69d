"""A lab folder and its ``lab.toml``: what students write, what the lab builds with, how it runs.

Two shapes share one description. In the repository a lab has ``solution/``
(the reference, with TODO markers) next to ``skeleton/``; in a handout the
student's working copy sits at the top of the folder and there is no solution.
"""
from __future__ import annotations

import importlib.util
import logging
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from ..errors import ConfigError
from .checker import TestSpec, collect

LOG = logging.getLogger(__name__)
LAB_FILE = "lab.toml"
KINDS = ("module", "python")


@dataclass(frozen=True)
class Lab:
    """One assignment, read from ``<root>/lab.toml``."""

    root: Path
    name: str
    title: str
    module: str                      # the .ko the build produces, without ".ko"; for a
                                     # Python lab, the Python module students write
    sources: tuple[str, ...]         # the files a student writes: all a grader takes
    build: tuple[str, ...]           # the lab's own build files (Kbuild): never the student's
    checker: Path                    # the Python file with the @test functions
    helpers: tuple[Path, ...] = ()   # C programs compiled (static) and copied into the guest
    devices: tuple[str, ...] = ()    # extra QEMU -device arguments for the VM
    cpus: int = 1                    # guest CPUs of the VM (concurrency bugs want 2 or more)
    memory: int = 256                # guest memory of the VM, MiB
    test_timeout: float = 20.0       # seconds a test may take
    command_timeout: float = 8.0     # seconds one guest command may take by default
    build_timeout: float = 60.0      # seconds the module build may take
    submission_timeout: float = 180.0  # seconds for a whole submission, build included
    kind: str = "module"             # "module": a kernel module tested in the lab VM;
                                     # "python": Python run on the host against /dev/kvm
    extra: dict = field(default_factory=dict, compare=False)
    private_tests: Path | None = None  # an instructor's folder of check_*.py (with_private_tests)

    @property
    def solution(self) -> Path:
        return self.root / "solution"

    @property
    def skeleton(self) -> Path:
        return self.root / "skeleton"

    @property
    def is_handout(self) -> bool:
        return not self.solution.is_dir()

    def build_file(self, name: str) -> Path:
        """The lab's own copy of a build file: the solution's, or a handout's top-level one."""
        path = (self.root if self.is_handout else self.solution) / name
        if not path.is_file():
            raise ConfigError(f"the lab {self.name} has no build file {path}")
        return path

    def default_workdir(self) -> Path:
        """Where ``lab-vm check`` looks for the student's files when no --dir is given."""
        if all((self.root / s).is_file() for s in self.sources):
            return self.root           # a handout: the working copy is the folder itself
        return self.skeleton

    def load_checker(self) -> ModuleType:
        """Import the checker file as a module (it is the lab's own, trusted code)."""
        spec = importlib.util.spec_from_file_location(
            f"vmexit_lab_{self.name.replace('-', '_')}", self.checker)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import the checker {self.checker}")
        module = importlib.util.module_from_spec(spec)
        # dataclasses (with postponed annotations) look their module up in sys.modules
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module

    def tests(self, *, hidden: bool = True) -> list[TestSpec]:
        """The lab's tests in file order; without the hidden ones unless ``hidden``."""
        specs = collect(self.load_checker())
        if not specs:
            raise ConfigError(f"{self.checker} defines no @test functions")
        if self.private_tests is not None:
            from .private import private_tests
            specs += private_tests(self, [s.name for s in specs])
        return [s for s in specs if hidden or not s.hidden]


def load_lab(root: str | Path) -> Lab:
    """Read ``<root>/lab.toml``; errors name the file and the key at fault."""
    root = Path(root).resolve()
    path = root / LAB_FILE
    if not path.is_file():
        raise ConfigError(f"{root} is not a lab folder: it has no {LAB_FILE}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    kind = data.get("kind", "module")
    if kind not in KINDS:
        raise ConfigError(f"{path}: kind = {kind!r} is not one of {', '.join(KINDS)}")
    known = {f for f in Lab.__dataclass_fields__} - {"root", "name", "extra"}
    try:
        lab = Lab(
            root=root,
            name=root.name,
            title=data["title"],
            module=data["module"],
            sources=tuple(data["sources"]),
            build=tuple(data.get("build", ["Kbuild"])),
            checker=root / data["checker"],
            helpers=tuple(root / h for h in data.get("helpers", [])),
            devices=tuple(data.get("devices", [])),
            kind=kind,
            **{k: int(data[k]) for k in ("cpus", "memory") if k in data},
            **{k: float(data[k]) for k in ("test_timeout", "command_timeout", "build_timeout",
                                           "submission_timeout") if k in data},
            extra={k: v for k, v in data.items() if k not in known},
        )
    except KeyError as exc:
        raise ConfigError(f"{path} lacks the key {exc.args[0]!r}") from None
    for name in lab.sources + lab.build:
        if Path(name).name != name:
            raise ConfigError(f"{path}: {name!r} must be a plain file name (no folders)")
    if not lab.checker.is_file():
        raise ConfigError(f"{path}: the checker {lab.checker} does not exist")
    LOG.debug("lab %s: sources %s, checker %s", lab.name, lab.sources, lab.checker.name)
    return lab


def find_labs(labs_dir: Path) -> list[Lab]:
    """Every lab under ``labs_dir`` (folders holding a lab.toml), sorted by name."""
    return [load_lab(p.parent) for p in sorted(labs_dir.glob(f"*/{LAB_FILE}"))]
