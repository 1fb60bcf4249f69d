"""The QEMU binary a LabVM runs: its version and identity.

Saved states, recordings and the KVM probe's cached verdict are only valid for the QEMU that
made them; this is where "which QEMU" is answered, for the command line and for all of them.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess

from ..errors import ConfigError

QEMU = "qemu-system-x86_64"


@functools.lru_cache(maxsize=None)   # asked by every LabVM (state keys): once per process
def qemu_version(qemu: str = QEMU) -> str:
    """QEMU's first ``--version`` line (``QEMU emulator version 7.2.x (Debian ...)``)."""
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ConfigError(f"{qemu} --version failed ({exc}): run `scripts/setup`",
                          command=[qemu, "--version"]) from exc
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def qemu_identity(qemu: str = QEMU) -> dict:
    """What names one QEMU binary: its path, version, size and mtime."""
    found = shutil.which(qemu)
    if found is None:
        raise ConfigError(f"{qemu} is not installed: run `scripts/setup`")
    path = os.path.realpath(found)
    st = os.stat(path)
    return {"qemu": path, "qemu_version": qemu_version(qemu), "qemu_size": st.st_size,
            "qemu_mtime_ns": st.st_mtime_ns}
