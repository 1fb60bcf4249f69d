"""Choose the accelerator: KVM only if a short timed probe boot reaches userspace.

On these machines /dev/kvm exists but is nested, and a Linux guest under KVM
fails in three ways depending on firmware and CPU model: it hangs, QEMU stops
with "KVM internal error", or QEMU aborts (kvm_buf_set_msrs). The probe boots
the real lab kernel under KVM with a deadline; any failure means TCG, with the
reason logged. The verdict is cached per kernel, initramfs and QEMU version. The probe itself
is LabVM's (machine.probe_kvm): this module decides, it does not boot.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Callable

from .. import paths
from ..build import cache
from .qemu_binary import qemu_version

LOG = logging.getLogger(__name__)
PROBE_TIMEOUT = 8.0
_memo: dict[str, tuple[str, str]] = {}


def kvm_device_problem() -> str | None:
    """Why /dev/kvm cannot even be opened, or None."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"/dev/kvm: {exc.strerror}"
    os.close(fd)
    return None


def last_meaningful_line(text: str) -> str:
    """The line of a QEMU log that says why it failed (an error, an assertion), else the last."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "KVM internal error" in line or "Assertion" in line or "error" in line.lower():
            return line
    return lines[-1] if lines else ""


def choose(kernel, initramfs, probe: Callable[[], tuple[bool, str]]) -> tuple[str, str]:
    """("kvm" or "tcg", why). ``probe()`` boots under KVM and says whether it worked
    (LabVM passes machine.probe_kvm, so this module needs no LabVM). $VMEXIT_ACCEL=tcg|kvm
    overrides the probe."""
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
        problem = kvm_device_problem()
        works, reason = (False, problem) if problem else probe()
        result = ("kvm" if works else "tcg", reason)
        try:
            verdict_file.parent.mkdir(parents=True, exist_ok=True)
            verdict_file.write_text(json.dumps({"accel": result[0], "reason": reason}))
        except OSError as exc:       # the verdict still holds; the next process probes again
            LOG.warning("could not keep the KVM verdict in %s: %s", verdict_file, exc)
    if result[0] == "tcg":
        LOG.info("using TCG: %s", result[1])
    _memo[key] = result
    return result
