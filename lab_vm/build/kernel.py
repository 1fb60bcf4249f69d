"""Build the lab kernel: Debian's linux-source-6.1, tinyconfig + our fragments.

The fragments in ``lab_vm/kconfig/`` are merged onto ``tinyconfig`` in file-name
order, then ``olddefconfig`` fills in the rest. olddefconfig silently drops a
symbol whose dependencies are off, so the final .config is checked against
every line the fragments asked for, and the build fails naming what was lost.

A *variant* is the same kernel with more fragments: ``lab_vm/kconfig/<variant>/*.config``
are merged after the base ones (a later line overrides an earlier one, in the merge
and in the check). The base glob does not see them, so a variant never changes the
book's kernel key. ``checking`` is the variant with the kernel's bug detectors
(lockdep, SLUB debugging, kmemleak...) that grading boots. Each variant is its own cache
entry kind (``kernel-checking-<key>``), pruned apart from the book's kernel.
"""
from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import BuildError, KconfigError, MissingArtifact
from . import cache
from .progress import run_logged

LOG = logging.getLogger(__name__)

SOURCE_PACKAGE = "linux-source-6.1"
SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
# Bump when the build recipe changes in a way that changes the result.
RECIPE = "kernel-recipe-2"
BUILD_TIMEOUT = 3600.0


@dataclass(frozen=True)
class Kernel:
    """A completed kernel build; ``tree`` is also the directory to build modules against."""

    tree: Path
    key: str
    variant: str | None = None       # None: the book's kernel; else a folder of lab_vm/kconfig

    @property
    def vmlinux(self) -> Path:
        return self.tree / "vmlinux"

    @property
    def bzimage(self) -> Path:
        return self.tree / "arch/x86/boot/bzImage"

    @property
    def config(self) -> Path:
        return self.tree / ".config"

    @property
    def gdb_script(self) -> Path:
        return self.tree / "vmlinux-gdb.py"

    def module_path(self, name: str) -> Path:
        """The built .ko of one of the kernel's own modules (CONFIG_...=m)."""
        for line in (self.tree / "modules.order").read_text().split():
            rel = Path(line).with_suffix(".ko")
            if rel.stem == name.replace("-", "_") and (self.tree / rel).exists():
                return self.tree / rel
        raise MissingArtifact(f"the lab kernel has no module {name!r} (is it =m in a "
                              "fragment of lab_vm/kconfig?)")

    def module_depends(self, name: str) -> list[str]:
        """The modules ``name`` needs, from the ``depends=`` entry of its .modinfo section."""
        data = self.module_path(name).read_bytes()
        at = data.find(b"\0depends=")
        if at < 0:
            return []
        value = data[at + len(b"\0depends="):data.index(b"\0", at + 1)].decode()
        return [dep for dep in value.split(",") if dep]

    @property
    def release(self) -> str:
        return (self.tree / "include/config/kernel.release").read_text().strip()


def variants() -> list[str]:
    """The kernel variants there are fragments for (folders of lab_vm/kconfig)."""
    return sorted(p.name for p in paths.KCONFIG_DIR.iterdir()
                  if p.is_dir() and any(p.glob("*.config")))


def fragments(variant: str | None = None) -> list[Path]:
    """The config fragments, in the order they are merged: the base ones, then the variant's."""
    base = sorted(paths.KCONFIG_DIR.glob("*.config"))
    if variant is None:
        return base
    extra = sorted((paths.KCONFIG_DIR / variant).glob("*.config"))
    if not extra or "/" in variant or variant.startswith("."):
        raise KconfigError(f"no kernel variant {variant!r}: lab_vm/kconfig has fragments for "
                           f"{', '.join(variants()) or 'none'}", [])
    return base + extra


def parse_fragment(text: str) -> dict[str, str]:
    """``{"CONFIG_X": "y", "CONFIG_Y": "n"}`` from .config-style text ("is not set" → "n")."""
    wanted = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            wanted[line[2:-len(" is not set")]] = "n"
        elif line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            wanted[name] = value
    return wanted


def missing_symbols(final_config: str, frags: list[Path]) -> list[str]:
    """Lines the fragments asked for that the final .config does not hold.

    As in the merge, a later fragment's line for a symbol replaces an earlier one's
    (a variant may turn on what a base fragment leaves off).
    """
    have = parse_fragment(final_config)
    wanted: dict[str, tuple[str, str]] = {}
    for frag in frags:
        for name, value in parse_fragment(frag.read_text()).items():
            wanted.pop(name, None)          # re-insert: keep the order of the last asker
            wanted[name] = (value, frag.name)
    missing = []
    for name, (value, asker) in wanted.items():
        got = have.get(name, "n")
        if got != value:
            missing.append(f"{name}={value} (got {got}; asked in {asker})")
    return missing


