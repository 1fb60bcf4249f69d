"""Debug the guest kernel with gdb, scripted through pwntools' gdb API — headless.

``vm.debugger()`` returns a :class:`Debugger`: gdb on the lab kernel's
``vmlinux`` attached to QEMU's gdbstub, with the kernel's own gdb scripts
(``lx-dmesg``, ``lx-ps``, ``lx-symbols``, ``$lx_current()``) loaded.

Two facts shape it (DESIGN.md). pwntools runs gdb "in a new terminal"; with no
terminal we give it one: ``terminal.py`` runs gdb with its standard input
held open and with the venv's packages (rpyc) on gdb's Python path. And each
API call costs a bridge round trip, so anything done per value or per hit is
done inside gdb by ``gdb_side.py`` and fetched in one transfer as JSON.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from .. import paths
from ..errors import DebuggerError, GuestTimeout

LOG = logging.getLogger(__name__)
ATTACH_TIMEOUT = 30.0
BRIDGE_SERVE_S = 0.002    # how long the bridge may hold gdb's main thread per request
WAIT_POLL_S = 0.02        # how often a wait for the guest checks that gdb and QEMU live
TERMINAL = paths.PACKAGE_DIR / "debug" / "terminal.py"
GDB_SIDE = paths.PACKAGE_DIR / "debug" / "gdb_side.py"


def gdb_init_args(kernel) -> list[str]:
    """gdb options both the scripted and the interactive debugger start with.

    The auto-load safe path lets gdb load ``vmlinux-gdb.py`` (the kernel's lx-*
    commands) from the build tree as it reads vmlinux.
    """
    return ["-nx", "-iex", f"add-auto-load-safe-path {kernel.tree}",
            "-iex", "set pagination off", "-iex", "set confirm off",
            "-ex", "set breakpoint pending off", "-ex", f"source {GDB_SIDE}"]


class Stop(dict):
    """Where the guest stopped: ``function``, ``file``, ``line``, ``pc``, ``breakpoint``."""


class Debugger:
    """gdb attached to one LabVM. Use ``with vm.debugger() as dbg:``; see module docstring."""

    on_gdbstub = True      # attached through the VM's gdbstub (QemuDebugger: to the QEMU process)

    def __init__(self, vm, *, timeout: float = ATTACH_TIMEOUT) -> None:
        self.vm = vm
        self.timeout = timeout
        self._gdb = None
        self._pid: int | None = None
        self._breakpoints: list[Any] = []
        self.attach_time: float | None = None
        self._closed = False
        self._running = False     # the guest runs (gdb is in "continue &")
        self.nop_skipped = 0      # hits of the last sample() stepped over without a step

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> "Debugger":
        self.attach()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def attach(self) -> None:
        """Start gdb, connect it to the guest's gdbstub and load the lx scripts; guest stopped."""
        from pwn import context, gdb as pwngdb

        start = time.monotonic()
        port = self.vm.enable_gdbstub()
        # pwntools runs context.terminal + [script]; ours keeps gdb's stdin open.
        with context.local(terminal=[sys.executable, str(TERMINAL)], log_level="error"):
            try:
                self._pid, self._gdb = pwngdb.attach(("127.0.0.1", port), gdbscript="",
                                                    exe=str(self.vm.kernel.vmlinux),
                                                    gdb_args=gdb_init_args(self.vm.kernel),
                                                    api=True)
            except Exception as exc:   # pwntools reports through its own exception types
                self.close()
                raise DebuggerError(f"gdb could not attach to the guest: {exc}") from exc
        try:
            self._wait_until(lambda: self._try(lambda: self.execute("info program")),
                             self.timeout, "gdb did not finish loading vmlinux")
            # pwntools' bridge serves our requests *on gdb's main thread* for 0.1 s out of
            # every 0.2 s, and gdb handles no breakpoint meanwhile: bulk sampling ran at 18
            # hits/s. It now takes gdb's thread only when a request is waiting, and briefly.
            self.execute(f"python bridge_on_demand({BRIDGE_SERVE_S})")
            # Fails loudly if the kernel's gdb scripts did not load (and, unlike running
            # lx-version, works before the kernel is in memory: gdb_wait, replays).
            self.execute("help lx-version")
        except BaseException:
            self.close()
            raise
        self.attach_time = time.monotonic() - start
        LOG.info("gdb attached in %.2f s", self.attach_time)

    def close(self) -> None:
        """Stop the guest if it runs, delete our breakpoints, detach, end gdb; the guest runs on.

        Safe to call twice. If gdb died, the gdbstub may have left the guest paused
        (it stops the VM when a debugger connects): resume it over QMP.
        """
        if self._closed:
            return
        self._closed = True
        detached = False
        try:
            if self._gdb is not None and self._alive():
                if self._running:
                    self._try(lambda: self.interrupt(timeout=5))
                for bp in self._breakpoints:
                    self._try(lambda bp=bp: bp.delete())
                # detach removes every breakpoint from the gdbstub and lets the guest go on
                detached = self._try(lambda: self._gdb.execute("detach", to_string=True))
                self._try(lambda: self._gdb.quit())
        finally:
            if self._gdb is not None:
                self._try(lambda: self._gdb.conn.close())
            if self._pid is not None:
                _kill(self._pid)
            if self._gdb is not None and not detached and self.on_gdbstub \
                    and self.vm.gdb_port is not None:
                # gdb died attached: QEMU keeps its breakpoints, and the guest would stop at
                # the next hit with nobody to let it go. Detach in its place.
                self._try(lambda: detach_gdbstub(self.vm.gdb_port))
            self._try(self.vm.resume_if_paused)
            self.vm.debugger_closed(self)

    def _alive(self) -> bool:
        if self._pid is None:
            return False
        try:
            os.kill(self._pid, 0)
        except ProcessLookupError:
            return False
        return not self._gdb.conn.closed

    @staticmethod
    def _try(fn) -> bool:
        try:
            fn()
            return True
        except Exception:   # best effort while tearing down or polling
            return False

    # -- raw access ---------------------------------------------------------------------------
    @property
    def gdb(self):
        """pwntools' mirror of gdb's ``gdb`` module, for anything not wrapped here."""
        self._check()
        return self._gdb

    def _check(self) -> None:
        if self._closed or self._gdb is None:
            raise DebuggerError("the debugger is closed")
        if not self._alive():
            raise DebuggerError("gdb exited (or its connection dropped)")

    def execute(self, command: str) -> str:
        """Run any gdb command while the guest is stopped; return its text."""
        self._check()
        try:
            return self._gdb.execute(command, to_string=True)
        except Exception as exc:
            raise DebuggerError(f"gdb command {command!r} failed: {_gdb_message(exc)}",
                                command=command) from exc

    def _python(self, call: str) -> Any:
        """Call a function of gdb_side.py inside gdb and decode its JSON answer."""
        # gdb may print first (e.g. "Breakpoint 2 at ..."): the answer is the last line.
        lines = self.execute(f"python print({call})").strip().splitlines()
        return json.loads(lines[-1])

    # -- the guest's state ---------------------------------------------------------------------
    def evaluate(self, expression: str) -> Any:
        """Evaluate a C/gdb expression (``jiffies``, ``*bio``, ``$lx_current().comm``)."""
        try:
            return self._python(f"evaluate({expression!r})")
        except DebuggerError as exc:
            raise DebuggerError(f"cannot evaluate {expression!r}: {exc.message}",
                                command=expression) from None

    def backtrace(self, limit: int = 64) -> list[dict]:
        """The current call stack, innermost first: function, file, line, pc, args."""
        return self._python(f"backtrace({int(limit)})")

    def read_memory(self, address: int, length: int) -> bytes:
        """``length`` bytes of guest memory at a (kernel virtual) address."""
        self._check()
        try:
            inferior = self._gdb.selected_inferior()
            return bytes(inferior.read_memory(address, length))
        except Exception as exc:
            raise DebuggerError(f"cannot read {length} bytes at {address:#x}: "
                                f"{_gdb_message(exc)}") from exc

    def load_module_symbols(self, *directories: str | os.PathLike) -> str:
        """``lx-symbols``: symbols (and source lines) of the guest's loaded modules."""
        dirs = " ".join(str(Path(d).resolve()) for d in directories)
        return self.execute(f"lx-symbols {dirs}")

    # -- stopping and going ----------------------------------------------------------------
    def break_at(self, location: str, *, temporary: bool = False, condition: str | None = None):
        """A breakpoint at a symbol or ``file:line``; a name that does not exist raises.

        ``condition``: a C expression evaluated at each hit (``fd == 2``); the guest stops
        only where it is true. A condition gdb cannot parse raises.
        """
        self._check()
        try:
            bp = self._gdb.Breakpoint(location, temporary=temporary)
            pending = bp.pending
        except Exception as exc:
            raise DebuggerError(f"cannot break at {location!r}: {_gdb_message(exc)}",
                                command=location) from exc
        if pending:
            # gdb's Python API makes a pending breakpoint whatever "breakpoint pending" says.
            self._try(bp.delete)
            raise DebuggerError(f"cannot break at {location!r}: no such function or line in "
                                "the kernel (for a module: load it, then load_module_symbols)",
                                command=location)
        self._breakpoints.append(bp)
        if condition is not None:
            # through pwntools' proxy, assigning bp.condition is silently lost: ask gdb itself
            try:
                self.execute(f"condition {bp.number} {condition}")
            except DebuggerError:
                self.delete(bp)
                raise
        return bp

    def select_frame(self, function: str) -> None:
        """Make the innermost frame of ``function`` the one evaluate() looks at (its locals)."""
        self.execute(f"frame function {function}")

    def watch(self, expression: str, *, access: str = "write"):
        """A hardware watchpoint on an expression (``access``: write, read or access)."""
        self._check()
        kinds = {"write": "WP_WRITE", "read": "WP_READ", "access": "WP_ACCESS"}
        try:
            bp = self._gdb.Breakpoint(expression, self._gdb.BP_WATCHPOINT,
                                      getattr(self._gdb, kinds[access]))
        except Exception as exc:
            raise DebuggerError(f"cannot watch {expression!r}: {_gdb_message(exc)}") from exc
        self._breakpoints.append(bp)
        return bp

    def delete(self, bp) -> None:
        """Remove a breakpoint or watchpoint made by break_at() or watch()."""
        self._try(bp.delete)
        if bp in self._breakpoints:
            self._breakpoints.remove(bp)

    def cont(self, timeout: float = 30.0) -> Stop:
        """Let the guest run until it stops (a breakpoint, a watchpoint); return where."""
        return self._go("continue &", timeout, "the guest")

    def stepi(self, timeout: float = 30.0) -> Stop:
        """Execute one guest instruction, wait until the guest has stopped after it; return where.

        Not ``execute("stepi")``: gdb runs asynchronously here, so that returns while the
        step is still under way, and whatever is read next (QEMU's trace of the step, a
        register) may come from before the instruction ran.
        """
        return self._go("stepi &", timeout, "stepi")

    # -- backwards (a Replay only: lab_vm.vm.replay) ---------------------------------------------
    def reverse_step(self, timeout: float = 60.0) -> Stop:
        """Go back one instruction."""
        return self._go("reverse-stepi &", timeout, "reverse-stepi")

    def reverse_continue(self, timeout: float = 120.0) -> Stop:
        """Run backwards to the previous breakpoint or watchpoint hit (or the replay's start).

        QEMU restarts from the nearest snapshot before here, replays forwards to
        find the last hit, and stops there.
        """
        return self._go("reverse-continue &", timeout, "reverse-continue")

    def last_write(self, expression: str, *, timeout: float = 120.0) -> Stop:
        """The instruction that last wrote ``expression`` before here: a watchpoint, in reverse.

        Returns the Stop *at the writing instruction* (``backtrace()`` has its
        stack), with ``old`` and ``new``: the value before and after that write.
        QEMU reports a reverse watchpoint stop as a plain SIGTRAP, so the write is
        confirmed by stepping back over it and seeing the value change; raises
        DebuggerError if nothing wrote ``expression`` since the replay began.
        """
        before = self.evaluate(expression)
        wp = self.watch(expression)
        try:
            self.reverse_continue(timeout)
        finally:
            self.delete(wp)
        nothing = DebuggerError(f"nothing wrote {expression!r} between the start of the "
                                f"recording and here (its value: {before!r})")
        if self.vm.replay_icount() == 0:       # ran back to the first instruction
            raise nothing
        new = self.evaluate(expression)
        stop = self.reverse_step(timeout)
        old = self.evaluate(expression)
        if old == new:
            raise nothing
        stop["old"], stop["new"] = old, new
        return stop

    def _go(self, command: str, timeout: float, what: str) -> Stop:
        """Start a background execution command, wait for the guest to stop, return where."""
        self._start(command)
        try:
            self._wait_until(self._gdb.stopped.is_set, timeout,
                             f"{what} did not stop within {timeout:g} s")
        except GuestTimeout:
            self.interrupt()
            raise
        self._gdb.stopped.clear()
        self._running = False
        return self.where()

    def resume(self) -> None:
        """Let the guest run on without waiting (e.g. to run commands in it)."""
        self._start("continue &")

    def _start(self, command: str) -> None:
        self._check()
        self._gdb.stopped.clear()
        self.execute(command)
        self._running = True

    def interrupt(self, timeout: float = 10.0) -> Stop:
        """Stop a running guest."""
        self._check()
        self._gdb.stopped.clear()
        self.execute("interrupt")
        self._wait_until(self._gdb.stopped.is_set, timeout, "the guest did not stop")
        self._gdb.stopped.clear()
        self._running = False
        return self.where()

    def where(self) -> Stop:
        """Where the stopped guest is: the innermost frame of backtrace()."""
        frame = self.backtrace(limit=1)[0]
        return Stop(frame)

    def _wait_until(self, predicate, timeout: float, message: str) -> None:
        """Poll ``predicate`` while checking that gdb and the VM are still alive."""
        deadline = time.monotonic() + timeout
        while not predicate():
            self.vm.check_health()
            if self._pid is not None and not self._alive():
                raise DebuggerError("gdb exited while waiting")
            if time.monotonic() > deadline:
                raise GuestTimeout(message, output=self.vm.console_log)
            # Serve gdb's callbacks (the stop event) here instead of leaving them to
            # pwntools' background thread, which looks only every 0.1 s. serve() returns as
            # soon as a callback arrives: a longer wait costs no latency, and polls less
            # (host CPU taken from QEMU and gdb while a sampler runs).
            try:
                self._gdb.conn.serve(WAIT_POLL_S)
            except Exception:   # closed connection: the liveness check above will say so
                time.sleep(WAIT_POLL_S)

    # -- bulk sampling --------------------------------------------------------------------
    def sample(self, location: str, expressions: Sequence[str] = (), *, count: int = 100,
               timeout: float = 60.0, allow_partial: bool = False) -> list[dict]:
        """Record ``expressions`` at each of ``count`` hits of ``location``, inside gdb.

        Each record is a dict: ``t`` (host monotonic seconds at the hit) and one key
        per expression. The guest runs at gdbstub speed between hits; records come
        back in one transfer. On timeout: the partial list if ``allow_partial``,
        else GuestTimeout.

        At a function's entry, where ftrace leaves a 5-byte NOP, a hit costs one stop of
        the VM instead of two: the PC is moved past the NOP rather than single-stepped
        (not in a recording or replay; ``nop_skipped`` says how many hits were).
        """
        self._check()
        try:
            number = self._python(f"sampler_start({location!r}, {list(expressions)!r}, "
                                  f"{int(count)}, {not self._counts_instructions()})")
        except DebuggerError as exc:
            raise DebuggerError(f"cannot sample at {location!r}: {exc.message}") from None
        timed_out = None
        try:
            self.cont(timeout=timeout)
        except GuestTimeout as exc:
            timed_out = exc
        taken = self._python(f"sampler_take({number})")
        records = taken["records"]
        self.nop_skipped = taken["nop_skipped"]
        if timed_out is not None and not allow_partial:
            raise GuestTimeout(f"only {len(records)} of {count} hits of {location} within "
                               f"{timeout:g} s", output=timed_out.output) from None
        return records

    def _counts_instructions(self) -> bool:
        """Whether the VM records or replays: every instruction counts, none may be skipped."""
        mode = getattr(self.vm, "mode", None)
        return bool(getattr(mode, "icount", False))


