"""Chapter 4's code: the busy-wait programs compile to the loops the chapter says, and ktimes.ko
reports what a driver's time functions return.

The first tests need only gcc and objdump (build_static's compiler flags, the loop reader);
the last one builds the module against the lab kernel and reads its table in the lab VM.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from lab_vm.build.initramfs import build_static

REPO = Path(__file__).resolve().parent.parent
CODE = REPO / "book/code/04-time-and-timers"
sys.path.insert(0, str(CODE))
import loops  # noqa: E402


def loop(tmp_path: Path, source: str, function: str, *cflags: str) -> list:
    exe = build_static(CODE / source, tmp_path / f"{source}{''.join(cflags)}",
                       cflags=list(cflags), strip=False)
    return loops.loop_of(loops.disassemble(exe, function))


def test_build_static_passes_flags_and_keeps_symbols(tmp_path):
    stripped = build_static(CODE / "spin.c", tmp_path / "stripped")
    with pytest.raises(ValueError, match="stripped"):     # no symbols, no wait_until
        loops.disassemble(stripped, "wait_until")
    plain = loop(tmp_path, "spin.c", "wait_until", "-DWAIT=0")
    at_o0 = loop(tmp_path, "spin.c", "wait_until", "-DWAIT=0", "-O0")
    assert not any(i.loads for i in plain)      # -O2: the load is hoisted out of the loop
    assert any(i.loads for i in at_o0)          # -O0 (after the default -O2) wins: reloaded


@pytest.mark.parametrize("source,function", [("spin.c", "wait_until"),
                                             ("hpetspin.c", "hpet_wait")])
def test_volatile_and_read_once_reload_on_every_turn(tmp_path, source, function):
    assert not any(i.loads for i in loop(tmp_path, source, function, "-DWAIT=0"))
    for variant in ("-DWAIT=1", "-DWAIT=2"):
        body = loop(tmp_path, source, function, variant)
        assert body[0].loads, (variant, [str(i) for i in body])


def test_a_call_in_the_loop_forces_a_reload(tmp_path):
    body = loop(tmp_path, "hpetspin.c", "hpet_wait", "-DWAIT=3")
    call = next(n for n, i in enumerate(body) if i.mnemonic.startswith("call"))
    assert any(i.loads for i in body[call:])


def test_loads_reads_att_operand_order():
    def insn(text):
        mnemonic, _, operands = text.partition(" ")
        return loops.Insn(0, mnemonic, operands)
    assert insn("mov (%rdi),%eax").loads
    assert insn("mov 0x10(%rip),%eax").loads
    assert insn("cmp %esi,(%rdi)").loads           # cmp reads its destination too
    assert not insn("mov %eax,(%rdi)").loads      # a store
    assert not insn("lea 0x8(%rip),%rdx").loads   # an address, not a load
    assert not insn("cmp %edi,%eax").loads
    with pytest.raises(ValueError):
        loops.loop_of([insn("mov (%rdi),%eax"), insn("ret")])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ktimes_table_in_the_guest(tmp_path):
    from lab_vm import LabVM
    from lab_vm.build.modules import build_module

    shutil.copytree(CODE / "kernel", tmp_path / "kernel")
    built = build_module(tmp_path / "kernel", timeout=300)
    assert not built.warnings, built.warnings
    ko = next(m for m in built.modules if m.stem == "ktimes")
    with LabVM(name="test-ch4-ktimes") as vm:
        vm.insmod(ko)
        lines = vm.run("cat /sys/kernel/debug/ktimes/table", timeout=60, check=True).text
    *rows, hz_line = lines.splitlines()
    hz = int(re.search(r"^CONFIG_HZ=(\d+)", vm.kernel.config.read_text(), re.M)[1])
    assert hz_line == f"HZ {hz}"
    table = {name: (int(v), int(step), int(ps)) for name, v, step, ps in map(str.split, rows)}
    assert {"ktime_get", "ktime_get_real_ts64", "ktime_get_coarse", "jiffies"} <= set(table)
    tick = 1e9 / hz
    for name in ("ktime_get_coarse", "ktime_get_coarse_real_ts64", "jiffies"):
        ticks = table[name][1] / tick                # coarse clocks move in whole ticks
        assert ticks >= 0.99 and abs(ticks - round(ticks)) < 0.01, (name, table[name])
    assert 0 < table["ktime_get_ns"][1] < tick / 100  # the fine ones move with the counter
    # CLOCK_REALTIME is the date, CLOCK_MONOTONIC the time since boot
    assert table["ktime_get_real_ns"][0] > 1.5e18 > table["ktime_get_ns"][0]
    assert all(ps > 0 for _, _, ps in table.values())
