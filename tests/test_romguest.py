"""The bare-metal ROM guest: assembled from source, run by QEMU under KVM and TCG, and watched
from host gdb on the debug QEMU (chapter 1's "QEMU's KVM path, live").

Real parts only: GNU as/ld/objcopy, Debian's QEMU and the debug QEMU, /dev/kvm, host gdb.
The KVM tests skip only where /dev/kvm cannot run any guest (the probe says why).
"""
from __future__ import annotations

import os

import pytest

from lab_vm.baremetal import romguest
from lab_vm.build.rom import ROM_SIZE, build_rom
from lab_vm.errors import ConfigError, QEMUExited
from lab_vm.baremetal.romguest import RomGuest, accel_problem, run_rom

EDU_IDENT = 0x010000ED
EVENTS = ("kvm_run_exit", "memory_region_ops_*")
KVM_PROBLEM = accel_problem("kvm")
needs_kvm = pytest.mark.skipif(KVM_PROBLEM is not None, reason=f"no usable KVM: {KVM_PROBLEM}")


@pytest.fixture(scope="module")
def rom():
    return build_rom()


def test_the_rom_is_assembled_from_source_into_64_kib_with_a_reset_vector(rom):
    image = rom.path.read_bytes()
    assert len(image) == ROM_SIZE
    # the reset vector (offset 0xFFF0): a far jump (0xEA) to F000:start16 = offset 0
    assert image[0xFFF0] == 0xEA and image[0xFFF3:0xFFF5] == b"\x00\xf0"
    assert build_rom().key == rom.key                     # cached by its inputs


def test_a_changed_source_is_a_new_rom(rom, tmp_path):
    variant = tmp_path / "edu_probe.S"
    variant.write_text(rom.source.read_text().replace("FACT_ARG,   5", "FACT_ARG,   6"))
    other = build_rom(source=variant)
    assert other.key != rom.key and other.path.read_bytes() != rom.path.read_bytes()


def test_a_missing_source_is_a_clear_error():
    with pytest.raises(ConfigError, match="edu_probe"):
        build_rom("no_such_rom")


@needs_kvm
def test_under_kvm_each_edu_access_is_one_mmio_exit(rom):
    run = run_rom(rom, accel="kvm", trace=EVENTS, timeout=30)
    values, exits, acc = run.values, run.exits(), run.accesses()
    assert values["ident"] == EDU_IDENT and values["factorial"] == 120
    assert values["liveness"] == 0x12345678 ^ 0xFFFFFFFF
    assert exits["KVM_EXIT_MMIO"] == acc[("edu-mmio", "read")] + acc[("edu-mmio", "write")]
    assert acc[("edu-mmio", "read")] == 3 + values["polls"]
    assert exits["KVM_EXIT_IO"] == sum(n for (name, _), n in acc.items() if name != "edu-mmio")
    assert all(r["cpu"] == 0 for r in run.records if "cpu" in r)   # all on the vCPU thread
    assert "KVM_EXIT_HLT" not in exits                    # the in-kernel irqchip took the hlt


@needs_kvm
def test_without_the_in_kernel_irqchip_qemu_sees_the_halt(rom):
    run = run_rom(rom, accel="kvm", kernel_irqchip=False, trace=("kvm_run_exit",), timeout=30)
    assert run.exits()["KVM_EXIT_HLT"] == 1 and run.values["ident"] == EDU_IDENT


def test_under_tcg_the_same_reads_arrive_without_exits(rom):
    run = run_rom(rom, accel="tcg", trace=EVENTS, timeout=30)
    assert run.values["ident"] == EDU_IDENT and not run.exits()
    assert run.accesses()[("edu-mmio", "read")] == 3 + run.values["polls"]


def test_no_kvm_is_refused_with_the_probes_reason(rom, monkeypatch):
    monkeypatch.setattr(romguest, "kvm_problem", lambda: "/dev/kvm does not exist (test)")
    with pytest.raises(romguest.KVMUnusable, match="does not exist"):
        RomGuest(rom, accel="kvm")


