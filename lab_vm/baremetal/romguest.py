"""RomGuest: QEMU running a bare-metal guest from a 64 KiB ``-bios`` ROM, under KVM or TCG.

Where the lab VM's Linux cannot run under KVM (nested virtualization without the
CPU features it wants), a few hundred bytes of ROM code still can, and they are
enough to watch QEMU's KVM path: every port access is a ``KVM_EXIT_IO``, every
access to a device's BAR a ``KVM_EXIT_MMIO``. The ROM (``lab_vm/rom/*.S``,
assembled by ``lab_vm.build.rom``) reports on ``isa-debugcon`` (port 0xE9),
which QEMU writes to a file; it ends its report with a line ``done``.

    rom = build_rom()
    run = run_rom(rom, accel="kvm", trace=("kvm_run_exit", "memory_region_ops_*"))
    run.values["ident"], run.exits()

For host gdb on QEMU (``lab_vm.debug.qemu``) start it paused: the ROM's first
instruction waits until :meth:`RomGuest.unpause`, which QemuDebugger.catch calls
once its breakpoint is set. Like LabVM, a RomGuest is a context manager that ends
its QEMU on every path.
"""
from __future__ import annotations

import atexit
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..build.rom import Rom
from ..errors import ConfigError, GuestTimeout, QEMUExited, VMError
from ..vm.machine import _die_with_parent
from .tinyvmm import EXIT_REASONS, kvm_problem
from ..vm.trace import parse as parse_trace

LOG = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
DEBUGCON_PORT = 0xE9
DONE = "\ndone\n"          # the ROM's last line
VALUE_RE = re.compile(r"(\w+)=([0-9a-f]+)\b")

_LIVE: "weakref.WeakSet[RomGuest]" = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    for guest in list(_LIVE):
        guest.shutdown(timeout=2)


class KVMUnusable(VMError):
    """The ROM guest was asked to run under KVM, and /dev/kvm cannot be used (says why)."""


def accel_problem(accel: str) -> str | None:
    """Why a ROM guest cannot run under ``accel`` on this host, or None (TCG always can)."""
    if accel == "kvm":
        return kvm_problem()
    if accel == "tcg":
        return None
    raise ConfigError(f"unknown accelerator {accel!r}: choose kvm or tcg")


