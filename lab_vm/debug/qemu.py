"""Debug QEMU itself: host gdb on a LabVM's QEMU process, scripted through pwntools, headless.

Where ``lab_vm.debug.guest`` puts gdb on the *guest kernel* (through QEMU's gdbstub),
this puts gdb on the *QEMU process* (ptrace), to see how QEMU handles what the
guest does: ``break edu_mmio_read``, run a guest command that reads the edu
device's register, and get the host call stack from the vCPU thread down to the
device model. Use a debug QEMU (``lab_vm.build.qemu``) for complete frames.

It is the same pwntools/gdb machinery as the guest debugger — the same headless
terminal wrapper, the same ``gdb_side.py`` sourced into gdb for one-round-trip
backtraces — so :class:`QemuDebugger` is a :class:`~lab_vm.debug.guest.Debugger` that
attaches differently.

One fact shapes its use: while gdb holds QEMU stopped, the *whole* VM is frozen
— the guest, the command channel's host end, QMP. So a guest command is started
*before* the debugger lets QEMU run (its request waits in the socket buffer),
and only then does the host wait for the breakpoint (:meth:`QemuDebugger.catch`).

The VM is a :class:`~lab_vm.vm.machine.LabVM` (Linux, a guest command triggers the
access) or a :class:`~lab_vm.baremetal.romguest.RomGuest` started paused (a bare-metal ROM,
which runs from its reset vector once unpaused: the way to watch QEMU's KVM path
where Linux cannot boot under KVM).
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

from ..vm.channel import Job, Result
from .guest import GDB_SIDE, TERMINAL, Debugger, Stop
from ..errors import DebuggerError, GuestTimeout

LOG = logging.getLogger(__name__)
ATTACH_TIMEOUT = 60.0      # gdb reads the debug QEMU's symbols first (a 44 MB binary)
GDB_EXIT_TIMEOUT = 10.0    # gdb needs about 2 s to exit once ended (and init to reap it)
# QEMU uses these signals internally (vCPU kicks, coroutines, timers): gdb must pass them on
# silently, or every one of them would look like a stop.
QUIET_SIGNALS = "SIGUSR1 SIGUSR2 SIGPIPE SIGALRM SIGIO SIGCHLD"


def gdb_host_args() -> list[str]:
    """gdb options for a host process: no kernel scripts, no network look-ups for symbols."""
    return ["-nx", "-iex", "set pagination off", "-iex", "set confirm off",
            "-iex", "set debuginfod enabled off",
            "-ex", "set breakpoint pending off",
            "-ex", f"handle {QUIET_SIGNALS} nostop noprint pass",
            "-ex", f"source {GDB_SIDE}"]


@dataclass
class Hit:
    """A breakpoint hit caught while a guest command ran.

    ``frames``: the QEMU call stack, innermost first (dicts with ``function``,
    ``file``, ``line``, ``pc``, ``args``); ``latency``: seconds from letting
    QEMU run to the stop; ``job``: the guest command, still running (frozen),
    or None for a RomGuest; ``thread``: the name of the QEMU thread that hit it
    (``CPU 0/KVM``, ``CPU 0/TCG``).
    """

    stop: Stop
    frames: list[dict]
    latency: float
    job: Job | None = field(repr=False)
    thread: str = ""

    @property
    def functions(self) -> list[str]:
        return [f["function"] for f in self.frames]


class QemuDebugger(Debugger):
    """gdb attached to the QEMU process of ``vm``; ``with QemuDebugger(vm) as dbg:``.

    Attaching stops QEMU (and so the guest). The usual session is one
    :meth:`catch` (break, run a guest command, stop at the hit, backtrace) and
    one :meth:`release` (detach: QEMU runs on, the command finishes). The
    inherited :meth:`cont`, :meth:`evaluate`, :meth:`backtrace` and
    :meth:`sample` work on QEMU too while it is attached. Leaving the ``with``
    block deletes the breakpoints, detaches and ends gdb, also on errors and
    Ctrl-C.
    """

    on_gdbstub = False     # gdb on the QEMU process: a dead one leaves nothing in a stub

    def __init__(self, vm, *, timeout: float = ATTACH_TIMEOUT) -> None:
        super().__init__(vm, timeout=timeout)
        self._attached = False        # gdb holds QEMU under ptrace (stopped or running)
        exe = shutil.which(vm.qemu)
        if exe is None:
            raise DebuggerError(f"cannot find the QEMU binary {vm.qemu!r}")
        self.exe = exe

    def attach(self) -> None:
        from pwn import context, gdb as pwngdb

        start = time.monotonic()
        self.vm.check_health()
        pid = self.vm.qemu_pid
        # The VM ends its debuggers before QEMU at shutdown: QEMU must not die under ptrace.
        self.vm.debugger_opened(self)
        with context.local(terminal=[sys.executable, str(TERMINAL)], log_level="error"):
            try:
                self._pid, self._gdb = pwngdb.attach(pid, exe=self.exe, gdbscript="",
                                                    gdb_args=gdb_host_args(), api=True)
            except Exception as exc:   # pwntools reports through its own exception types
                self.close()
                raise DebuggerError(f"gdb could not attach to QEMU (pid {pid}): {exc}") from exc
        try:
            self._wait_until(lambda: self._try(lambda: self.execute("info program")),
                             self.timeout, f"gdb did not finish loading {self.exe}")
        except BaseException:
            self.close()
            raise
        self._attached = True
        self.attach_time = time.monotonic() - start
        LOG.info("gdb attached to QEMU pid %d in %.2f s", pid, self.attach_time)

    def break_at(self, location: str, *, temporary: bool = False):
        """A breakpoint at a QEMU function or ``file:line``; a name QEMU lacks raises."""
        try:
            return super().break_at(location, temporary=temporary)
        except DebuggerError as exc:
            raise DebuggerError(f"cannot break at {location!r} in {self.exe}: no such function "
                                "or line (Debian's QEMU is stripped; `lab-vm build qemu-debug` "
                                "builds one with symbols)", command=location) from exc

    def catch(self, location: str, command: str | None = None, *, timeout: float = 30.0,
              limit: int = 64) -> Hit:
        """Break at ``location``, run ``command`` in the guest, return the first hit.

        QEMU must be stopped (as it is right after attaching). The command is
        sent first — it waits in the channel's socket until QEMU runs — then QEMU
        is let go until the breakpoint. QEMU stays stopped at the hit: read what
        you need, then :meth:`release` it (or close the debugger). A hit that
        does not come within ``timeout`` raises GuestTimeout (QEMU stopped again).
        For a RomGuest started paused, ``command`` is None: its QMP ``cont``
        waits in a pipe the same way, and the ROM runs from its first instruction.
        """
        if not self._attached:
            raise DebuggerError("this QemuDebugger has let QEMU go (release/detach): "
                                "open a new one to catch again")
        if command is None and not hasattr(self.vm, "unpause"):
            raise DebuggerError("catch() on a LabVM needs a guest command that makes the access")
        bp = self.break_at(location)
        job = self.vm.start(command) if command is not None else None
        if command is None:
            self.vm.unpause()
        start = time.monotonic()
        try:
            stop = self.cont(timeout=timeout)
        except GuestTimeout as exc:
            self.delete(bp)
            raise GuestTimeout(f"QEMU did not reach {location} within {timeout:g} s while the "
                               f"guest ran {command!r}", output=exc.output) from exc
        latency = time.monotonic() - start
        LOG.info("%s hit %.3f s after QEMU was let go", location, latency)
        hit = Hit(stop, self.backtrace(limit), latency, job, self.thread_name())
        self.delete(bp)
        return hit

    def thread_name(self) -> str:
        """The name of the QEMU thread gdb has selected (``CPU 0/KVM``, ``qemu-system-x86``…)."""
        return self.execute("python print(gdb.selected_thread().name)").strip()

    def thread_backtraces(self, prefix: str = "CPU ", limit: int = 64) -> dict[str, list[dict]]:
        """The call stack of every thread whose name starts with ``prefix`` (the vCPUs).

        QEMU must be stopped (right after attaching, say): this shows where each
        vCPU thread was when gdb stopped it — in KVM_RUN, or asleep waiting for work.
        """
        listing = self.execute("python print(chr(10).join('%d %s' % (t.num, t.name or '') "
                               "for t in gdb.selected_inferior().threads()))")
        current = self.execute("python print(gdb.selected_thread().num)").strip()
        stacks = {}
        try:
            for line in listing.strip().splitlines():
                num, _, name = line.partition(" ")
                if name.startswith(prefix):
                    self.execute(f"thread {num}")
                    stacks[name] = self.backtrace(limit)
        finally:
            self.execute(f"thread {current}")
        return stacks

    def release(self, hit: Hit, *, timeout: float = 30.0) -> Result | None:
        """Detach from the stopped QEMU, which runs on; return the guest command's Result.

        Detaching rather than continuing under gdb means nothing ever has to stop
        a *running* QEMU: gdb's ``interrupt`` of QEMU's threads sometimes never
        completes (seen with Debian's gdb 13: it waits in sigsuspend for good,
        and every bridge call then times out). Attaching again inside the same
        gdb is no way out either (a synchronous ``attach`` run through the
        pwntools bridge breaks the bridge), so one QemuDebugger catches once.
        """
        self.detach()
        return hit.job.wait(timeout) if hit.job is not None else None

    def close(self) -> None:
        """End the session (see Debugger.close), then wait until gdb itself has exited.

        gdb takes a moment to finish after it is told to quit; waiting here means that
        when the ``with`` block ends, no gdb of ours is left on the host.
        """
        gdb_pid = self._pid
        super().close()
        if gdb_pid is not None:
            deadline = time.monotonic() + GDB_EXIT_TIMEOUT
            while os.path.exists(f"/proc/{gdb_pid}") and time.monotonic() < deadline:
                time.sleep(0.02)
            if os.path.exists(f"/proc/{gdb_pid}"):
                LOG.warning("gdb (pid %d) still exists %g s after it was ended", gdb_pid,
                            GDB_EXIT_TIMEOUT)

    def detach(self) -> None:
        """Let QEMU run free of gdb (QEMU must be stopped); the session is then over."""
        if self._attached:
            self.execute("detach")
            self._attached = False
