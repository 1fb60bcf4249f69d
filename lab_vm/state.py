"""Saved states: boot a VM configuration once, save the running guest, restore it after.

A restored guest is ready in well under 0.1 s where a cold boot takes seconds
under TCG. A state is keyed by everything that must match between the QEMU
that saved it and the one that loads it: kernel, initramfs, QEMU binary and
version, accelerator, memory, CPUs, firmware, devices, kernel command line.
Host-side details that are not guest state (socket paths, the shared
directory's path) are not part of the key. A state whose key does not match is
never used; a state that fails to load is deleted and the VM boots cold.
"""
from __future__ import annotations

import logging
import os
import time
import uuid
from pathlib import Path

from . import paths
from .build import cache

LOG = logging.getLogger(__name__)
RECIPE = "state-1"


def key(vm) -> str:
    """The identity of a VM configuration, as far as a saved state is concerned."""
    from .accel import qemu_version

    qemu_path = os.path.realpath(_which(vm.qemu))
    st = os.stat(qemu_path)
    return cache.digest(RECIPE, vm.kernel.key, vm.initramfs.key, qemu_version(vm.qemu),
                        qemu_path, st.st_size, st.st_mtime_ns, vm.accel, vm.memory, vm.cpus,
                        vm.firmware, vm.share is not None, *vm._boot_devices(), *vm.qemu_args,
                        vm.kernel_cmdline())


def _which(program: str) -> str:
    import shutil

    found = shutil.which(program)
    if found is None:
        raise FileNotFoundError(program)
    return found


def path_for(state_key: str) -> Path:
    return paths.cache_dir() / "states" / f"{state_key}.state"


def save(vm, target: Path, timeout: float = 60.0) -> float:
    """Migrate the running guest into ``target`` (atomically); returns the seconds it took.

    The guest is left paused by the migration and is resumed here, so the VM
    that saved the state goes on as if nothing happened.
    """
    start = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    # unique per writer: two threads or processes may first-boot the same configuration
    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
    vm.qmp("migrate", uri=f"exec:cat > {partial}")
    try:
        deadline = start + timeout
        while True:
            info = vm.qmp("query-migrate")
            status = info.get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled"):
                raise RuntimeError(f"saving the state failed: {info.get('error-desc', status)}")
            if time.monotonic() > deadline:
                vm.qmp("migrate_cancel")
                raise TimeoutError(f"saving the state took over {timeout:g} s")
            time.sleep(0.01)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
        if vm.qmp("query-status")["status"] != "running":
            vm.qmp("cont")
    elapsed = time.monotonic() - start
    LOG.info("saved the guest state to %s in %.2f s", target, elapsed)
    return elapsed


def wait_running(vm, timeout: float) -> None:
    """After ``-incoming``: wait until QEMU loaded the state and the guest runs."""
    deadline = time.monotonic() + timeout
    while True:
        vm.check_health()
        status = vm.qmp("query-status")["status"]
        if status == "running":
            return
        if status in ("inmigrate", "prelaunch", "restore-vm"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the state did not load within {timeout:g} s")
            time.sleep(0.002)
            continue
        raise RuntimeError(f"loading the state left the guest {status!r}")