def _gdb_message(exc: BaseException) -> str:
    """The gdb error text out of an rpyc-wrapped exception."""
    text = str(exc).strip()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("gdb.error:") or line.startswith("gdb.MemoryError:"):
            return line.split(":", 1)[1].strip()
    return text.splitlines()[0] if text else type(exc).__name__


# QEMU's gdbstub keeps a multiprocess mode for good once any gdb asked for it (qSupported:
# multiprocess+, as gdb does), and in it a bare "D" is refused (E22): detach process 1, the
# stub's only process, which is also right without that mode.
DETACH = b"D;1"


def rsp_packet(payload: bytes) -> bytes:
    """A packet of gdb's remote serial protocol: ``$payload#checksum``."""
    return b"$" + payload + b"#" + f"{sum(payload) % 256:02x}".encode()


def detach_gdbstub(port: int, timeout: float = 5.0) -> None:
    """Detach from QEMU's gdbstub over a connection of our own: it removes every breakpoint
    and watchpoint a dead gdb left. The stub takes one client at a time, and the dead gdb's
    connection is closed by then."""
    deadline = time.monotonic() + timeout
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(rsp_packet(DETACH))
        answer = b""
        # what comes: a stop reply (the stub stops the guest for a new client), "+" (the
        # ack), then "$OK#9a"; the caller resumes the guest after
        while b"$OK#" not in answer and time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    if b"$OK#" not in answer:
        raise DebuggerError(f"the gdbstub on port {port} did not confirm the detach: {answer!r}")
    LOG.info("detached from the gdbstub on port %d in gdb's place", port)


def _kill(pid: int) -> None:
    """End the terminal wrapper; it takes gdb with it (PR_SET_PDEATHSIG)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if done:
            return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass
