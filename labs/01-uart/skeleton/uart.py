"""Lab 1: a 16550 UART at port 0x3f8, played by the tiny VMM of Chapter 1.

The guest is 16-bit real-mode code that talks to COM1 with IN and OUT. Each IN
and each OUT to the ports 0x3f8-0x3ff leaves KVM_RUN (KVM_EXIT_IO) and comes to
this file: ``answer()`` gives an IN its value, ``handle()`` sees every exit after
it happened (an OUT's value is in ``exit.data``). ``UART`` keeps the registers.

The harness (run_guest.py) does the rest: it creates the TinyVM with
``on_read=lambda exit: answer(uart, exit)``, loads the guest, calls
``vm.step()`` and ``handle(uart, exit)`` until ``handle`` returns False, and
reports ``uart.tx``. Do not rename what it uses: ``UART(rx)``, ``UART.tx``,
``answer`` and ``handle``.
"""
from __future__ import annotations

from collections import deque

from lab_vm.baremetal.tinyvmm import FINAL_EXITS, Exit

COM1 = 0x3F8            # the first of the UART's eight ports
PORTS = range(COM1, COM1 + 8)
NO_DEVICE = 0xFF        # what a read from a port nobody decodes returns (a floating bus)

# Register offsets from COM1 (the 16550's data sheet; Linux: include/uapi/linux/serial_reg.h)
RBR = 0                 # read: receive buffer (the next byte received)
THR = 0                 # write: transmit holding (the byte to send)
IER = 1                 # interrupt enable (kept, unused: this VMM injects no interrupts)
LCR = 3                 # line control; bit 7 is DLAB
LSR = 5                 # line status (read only)
SCR = 7                 # scratch: holds a byte for software, nothing else
DLL, DLM = 0, 1         # with LCR.DLAB set: the divisor latch, low and high byte

LCR_DLAB = 0x80         # divisor latch access bit
LSR_DR = 0x01           # data ready: RBR holds a received byte
LSR_THRE = 0x20         # transmit holding register empty: THR takes a byte
LSR_TEMT = 0x40         # transmitter empty: nothing is being sent either


class UART:
    """The registers of one 16550, without FIFOs and without interrupts.

    ``rx`` is what arrives on the line, oldest first: the guest reads it from
    RBR, one byte at a time, while LSR says DR. ``tx`` collects every byte the
    guest wrote to THR, in order.
    """

    def __init__(self, rx: bytes = b"") -> None:
        self.rx = deque(rx)
        self.tx = bytearray()
        self.ier = 0
        self.lcr = 0
        self.scr = 0
        self.divisor = 0        # DLM << 8 | DLL

    def read(self, offset: int) -> int:
        """The value of the register at ``offset`` (0-7) as an IN sees it: one byte."""
        # TODO 9: with DLAB set, offsets 0 and 1 read the divisor latch; LCR reads back
        # TODO 4: line status: DR while rx holds a byte; THRE and TEMT always (sending is instant)
        # TODO 5: RBR: the oldest received byte, taken off rx (0 when nothing came)
        # TODO 7: the scratch register and IER read back what was written
        return 0

    def write(self, offset: int, value: int) -> None:
        """An OUT of one byte ``value`` to the register at ``offset`` (0-7)."""
        # TODO 8: LCR; with DLAB set, offsets 0 and 1 write the divisor latch (DLL low, DLM high)
        # TODO 2: THR: the byte goes out on the line (append it to tx)
        # TODO 6: keep what is written to the scratch register and to IER


def answer(uart: UART, exit: Exit) -> int:
    """TinyVM's ``on_read``: the value an IN (or an MMIO read) returns to the guest.

    An access of ``exit.size`` bytes to port p reads the registers at p, p+1, ...
    (the lowest address in the lowest byte: x86 is little-endian). A port with
    no device returns all ones, byte by byte; so does every MMIO read.
    """
    # TODO 3: give each byte of an IN on the UART's ports uart.read(); others 0xff
    return 0


def handle(uart: UART, exit: Exit) -> bool:
    """Called after every exit: play the device for OUTs; False to stop running the guest.

    ``exit.data`` holds ``exit.count`` elements of ``exit.size`` bytes (count > 1 for
    ``rep outsb``): every element goes to the same port, each of its bytes to the
    register at that port plus its index.
    """
    if exit.reason in FINAL_EXITS:          # HLT, a triple fault, a failed entry: stop
        return False
    # TODO 1: give each byte of an OUT on the UART's ports to uart.write(); ignore other ports
    return True
