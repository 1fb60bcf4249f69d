"""The debug QEMU, host gdb on it, and the edu device's MMIO seen from both sides.

Real parts only: Debian's QEMU source built with debug info (cached; built here
if missing), the lab kernel on it with ``-device edu``, host gdb through pwntools.
"""
from __future__ import annotations

import subprocess
import time

import pytest

from lab_vm.vm import pci
from lab_vm.build import qemu as qemu_build
from lab_vm.build.initramfs import build_static
from lab_vm.errors import MissingArtifact
from lab_vm.vm.machine import LabVM
from lab_vm.debug.qemu import QemuDebugger

from conftest import REPO

CODE = REPO / "book" / "code" / "02-mmio-pci"
EDU_ID = 0x010000ED


@pytest.fixture(scope="session")
def qemu_debug():
    """The debug QEMU that scripts/setup builds; the suite never installs or builds it."""
    try:
        return qemu_build.find_qemu_debug()
    except MissingArtifact as exc:
        pytest.skip(f"{exc.message} (scripts/setup, which `make test` runs, builds it)")


@pytest.fixture(scope="module")
def helpers(tmp_path_factory):
    out = tmp_path_factory.mktemp("mmio-helpers")
    return {name: build_static(CODE / f"{name}.c", out / name) for name in ("barsize",)}


@pytest.fixture(scope="module")
def edu_vm(built, qemu_debug, helpers):
    # cold_boot: edu has no migration state (no vmsd), so a restored guest's edu has lost the
    # BAR the firmware programmed while the kernel still believes in it.
    with LabVM(name="qemu-debug", devices=["edu"], cold_boot=True,
               **qemu_debug.vm_options()) as vm:
        for name, exe in helpers.items():
            vm.write_file(f"/bin/{name}", exe.read_bytes(), mode=0o755)
        yield vm


@pytest.fixture(scope="module")
def edu(edu_vm):
    """The edu device's BDF in the guest, with memory decoding on (no driver does it)."""
    bdf = pci.find_device(edu_vm, *pci.EDU)
    pci.enable(edu_vm, bdf)
    assert pci.command_register(edu_vm, bdf) & 0x2
    return bdf


def test_debug_qemu_is_the_installed_version_with_debug_info(qemu_debug):
    out = subprocess.run([str(qemu_debug.binary), "--version"], capture_output=True,
                         text=True, timeout=30)
    upstream = qemu_debug.version.split(":")[-1].split("+")[0]      # 1:7.2+dfsg-7+… → 7.2
    assert out.returncode == 0 and f"version {upstream}" in out.stdout
    sections = subprocess.run(["readelf", "-S", "-W", str(qemu_debug.binary)],
                              capture_output=True, text=True, timeout=30).stdout
    assert ".debug_info" in sections


def test_break_in_edu_mmio_read_while_the_guest_reads_the_id_register(edu_vm, edu):
    resource0 = pci.device_path(edu, "resource0")
    with QemuDebugger(edu_vm) as dbg:
        hit = dbg.catch("edu_mmio_read", f"mmio {resource0} r 0", timeout=60)
        inner = hit.frames[0]
        result = dbg.release(hit, timeout=30)
    assert result.status == 0, result.output
    assert result.text.split() == ["read", "0x000", f"0x{EDU_ID:08x}"]
    assert inner["function"] == "edu_mmio_read"
    assert inner["file"].endswith("hw/misc/edu.c") and inner["line"]
    assert inner["args"]["addr"] == "0" and inner["args"]["size"] == "4"
    functions = hit.functions
    assert "memory_region_dispatch_read" in functions
    assert functions.index("memory_region_dispatch_read") > 0
    if edu_vm.accel == "tcg":
        # the vCPU thread's loop, then the load helper the translated code called
        assert "cpu_exec" in functions, functions
        assert any(f.startswith("helper_") for f in functions), functions
    else:
        assert "kvm_cpu_exec" in functions, functions
    assert edu_vm.run("true").ok      # the guest runs on after the debugger detached


def test_the_vm_runs_on_after_a_breakpoint_that_never_hits(edu_vm):
    from lab_vm.errors import GuestTimeout

    with QemuDebugger(edu_vm) as dbg:
        with pytest.raises(GuestTimeout):
            dbg.catch("edu_mmio_write", "true", timeout=2)
        start = time.monotonic()
    assert edu_vm.run("echo alive", timeout=10).text == "alive\n"
    assert time.monotonic() - start < 10