def test_a_rom_that_never_finishes_times_out_with_what_it_printed(rom):
    from lab_vm.errors import GuestTimeout

    with RomGuest(rom, accel="tcg", devices=()) as guest:      # no edu on the bus
        with pytest.raises(GuestTimeout, match="no edu device on bus 0"):
            guest.wait_done(timeout=2)
    assert not guest.running


def test_a_qemu_that_cannot_start_says_why_and_leaves_nothing(rom):
    guest = RomGuest(rom, accel="tcg", devices=["no-such-device"])
    with pytest.raises(QEMUExited, match="exited") as info:
        with guest:
            guest.wait_done(timeout=10)
    assert "no-such-device" in info.value.output
    assert not guest.running


# --- host gdb on the debug QEMU --------------------------------------------------------------

@pytest.fixture(scope="module")
def qemu_debug():
    from lab_vm.build import qemu as qemu_build
    from lab_vm.errors import MissingArtifact

    try:
        return qemu_build.find_qemu_debug()
    except MissingArtifact as exc:
        if os.environ.get("VMEXIT_SKIP_QEMU_DEBUG") == "1":
            pytest.skip(f"VMEXIT_SKIP_QEMU_DEBUG=1 and {exc.message}")
        raise


@needs_kvm
def test_gdb_on_qemu_under_kvm_breaks_in_edu_mmio_read_below_kvm_cpu_exec(rom, qemu_debug):
    from lab_vm.debug.qemu import QemuDebugger

    with RomGuest(rom, accel="kvm", paused=True, **qemu_debug.vm_options()) as guest:
        with QemuDebugger(guest) as dbg:
            hit = dbg.catch("edu_mmio_read", timeout=60)
            owner = dbg.evaluate("qemu_global_mutex.lock.__data.__owner")
            lwp = int(dbg.execute("python print(gdb.selected_thread().ptid[1])"))
            assert dbg.release(hit) is None
        output = guest.wait_done(timeout=30)
    functions = hit.functions
    assert functions[0] == "edu_mmio_read" and hit.frames[0]["args"]["addr"] == "0"
    for frame in ("memory_region_dispatch_read", "address_space_rw", "kvm_cpu_exec",
                  "kvm_vcpu_thread_fn"):
        assert frame in functions, functions
    assert hit.thread == "CPU 0/KVM" and owner == lwp     # the vCPU thread, holding the BQL
    assert f"ident={EDU_IDENT:08x}" in output             # detached: the ROM ran on


@needs_kvm
def test_a_halted_vcpu_sleeps_in_kvm_run_or_in_qemu_wait_io_event(rom, qemu_debug):
    from lab_vm.debug.qemu import QemuDebugger

    where = {}
    for irqchip in (True, False):
        with RomGuest(rom, accel="kvm", kernel_irqchip=irqchip,
                      **qemu_debug.vm_options()) as guest:
            guest.wait_done(timeout=30)
            with QemuDebugger(guest) as dbg:
                stacks = dbg.thread_backtraces("CPU ")
        assert list(stacks) == ["CPU 0/KVM"]
        where[irqchip] = [f["function"] for f in stacks["CPU 0/KVM"]]
    assert "kvm_cpu_exec" in where[True] and "qemu_wait_io_event" not in where[True]
    assert "qemu_wait_io_event" in where[False] and "kvm_cpu_exec" not in where[False]


# --- the built book -------------------------------------------------------------------------

def test_the_built_chapter_shows_the_live_kvm_backtrace_beside_tcg():
    """After `make book` (test_book builds it earlier in the same run): chapter 1's page has
    the KVM and TCG backtraces of the ROM's edu read, from the build."""
    from conftest import REPO

    page = REPO / "book/_build/html/chapters/01-vcpu-loop.html"
    source = REPO / "book/chapters/01-vcpu-loop.md"
    if not page.exists() or page.stat().st_mtime < source.stat().st_mtime:
        pytest.skip("the book is not built from the current chapter 1 (make book)")
    html = page.read_text()
    assert "edu_mmio_read" in html and "cpu_exec" in html and "differs" in html
    if KVM_PROBLEM is None:
        assert "kvm_cpu_exec" in html and "CPU 0/KVM" in html
