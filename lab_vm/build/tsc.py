"""The host's TSC frequency, which the guest needs as tsc_early_khz= under TCG (see tsc_khz.c)."""
from __future__ import annotations

import functools
import logging
import subprocess
from pathlib import Path

from .. import paths
from . import cache
from .initramfs import build_static

LOG = logging.getLogger(__name__)
SOURCE = Path(__file__).with_name("tsc_khz.c")


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


@functools.lru_cache(maxsize=1)
def host_tsc_khz() -> int | None:
    """Measured once per host boot and cached; None where it cannot be measured."""
    record = paths.cache_dir() / f"tsc-khz-{cache.digest(_boot_id(), SOURCE)}"
    try:
        return int(record.read_text())
    except (FileNotFoundError, ValueError):
        pass
    try:
        record.parent.mkdir(parents=True, exist_ok=True)
        exe = build_static(SOURCE, record.with_suffix(".bin"))
        khz = int(subprocess.run([str(exe)], capture_output=True, text=True, check=True,
                                 timeout=10).stdout)
    except Exception as exc:   # no compiler, not x86: the guest then calibrates by itself
        LOG.warning("cannot measure the host TSC frequency (%s); guest timekeeping will be "
                    "coarse under TCG", exc)
        return None
    record.write_text(str(khz))
    return khz