def test_breaking_in_a_stripped_qemu_names_the_debug_build(built):
    from lab_vm.errors import DebuggerError

    with LabVM(name="stripped") as vm:          # Debian's own QEMU
        with QemuDebugger(vm) as dbg:
            with pytest.raises(DebuggerError, match="lab-vm build qemu-debug"):
                dbg.break_at("edu_mmio_read")
        assert vm.run("true", timeout=10).ok     # gdb detached: the guest runs on


def test_trace_events_count_each_register_access(edu_vm, edu):
    resource0 = pci.device_path(edu, "resource0")
    bar0 = pci.resources(edu_vm, edu)[0]
    with edu_vm.tracing("memory_region_ops_read", "memory_region_ops_write") as trace:
        out = edu_vm.run(f"mmio {resource0} r 0 w 4 0x12345678 r 4 w 8 5 p 0x20 1",
                         timeout=30, check=True).text
    accesses = [(r["event"].rsplit("_", 1)[1], r["addr"], r["value"]) for r in trace.records
                if r.get("name") == "edu-mmio"]
    # the trace's addr is the physical address (the callback gets the offset)
    assert accesses[:4] == [("read", bar0.start, EDU_ID), ("write", bar0.start + 4, 0x12345678),
                            ("read", bar0.start + 4, 0xEDCBA987), ("write", bar0.start + 8, 5)]
    polls = int(out.split("reads=")[1])
    assert accesses[4:] == [("read", bar0.start + 0x20, a[2]) for a in accesses[4:]]
    assert len(accesses) - 4 == polls


def test_bar0_size_from_the_handshake_the_kernel_and_the_model_agree(edu_vm, edu):
    out = edu_vm.run(f"barsize {pci.device_path(edu, 'config')} 0", check=True).text
    fields = dict(item.split("=") for item in out.split())
    assert fields["type"] == "mem32" and int(fields["size"], 16) == 1 << 20   # edu.c: 1 * MiB
    assert int(fields["readback"], 16) & 0xFFFFFFF0 == 0xFFF00000
    bar0 = pci.resources(edu_vm, edu)[0]
    assert bar0.kind == "mem" and bar0.size == 1 << 20
    assert int(fields["original"], 16) & ~0xF == bar0.start
    # the handshake restored the BAR: the device still answers where the kernel put it
    assert pci.bus_read(edu_vm, bar0.start) == EDU_ID


def test_past_the_bar(edu_vm, edu):
    resource0 = pci.device_path(edu, "resource0")
    past = edu_vm.run(f"mmio {resource0} r 0x100000")
    assert past.status == 2 and "past the end" in past.stderr.decode()
    # inside the BAR but no register there: edu answers all ones
    assert edu_vm.run(f"mmio {resource0} r 0x1000", check=True).text.split()[-1] == "0xffffffff"
    bar0 = pci.resources(edu_vm, edu)[0]
    regions = pci.memory_map(edu_vm)
    assert pci.region_at(regions, bar0.start).name == "edu-mmio"
    after = pci.region_at(regions, bar0.end + 1)
    if after is None:       # nothing there: QEMU's read reports a decode error
        assert pci.bus_read(edu_vm, bar0.end + 1) is None
        assert pci.owner(edu_vm, bar0.end + 1) is None
    else:                   # another device's BAR follows edu's directly
        assert after.name != "edu-mmio"
        bdf, _ = pci.owner(edu_vm, bar0.end + 1)
        assert bdf != edu


def test_parse_mtree_keeps_only_the_address_space_asked_for():
    text = """FlatView #0
 AS "memory", root: system
 AS "cpu-memory-0", root: system
 Root memory region: system
  0000000000000000-000000000009ffff (prio 0, ram): pc.ram
  00000000febf0000-00000000febfffff (prio 1, i/o): edu-mmio

FlatView #1
 AS "I/O", root: io
 Root memory region: io
  0000000000000000-0000000000000007 (prio 0, i/o): dma-chan
"""
    regions = pci.parse_mtree(text)
    assert [r.name for r in regions] == ["pc.ram", "edu-mmio"]
    assert pci.region_at(regions, 0xFEBF0010).kind == "i/o"
    assert pci.region_at(regions, 0xFEC00000) is None
