"""A tiny VMM over /dev/kvm, in pure Python: the vCPU loop of Chapter 1, with nothing hidden.

The whole of a hypervisor's user-space half is here: open /dev/kvm, create a VM,
give it memory (an anonymous mmap registered as memory slot 0), create a vCPU,
map its ``struct kvm_run``, set the registers, then call KVM_RUN until the guest
halts. KVM_RUN returns to us only when the guest does something the kernel will
not finish on its own: port I/O (KVM_EXIT_IO), a load or store to a guest-physical
address that no memory slot backs (KVM_EXIT_MMIO), or HLT (KVM_EXIT_HLT: we create
no in-kernel irqchip, so nobody in the kernel could wake a halted vCPU). Every such
exit is recorded as an :class:`Exit`; the VMM plays the device and answers reads.

Struct layouts come from include/uapi/linux/kvm.h and
arch/x86/include/uapi/asm/kvm.h; ioctl numbers are built with the _IO/_IOR/_IOW
encoding of include/uapi/asm-generic/ioctl.h, as the C headers do.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import fcntl
import logging
import mmap
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from ctypes import c_char, c_uint8, c_uint16, c_uint32, c_uint64, sizeof
from typing import NoReturn

LOG = logging.getLogger(__name__)

KVM_API_VERSION = 12   # the only version there has ever been since Linux 2.6.22
MEM_SIZE = 0x8000      # guest RAM: 32 KiB at guest-physical 0 (memory slot 0)
MMIO_ADDR = 0x9000     # a guest-physical address past the end of RAM: no slot, so MMIO
DEMO_PORT = 0xE9       # the "port 0xE9 hack" of Bochs and QEMU's debugcon
DEFAULT_ANSWER = 0x2A  # what the default device returns to IN and MMIO reads


# --- ioctl numbers: <asm-generic/ioctl.h>: dir:2 | size:14 | type:8 | nr:8 -----------------

_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
KVMIO = 0xAE


def _IOC(direction: int, type_: int, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (type_ << 8) | nr


def _IO(type_: int, nr: int) -> int:
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: int, nr: int, struct: type) -> int:  # the kernel writes, we read
    return _IOC(_IOC_READ, type_, nr, sizeof(struct))


def _IOW(type_: int, nr: int, struct: type) -> int:  # we write, the kernel reads
    return _IOC(_IOC_WRITE, type_, nr, sizeof(struct))


# --- struct layouts --------------------------------------------------------------------------

class kvm_userspace_memory_region(ctypes.Structure):
    _fields_ = [("slot", c_uint32), ("flags", c_uint32), ("guest_phys_addr", c_uint64),
                ("memory_size", c_uint64), ("userspace_addr", c_uint64)]


REG_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
             "r12", "r13", "r14", "r15", "rip", "rflags")


class kvm_regs(ctypes.Structure):
    _fields_ = [(name, c_uint64) for name in REG_NAMES]


class kvm_segment(ctypes.Structure):
    _fields_ = [("base", c_uint64), ("limit", c_uint32), ("selector", c_uint16)] + [
        (name, c_uint8) for name in ("type", "present", "dpl", "db", "s", "l", "g", "avl",
                                     "unusable", "padding")]


class kvm_dtable(ctypes.Structure):
    _fields_ = [("base", c_uint64), ("limit", c_uint16), ("padding", c_uint16 * 3)]


SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss")


class kvm_sregs(ctypes.Structure):
    _fields_ = ([(name, kvm_segment) for name in SEGMENTS + ("tr", "ldt")]
                + [("gdt", kvm_dtable), ("idt", kvm_dtable)]
                + [(name, c_uint64) for name in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer",
                                                 "apic_base")]
                + [("interrupt_bitmap", c_uint64 * 4)])  # (KVM_NR_INTERRUPTS + 63) / 64


class _io(ctypes.Structure):
    _fields_ = [("direction", c_uint8), ("size", c_uint8), ("port", c_uint16),
                ("count", c_uint32), ("data_offset", c_uint64)]  # data lives in the same mmap


class _mmio(ctypes.Structure):
    _fields_ = [("phys_addr", c_uint64), ("data", c_uint8 * 8), ("len", c_uint32),
                ("is_write", c_uint8)]


class _fail_entry(ctypes.Structure):
    _fields_ = [("hardware_entry_failure_reason", c_uint64), ("cpu", c_uint32)]


class _internal(ctypes.Structure):
    _fields_ = [("suberror", c_uint32), ("ndata", c_uint32), ("data", c_uint64 * 16)]


class _exit_union(ctypes.Union):
    _fields_ = [("hardware_exit_reason", c_uint64), ("fail_entry", _fail_entry), ("io", _io),
                ("mmio", _mmio), ("internal", _internal), ("padding", c_char * 256)]


class kvm_run(ctypes.Structure):
    """The head of the page KVM shares with us per vCPU (x86 layout; the tail is unused here)."""
    _fields_ = [("request_interrupt_window", c_uint8), ("immediate_exit", c_uint8),
                ("padding1", c_uint8 * 6), ("exit_reason", c_uint32),
                ("ready_for_interrupt_injection", c_uint8), ("if_flag", c_uint8),
                ("flags", c_uint16), ("cr8", c_uint64), ("apic_base", c_uint64),
                ("u", _exit_union)]


KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
KVM_CREATE_VM = _IO(KVMIO, 0x01)
KVM_GET_VCPU_MMAP_SIZE = _IO(KVMIO, 0x04)
KVM_CREATE_VCPU = _IO(KVMIO, 0x41)
KVM_SET_USER_MEMORY_REGION = _IOW(KVMIO, 0x46, kvm_userspace_memory_region)
KVM_RUN = _IO(KVMIO, 0x80)
KVM_GET_REGS = _IOR(KVMIO, 0x81, kvm_regs)
KVM_SET_REGS = _IOW(KVMIO, 0x82, kvm_regs)
KVM_GET_SREGS = _IOR(KVMIO, 0x83, kvm_sregs)
KVM_SET_SREGS = _IOW(KVMIO, 0x84, kvm_sregs)

EXIT_REASONS = {0: "KVM_EXIT_UNKNOWN", 1: "KVM_EXIT_EXCEPTION", 2: "KVM_EXIT_IO",
                3: "KVM_EXIT_HYPERCALL", 4: "KVM_EXIT_DEBUG", 5: "KVM_EXIT_HLT",
                6: "KVM_EXIT_MMIO", 7: "KVM_EXIT_IRQ_WINDOW_OPEN", 8: "KVM_EXIT_SHUTDOWN",
                9: "KVM_EXIT_FAIL_ENTRY", 10: "KVM_EXIT_INTR", 17: "KVM_EXIT_INTERNAL_ERROR",
                24: "KVM_EXIT_SYSTEM_EVENT"}
KVM_EXIT_UNKNOWN, KVM_EXIT_IO, KVM_EXIT_MMIO = 0, 2, 6
KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTERNAL_ERROR = 9, 17
KVM_EXIT_IO_IN, KVM_EXIT_IO_OUT = 0, 1
# Exits after which running on makes no sense: stop run() and hand the exit to the caller.
FINAL_EXITS = {"KVM_EXIT_HLT", "KVM_EXIT_SHUTDOWN", "KVM_EXIT_FAIL_ENTRY",
               "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_UNKNOWN"}

# The demo guest, 16-bit real mode, loaded at 0x1000 with CS = DS = 0. Six exits, in order.
DEMO_PROGRAM = bytes([
    0xB0, 0x48,         # 1000  mov al, 'H'
    0xE6, DEMO_PORT,    # 1002  out 0xe9, al      -> KVM_EXIT_IO   out, port 0xe9, 'H'
    0xE4, DEMO_PORT,    # 1004  in al, 0xe9       -> KVM_EXIT_IO   in: the VMM supplies al
    0xE6, DEMO_PORT,    # 1006  out 0xe9, al      -> KVM_EXIT_IO   out: the guest echoes it
    0xA1, 0x00, 0x90,   # 1008  mov ax, [0x9000]  -> KVM_EXIT_MMIO read, 2 bytes: VMM supplies ax
    0x40,               # 100b  inc ax            (runs natively: no exit)
    0xA3, 0x00, 0x90,   # 100c  mov [0x9000], ax  -> KVM_EXIT_MMIO write, 2 bytes: answer + 1
    0xF4,               # 100f  hlt               -> KVM_EXIT_HLT
])


class TinyVMError(Exception):
    """Anything this module raises on purpose."""


class KVMUnavailable(TinyVMError):
    """/dev/kvm cannot be used; the message says why."""


class RunawayGuest(TinyVMError):
    """The guest neither halted within the exit budget nor before the deadline."""

    def __init__(self, message: str, exits: list[Exit], rip: int | None) -> None:
        super().__init__(message)
        self.exits = exits
        self.rip = rip


@dataclasses.dataclass(frozen=True)
class Exit:
    """One return of KVM_RUN to the VMM, decoded from struct kvm_run.

    ``rip`` is taken as KVM reports it at the exit, which is not always the exiting
    instruction: stores (OUT, MMIO writes) and HLT are already retired, so RIP is past them,
    while loads (IN, MMIO reads) wait for the VMM's answer and finish on the next KVM_RUN,
    so RIP still points at them (seen on this host; the kernel may differ).
    """
    index: int                     # 0, 1, 2 ... since load()
    reason: str                    # "KVM_EXIT_IO", "KVM_EXIT_MMIO", "KVM_EXIT_HLT", ...
    rip: int                       # guest RIP at the exit (KVM_GET_REGS); see above
    direction: str | None = None   # KVM_EXIT_IO: "in" or "out"
    port: int | None = None
    size: int | None = None        # KVM_EXIT_IO: bytes per access
    count: int | None = None       # KVM_EXIT_IO: > 1 only for rep ins/outs
    phys_addr: int | None = None   # KVM_EXIT_MMIO: guest-physical address
    length: int | None = None      # KVM_EXIT_MMIO: kvm_run.mmio.len
    is_write: bool | None = None   # KVM_EXIT_MMIO
    data: bytes = b""              # what the guest wrote, or what the VMM answered a read with
    detail: str = ""               # other exits: what the kernel reported

    @property
    def value(self) -> int | None:
        """``data`` as a little-endian integer (x86 is little-endian), or None if empty."""
        return int.from_bytes(self.data, "little") if self.data else None


def default_answer(exit: Exit) -> int:
    """The default device: every IN and every MMIO read returns 0x2A."""
    return DEFAULT_ANSWER


def kvm_problem(device: str = "/dev/kvm") -> str | None:
    """Why ``device`` cannot be used (missing, permission, API version, no VM), or None."""
    try:
        fd = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return f"{device} does not exist (kvm module not loaded, or not passed into this container)"
    except PermissionError:
        return f"no permission to open {device} (join the group that owns it, usually 'kvm')"
    except OSError as exc:
        return f"cannot open {device}: {exc.strerror}"
    try:
        try:
            version = fcntl.ioctl(fd, KVM_GET_API_VERSION, 0)
        except OSError as exc:
            return f"{device} is not a KVM device (KVM_GET_API_VERSION: {exc.strerror})"
        if version != KVM_API_VERSION:
            return f"KVM_GET_API_VERSION returned {version}, expected {KVM_API_VERSION}"
        try:
            os.close(fcntl.ioctl(fd, KVM_CREATE_VM, 0))
        except OSError as exc:  # e.g. EBUSY when another hypervisor owns VT-x/SVM
            return f"KVM_CREATE_VM failed: {exc.strerror}"
        return None
    finally:
        os.close(fd)


# --- kicking a vCPU out of KVM_RUN -----------------------------------------------------------
# A guest in `jmp $` never exits, so a deadline checked between exits is not enough: KVM_RUN
# returns early only when a signal is pending for the calling thread. This is how QEMU kicks
# vCPU threads (SIG_IPI = SIGUSR1): a watchdog thread sets kvm_run.immediate_exit (so a signal
# that lands just before the ioctl is not lost) and sends SIGUSR1 to the vCPU thread; KVM_RUN
# fails with EINTR. The signal needs a handler, else its default action kills the process; the
# handler does nothing. No SIGALRM/setitimer, so pytest-timeout and friends are left alone.

KICK_SIGNAL = signal.SIGUSR1
_kick_ready = False


def _ignore_kick(signum: int, frame: object) -> None:
    pass


def _ensure_kick_handler() -> bool:
    global _kick_ready
    if not _kick_ready:
        if signal.getsignal(KICK_SIGNAL) in (signal.SIG_DFL, signal.SIG_IGN, None):
            try:
                signal.signal(KICK_SIGNAL, _ignore_kick)
            except ValueError:  # only the main thread may install handlers
                LOG.warning("cannot install a %s handler outside the main thread: a guest that "
                            "never exits cannot be stopped", KICK_SIGNAL.name)
                return False
        _kick_ready = True  # an existing handler will interrupt KVM_RUN just as well
    return True


class TinyVM:
    """One VM with RAM at 0..MEM_SIZE, one vCPU in 16-bit real mode, and no devices at all.

    ``on_read(exit)`` plays every device: it is called for each IN and each MMIO read with the
    partly decoded :class:`Exit` and returns the value the guest will see.
    """

    def __init__(self, on_read: Callable[[Exit], int] = default_answer,
                 mem_size: int = MEM_SIZE, device: str = "/dev/kvm") -> None:
        self.on_read = on_read
        self.mem_size = mem_size
        self.device = device
        self._kvm_fd = self._vm_fd = self._vcpu_fd = -1
        self._mem: mmap.mmap | None = None
        self._run_map: mmap.mmap | None = None
        self._run: kvm_run | None = None
        self._regs = kvm_regs()  # reused by every exit: KVM_GET_REGS fills it in place
        self._count = 0
        self._kick_lock = threading.Lock()
        self._vcpu_thread: int | None = None
        self._kicked = False
        problem = kvm_problem(device)
        if problem:
            raise KVMUnavailable(problem)
        _ensure_kick_handler()  # now, in case run() is later called from another thread
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        self._kvm_fd = os.open(self.device, os.O_RDWR | os.O_CLOEXEC)
        self._vm_fd = fcntl.ioctl(self._kvm_fd, KVM_CREATE_VM, 0)
        # Guest RAM is ordinary anonymous memory of this process; KVM maps it into the guest.
        self._mem = mmap.mmap(-1, self.mem_size, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        anchor = c_char.from_buffer(self._mem)
        region = kvm_userspace_memory_region(slot=0, flags=0, guest_phys_addr=0,
                                             memory_size=self.mem_size,
                                             userspace_addr=ctypes.addressof(anchor))
        del anchor  # a live ctypes view would make mmap.close() fail
        fcntl.ioctl(self._vm_fd, KVM_SET_USER_MEMORY_REGION, region)
        # No KVM_CREATE_IRQCHIP: without an in-kernel APIC, HLT comes back to us.
        # (On AMD, and Intel with unrestricted guest, real mode needs no KVM_SET_TSS_ADDR.)
        self._vcpu_fd = fcntl.ioctl(self._vm_fd, KVM_CREATE_VCPU, 0)
        size = fcntl.ioctl(self._kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0)
        self._run_map = mmap.mmap(self._vcpu_fd, size, mmap.MAP_SHARED,
                                  mmap.PROT_READ | mmap.PROT_WRITE)
        self._run = kvm_run.from_buffer(self._run_map)
        LOG.debug("VM created: %#x bytes of RAM, kvm_run mapping of %d bytes", self.mem_size, size)

    def __enter__(self) -> TinyVM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the vCPU, VM and /dev/kvm fds and unmap everything; safe to call twice."""
        self._run = None  # drop the ctypes view first: it pins the kvm_run mapping
        for name in ("_vcpu_fd", "_vm_fd", "_kvm_fd"):  # vCPU first: it holds the VM
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        for name in ("_run_map", "_mem"):
            mapping = getattr(self, name)
            if mapping is not None:
                setattr(self, name, None)
                try:
                    mapping.close()
                except BufferError:
                    # A ctypes view into it is still alive: the traceback of an on_read that
                    # raised holds _decode's frame. The mapping goes with the last view.
                    pass

    def load(self, code: bytes, at: int = 0x1000) -> None:
        """Copy ``code`` to guest-physical ``at``; reset the vCPU to real mode at CS:IP = 0:at."""
        self._check_open()
        if not 0 <= at < at + len(code) <= min(self.mem_size, 0x10000):
            raise ValueError(f"{len(code)} bytes at {at:#x} do not fit in RAM reachable from CS=0")
        self._mem[at:at + len(code)] = code
        sregs = kvm_sregs()
        fcntl.ioctl(self._vcpu_fd, KVM_GET_SREGS, sregs)
        # After reset CS is F000 with base FFFF0000 (the BIOS reset vector); flatten to base 0.
        for name in SEGMENTS:
            segment = getattr(sregs, name)
            segment.base, segment.selector = 0, 0
        fcntl.ioctl(self._vcpu_fd, KVM_SET_SREGS, sregs)
        # RFLAGS bit 1 is reserved and must be 1; the stack starts at the top of RAM.
        regs = kvm_regs(rip=at, rflags=0x2, rsp=min(self.mem_size, 0x10000) & 0xFFFF)
        fcntl.ioctl(self._vcpu_fd, KVM_SET_REGS, regs)
        self._count = 0

    def registers(self) -> dict[str, int]:
        """The general-purpose registers, rip and rflags (KVM_GET_REGS)."""
        self._check_open()
        regs = kvm_regs()
        fcntl.ioctl(self._vcpu_fd, KVM_GET_REGS, regs)
        return {name: getattr(regs, name) for name in REG_NAMES}

    def step(self, timeout: float = 5.0) -> Exit:
        """One KVM_RUN: run the guest to its next exit and return it; RunawayGuest on timeout."""
        with self._watchdog(timeout):
            return self._enter([], timeout)

    def run(self, max_exits: int = 100, timeout: float = 5.0) -> list[Exit]:
        """KVM_RUN until HLT (or another final exit); raise RunawayGuest past either limit."""
        exits: list[Exit] = []
        deadline = time.monotonic() + timeout
        with self._watchdog(timeout):
            while len(exits) < max_exits:
                exit = self._enter(exits, timeout)
                exits.append(exit)
                if exit.reason in FINAL_EXITS:
                    return exits
                if time.monotonic() > deadline:  # exits keep coming, but time is up
                    self._runaway(exits, f"did not halt within {timeout} s")
        self._runaway(exits, f"did not halt within {max_exits} exits")

    def _runaway(self, exits: list[Exit], why: str) -> NoReturn:
        rip = self.registers()["rip"]
        raise RunawayGuest(f"guest {why} ({len(exits)} exits; stopped at rip={rip:#x})",
                           exits, rip)

    @contextlib.contextmanager
    def _watchdog(self, timeout: float) -> Iterator[None]:
        """Arm a one-shot timer that kicks this thread's vCPU out of KVM_RUN after ``timeout``."""
        self._kicked = False
        self._vcpu_thread = threading.get_ident() if _ensure_kick_handler() else None
        timer = threading.Timer(timeout, self._kick)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()
            with self._kick_lock:  # from here on no kick can be sent
                self._vcpu_thread = None
            if self._run is not None:
                self._run.immediate_exit = 0  # else the next KVM_RUN would return at once

    def _kick(self) -> None:
        with self._kick_lock:
            if self._vcpu_thread is None or self._run is None:
                return
            self._kicked = True
            self._run.immediate_exit = 1
            signal.pthread_kill(self._vcpu_thread, KICK_SIGNAL)

    def _check_open(self) -> None:
        if self._run is None:
            raise TinyVMError("the VM is closed")

    def _enter(self, exits: list[Exit], timeout: float) -> Exit:
        self._check_open()
        while True:
            try:
                fcntl.ioctl(self._vcpu_fd, KVM_RUN, 0)
                break
            except InterruptedError:  # EINTR: our watchdog's kick, or someone else's signal
                if self._kicked:
                    self._runaway(exits, f"did not halt within {timeout} s")
            except OSError as exc:
                raise TinyVMError(f"KVM_RUN failed: {errno.errorcode.get(exc.errno)} "
                                  f"({exc.strerror})") from exc
        exit = self._decode()
        self._count += 1
        if LOG.isEnabledFor(logging.DEBUG):
            LOG.debug("%s", describe(exit))
        return exit

    def _decode(self) -> Exit:
        run, page = self._run, self._run_map
        assert run is not None and page is not None
        code = run.exit_reason
        fcntl.ioctl(self._vcpu_fd, KVM_GET_REGS, self._regs)
        fields: dict = dict(index=self._count, rip=self._regs.rip,
                            reason=EXIT_REASONS.get(code, f"exit reason {code}"))
        if code == KVM_EXIT_IO:
            io = run.u.io
            fields.update(direction="out" if io.direction == KVM_EXIT_IO_OUT else "in",
                          port=io.port, size=io.size, count=io.count)
            start, end = io.data_offset, io.data_offset + io.size * io.count
            if io.direction == KVM_EXIT_IO_OUT:
                fields["data"] = page[start:end]
            else:  # KVM completes the IN on the next KVM_RUN from the bytes we leave here
                fields["data"] = self._answer(Exit(**fields), io.size) * io.count
                page[start:end] = fields["data"]
        elif code == KVM_EXIT_MMIO:
            mmio = run.u.mmio
            fields.update(phys_addr=mmio.phys_addr, length=mmio.len, is_write=bool(mmio.is_write))
            if mmio.is_write:
                fields["data"] = bytes(mmio.data[:mmio.len])
            else:  # likewise the load completes on the next KVM_RUN, from kvm_run.mmio.data
                fields["data"] = self._answer(Exit(**fields), mmio.len)
                ctypes.memmove(mmio.data, fields["data"], mmio.len)
        elif code == KVM_EXIT_FAIL_ENTRY:  # the CPU refused VM entry: bad guest state
            fields["detail"] = ("hardware_entry_failure_reason="
                                f"{run.u.fail_entry.hardware_entry_failure_reason:#x}")
        elif code == KVM_EXIT_INTERNAL_ERROR:  # e.g. KVM's emulator met an instruction it lacks
            fields["detail"] = f"suberror={run.u.internal.suberror}"
        elif code == KVM_EXIT_UNKNOWN:
            fields["detail"] = f"hardware_exit_reason={run.u.hardware_exit_reason:#x}"
        return Exit(**fields)

    def _answer(self, exit: Exit, size: int) -> bytes:
        value = self.on_read(exit) & ((1 << (8 * size)) - 1)
        return value.to_bytes(size, "little")


