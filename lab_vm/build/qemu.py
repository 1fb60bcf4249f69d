"""Build a debug QEMU: Debian's own QEMU source, TCG + KVM, x86_64 only, no front-ends.

It is the same version as the installed ``qemu-system-x86`` (same devices,
machine types and trace events), fetched with ``apt-get source`` so that
Debian's patches are applied, and configured ``--enable-debug`` (``-O0 -g``):
host gdb on it shows every frame of the path from the vCPU thread to a device
model with its arguments. ``scripts/setup-qemu-debug`` adds the deb-src entry
and the few build dependencies (``lab-vm build qemu-debug`` runs it).

The entry is keyed by the source version, the configure flags and a recipe
string, and is valid only once stamped COMPLETE (see cache.py). The binary runs
from its build directory, where Debian's stripped source has no firmware: it
gets ``-L`` paths to the installed firmware (``DebugQemuBuild.vm_options()``).
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import BuildError, MissingArtifact
from . import cache
from .progress import run_logged

LOG = logging.getLogger(__name__)

SOURCE_PACKAGE = "qemu"
BINARY_PACKAGE = "qemu-system-x86"     # the installed QEMU whose source version we build
# Bump when the recipe changes in a way that changes the result.
RECIPE = "qemu-debug-recipe-1"
BUILD_TIMEOUT = 3600.0
FIRMWARE_DIRS = ("/usr/share/qemu", "/usr/share/seabios")
CONFIGURE_FLAGS = (
    "--target-list=x86_64-softmmu", "--enable-debug",
    # Where Debian's QEMU finds its firmware, so that the binary also runs without -L.
    "--firmwarepath=" + ":".join(FIRMWARE_DIRS + ("/usr/lib/ipxe/qemu",)),
    "--enable-tcg", "--enable-kvm", "--enable-virtfs", "--enable-attr", "--enable-cap-ng",
    # Front-ends and back-ends the lab VM never uses: each one is build time and build deps.
    "--disable-docs", "--disable-tools", "--disable-guest-agent", "--disable-werror",
    "--disable-gtk", "--disable-sdl", "--disable-vnc", "--disable-spice", "--disable-opengl",
    "--disable-virglrenderer", "--disable-curses", "--disable-brlapi", "--disable-vte",
    "--disable-dbus-display", "--disable-gio", "--disable-xkbcommon", "--disable-png",
    "--disable-alsa", "--disable-pa", "--disable-jack", "--disable-oss", "--audio-drv-list=",
    "--disable-slirp", "--disable-capstone", "--disable-libudev", "--disable-linux-io-uring",
    "--disable-xen", "--disable-tpm", "--disable-plugins",
)
BINARY = "qemu-system-x86_64"
SETUP_HINT = "run `lab-vm build qemu-debug` (it runs scripts/setup-qemu-debug first; " \
             "about 5 minutes on 2 idle cores)"


@dataclass(frozen=True)
class DebugQemuBuild:
    """A completed build of QEMU with debug info (gdb on it: lab_vm.debug.qemu.QemuDebugger)."""

    binary: Path
    source: Path
    key: str
    version: str

    @property
    def qemu_args(self) -> list[str]:
        """Options the binary needs beside LabVM's own: firmware search paths, no default NIC."""
        args: list[str] = []
        for d in FIRMWARE_DIRS:
            args += ["-L", d]
        return args + ["-nic", "none"]

    def vm_options(self) -> dict:
        """Keyword arguments for LabVM: ``LabVM(**qd.vm_options(), devices=["edu"])``."""
        return {"qemu": str(self.binary), "qemu_args": self.qemu_args}


