"""The lab VM's initramfs: Debian's busybox-static, our /init and the command agent."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .. import paths
from ..errors import BuildError, MissingArtifact
from . import cache
from .cpio import CpioWriter
from .kernel import _compiler_version

BUSYBOX = Path("/bin/busybox")
RECIPE = "initramfs-recipe-1"
DIRS = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "root",
        "etc", "mnt", "mnt/share", "lib", "lib/modules"]


@dataclass(frozen=True)
class Initramfs:
    path: Path
    key: str


@functools.lru_cache(maxsize=None)   # asked by every LabVM: one dpkg-query per process
def _busybox_version() -> str:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "busybox-static"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout or "unknown"


def _sources() -> list[Path]:
    return [paths.GUEST_DIR / "init", paths.GUEST_DIR / "agent.c", paths.GUEST_DIR / "mmio.c"]


def entry() -> cache.Entry:
    if not BUSYBOX.exists() or "static" not in _file_kind(BUSYBOX):
        raise MissingArtifact(f"{BUSYBOX} is not Debian's static busybox: run `scripts/setup` "
                              "(it installs the package busybox-static)")
    return cache.Entry("initramfs", cache.digest(RECIPE, _busybox_version(), _compiler_version(),
                                                 *_sources()))


def _file_kind(path: Path) -> str:
    # "statically linked" shows in the ELF's program headers: no PT_INTERP.
    with open(path, "rb") as f:
        data = f.read(4096)
    return "dynamic" if b"/lib64/ld-linux" in data or b"ld-linux" in data else "static"


def find_initramfs() -> Initramfs:
    ent = entry()
    if not ent.valid:
        raise MissingArtifact(f"the initramfs is not built (expected {ent.path}): "
                              "run `lab-vm build`")
    return Initramfs(ent.path / "initramfs.cpio", ent.key)


def build_static(source: Path, output: Path, *, cflags: Sequence[str] = (), strip: bool = True,
                 timeout: float = 120.0) -> Path:
    """Compile one self-contained C program for the guest (static, so it needs no libc there).

    ``cflags`` come after the defaults (``-O2 -Wall``), so they can add defines or override the
    optimisation level; ``strip=False`` keeps the symbols, for objdump or gdb.
    """
    cmd = ["gcc", "-static", "-O2", "-Wall", *(["-s"] if strip else []), *cflags,
           "-o", str(output), str(source)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise BuildError(f"compiling {source.name} for the guest failed", command=cmd,
                         status=proc.returncode, output=proc.stderr)
    return output


def build_initramfs(*, force: bool = False) -> Initramfs:
    ent = entry()
    if ent.valid and not force:
        return Initramfs(ent.path / "initramfs.cpio", ent.key)
    with ent.locked(timeout=300):
        ent.invalidate()
        shutil.rmtree(ent.path, ignore_errors=True)
        ent.path.mkdir(parents=True)
        agent = build_static(paths.GUEST_DIR / "agent.c", ent.path / "vmexit-agent")
        # a PCI BAR's registers from user space, for the chapters and the checkers alike
        mmio = build_static(paths.GUEST_DIR / "mmio.c", ent.path / "mmio")
        applets = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                                 check=True, timeout=30).stdout.split()
        out_path = ent.path / "initramfs.cpio"
        tmp = out_path.with_suffix(".tmp")
        with open(tmp, "wb") as out:
            cpio = CpioWriter(out)
            for d in DIRS:
                cpio.directory(d, 0o1777 if d == "tmp" else 0o755)
            cpio.chardev("dev/console", 5, 1)
            cpio.chardev("dev/null", 1, 3, 0o666)
            cpio.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
            for applet in applets:
                if applet != "bin/busybox":
                    cpio.symlink(applet, "/bin/busybox")
            cpio.file("init", (paths.GUEST_DIR / "init").read_bytes(), 0o755)
            cpio.file("sbin/vmexit-agent", agent.read_bytes(), 0o755)
            cpio.file("bin/mmio", mmio.read_bytes(), 0o755)
            cpio.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
            cpio.file("etc/group", b"root:x:0:\n")
            cpio.close()
        os.replace(tmp, out_path)
        ent.complete(busybox=_busybox_version(), size=out_path.stat().st_size)
        return Initramfs(out_path, ent.key)
