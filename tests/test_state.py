"""Saved states: a restored guest is ready fast and is a new machine, not a copy of the old one."""
from __future__ import annotations

import logging
import re
import time
import uuid
from dataclasses import replace

from lab_vm.vm import pci, state
from lab_vm.vm.machine import LabVM


def guest_clock(vm) -> float:
    """The guest's wall clock to the microsecond (busybox date has no %N; adjtimex does)."""
    out = vm.run("adjtimex", timeout=30).text
    sec = int(re.search(r"time\.tv_sec:\s+(\d+)", out).group(1))
    usec = int(re.search(r"time\.tv_usec:\s+(\d+)", out).group(1))
    return sec + usec / 1e6


def boot_id(vm) -> str:
    return vm.run("cat /proc/sys/kernel/random/boot_id", timeout=30).text.strip()


def test_restored_vms_run_see_share_and_are_distinct(built, tmp_path):
    (tmp_path / "f.txt").write_text("shared\n")
    with LabVM(share=tmp_path, name="st0") as first:      # saves the state if there is none
        saved_boot = boot_id(first)
    with LabVM(share=tmp_path, name="st1") as a, LabVM(share=tmp_path, name="st2") as b:
        assert a.restored and b.restored, (a.restore_failure, b.restore_failure)
        for vm in (a, b):
            assert vm.run("cat /mnt/share/f.txt", timeout=30).text == "shared\n"
            assert abs(guest_clock(vm) - time.time()) < 1.0
            assert boot_id(vm) == saved_boot             # the same booted kernel ...
        uuid = "cat /proc/sys/kernel/random/uuid"
        # ... yet each draws its own random numbers
        assert a.run(uuid, timeout=30).text != b.run(uuid, timeout=30).text


def test_cold_boot_really_boots(built):
    with LabVM(name="warm") as warm:
        warm_boot = boot_id(warm)
    with LabVM(cold_boot=True, name="cold") as cold:
        assert not cold.restored
        assert boot_id(cold) != warm_boot


def test_state_of_another_kernel_is_not_used(built):
    kernel, _ = built
    with LabVM(name="mine") as vm:
        mine = state.key(vm)
    # The same tree under a new key: what a rebuild with other inputs looks like.
    rebuilt = replace(kernel, key=f"{kernel.key}-rebuilt-{uuid.uuid4().hex[:8]}")
    with LabVM(kernel=rebuilt, name="rebuilt") as vm:
        theirs = state.key(vm)
        assert theirs != mine
        assert not vm.restored      # no state for the rebuilt kernel: it booted
    state.path_for(theirs).unlink(missing_ok=True)


def test_corrupt_state_falls_back_to_cold_boot(built, caplog):
    # An unusual memory size gives this test a state of its own to break.
    with LabVM(memory=200, name="to-corrupt") as vm:
        path = state.path_for(state.key(vm))
    assert path.exists()
    path.write_bytes(b"this is not a QEMU migration stream" * 100)
    with caplog.at_level(logging.WARNING, logger="lab_vm.vm.machine"):
        with LabVM(memory=200, name="after-corrupt") as vm:
            assert not vm.restored and vm.restore_failure
            assert vm.run("echo fine", timeout=30).text == "fine\n"
    assert "booting cold instead" in caplog.text
    with LabVM(memory=200, name="healed") as vm:     # the cold boot saved a good state again
        assert vm.restored


def test_device_without_migration_support_works_after_restore(built):
    """edu has no vmstate: LabVM plugs it in after the restore instead of restoring it."""
    for attempt in range(2):          # the first may boot cold and save; the second restores
        with LabVM(devices=["edu"], name=f"edu{attempt}") as vm:
            bar0 = pci.resources(vm, pci.find_device(vm, *pci.EDU), timeout=30)[0]
            assert bar0.start != 0 and bar0.size == 1 << 20    # a mapped 1 MiB BAR
    assert vm.restored


def test_a_qmp_failure_during_restore_falls_back_to_cold_boot(built, monkeypatch, caplog):
    """QMP errors are LabVMErrors: the restore's fallback catches them like any other failure."""
    from lab_vm.vm import qmp

    with LabVM(memory=208, name="qmp-save") as vm:         # a state of its own to restore
        assert state.path_for(state.key(vm)).exists()
    real_connect, calls = qmp.QMPConnection.connect, []

    def refuse_first(self, path, timeout, alive=lambda: None):
        calls.append(path)
        if len(calls) == 1:                                # the restore's first QMP command
            raise qmp.QMPError(f"could not connect to {path}: refused by the test")
        return real_connect(self, path, timeout, alive)

    monkeypatch.setattr(qmp.QMPConnection, "connect", refuse_first)
    with caplog.at_level(logging.WARNING, logger="lab_vm.vm.machine"):
        with LabVM(memory=208, name="qmp-fallback") as vm:
            assert not vm.restored and "refused by the test" in vm.restore_failure
            assert vm.run("echo fine", timeout=30).text == "fine\n"
    assert "booting cold instead" in caplog.text
