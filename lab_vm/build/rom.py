"""Assemble a bare-metal guest ROM (``lab_vm/rom/NAME.S``) into a 64 KiB ``-bios`` image.

GNU as (``--32``), ld at the address QEMU's pc machine maps the BIOS to below
1 MiB, and objcopy to a flat binary: no opaque image is committed, and the
result is cached by the hash of the source and the binutils version.
"""
from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import BuildError, ConfigError
from . import cache

LOG = logging.getLogger(__name__)

ROM_DIR = paths.PACKAGE_DIR / "rom"
ROM_BASE = 0xF0000       # a 64 KiB -bios image is mapped here (and at 4 GiB - 64 KiB)
ROM_SIZE = 0x10000
RECIPE = "rom-recipe-1"  # bump when the commands below change


@dataclass(frozen=True)
class Rom:
    """An assembled ROM: ``path`` is the 64 KiB image, ``elf`` the linked file (symbols)."""

    name: str
    path: Path
    elf: Path
    source: Path
    key: str


def _binutils_version(timeout: float) -> str:
    try:
        out = subprocess.run(["as", "--version"], capture_output=True, text=True,
                             timeout=timeout)
    except FileNotFoundError as exc:
        raise BuildError("GNU as is not installed (Debian: binutils, via build-essential): "
                         "run `scripts/setup`", command=["as", "--version"]) from exc
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def build_rom(name: str = "edu_probe", *, source: str | os.PathLike | None = None,
              timeout: float = 60.0, force: bool = False) -> Rom:
    """Assemble ``lab_vm/rom/<name>.S``, or the file ``source`` (a reader's variant of it);
    the image is cached by the inputs' hash."""
    if source is not None:
        source = Path(source).resolve()
        name = source.stem
    else:
        source = ROM_DIR / f"{name}.S"
    if not source.is_file():
        known = ", ".join(sorted(p.stem for p in ROM_DIR.glob("*.S")))
        raise ConfigError(f"no ROM source {source} (lab_vm/rom has: {known})")
    key = cache.digest(RECIPE, source, _binutils_version(timeout), ROM_BASE)
    ent = cache.Entry(f"rom-{name}", key)
    rom = Rom(name, ent.path / f"{name}.bin", ent.path / f"{name}.elf", source, key)
    if ent.valid and not force:
        return rom
    with ent.locked(timeout=timeout):
        if ent.valid and not force:
            return rom
        ent.invalidate()
        ent.path.mkdir(parents=True, exist_ok=True)
        obj = ent.path / f"{name}.o"
        steps = (["as", "--32", "-o", str(obj), str(source)],
                 ["ld", "-m", "elf_i386", f"-Ttext={ROM_BASE:#x}", "-e", "reset",
                  "-o", str(rom.elf), str(obj)],
                 ["objcopy", "-O", "binary", "-j", ".text", str(rom.elf), str(rom.path)])
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if proc.returncode != 0 or proc.stderr.strip():     # a warning is a bug here too
                raise BuildError(f"building the {name} ROM failed at {cmd[0]}", command=cmd,
                                 status=proc.returncode, output=proc.stderr)
        size = os.path.getsize(rom.path)
        if size != ROM_SIZE:
            raise BuildError(f"{source.name} assembled to {size} bytes; a -bios ROM here must "
                             f"be exactly {ROM_SIZE} (end it with `.org {ROM_SIZE:#x}`)")
        ent.complete(source=source.name, size=size)
        LOG.info("ROM %s assembled: %s", name, rom.path)
    return rom
