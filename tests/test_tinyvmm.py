"""lab_vm.baremetal.tinyvmm against the real /dev/kvm: no mocks; skipped only where KVM is unusable."""
from __future__ import annotations

import os
import threading
import time

import pytest

from lab_vm.baremetal import tinyvmm
from lab_vm.baremetal.tinyvmm import (DEMO_PORT, DEMO_PROGRAM, MMIO_ADDR, Exit, RunawayGuest, TinyVM,
                            describe, kvm_problem)

PROBLEM = kvm_problem()
needs_kvm = pytest.mark.skipif(PROBLEM is not None, reason=f"/dev/kvm unusable: {PROBLEM}")

JMP_SELF = bytes([0xEB, 0xFE])                    # jmp $   (never exits)
OUT_LOOP = bytes([0xE6, DEMO_PORT, 0xEB, 0xFC])   # out 0xe9, al ; jmp back to the out
DEMO_REASONS = ["KVM_EXIT_IO"] * 3 + ["KVM_EXIT_MMIO"] * 2 + ["KVM_EXIT_HLT"]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def kvm_mappings() -> list[str]:
    with open("/proc/self/maps") as maps:
        return [line for line in maps if "kvm" in line]


def test_ioctl_numbers_match_the_kernel_headers():
    # Values the C macros produce (e.g. `printf("%#lx", KVM_SET_USER_MEMORY_REGION)`).
    assert tinyvmm.KVM_RUN == 0xAE80
    assert tinyvmm.KVM_CREATE_VCPU == 0xAE41
    assert tinyvmm.KVM_SET_USER_MEMORY_REGION == 0x4020AE46
    assert tinyvmm.KVM_GET_REGS == 0x8090AE81
    assert tinyvmm.KVM_SET_SREGS == 0x4138AE84
    assert tinyvmm.kvm_run.u.offset == 32


@needs_kvm
def test_kvm_problem_is_none_here():
    assert kvm_problem() is None


@pytest.mark.parametrize("device, why", [("/nonexistent/kvm", "does not exist"),
                                         ("/dev/null", "not a KVM device")])
def test_kvm_problem_says_why(device, why):
    assert why in kvm_problem(device)


def test_unusable_kvm_raises_kvm_unavailable():
    fds = open_fds()
    with pytest.raises(tinyvmm.KVMUnavailable, match="not a KVM device"):
        TinyVM(device="/dev/null")
    assert open_fds() == fds


@needs_kvm
def test_demo_program_exits_in_order():
    with TinyVM() as vm:
        vm.load(DEMO_PROGRAM)
        exits = vm.run()
    assert [e.reason for e in exits] == DEMO_REASONS
    assert [e.index for e in exits] == list(range(6))
    hello, ask, echo, load, store, halt = exits
    assert (hello.direction, hello.port, hello.size, hello.count) == ("out", 0xE9, 1, 1)
    assert hello.data == b"H"
    assert (ask.direction, ask.port, ask.size, ask.count) == ("in", 0xE9, 1, 1)
    assert ask.data == b"\x2a"
    assert (echo.direction, echo.port, echo.data) == ("out", 0xE9, b"\x2a")
    assert (load.phys_addr, load.length, load.is_write) == (MMIO_ADDR, 2, False)
    assert load.data == b"\x2a\x00"
    assert (store.phys_addr, store.length, store.is_write) == (MMIO_ADDR, 2, True)
    assert store.data == b"\x2b\x00"                 # the guest's inc ax ran between the two
    assert halt.rip == 0x1000 + len(DEMO_PROGRAM)  # KVM retires HLT before handing it back
    for e in exits:
        assert describe(e).startswith(f"#{e.index} ")
    assert "port 0xe9: 0x48 'H'" in describe(hello)


@needs_kvm
def test_values_the_vmm_answers_come_back_out():
    answers = iter([0x5A, 0x1234])

    def device(exit: Exit) -> int:
        return next(answers)

    with TinyVM(on_read=device) as vm:
        vm.load(DEMO_PROGRAM)
        _, ask, echo, load, store, _ = vm.run()
        regs = vm.registers()
    assert ask.value == echo.value == 0x5A      # IN answer -> OUT
    assert load.value == 0x1234
    assert store.value == 0x1235                # MMIO answer -> inc ax -> MMIO write
    assert regs["rax"] & 0xFFFF == 0x1235


@needs_kvm
@pytest.mark.parametrize("port", [DEMO_PORT, None], ids=["in", "mmio-read"])
def test_a_device_that_raises_reaches_the_caller_and_the_vm_still_closes(port):
    class Broken(Exception):
        pass

    def device(exit: Exit) -> int:
        if port is None and exit.reason == "KVM_EXIT_MMIO" or exit.port == port:
            raise Broken(exit.reason)
        return 0x5A

    vm = TinyVM(on_read=device)
    with pytest.raises(Broken) as info, vm:       # not a BufferError from close()
        vm.load(DEMO_PROGRAM)
        vm.run()
    assert vm._mem is None and vm._run_map is None and vm._vcpu_fd == -1
    del info                                       # the traceback's ctypes views go with it


@needs_kvm
def test_step_runs_to_one_exit_at_a_time():
    with TinyVM() as vm:
        vm.load(DEMO_PROGRAM)
        first = vm.step()
        assert (first.index, first.reason, first.direction) == (0, "KVM_EXIT_IO", "out")
        assert first.data == b"H"
        assert vm.registers()["rax"] & 0xFF == ord("H")
        reasons = [vm.step().reason for _ in range(5)]
    assert reasons == DEMO_REASONS[1:]


@needs_kvm
def test_a_guest_that_never_exits_is_stopped_and_nothing_leaks():
    fds, maps = open_fds(), kvm_mappings()
    started = time.monotonic()
    with TinyVM() as vm:
        vm.load(JMP_SELF)
        with pytest.raises(RunawayGuest, match=r"did not halt within 0.5 s.*rip=0x1000"):
            vm.run(timeout=0.5)
        assert time.monotonic() - started < 3
        # The kicked vCPU is intact: it can be kicked again, and still runs a program.
        with pytest.raises(RunawayGuest):
            vm.step(timeout=0.2)
        vm.load(DEMO_PROGRAM)
        assert vm.run()[-1].reason == "KVM_EXIT_HLT"
    assert open_fds() == fds
    assert kvm_mappings() == maps
    vm.close()  # a second close is harmless


@needs_kvm
def test_exit_budget_stops_a_guest_that_exits_forever():
    with TinyVM() as vm:
        vm.load(OUT_LOOP)
        with pytest.raises(RunawayGuest, match="within 50 exits") as caught:
            vm.run(max_exits=50)
    assert len(caught.value.exits) == 50
    assert {e.port for e in caught.value.exits} == {DEMO_PORT}



@needs_kvm
def test_the_kick_reaches_a_vcpu_running_in_another_thread():
    caught: list[BaseException] = []

    def vcpu_thread(vm: TinyVM) -> None:
        try:
            vm.run(timeout=0.3)
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            caught.append(exc)

    with TinyVM() as vm:
        vm.load(JMP_SELF)
        thread = threading.Thread(target=vcpu_thread, args=(vm,))
        thread.start()
        thread.join(timeout=5)
        assert not thread.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], RunawayGuest)
