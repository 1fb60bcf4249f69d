#!/usr/bin/env python3
"""Run a guest program under your VMM (uart.py) and say what came out of the UART.

    python3 run_guest.py tests/guests/hello.S            # what the guest sent
    python3 run_guest.py tests/guests/echo.S --rx 'Hi!' -v   # every exit, then the result

GUEST is 16-bit real-mode assembly (GNU as syntax, ``.code16``; assembled with
``as`` and ``ld`` to run at 0x1000) or a flat binary (.bin). ``--rx`` is what
arrives on the line for the guest to read. This is the lab's harness: the
grader runs exactly this file (its own copy) with ``--json``, in a sandbox that
sees /dev/kvm and nothing else of the machine. Exit status: 0 the run ended (the
guest halted or ran away), 3 your code raised, 4 uart.py lacks what the harness
calls, 5 KVM failed, 2 bad usage.
"""
from __future__ import annotations

import argparse
import contextlib
import faulthandler
import json
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from lab_vm.baremetal.tinyvmm import (FINAL_EXITS, KVMUnavailable, RunawayGuest, TinyVM,
                                      TinyVMError, describe)

LOAD_AT = 0x1000        # where TinyVM.load() puts the guest: CS:IP = 0:0x1000
MARKER = "@@run_guest@@ "   # the line the grader reads; anything else printed is a log
CRASHED, BROKEN, NO_KVM = 3, 4, 5
REGS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "rip")


class StudentRaised(Exception):
    """answer() raised: the traceback, as text."""


def assemble(source: Path, timeout: float = 20.0) -> bytes:
    """GNU as (``--32``, the source says ``.code16``) and ld to a flat binary at LOAD_AT."""
    with tempfile.TemporaryDirectory() as tmp:
        obj, binary = Path(tmp, "guest.o"), Path(tmp, "guest.bin")
        for cmd in (["as", "--32", "-o", str(obj), str(source)],
                    ["ld", "-m", "elf_i386", f"-Ttext={LOAD_AT:#x}", "--oformat=binary",
                     "-e", "_start", "-o", str(binary), str(obj)]):
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            if done.returncode != 0:
                sys.exit(f"run_guest: {cmd[0]} failed on {source}:\n{done.stderr}")
        return binary.read_bytes()


def load_student():
    """Import uart.py and check it has what this harness calls."""
    try:
        import uart
    except BaseException:
        traceback.print_exc()
        print("run_guest: uart.py does not import (the traceback above says why)",
              file=sys.stderr)
        sys.exit(BROKEN)
    missing = [name for name in ("UART", "answer", "handle") if not callable(getattr(uart, name,
                                                                                      None))]
    if missing:
        print(f"run_guest: uart.py has no {', '.join(missing)}: keep the names of the skeleton",
              file=sys.stderr)
        sys.exit(BROKEN)
    return uart


def run(uart_module, program: bytes, rx: bytes, *, max_exits: int, timeout: float,
        verbose: bool) -> dict:
    """Run the guest to its end; what the grader needs to know about the run."""
    uart = uart_module.UART(rx)
    exits, last = 0, []
    stop, runaway = None, None
    raised: list[str] = []

    def on_read(exit):
        # Your exception is kept as text and raised again once KVM_RUN's decoding is over:
        # raised through TinyVM (or kept alive), its frames would pin TinyVM's views of the
        # kvm_run page, and closing the VM would fail on top of it.
        try:
            got = uart_module.answer(uart, exit)
            if not isinstance(got, int):
                raise TypeError(f"answer() returned {got!r}, not an int")
            return got
        except Exception:
            raised.append(traceback.format_exc())
            return 0

    start = time.monotonic()
    with TinyVM(on_read=on_read) as vm:
        vm.load(program, at=LOAD_AT)
        while True:
            left = start + timeout - time.monotonic()
            try:
                if left <= 0:
                    raise RunawayGuest(f"the guest did not halt within {timeout:g} s", [], None)
                exit = vm.step(timeout=left)
            except RunawayGuest as exc:
                runaway = f"{exc} after {exits} exits"
                break
            if raised:
                raise StudentRaised(raised[0])
            exits += 1
            last = (last + [describe(exit)])[-5:]
            if verbose:
                print(describe(exit), file=sys.stderr)
            if not uart_module.handle(uart, exit):
                stop = exit.reason
                break
            if exit.reason in FINAL_EXITS:
                stop = exit.reason
                runaway = f"handle() returned True after {exit.reason}: it must stop there"
                break
            if exits >= max_exits:
                runaway = f"the guest did not halt within {max_exits} exits"
                break
        regs = vm.registers()
    tx = bytes(uart.tx)
    return {"tx": tx.hex(), "stop": stop, "runaway": runaway, "exits": exits,
            "last_exits": last, "regs": {r: regs[r] for r in REGS},
            "seconds": round(time.monotonic() - start, 4)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("guest", type=Path, nargs="?", help="a .S source or a flat .bin")
    parser.add_argument("--rx", default="", help="bytes the guest receives (text)")
    parser.add_argument("--rx-hex", help="bytes the guest receives, in hex")
    parser.add_argument("--max-exits", type=int, default=20000)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for the run")
    parser.add_argument("--json", action="store_true", help="one line for the grader")
    parser.add_argument("--check", action="store_true", help="only import uart.py")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every exit")
    args = parser.parse_args()
    # Your code loops forever: print where it is (every thread's stack) and end.
    faulthandler.dump_traceback_later(args.timeout + 2, exit=True)
    uart_module = load_student()
    if args.check:
        return 0
    if args.guest is None:
        parser.error("which guest? (a .S or .bin file)")
    program = (args.guest.read_bytes() if args.guest.suffix == ".bin"
               else assemble(args.guest))
    rx = bytes.fromhex(args.rx_hex) if args.rx_hex else args.rx.encode()
    try:
        # What your code prints goes to stderr: stdout carries the result.
        with contextlib.redirect_stdout(sys.stderr):
            result = run(uart_module, program, rx, max_exits=args.max_exits,
                         timeout=args.timeout, verbose=args.verbose)
    except KVMUnavailable as exc:
        print(f"run_guest: /dev/kvm cannot be used: {exc}", file=sys.stderr)
        return NO_KVM
    except TinyVMError as exc:
        print(f"run_guest: the VMM failed: {exc}", file=sys.stderr)
        return NO_KVM
    except StudentRaised as exc:
        print(exc.args[0], file=sys.stderr, end="")
        return CRASHED
    except Exception:
        traceback.print_exc()
        return CRASHED
    if args.json:
        print(MARKER + json.dumps(result), flush=True)
    else:
        print(f"guest sent {bytes.fromhex(result['tx'])!r}")
        print(f"{result['exits']} exits; " + (f"stopped at {result['stop']}" if result["stop"]
                                              else f"ran away: {result['runaway']}"))
        print("  ".join(f"{r}={v:#x}" for r, v in result["regs"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
