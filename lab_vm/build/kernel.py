"""Build the lab kernel: Debian's linux-source-6.1, tinyconfig + our fragments.

The fragments in ``lab_vm/kconfig/`` are merged onto ``tinyconfig`` in file-name
order, then ``olddefconfig`` fills in the rest. olddefconfig silently drops a
symbol whose dependencies are off, so the final .config is checked against
every line the fragments asked for, and the build fails naming what was lost.
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


def fragments() -> list[Path]:
    """The config fragments, in the order they are merged."""
    return sorted(paths.KCONFIG_DIR.glob("*.config"))


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
    """Lines the fragments asked for that the final .config does not hold."""
    have = parse_fragment(final_config)
    missing = []
    for frag in frags:
        for name, value in parse_fragment(frag.read_text()).items():
            got = have.get(name, "n")
            if got != value:
                missing.append(f"{name}={value} (got {got}; asked in {frag.name})")
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


def entry() -> cache.Entry:
    """The cache entry for the current inputs (source version, fragments, compiler, recipe)."""
    if not SOURCE_TARBALL.exists():
        raise MissingArtifact(f"{SOURCE_TARBALL} is missing: run `scripts/setup` "
                              f"(it installs the Debian package {SOURCE_PACKAGE})")
    key = cache.digest(RECIPE, _source_version(), _compiler_version(), *fragments())
    return cache.Entry("kernel", key)


def find_kernel() -> Kernel:
    """The built kernel for the current inputs, or an error naming the command that builds it."""
    ent = entry()
    if not ent.valid:
        raise MissingArtifact(
            "the lab kernel is not built for the current config fragments "
            f"(expected {ent.path}): run `lab-vm build` (about 3 minutes on 2 cores)")
    return Kernel(ent.path / "linux", ent.key)


def build_kernel(*, jobs: int | None = None, timeout: float = BUILD_TIMEOUT,
                 force: bool = False, stream=None) -> Kernel:
    """Build (or return the cached) lab kernel."""
    ent = entry()
    if ent.valid and not force:
        return Kernel(ent.path / "linux", ent.key)
    jobs = jobs or (os.cpu_count() or 1) + 1
    deadline = time.monotonic() + timeout
    with ent.locked(timeout=timeout):
        if ent.valid and not force:        # another process finished it while we waited
            return Kernel(ent.path / "linux", ent.key)
        ent.invalidate()
        ent.path.mkdir(parents=True, exist_ok=True)
        tree = ent.path / "linux"
        log = ent.path / "build.log"
        _unpack(ent.path, tree, log, deadline, stream)

        def make(*targets, label):
            run_logged(["make", f"-j{jobs}", *targets], cwd=tree, log_path=log, label=label,
                       timeout=max(1.0, deadline - time.monotonic()), stream=stream)

        make("tinyconfig", label="kernel: tinyconfig")
        frags = fragments()
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
        kernel = Kernel(tree, ent.key)
        # A symbol index in vmlinux makes gdb start in 0.5 s instead of 1.5 s (every attach).
        run_logged(["gdb-add-index", str(kernel.vmlinux)], cwd=tree, log_path=log,
                   label="kernel: gdb index", timeout=300, stream=stream)
        for artifact in (kernel.vmlinux, kernel.bzimage, kernel.gdb_script):
            if not artifact.exists():
                raise BuildError(f"kernel build finished but {artifact} is missing")
        ent.complete(source=_source_version(), release=kernel.release,
                     fragments=[f.name for f in frags], built=time.time())
        cache.prune("kernel", keep=2)
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
