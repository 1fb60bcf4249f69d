"""Lab 1's checker: guest programs run under the student's VMM (uart.py), on /dev/kvm.

Each test assembles a 16-bit guest (tests/guests/*.S, or a program written out
in a hidden test), runs it with ``t.run(guest, rx=...)`` — the student's code
runs in the grading sandbox, the guest on the real KVM — and looks at what the
guest sent through the UART and what it left in its registers when it halted.
Bytes the guest receives are random per run, so only a working UART passes.
"""
from __future__ import annotations

import random
import string
from pathlib import Path

from lab_vm.grading import expect, fail, test

GUESTS = Path(__file__).resolve().parent / "guests"
RANDOM = random.SystemRandom()


def halted(run, fix: str = "") -> None:
    """The guest must have run to its HLT."""
    if not run.halted:
        fail(f"the guest did not run to its HLT: {run.describe()}", fix)


def sent(run, want: bytes, fix: str) -> None:
    expect(run.tx == want, f"the guest should have sent {want!r}, the UART has {run.tx!r}\n"
           f"{run.describe()}", fix)


def letters(n: int) -> bytes:
    return "".join(RANDOM.choice(string.ascii_letters) for _ in range(n)).encode()


@test(10, "the VMM runs a guest to its HLT")
def runs_to_hlt(t):
    run = t.run(GUESTS / "halt.S")
    halted(run, "handle() must return False on KVM_EXIT_HLT (the skeleton does)")
    expect(run.exits == 1 and run.tx == b"", f"one exit and nothing sent, not {run.describe()}")


@test(15, "bytes written to THR come out of the UART")
def transmit(t):
    run = t.run(GUESTS / "hello.S")
    halted(run)
    sent(run, b"Hello from the guest!\r\n",
         "in handle(), give each OUT to port 0x3f8 + n to uart.write(n, byte) (TODO 1), "
         "and in write() append what goes to THR to uart.tx (TODO 2)")


@test(15, "a guest that waits for LSR.THRE before each byte gets its line out")
def transmit_polling(t):
    run = t.run(GUESTS / "polite.S", max_exits=5000)
    sent(run, b"polled LSR.THRE before every byte\n",
         "answer() must give an IN on the UART's ports the value of uart.read() (TODO 3), "
         "and LSR must say THRE|TEMT (0x60): this UART's transmitter is always ready (TODO 4)")
    halted(run)


@test(20, "the guest receives: LSR.DR while bytes wait, RBR hands them over in order")
def receive(t):
    rx = letters(RANDOM.randint(8, 24))
    run = t.run(GUESTS / "echo.S", rx=rx, max_exits=5000)
    halted(run, "LSR.DR must clear once every received byte was read from RBR (TODO 4, 5)")
    want = bytes(b ^ 0x20 for b in rx)
    sent(run, want, "set LSR.DR (0x01) while uart.rx holds bytes (TODO 4); reading RBR takes "
         "the oldest byte off uart.rx (TODO 5). The guest echoes each byte with its case "
         "swapped")
    expect(run.reg("cx") == len(rx), f"the guest counted {run.reg('cx')} bytes, not {len(rx)}",
           "each read of RBR returns one byte and takes it off rx (TODO 5)")


@test(10, "the scratch register and IER keep what the guest wrote")
def scratch(t):
    run = t.run(GUESTS / "scratch.S")
    halted(run)
    got = (run.reg("bl"), run.reg("bh"), run.reg("cl"))
    expect(got == (0xA5, 0x5A, 0x0F),
           "SCR read back {:#04x} then {:#04x} (wrote 0xa5, 0x5a); IER read back {:#04x} "
           "(wrote 0x0f)".format(*got),
           "keep writes to SCR (offset 7) and IER (offset 1) (TODO 6) and return them on "
           "reads (TODO 7)")
    sent(run, b"", "writes to SCR and IER send nothing")