def _show(data: bytes) -> str:
    text = "0x" + data[::-1].hex()  # little-endian bytes, shown as the number the CPU saw
    if len(data) == 1 and 0x20 <= data[0] < 0x7F:
        text += f" {chr(data[0])!r}"
    return text


def describe(exit: Exit) -> str:
    """One line for humans: what the guest did and why KVM gave the vCPU back to the VMM."""
    head = f"#{exit.index} rip={exit.rip:#06x} {exit.reason}:"
    if exit.reason == "KVM_EXIT_IO":
        rep = f" x{exit.count} (rep)" if exit.count and exit.count > 1 else ""
        if exit.direction == "out":
            return f"{head} out {exit.size} byte(s){rep} to port {exit.port:#x}: {_show(exit.data)}"
        return (f"{head} in {exit.size} byte(s){rep} from port {exit.port:#x}: "
                f"the VMM answered {_show(exit.data)}")
    if exit.reason == "KVM_EXIT_MMIO":
        where = f"{exit.phys_addr:#x} (no memory slot there)"
        if exit.is_write:
            return f"{head} write {exit.length} byte(s) to {where}: {_show(exit.data)}"
        return (f"{head} read {exit.length} byte(s) from {where}: "
                f"the VMM answered {_show(exit.data)}")
    if exit.reason == "KVM_EXIT_HLT":
        return f"{head} the guest halted; with no in-kernel APIC to wake it, KVM returns to the VMM"
    if exit.reason == "KVM_EXIT_SHUTDOWN":
        return f"{head} the vCPU shut down (a triple fault)"
    return f"{head} {exit.detail}".rstrip()