@functools.lru_cache(maxsize=None)   # asked by every LabVM: one dpkg-query per process
def _source_version() -> str:
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", SOURCE_PACKAGE],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout:
            return out.stdout
    except FileNotFoundError:
        pass
    st = SOURCE_TARBALL.stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


@functools.lru_cache(maxsize=None)
def _compiler_version() -> str:
    out = subprocess.run(["gcc", "-dumpfullversion"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def kind(variant: str | None = None) -> str:
    """The cache entry kind of a variant: ``kernel``, ``kernel-checking``."""
    return "kernel" if variant is None else f"kernel-{variant}"


def entry(variant: str | None = None) -> cache.Entry:
    """The cache entry for the current inputs (source version, fragments, compiler, recipe)."""
    if not SOURCE_TARBALL.exists():
        raise MissingArtifact(f"{SOURCE_TARBALL} is missing: run `scripts/setup` "
                              f"(it installs the Debian package {SOURCE_PACKAGE})")
    key = cache.digest(RECIPE, _source_version(), _compiler_version(), *fragments(variant))
    return cache.Entry(kind(variant), key)


def find_kernel(variant: str | None = None) -> Kernel:
    """The built kernel for the current inputs, or an error naming the command that builds it."""
    ent = entry(variant)
    if not ent.valid:
        what, how = (("the lab kernel", "`lab-vm build` (about 10 minutes on 2 cores)")
                     if variant is None else
                     (f"the {variant} kernel",
                      f"`lab-vm build --{variant}` (10-20 minutes on 2 cores)"))
        raise MissingArtifact(f"{what} is not built for the current config fragments "
                              f"(expected {ent.path}): run {how}")
    return Kernel(ent.path / "linux", ent.key, variant)


def build_kernel(*, variant: str | None = None, jobs: int | None = None,
                 timeout: float = BUILD_TIMEOUT, force: bool = False, stream=None) -> Kernel:
    """Build (or return the cached) lab kernel, or one of its variants."""
    ent = entry(variant)
    if ent.valid and not force:
        return Kernel(ent.path / "linux", ent.key, variant)
    jobs = jobs or (os.cpu_count() or 1) + 1
    deadline = time.monotonic() + timeout
    with ent.locked(timeout=timeout):
        if ent.valid and not force:        # another process finished it while we waited
            return Kernel(ent.path / "linux", ent.key, variant)
        ent.invalidate()
        ent.path.mkdir(parents=True, exist_ok=True)
        tree = ent.path / "linux"
        log = ent.path / "build.log"
        _unpack(ent.path, tree, log, deadline, stream)

        def make(*targets, label):
            run_logged(["make", f"-j{jobs}", *targets], cwd=tree, log_path=log, label=label,
                       timeout=max(1.0, deadline - time.monotonic()), stream=stream)

        make("tinyconfig", label="kernel: tinyconfig")
        frags = fragments(variant)
        run_logged(["scripts/kconfig/merge_config.sh", "-m", ".config", *map(str, frags)],
                   cwd=tree, log_path=log, label="kernel: merge fragments",
                   timeout=120, stream=stream)
        make("olddefconfig", label="kernel: olddefconfig")
        missing = missing_symbols((tree / ".config").read_text(), frags)
        if missing:
            raise KconfigError("olddefconfig dropped symbols the fragments ask for "
                               "(turn on what they depend on):\n  " + "\n  ".join(missing),
                               missing)
        make("all", "scripts_gdb", label="kernel: make")
        kernel = Kernel(tree, ent.key, variant)
        # A symbol index in vmlinux makes gdb start in 0.5 s instead of 1.5 s (every attach).
        run_logged(["gdb-add-index", str(kernel.vmlinux)], cwd=tree, log_path=log,
                   label="kernel: gdb index", timeout=300, stream=stream)
        for artifact in (kernel.vmlinux, kernel.bzimage, kernel.gdb_script):
            if not artifact.exists():
                raise BuildError(f"kernel build finished but {artifact} is missing")
        ent.complete(source=_source_version(), release=kernel.release, variant=variant,
                     fragments=[f.name for f in frags], built=time.time())
        cache.prune(kind(variant), keep=2)
        return kernel


def _unpack(root: Path, tree: Path, log: Path, deadline: float, stream) -> None:
    """Unpack the source once; a half-unpacked tree (no marker) is removed and redone."""
    marker = tree / ".vmexit-unpacked"
    if marker.exists():
        return
    shutil.rmtree(tree, ignore_errors=True)
    staging = root / "unpack"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    run_logged(["tar", "xf", str(SOURCE_TARBALL), "-C", str(staging)], cwd=root, log_path=log,
               label="kernel: unpack source", timeout=max(1.0, deadline - time.monotonic()),
               stream=stream)
    (unpacked,) = list(staging.iterdir())
    unpacked.rename(tree)
    staging.rmdir()
    marker.touch()