def source_version(timeout: float = 30.0) -> str:
    """The Debian source version of the installed qemu-system-x86 (e.g. 1:7.2+dfsg-7+deb12u18)."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", BINARY_PACKAGE],
                             capture_output=True, text=True, timeout=timeout)
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        raise MissingArtifact(f"cannot ask dpkg for the {BINARY_PACKAGE} version: {exc}") from exc
    if out.returncode != 0 or not out.stdout.strip():
        raise MissingArtifact(f"{BINARY_PACKAGE} is not installed: run `scripts/setup`")
    return out.stdout.strip()


def entry() -> cache.Entry:
    """The cache entry for the current inputs (source version, configure flags, recipe)."""
    key = cache.digest(RECIPE, source_version(), *CONFIGURE_FLAGS)
    return cache.Entry("qemu-debug", key)


def _result(ent: cache.Entry, version: str) -> DebugQemuBuild:
    src = ent.path / "src"
    return DebugQemuBuild(src / "build" / BINARY, src, ent.key, version)


def find_qemu_debug() -> DebugQemuBuild:
    """The built debug QEMU for the current inputs, or an error naming how to build it."""
    ent = entry()
    if not ent.valid:
        raise MissingArtifact(f"the debug QEMU is not built (expected {ent.path}): {SETUP_HINT}")
    return _result(ent, ent.info().get("version", ""))


def build_qemu_debug(*, jobs: int | None = None, timeout: float = BUILD_TIMEOUT,
                     force: bool = False, stream=None) -> DebugQemuBuild:
    """Build (or return the cached) debug QEMU; resumes an interrupted build where it stopped."""
    version = source_version()
    ent = entry()
    if ent.valid and not force:
        return _result(ent, version)
    jobs = jobs or (os.cpu_count() or 1) + 1
    deadline = time.monotonic() + timeout

    def left() -> float:
        return max(1.0, deadline - time.monotonic())

    with ent.locked(timeout=timeout):
        if ent.valid and not force:        # another process finished it while we waited
            return _result(ent, version)
        ent.invalidate()
        ent.path.mkdir(parents=True, exist_ok=True)
        log = ent.path / "build.log"
        src = _fetch_source(ent.path, version, log, left(), stream)
        build = src / "build"
        if not (build / "build.ninja").exists():
            shutil.rmtree(build, ignore_errors=True)
            build.mkdir()
            run_logged(["../configure", *CONFIGURE_FLAGS], cwd=build, log_path=log,
                       label="qemu-debug: configure", timeout=left(), stream=stream)
        run_logged(["ninja", f"-j{jobs}", BINARY], cwd=build, log_path=log,
                   label="qemu-debug: ninja", timeout=left(), stream=stream)
        result = _result(ent, version)
        _check_binary(result)
        ent.complete(version=version, flags=list(CONFIGURE_FLAGS), built=time.time())
        LOG.info("debug QEMU %s built: %s", version, result.binary)
        return result


def _fetch_source(root: Path, version: str, log: Path, timeout: float, stream) -> Path:
    """``apt-get source qemu=VERSION`` into ``root/fetch`` once, then move it to ``root/src``.

    The final directory name never changes after the build (DWARF records it,
    and gdb finds QEMU's sources there), so the tree is unpacked aside and
    renamed into place only when complete.
    """
    src = root / "src"
    marker = src / ".vmexit-unpacked"
    if marker.exists():
        return src
    shutil.rmtree(src, ignore_errors=True)
    staging = root / "fetch"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    if shutil.which("dpkg-source") is None:
        raise MissingArtifact(f"dpkg-source is missing: {SETUP_HINT}")
    try:
        run_logged(["apt-get", "source", "-q", f"{SOURCE_PACKAGE}={version}"], cwd=staging,
                   log_path=log, label="qemu-debug: apt-get source", timeout=timeout,
                   stream=stream)
    except BuildError as exc:
        raise BuildError(
            f"apt-get source {SOURCE_PACKAGE}={version} failed: is there a deb-src entry "
            "(scripts/setup-qemu-debug adds one), and is this version still on the mirror "
            f"(else `apt-get install {BINARY_PACKAGE}` moves to the current one)?",
            command=exc.command, status=exc.status, output=exc.output) from exc
    trees = [p for p in staging.iterdir() if p.is_dir()]
    if len(trees) != 1:
        raise BuildError(f"apt-get source left {len(trees)} directories in {staging}")
    trees[0].rename(src)
    shutil.rmtree(staging, ignore_errors=True)
    marker.touch()
    return src


def _check_binary(result: DebugQemuBuild, timeout: float = 30.0) -> None:
    """The binary exists, runs, and knows the edu device (the chapter's device)."""
    if not result.binary.exists():
        raise BuildError(f"the debug QEMU build finished but {result.binary} is missing")
    cmd = [str(result.binary), *result.qemu_args, "-device", "help"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0 or '"edu"' not in out.stdout:
        raise BuildError("the debug QEMU does not run or lacks the edu device", command=cmd,
                         status=out.returncode, output=out.stdout + out.stderr)