class RomGuest:
    """One QEMU ``-M pc`` with ``-bios ROM``, the ROM's devices and a debug console.

    ``devices``: QEMU ``-device`` values (edu for the edu_probe ROM). ``trace``:
    trace events (names or globs) recorded from the first instruction to the end,
    parsed into :attr:`records` at shutdown. ``paused``: start with the vCPU
    stopped (``-S``) until :meth:`unpause`. ``kernel_irqchip=False`` makes QEMU,
    not KVM, model the interrupt controllers (and so see HLT).
    """

    def __init__(self, rom: Rom, *, accel: str = "kvm", devices: Sequence[str] = ("edu",),
                 trace: Sequence[str] = (), paused: bool = False, kernel_irqchip: bool = True,
                 memory: int = 16, qemu: str = QEMU, qemu_args: Sequence[str] = (),
                 name: str = "rom-guest") -> None:
        problem = accel_problem(accel)
        if problem:
            raise KVMUnusable(f"cannot run the {rom.name} ROM under KVM: {problem}")
        if shutil.which(qemu) is None:
            raise ConfigError(f"{qemu} is not installed: run `scripts/setup`")
        if not kernel_irqchip and accel != "kvm":
            raise ConfigError("kernel_irqchip=False is a KVM option")
        self.rom = rom
        self.accel = accel
        self.devices = list(devices)
        self.trace_patterns = tuple(trace)
        self.paused = paused
        self.kernel_irqchip = kernel_irqchip
        self.memory = memory
        self.qemu = qemu
        self.qemu_args = list(qemu_args)
        self.name = name
        self.records: list[dict] = []    # the trace, once QEMU has ended
        self.last_command_line: list[str] = []
        self._proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._output = b""
        self._qemu_log = ""
        self._unpaused = not paused
        self._shut_down = False
        self._debuggers: list = []      # QemuDebuggers attached (ended before QEMU)

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> "RomGuest":
        self.launch()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def command_line(self) -> list[str]:
        assert self._tmp is not None
        accel = self.accel + ("" if self.kernel_irqchip else ",kernel-irqchip=off")
        # debug-threads=on: QEMU names its threads ("CPU 0/KVM"), which gdb then shows
        cmd = [self.qemu, "-name", f"{self.name},debug-threads=on", "-machine", "pc",
               "-accel", accel,
               "-m", str(self.memory), "-nodefaults", "-display", "none", "-no-user-config",
               "-bios", str(self.rom.path),
               "-chardev", f"file,id=debugcon,path={self._tmp / 'debugcon.out'}",
               "-device", f"isa-debugcon,iobase={DEBUGCON_PORT:#x},chardev=debugcon",
               "-D", str(self._tmp / "trace.log")]
        for device in self.devices:
            cmd += ["-device", device]
        for pattern in self.trace_patterns:
            cmd += ["-trace", pattern]
        if self.paused:      # QMP on stdin/stdout: unpause() writes "cont" into the pipe
            cmd += ["-S", "-qmp", "stdio"]
        return cmd + self.qemu_args

    def launch(self, timeout: float = 10.0) -> None:
        """Start QEMU; raise QEMUExited if it dies within its first moments (bad options)."""
        if self._proc is not None:
            raise VMError(f"{self.name}: already launched")
        self._tmp = Path(tempfile.mkdtemp(prefix=f"vmexit-{self.name}-"))
        cmd = self.command_line()
        self.last_command_line = cmd
        LOG.debug("%s: %s", self.name, shlex.join(cmd))
        _LIVE.add(self)
        with open(self._tmp / "qemu.log", "wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE if self.paused else subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent())   # a killed notebook kernel takes QEMU along
        # QEMU opens the debug console's file once its devices exist: that means "started".
        # (A failure here ends QEMU: __exit__ does not run when __enter__ raises.)
        deadline = time.monotonic() + timeout
        try:
            while not (self._tmp / "debugcon.out").exists():
                self.check_health()
                if time.monotonic() > deadline:
                    raise GuestTimeout(f"{self.name}: QEMU did not start within {timeout:g} s",
                                       output=self.qemu_log)
                time.sleep(0.005)
        except BaseException:
            self.shutdown()
            raise

    def unpause(self) -> None:
        """Let a guest started with ``paused=True`` run (QMP ``cont``; returns at once).

        The request waits in the pipe until QEMU's main loop reads it, so this is
        safe while gdb holds QEMU stopped: the guest starts when gdb lets QEMU go.
        """
        if self._unpaused:
            return
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(b'{"execute": "qmp_capabilities"}\n{"execute": "cont"}\n')
        self._proc.stdin.flush()
        self._unpaused = True

    resume_if_paused = unpause    # what a Debugger calls when it closes

    def shutdown(self, timeout: float = 5.0) -> None:
        """End QEMU (SIGTERM, then SIGKILL after ``timeout``), keep its output; safe twice."""
        if self._shut_down or self._proc is None:
            self._shut_down = True
            return
        self._shut_down = True
        try:
            for dbg in list(self._debuggers):
                dbg.close()
            if self._proc.poll() is None:
                self._proc.send_signal(signal.SIGTERM)
                try:
                    self._proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    LOG.warning("%s: QEMU did not quit in %g s; killing it", self.name, timeout)
        finally:
            if self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._keep_results()
            _LIVE.discard(self)

    def _keep_results(self) -> None:
        if self._tmp is None:
            return
        self._output = self._read("debugcon.out")
        self._qemu_log = self._read("qemu.log").decode(errors="replace")
        if self.trace_patterns:
            self.records = parse_trace(self._read("trace.log").decode(errors="replace"))
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp = None

    def _read(self, name: str) -> bytes:
        assert self._tmp is not None
        try:
            return (self._tmp / name).read_bytes()
        except FileNotFoundError:
            return b""

    # -- state --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def qemu_pid(self) -> int:
        if not self.running:
            raise VMError(f"{self.name}: QEMU is not running")
        assert self._proc is not None
        return self._proc.pid

    @property
    def output(self) -> str:
        """What the ROM wrote to the debug console so far (also after shutdown)."""
        data = self._read("debugcon.out") if self._tmp is not None else self._output
        return data.decode(errors="replace")

    console_log = output       # the name Debugger uses for "what the guest said"

    @property
    def qemu_log(self) -> str:
        """QEMU's own stdout and stderr (with QMP's answers when paused)."""
        if self._tmp is not None:
            return self._read("qemu.log").decode(errors="replace")
        return self._qemu_log

    def check_health(self) -> None:
        """Raise QEMUExited if QEMU ended before :meth:`shutdown` (its log says why)."""
        if self._proc is not None and self._proc.poll() is not None and not self._shut_down:
            raise QEMUExited(f"{self.name}: QEMU exited with status {self._proc.returncode}",
                             status=self._proc.returncode, output=self.qemu_log)

    def debugger_opened(self, dbg) -> None:
        """A debugger attached to this QEMU (closed by shutdown if still open)."""
        self._debuggers.append(dbg)

    def debugger_closed(self, dbg) -> None:
        if dbg in self._debuggers:
            self._debuggers.remove(dbg)

    def wait_done(self, timeout: float = 10.0) -> str:
        """Wait until the ROM printed its last line; return everything it printed."""
        deadline = time.monotonic() + timeout
        while DONE not in self.output:
            self.check_health()
            if time.monotonic() > deadline:
                raise GuestTimeout(f"{self.name}: the {self.rom.name} ROM did not finish within "
                                   f"{timeout:g} s under {self.accel}; it printed "
                                   f"{self.output!r}", output=self.qemu_log)
            time.sleep(0.005)
        return self.output


@dataclass
class RomRun:
    """One finished run of a ROM: what it printed and the trace events QEMU recorded."""

    accel: str
    kernel_irqchip: bool
    output: str
    records: list[dict] = field(default_factory=list)

    @property
    def values(self) -> dict[str, int]:
        """The ROM's ``key=hex`` report as numbers, e.g. ``{"ident": 0x010000ed, ...}``."""
        return {k: int(v, 16) for k, v in VALUE_RE.findall(self.output)}

    def exits(self) -> Counter:
        """``KVM_RUN`` returns per exit reason name, from the ``kvm_run_exit`` events."""
        return Counter(EXIT_REASONS.get(r["reason"], f"exit reason {r['reason']}")
                       for r in self.records if r["event"] == "kvm_run_exit")

    def accesses(self) -> Counter:
        """Device-model calls per (region name, "read"/"write"), from ``memory_region_ops_*``."""
        return Counter((r.get("name"), r["event"].rsplit("_", 1)[1]) for r in self.records
                       if r["event"].startswith("memory_region_ops_"))


def run_rom(rom: Rom, *, accel: str = "kvm", trace: Sequence[str] = (),
            kernel_irqchip: bool = True, timeout: float = 10.0, settle: float = 0.1,
            **options) -> RomRun:
    """Run ``rom`` to its ``done`` line, let it halt (``settle`` s), end QEMU, return a RomRun."""
    with RomGuest(rom, accel=accel, trace=trace, kernel_irqchip=kernel_irqchip,
                  **options) as guest:
        guest.wait_done(timeout)
        time.sleep(settle)        # the ROM's last instruction is its hlt, right after "done"
    return RomRun(accel, kernel_irqchip, guest.output, guest.records)