@test(15, "with LCR.DLAB set, offsets 0 and 1 are the divisor latch")
def divisor_latch(t):
    run = t.run(GUESTS / "divisor.S")
    halted(run)
    sent(run, b"A", "while LCR.DLAB (0x80) is set, a write to offset 0 sets DLL, it does not "
         "send (TODO 8); once DLAB is clear, offset 0 is THR again")
    got = (run.reg("bx"), run.reg("cl"), run.reg("ch"))
    expect(got == (12, 0x83, 0x03),
           "read back divisor {}, LCR {:#04x} then {:#04x}; wrote divisor 12, LCR 0x83 then "
           "0x03".format(*got),
           "LCR reads back what was written; with DLAB set, offset 0 reads DLL and offset 1 "
           "DLM (TODO 9)")


@test(15, "a port or an address no device decodes reads all ones")
def no_device(t):
    run = t.run(GUESTS / "nodevice.S")
    halted(run, "an OUT to a port that is not the UART's is ignored, and the VMM runs on "
           "(TODO 1)")
    got = (run.reg("bl"), run.reg("si"), run.reg("di"))
    expect(got == (0xFF, 0xFFFF, 0xFFFF),
           "in al from 0x2f8 gave {:#x}, in ax from 0x2f8 {:#x}, a word read at 0x9000 "
           "{:#x}; all should be all ones".format(*got),
           "answer() returns 0xff for every byte of an IN outside 0x3f8-0x3ff, and all ones "
           "for an MMIO read (TODO 3)")
    sent(run, b"", "only the UART's ports reach the UART")


# Hidden: a long, binary echo. Every byte value, the end of input, and the line status after.
@test(10, "a long binary echo: every byte value, then an empty receiver", hidden=True)
def binary_echo(t):
    rx = bytes(RANDOM.sample(range(256), 256)) + RANDOM.randbytes(64)
    guest = """
	.code16
	.globl _start
_start:
	xor	%cx, %cx
poll:	mov	$0x3fd, %dx
	in	%dx, %al
	test	$0x01, %al
	jz	done
	mov	$0x3f8, %dx
	in	%dx, %al
	not	%al
	out	%al, %dx
	inc	%cx
	jmp	poll
done:	mov	$0x3f8, %dx		# RBR once more, with nothing received
	in	%dx, %al
	mov	%al, %bl
	mov	$0x3fd, %dx
	in	%dx, %al
	mov	%al, %bh
	hlt
"""
    run = t.run(guest, rx=rx, max_exits=20000, timeout=20)
    halted(run)
    sent(run, bytes(b ^ 0xFF for b in rx), "RBR must hand over every byte value, 0x00 included, "
         "in order")
    expect((run.reg("cx"), run.reg("bl"), run.reg("bh")) == (len(rx), 0, 0x60),
           f"after {len(rx)} bytes the guest counted {run.reg('cx')}; an empty RBR read "
           f"{run.reg('bl'):#x} (want 0), LSR {run.reg('bh'):#x} (want 0x60)")


# Hidden: accesses wider than a byte, and a string OUT (one exit, many bytes).
@test(10, "word-sized IN/OUT split into bytes; rep outsb sends a whole string", hidden=True)
def wide_and_string_io(t):
    guest = """
	.code16
	.globl _start
_start:
	mov	$0x3fe, %dx		# a word at offset 6: MSR (ignores writes), then SCR
	mov	$0xc300, %ax
	out	%ax, %dx
	mov	$0x3ff, %dx
	in	%dx, %al
	mov	%al, %bl		# SCR: 0xc3
	mov	$0x3f8, %dx
	mov	$text, %si
	mov	$5, %cx
	cld
	rep outsb			# one KVM_EXIT_IO with count = 5
	mov	$0x3fc, %dx		# a word at offset 4: MCR (reads 0), then LSR
	in	%dx, %ax
	mov	%ax, %di		# 0x6000
	hlt
text:	.ascii	"rep!\\n"
"""
    run = t.run(guest)
    halted(run)
    sent(run, b"rep!\n", "an OUT with count > 1 (rep outsb) carries count bytes in exit.data, "
         "each for the same port")
    expect((run.reg("bl"), run.reg("di")) == (0xC3, 0x6000),
           f"SCR after a word OUT read {run.reg('bl'):#x} (want 0xc3); a word IN at "
           f"offset 4 gave {run.reg('di'):#x} (want 0x6000: MCR 0, then LSR 0x60)",
           "split an access of exit.size bytes into bytes for port, port + 1, ...")
