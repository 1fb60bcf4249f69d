"""Saved states as files: the guest's RAM is mapped from the state, never written back to it."""
from __future__ import annotations

import hashlib
import logging
import os
import shutil

import pytest

from lab_vm.vm import state
from lab_vm.vm.machine import LabVM

UUID = "cat /proc/sys/kernel/random/uuid"


def fingerprint(path) -> tuple:
    st = os.stat(path)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return st.st_ino, st.st_size, st.st_mtime_ns, digest.hexdigest()


def test_vms_restored_at_once_are_independent_and_leave_the_state_alone(built, tmp_path):
    with LabVM(share=tmp_path, name="sf0") as first:     # saves the state if there is none
        path = state.path_for(state.key(first))
    before = fingerprint(path)
    with LabVM(share=tmp_path, name="sf1") as a, LabVM(share=tmp_path, name="sf2") as b:
        assert a.restored and b.restored, (a.restore_failure, b.restore_failure)
        assert a.run(UUID, timeout=30).text != b.run(UUID, timeout=30).text
        # Each writes its own RAM (tmpfs): 8 MiB of it, and a file the other must not see.
        for vm, word in ((a, "alpha"), (b, "beta")):
            vm.run(f"echo {word} > /tmp/mine && dd if=/dev/urandom of=/tmp/big bs=1M count=8 "
                   "2>/dev/null", timeout=60, check=True)
        a.run("touch /tmp/only-a", timeout=30, check=True)
        assert not b.run("test -e /tmp/only-a", timeout=30).ok
        assert a.read_file("/tmp/mine") == b"alpha\n"
        assert b.read_file("/tmp/mine") == b"beta\n"
        sums = [vm.run("md5sum /tmp/big", timeout=30).text.split()[0] for vm in (a, b)]
        assert sums[0] != sums[1]
        # both keep working after the other wrote
        assert a.run("echo a", timeout=30).text == "a\n"
        assert b.run("echo b", timeout=30).text == "b\n"
    # The state is only read: same file, same bytes, not even touched.
    assert fingerprint(path) == before
    with LabVM(share=tmp_path, name="sf3") as c:    # and the next restore is clean
        assert c.restored
        assert not c.run("test -e /tmp/only-a || test -e /tmp/mine", timeout=30).ok


def _own_state(memory: int, name: str):
    """A state of its own (an unusual memory size), for a test that breaks it."""
    with LabVM(memory=memory, name=name) as vm:
        path = state.path_for(state.key(vm))
    assert path.exists()
    return path


@pytest.mark.parametrize("damage", ["ram", "device-state", "stream"])
def test_damaged_state_falls_back_to_cold_boot(built, caplog, damage):
    memory = {"ram": 208, "device-state": 216, "stream": 224}[damage]
    path = _own_state(memory, f"to-damage-{damage}")
    size = path.stat().st_size
    ram = memory << 20
    if damage == "ram":
        # Cut inside the RAM image: what a disk full or an interrupted copy leaves.
        os.truncate(path, ram // 2)
        reason = "truncated"
    elif damage == "device-state":
        os.truncate(path, size - 1000)    # the trailer and the end of the device state
        reason = "not a saved state"
    else:
        # A whole file, but QEMU's stream is garbage: QEMU refuses it while loading.
        with open(path, "r+b") as f:
            f.seek(ram)
            f.write(b"\xff" * 4096)
        reason = ""
    with caplog.at_level(logging.WARNING, logger="lab_vm.vm.machine"):
        with LabVM(memory=memory, name=f"after-{damage}") as vm:
            assert not vm.restored and vm.restore_failure
            assert reason in vm.restore_failure
            assert vm.run("echo fine", timeout=30).text == "fine\n"
    assert "booting cold instead" in caplog.text
    with LabVM(memory=memory, name=f"healed-{damage}") as vm:   # the cold boot saved anew
        assert vm.restored, vm.restore_failure
        assert vm.run("echo healed", timeout=30).text == "healed\n"


def test_state_holds_ram_then_device_state(built):
    with LabVM(name="layout") as vm:
        path = state.path_for(state.key(vm))
        memory = vm.memory
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(size - state.TRAILER.size)
        magic, stream = state.TRAILER.unpack(f.read())
        f.seek(memory << 20)
        head = f.read(4)
    assert magic == state.MAGIC
    assert size == (memory << 20) + stream + state.TRAILER.size
    assert 0 < stream < 4 << 20          # device state only: the RAM is not in the stream
    assert head == b"QEVM"               # QEMU's migration stream starts right after the RAM
    # Sparse: on disk, little more than what the guest wrote (not the whole 256 MiB).
    assert os.stat(path).st_blocks * 512 < (memory << 20) // 2
    if shutil.which("objcopy"):          # restores boot QEMU with the kernel's symbols stripped
        assert state.boot_kernel_path(vm.kernel).exists()
