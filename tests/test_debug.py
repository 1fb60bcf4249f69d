"""gdb on the guest kernel, scripted through pwntools: real QEMU, real gdb."""
from __future__ import annotations

import os
import shutil
import signal

import pytest

from lab_vm.errors import DebuggerError
from lab_vm.vm.machine import LabVM
from lab_vm.build.modules import build_module

from conftest import TESTS, suite_processes


@pytest.fixture(scope="module")
def dvm(built):
    with LabVM(name="debug") as vm:
        yield vm


@pytest.fixture(autouse=True)
def no_stray_gdb():
    yield
    assert suite_processes("gdb") == [], "a gdb outlived its Debugger"


def test_break_in_openat_shows_syscall_path_and_comm(dvm):
    with dvm.debugger() as dbg:
        dbg.break_at("do_sys_openat2")
        job = dvm.start("cat /proc/version")
        stop = dbg.cont(timeout=30)
        assert stop["function"] == "do_sys_openat2"
        frames = [f["function"] for f in dbg.backtrace()]
        assert "do_syscall_64" in frames
        assert dbg.evaluate("$lx_current().comm") == "cat"
        assert stop["file"].endswith("fs/open.c") and stop["line"] > 0
    # the debugger let go: the command finishes and the channel still works
    assert "Linux version" in job.wait(timeout=30).text


def test_stepi_returns_after_the_instruction_ran(dvm):
    """stepi() waits for the stop: the pc has moved and QEMU already traced the port access."""
    with dvm.debugger() as dbg:
        dbg.break_at("rtc_cmos_read")
        job = dvm.start("cat /sys/class/rtc/rtc0/time")
        dbg.cont(timeout=30)
        seen = []
        for _ in range(8):
            insn = dbg.execute("x/i $pc").split(":\t", 1)[1].strip()
            before = dbg.evaluate("(unsigned long)$pc")
            with dvm.tracing("memory_region_ops_write", "memory_region_ops_read") as one:
                dbg.stepi()
            assert dbg.evaluate("(unsigned long)$pc") != before, insn
            seen.append((insn.split()[0], [r.get("name") for r in one.records]))
            if insn.startswith("in "):
                break
    assert ("out", ["rtc-index"]) in seen and seen[-1] == ("in", ["rtc"]), seen
    assert job.wait(timeout=30).status == 0


def test_jiffies_advance_and_lx_dmesg(dvm):
    with dvm.debugger() as dbg:
        first = dbg.evaluate("jiffies")
        dbg.resume()
        dvm.run("sleep 0.2", timeout=30)
        dbg.interrupt()
        assert dbg.evaluate("jiffies") > first
        assert "Linux version" in dbg.execute("lx-dmesg")
        assert isinstance(dbg.evaluate("tk_core.timekeeper"), dict)


def test_module_from_share_has_source_lines(built, tmp_path):
    src = tmp_path / "hello"
    shutil.copytree(TESTS / "modules" / "hello", src)
    build_module(src)
    with LabVM(share=src, name="debug-mod") as vm:
        vm.insmod("/mnt/share/hello.ko")
        with vm.debugger() as dbg:
            dbg.load_module_symbols(src)
            dbg.break_at("vmexit_hello_answer")
            job = vm.start("cat /sys/module/hello/parameters/answer")
            stop = dbg.cont(timeout=30)
            assert stop["function"] == "vmexit_hello_answer"
            assert stop["file"].endswith("hello.c") and stop["line"] > 0
        assert job.wait(timeout=30).text == "42\n"


def test_sample_collects_count_with_monotonic_timestamps(dvm):
    with dvm.debugger() as dbg:
        loop = dvm.start("i=0; while [ $i -lt 2000 ]; do i=$((i+1)); done")
        records = dbg.sample("ktime_get", ["jiffies", "$lx_current().pid"], count=200,
                             timeout=60)
    loop.wait(timeout=60)
    assert len(records) == 200
    times = [r["t"] for r in records]
    assert times == sorted(times)
    assert all(isinstance(r["jiffies"], int) for r in records)


