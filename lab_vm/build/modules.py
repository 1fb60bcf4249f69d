"""Out-of-tree kernel modules built against the lab kernel (``make -C <tree> M=<dir>``)."""
from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .kernel import Kernel, find_kernel
from ..errors import ConfigError, ModuleBuildError

LOG = logging.getLogger(__name__)
# gcc's "file:line:col: error: message" and the linker's/modpost's "ERROR: ..." lines.
ERROR_RE = re.compile(r"^(?P<file>[^\s:]+):(?P<line>\d+):(?:\d+:)? (?:fatal )?error: .*$"
                      r"|^(?:ERROR|make\[\d+\]: \*\*\*).*$", re.M)

# Modules are compiled at -Os although the kernel runs at -O2 (kconfig/15-fast-boot.config):
# at -O2 GCC inlines a driver's helpers into their caller and keeps a loop's iterator in
# pieces that gdb cannot show, and the chapters and a student's gdb session read a module's
# locals (chapter 3 samples xform's bvec_iter at every segment). KCFLAGS comes last on gcc's
# command line, so its -Os wins over the kernel's -O2.
MODULE_FLAGS = ("KCFLAGS=-Os",)


@dataclass
class ModuleBuild:
    directory: Path
    modules: list[Path]
    output: str
    warnings: list[str]


def compiler_errors(output: str, limit: int = 10) -> list[str]:
    """The first ``limit`` error lines of a kernel build's output, made relative and readable."""
    errors = [m.group(0) for m in ERROR_RE.finditer(output)]
    first = [e for e in errors if " error: " in e] or errors
    return first[:limit]


def build_module(directory: str | os.PathLike, *, kernel: Kernel | None = None,
                 timeout: float = 300.0, jobs: int | None = None,
                 extra_args: tuple[str, ...] = ()) -> ModuleBuild:
    """Build the module(s) in ``directory`` (which holds a Kbuild or Makefile) in place."""
    directory = Path(directory).resolve()
    if not directory.is_dir():
        raise ConfigError(f"{directory} is not a directory")
    if not any((directory / name).exists() for name in ("Kbuild", "Makefile")):
        raise ConfigError(f"{directory} has no Kbuild or Makefile: it is not a module directory")
    kernel = kernel or find_kernel()
    cmd = ["make", f"-j{jobs or (os.cpu_count() or 1)}", "-C", str(kernel.tree),
           f"M={directory}", *MODULE_FLAGS, *extra_args, "modules"]
    LOG.info("building module: %s", " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              errors="replace")
    except subprocess.TimeoutExpired as exc:
        raise ModuleBuildError(f"building the module in {directory} took over {timeout:g} s",
                               command=cmd, output=str(exc.stdout or "")) from exc
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        errors = compiler_errors(output)
        raise ModuleBuildError(
            f"the module in {directory} does not compile:\n  " + "\n  ".join(errors or
                                                                              ["(see output)"]),
            command=cmd, status=proc.returncode, output=output, errors=errors)
    warnings = [line for line in output.splitlines() if ": warning: " in line]
    modules = sorted(directory.glob("*.ko"))
    return ModuleBuild(directory, modules, output, warnings)


def build_variant(sources: list[Path], folder: Path, *, patch: Path | None = None,
                  timeout: float = 300.0, jobs: int | None = None) -> ModuleBuild:
    """Copy a module's ``sources`` into ``folder``, apply ``patch`` (-p1) if given, build it.

    How a chapter shows a wrong version of a lab's driver without copying the driver:
    the lab's solution plus a small patch, built side by side with the original.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for src in sources:
        shutil.copy(src, folder / src.name)
    if patch is not None:
        cmd = ["patch", "-s", "-p1", "-d", str(folder), "-i", str(patch)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise ModuleBuildError(f"{patch.name} does not apply to {folder}", command=cmd,
                                   status=proc.returncode, output=proc.stdout + proc.stderr)
    return build_module(folder, timeout=timeout, jobs=jobs)
