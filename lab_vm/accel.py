"""Choose the accelerator: KVM only if a short timed probe boot reaches userspace.

On these machines /dev/kvm exists but is nested, and a Linux guest under KVM
fails in three ways depending on firmware and CPU model: it hangs, QEMU stops
with "KVM internal error", or QEMU aborts (kvm_buf_set_msrs). The probe boots
the real lab kernel under KVM with a deadline; any failure means TCG, with the
reason logged. The verdict is cached per kernel, initramfs and QEMU version.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import subprocess

from . import paths
from .build import cache
from .errors import LabVMError

LOG = logging.getLogger(__name__)
PROBE_TIMEOUT = 8.0
_memo: dict[str, tuple[str, str]] = {}


@functools.lru_cache(maxsize=None)   # asked by every LabVM (state keys): once per process
def qemu_version(qemu: str = "qemu-system-x86_64") -> str:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0] if out.stdout else "unknown"


def qemu_identity(qemu: str = "qemu-system-x86_64") -> dict:
    """What names one QEMU binary: its path, version, size and mtime (saved states, recordings)."""
    found = shutil.which(qemu)
    if found is None:
        raise FileNotFoundError(qemu)
    path = os.path.realpath(found)
    st = os.stat(path)
    return {"qemu": path, "qemu_version": qemu_version(qemu), "qemu_size": st.st_size,
            "qemu_mtime_ns": st.st_mtime_ns}


def kvm_device_problem() -> str | None:
    """Why /dev/kvm cannot even be opened, or None."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm: {exc.strerror}"
    os.close(fd)
    return None


def probe_kvm(kernel, initramfs) -> tuple[bool, str]:
    """Boot the lab VM under KVM with a deadline; (works, reason)."""
    from .machine import LabVM

    problem = kvm_device_problem()
    if problem:
        return False, problem
    vm = LabVM(accel="kvm", kernel=kernel, initramfs=initramfs, boot_timeout=PROBE_TIMEOUT,
               name="kvm-probe")
    try:
        with vm:
            vm.run("true", timeout=PROBE_TIMEOUT, check=True)
        return True, f"a KVM probe boot reached userspace in {vm.boot_time:.2f} s"
    except LabVMError as exc:
        detail = _last_meaningful_line(vm.qemu_log) or exc.message
        return False, f"a KVM probe boot failed ({type(exc).__name__}): {detail}"


def _last_meaningful_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "KVM internal error" in line or "Assertion" in line or "error" in line.lower():
            return line
    return lines[-1] if lines else ""


def choose(kernel, initramfs) -> tuple[str, str]:
    """("kvm" or "tcg", why). $VMEXIT_ACCEL=tcg|kvm overrides the probe."""
    forced = os.environ.get("VMEXIT_ACCEL")
    if forced in ("tcg", "kvm"):
        return forced, "set by VMEXIT_ACCEL"
    key = cache.digest("probe-1", kernel.key, initramfs.key, qemu_version())
    if key in _memo:
        return _memo[key]
    verdict_file = paths.cache_dir() / f"kvm-probe-{key}.json"
    try:
        verdict = json.loads(verdict_file.read_text())
        result = (verdict["accel"], verdict["reason"] + " (cached verdict)")
    except (FileNotFoundError, ValueError, KeyError):
        works, reason = probe_kvm(kernel, initramfs)
        result = ("kvm" if works else "tcg", reason)
        verdict_file.parent.mkdir(parents=True, exist_ok=True)
        verdict_file.write_text(json.dumps({"accel": result[0], "reason": reason}))
    if result[0] == "tcg":
        LOG.info("using TCG: %s", result[1])
    _memo[key] = result
    return result