def test_sample_at_an_entry_nop_moves_past_it_and_the_guest_reads_right(dvm):
    # ksys_read's entry is ftrace's NOP: sample() moves the PC past it instead of stepping.
    # Had it skipped anything else, dd's reads would go wrong or the guest would crash.
    with dvm.debugger() as dbg:
        load = dvm.start("dd if=/dev/zero of=/dev/null bs=1 count=20000 2>&1")
        records = dbg.sample("ksys_read", ["count"], count=100, timeout=120)
        assert dbg.nop_skipped == 99        # every hit but the last, where the sample stops
        counts = [r["count"] for r in records]     # dd's one-byte reads, and the shell's
        assert all(isinstance(c, int) and c > 0 for c in counts)
        assert counts.count(1) >= 50
    assert "20000+0 records in" in load.wait(timeout=120, check=True).text


def test_sample_steps_over_a_traced_entry_and_ftrace_sees_every_call(dvm):
    # Traced, the entry is a call into ftrace, not a NOP: it must run, not be skipped.
    with dvm.ftrace(tracer="function", functions=["ksys_read"]) as trace:
        with dvm.debugger() as dbg:
            load = dvm.start("dd if=/dev/zero of=/dev/null bs=1 count=20000")
            records = dbg.sample("ksys_read", ["count"], count=30, timeout=120)
            assert dbg.nop_skipped == 0
        load.wait(timeout=120, check=True)
    assert len(records) == 30
    assert trace.text.count("ksys_read <-") >= 20000


def test_bad_symbol_and_bad_expression_raise(dvm):
    with dvm.debugger() as dbg:
        with pytest.raises(DebuggerError, match="no_such_function_xyz"):
            dbg.break_at("no_such_function_xyz")
        with pytest.raises(DebuggerError, match="cannot evaluate"):
            dbg.evaluate("no_such_variable_xyz + 1")
        with pytest.raises(DebuggerError, match="cannot sample"):
            dbg.sample("no_such_function_xyz", count=1, timeout=5)


def test_killed_gdb_raises_and_leaves_nothing(dvm):
    with dvm.debugger() as dbg:
        os.kill(dbg._pid, signal.SIGKILL)
        with pytest.raises(DebuggerError):
            dbg.cont(timeout=5)
    # the VM survives the debugger's death
    assert dvm.run("echo alive", timeout=30).text == "alive\n"


def test_a_killed_gdb_leaves_no_breakpoint_behind(dvm):
    # QEMU's gdbstub keeps a dead gdb's breakpoints: the guest would stop at the next open
    with dvm.debugger() as dbg:
        dbg.break_at("do_sys_openat2")
        dbg.resume()                      # running: gdb has put the breakpoint into QEMU
        os.kill(dbg._pid, signal.SIGKILL)
    assert "Linux version" in dvm.run("cat /proc/version", timeout=30).text


def test_two_debuggers_on_two_vms(built):
    with LabVM(name="dbg-a") as a, LabVM(name="dbg-b") as b:
        with a.debugger() as da, b.debugger() as db:
            assert da.evaluate("jiffies") > 0 and db.evaluate("jiffies") > 0
            assert a.gdb_port != b.gdb_port


def test_conditional_breakpoint_stops_only_where_true(dvm):
    with dvm.debugger() as dbg:
        dbg.break_at("ksys_write", condition="fd == 2")
        # (`echo err >&2` would not do: the shell moves fd 2 onto fd 1 for a builtin)
        job = dvm.start("echo out; ls /no/such/file")
        dbg.cont(timeout=30)
        assert dbg.evaluate("fd") == 2
        dbg.select_frame("do_syscall_64")
        assert dbg.where()["function"] == "ksys_write"      # where() is the innermost frame
        with pytest.raises(DebuggerError):
            dbg.break_at("ksys_read", condition="no_such_variable == 1")
    assert b"no/such/file" in job.wait(timeout=30).stderr
