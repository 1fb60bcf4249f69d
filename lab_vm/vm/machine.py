"""LabVM: the lab VM as a context manager.

Modelled on QEMU's own ``python/qemu/machine/machine.py``: ``launch()`` builds
the command line and starts QEMU, ``shutdown()`` is graceful with a timeout,
then kills, and cleans up in ``finally`` — it is safe to call twice and runs on
exceptions and Ctrl-C. The console log outlives the VM (``console_log``).

The guest boots ``vmlinux`` through its PVH entry (qboot firmware by default)
with our initramfs, whose agent answers on a virtio-serial port; the kernel
console goes to its own file, so kernel messages never mix with command output.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import fnmatch
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import Sequence

from . import accel as accel_mod
from . import state
from ..build.initramfs import Initramfs, find_initramfs
from ..build.kernel import Kernel, find_kernel
from ..build.tsc import host_tsc_khz
from .channel import DEFAULT_MAX_OUTPUT, Channel, Job, Result
from .modes import SHARE_MOUNT, SHARE_OPTIONS, SHARE_TAG, Mode
from .qemu_binary import QEMU
from .qmp import QMPConnection, QMPError
from .recording import RecordMode
from .trace import Trace, parse as parse_trace
from ..errors import (ConfigError, GuestPanic, GuestTimeout, LabVMError, QEMUExited,
                     VMError)

LOG = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1           # <linux/prctl.h>

FIRMWARE = {"qboot": "/usr/share/qemu/qboot.rom", "seabios": None}
# oops=panic: an oops in a student's module becomes a panic we can see at once;
# panic=-1 + -no-reboot: a panicking guest ends QEMU instead of hanging.
BASE_CMDLINE = ("console=ttyS0 nokaslr oops=panic panic=-1 quiet acpi=off "
                "tsc=reliable no_timer_check")
PANIC_RE = re.compile(rb"Kernel panic - not syncing[^\n]*")
PANIC_CONTEXT = 150    # console lines kept in a GuestPanic: a whole oops, "BUG:" header
                       # included (with its register dump twice and a guessed call
                       # trace an oops runs past 60 lines, and pci.page_fault needs it)
ICOUNT_TSC_KHZ = 1_000_000   # the guest TSC's rate under -icount: one tick per virtual ns
RESTORE_TIMEOUT = 10.0  # s: a restore that takes longer is given up for a cold boot


_LIVE: "weakref.WeakSet[LabVM]" = weakref.WeakSet()


@atexit.register
def _shutdown_all() -> None:
    """A VM still running when the interpreter exits (uncaught exception, sys.exit) is ended."""
    for vm in list(_LIVE):
        vm.shutdown(timeout=3)


def _socket_dir(name: str) -> Path:
    """A fresh directory for the VM's sockets and logs, short enough for AF_UNIX paths."""
    path = Path(tempfile.mkdtemp(prefix=f"vmexit-{name}-"))
    if len(str(path / "agent.sock")) > 100:      # sun_path holds 108 bytes
        path.rmdir()
        path = Path(tempfile.mkdtemp(prefix=f"vmexit-{name}-", dir="/tmp"))
    return path


def _die_with_parent():
    """A preexec_fn that makes the kernel kill QEMU when this process dies, or None.

    shutdown() and atexit end every QEMU we start, but nothing of ours runs when the process
    is killed outright (a Jupyter kernel restarted, a grading worker OOM-killed): QEMU would
    run on. PR_SET_PDEATHSIG fires when the *thread* that started the child ends, so it is
    only set from the main thread, which lives as long as the process.
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:        # the parent died before prctl: go now
            os._exit(1)

    return preexec


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LabVM:
    """A QEMU running the lab kernel, driven from Python.

    Use it as a context manager::

        with LabVM(share="labs/02-edu-driver", devices=["edu"]) as vm:
            print(vm.run("uname -r").text)
    """

    def __init__(self, *, accel: str = "auto", memory: int = 256, cpus: int = 1,
                 share: str | os.PathLike | None = None, devices: Sequence[str] = (),
                 gdb: bool = False, gdb_wait: bool = False, firmware: str = "qboot",
                 append: str = "", qemu_args: Sequence[str] = (),
                 kernel: Kernel | str | None = None, initramfs: Initramfs | None = None,
                 boot_timeout: float = 60.0, cold_boot: bool = False, qemu: str = QEMU,
                 record: str | os.PathLike | None = None, icount: str | None = None,
                 name: str = "vm", mode: Mode | None = None) -> None:
        if accel not in ("auto", "tcg", "kvm"):
            raise ConfigError(f"unknown accelerator {accel!r}: choose auto, tcg or kvm")
        if firmware not in FIRMWARE:
            raise ConfigError(f"unknown firmware {firmware!r}: choose {', '.join(FIRMWARE)}")
        if share is not None:
            share = Path(share).resolve()
            if not share.is_dir():
                raise ConfigError(f"the share {share} is not a directory")
        if memory < 64 or cpus < 1:
            raise ConfigError(f"memory={memory} MiB and cpus={cpus} are too small")
        if shutil.which(qemu) is None:
            raise ConfigError(f"{qemu} is not installed: run `scripts/setup`")
        qemu_args = list(qemu_args)
        if "-icount" in qemu_args:
            # the kernel command line (tsc_early_khz), the saved-state key and record/replay
            # all depend on it: it is the icount= parameter, never a bare QEMU option
            raise ConfigError("give -icount as LabVM(icount=...), not inside qemu_args")
        if record is not None:
            if mode is not None:
                raise ConfigError("give record= or mode=, not both")
            if accel == "kvm" or devices or gdb_wait or cpus != 1 or icount:
                raise ConfigError("a recorded VM runs under TCG with one CPU, no extra devices "
                                  "and no gdb_wait: QEMU 7.2's record/replay covers neither KVM "
                                  "nor SMP, nor devices that work in threads of their own "
                                  "(see lab_vm.vm.recording); it sets -icount itself")
            mode = RecordMode(Path(record))
        self.mode = mode or Mode()
        if not self.mode.restorable:
            accel, cold_boot = "tcg", True      # a recording starts from the first instruction
        # A name picks a variant: "checking" (lockdep, kmemleak...: what grading boots) or "fast"
        # (the book's, also the default). Saved states are keyed by the kernel's key: no mixing.
        if isinstance(kernel, str):
            if kernel not in ("fast", "checking"):
                raise ConfigError(f"unknown kernel {kernel!r}: choose fast or checking")
            kernel = find_kernel(None if kernel == "fast" else kernel)
        self.kernel = kernel or find_kernel()
        self.initramfs = initramfs or find_initramfs()
        self.accel_requested = accel
        self.memory = memory
        self.cpus = cpus
        self.share = share
        self.devices = list(devices)
        self.gdb = gdb or gdb_wait
        self.gdb_wait = gdb_wait
        self.firmware = firmware
        self.append = append
        self.qemu_args = qemu_args
        self.icount = icount          # QEMU's -icount option value, e.g. "shift=auto"
        self.boot_timeout = boot_timeout
        self.cold_boot = cold_boot
        self.restored = False
        self.restore_failure: str | None = None
        self.qemu = qemu
        self.name = name

        self.last_command_line: list[str] = []
        self.accel: str | None = None
        self.accel_reason = ""
        self.gdb_port: int | None = None
        self.boot_time: float | None = None
        # saved states: time.monotonic() at each step of a restore (started, loaded, resumed,
        # ready), for lab_vm.tools.bench's breakdown
        self.restore_steps: dict[str, float] = {}
        self._proc: subprocess.Popen | None = None
        self._tmp: Path | None = None
        self._channel: Channel | None = None
        self._qmp = None
        self._console_seen = 0
        self._console_text: bytes = b""
        self._qemu_log_text: str = ""
        self._shut_down = False
        self._interactive = False
        self._debuggers: list = []
        self._share_mounted = False

    # -- lifecycle ----------------------------------------------------------------------------
    def __enter__(self) -> "LabVM":
        self.launch()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    def command_line(self) -> list[str]:
        """The full QEMU command line (available after the accelerator is chosen)."""
        assert self._tmp is not None and self.accel is not None
        initrd = self.mode.initrd(self)
        cmd = [self.qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
               "-machine", "pc", "-accel", self.accel, "-m", str(self.memory),
               "-smp", str(self.cpus),
               "-kernel", str(self.kernel.vmlinux), "-initrd", str(initrd),
               "-append", self.kernel_cmdline(),
               *self._console_args(), *self._channel_args(),
               "-qmp", f"unix:{self._tmp / 'qmp.sock'},server=on,wait=off",
               # trace events (switched on at run time, see tracing()) are written here
               "-D", str(self._tmp / "trace.log")]
        if self.accel == "kvm":
            cmd += ["-cpu", "host"]
        if FIRMWARE[self.firmware]:
            cmd += ["-bios", FIRMWARE[self.firmware]]
        if self.share is not None and self.mode.live_share:
            cmd += ["-virtfs", f"local,path={self.share},mount_tag={SHARE_TAG},"
                               "security_model=none,id=share"]
        for dev in self.boot_devices:
            cmd += ["-device", dev]
        if self.gdb:
            cmd += ["-gdb", f"tcp:127.0.0.1:{self.gdb_port}"]
            if self.gdb_wait:
                cmd += ["-S"]
        if self.icount:
            cmd += ["-icount", self.icount]
        return cmd + self.mode.qemu_args(self._tmp) + self.qemu_args

    def _channel_args(self) -> list[str]:
        return self.mode.channel_args(self._tmp)

    def _hotplugged(self) -> bool:
        """Whether the extra devices are plugged in after start instead of given to QEMU.

        A saved state holds nothing of a device without migration support (QEMU's
        edu has none): restored, its PCI config space is blank while the guest
        believes its BAR is mapped, and every MMIO read gives 0. So a VM that may
        restore starts without its extra devices and plugs them in once running;
        a PCI rescan in the guest then finds and maps them like new hardware.
        """
        return bool(self.devices) and not self.cold_boot and not self.gdb_wait

    @property
    def boot_devices(self) -> list[str]:
        """The extra devices on QEMU's command line (the others are plugged in after start)."""
        return [] if self._hotplugged() else list(self.devices)

    def _plug_devices(self, timeout: float) -> None:
        for i, spec in enumerate(self.devices):
            driver, *props = spec.split(",")
            self.qmp("device_add", timeout=timeout, driver=driver, id=f"vmexit-dev{i}",
                     **dict(p.split("=", 1) for p in props))
        self.run("echo 1 > /sys/bus/pci/rescan", timeout=timeout, check=True)

    def kernel_cmdline(self) -> str:
        parts = [BASE_CMDLINE]
        if self.icount or self.mode.icount:
            # Under -icount (record/replay runs under it) the TSC counts virtual nanoseconds.
            parts.append(f"tsc_early_khz={ICOUNT_TSC_KHZ}")
        elif self.accel == "tcg":
            khz = host_tsc_khz()
            if khz:
                # The guest's TSC is the host's; it cannot calibrate it under TCG (tsc_khz.c).
                parts.append(f"tsc_early_khz={khz}")
        parts += self.mode.kernel_args()
        if self.append:
            parts.append(self.append)
        return " ".join(parts)

    def _console_args(self) -> list[str]:
        if self._interactive:
            return ["-serial", "mon:stdio"]
        return ["-chardev", f"file,id=con,path={self._tmp / 'console.log'}",
                "-serial", "chardev:con"]

    def _choose_accel(self) -> None:
        if self.accel_requested == "auto":
            self.accel, self.accel_reason = accel_mod.choose(
                self.kernel, self.initramfs, lambda: probe_kvm(self.kernel, self.initramfs))
        else:
            self.accel, self.accel_reason = self.accel_requested, "asked for"

    def interactive(self) -> int:
        """Boot with the guest console on this terminal and a shell in place of the agent.

        Returns QEMU's exit status once the person leaves (``reboot -f`` or Ctrl-A X).
        """
        self._interactive = True
        spec = self._share_mount_spec()      # guest/init mounts it: no agent to ask
        share = f"vmexit.share={spec[0]}:{spec[1]}:{spec[3]}" if spec else ""
        self.append = " ".join(p for p in (self.append, share, "vmexit.shell=1") if p)
        self._choose_accel()
        self._tmp = _socket_dir(self.name)
        try:
            return subprocess.run(self.command_line()).returncode
        finally:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def launch(self, timeout: float | None = None) -> None:
        """Start QEMU and wait until the guest agent answers (or raise, leaving nothing behind)."""
        if self._proc is not None:
            raise VMError("this LabVM was already launched")
        timeout = self.boot_timeout if timeout is None else timeout
        try:
            self._launch(timeout)
        except BaseException as exc:
            self.shutdown()
            if isinstance(exc, LabVMError):
                self._add_launch_context(exc)
            raise

    def _add_launch_context(self, exc: LabVMError) -> None:
        """A failed launch says how QEMU was started and what the guest printed, as QEMU's
        VMLaunchFailure does (a boot that timed out has nothing else to go on)."""
        if exc.command is None and self.last_command_line:
            exc.command = self.last_command_line
        if not exc.output:
            exc.output = "\n".join(log for log in (self.qemu_log, self.console_log) if log)

    def _launch(self, timeout: float) -> None:
        start = time.monotonic()
        deadline = start + timeout
        self._choose_accel()
        LOG.info("%s: accelerator %s (%s)", self.name, self.accel, self.accel_reason)
        self._tmp = _socket_dir(self.name)
        if self.gdb:
            self.gdb_port = free_port()
        saved = None
        if not self.cold_boot and not self.gdb_wait:
            saved = state.path_for(state.key(self))
        self.mode.before_start(self)
        if saved is not None and saved.exists():
            self._restore(saved, deadline)
        if not self.restored:
            # saved states: a VM that will save keeps its RAM where save() can copy it from
            ram = (state.SharedRAM(self.memory)
                   if saved is not None and not saved.exists() else None)
            try:
                self._start_qemu(deadline, ram=ram)
                if self.gdb_wait:
                    return    # the guest waits for the debugger's first `continue`
                self._channel.wait_ready(max(0.1, deadline - time.monotonic()))
                if ram is not None:
                    try:
                        state.save(self, saved, ram)
                    except (LabVMError, OSError) as exc:     # OSError: the state file itself
                        LOG.warning("%s: could not save the guest state: %s", self.name, exc)
            finally:
                if ram is not None:
                    ram.close()       # QEMU keeps its own mapping
        if self._hotplugged():
            self._plug_devices(max(1.0, deadline - time.monotonic()))
        self.mode.ready(self)    # a recording: snapshot the booted guest; replays start there
        self.boot_time = time.monotonic() - start
        LOG.info("%s: ready in %.3f s (%s)", self.name, self.boot_time,
                 "restored" if self.restored else "cold boot")
        self._mount_share()
        if self.restored:
            self.restore_steps["ready"] = time.monotonic()

    def _restore(self, saved: Path, deadline: float) -> None:
        """Start QEMU from a saved state; on any failure delete the state and clean up."""
        source = None
        try:
            # A broken guest hangs rather than fails: do not wait the whole boot timeout on it.
            deadline = min(deadline, time.monotonic() + RESTORE_TIMEOUT)
            source = state.SavedState(saved, self.memory)     # checks the file; see state.py
            self._start_qemu(deadline, ram=source)
            self.restore_steps["started"] = time.monotonic()
            source.load(self)
            state.wait_running(self, max(0.1, deadline - time.monotonic()))
            self.restore_steps["loaded"] = time.monotonic()
            mount = self._share_mount_spec()
            self._channel.resumed(max(0.1, deadline - time.monotonic()), mount=mount)
            self._share_mounted = bool(mount)
            self.restore_steps["resumed"] = time.monotonic()
            self.restored = True
        except (LabVMError, OSError) as exc:     # OSError: the state file itself
            self.restore_failure = f"{type(exc).__name__}: {exc}"
            LOG.warning("%s: restoring %s failed (%s); booting cold instead",
                        self.name, saved.name, self.restore_failure)
            if source is not None:
                source.discard()
            else:
                saved.unlink(missing_ok=True)
            self._stop_qemu()
        finally:
            if source is not None:
                source.close()         # QEMU has its own mapping and descriptor

    def _start_qemu(self, deadline: float,
                    ram: "state.SharedRAM | state.SavedState | None" = None) -> None:
        cmd = self.command_line()
        if ram is not None:            # saved states: where the guest's RAM lives (state.py)
            cmd += ram.qemu_args(self.kernel)
        _LIVE.add(self)
        self.last_command_line = cmd
        LOG.debug("%s: %s", self.name, shlex.join(cmd))
        with open(self._tmp / "qemu.log", "wb") as qlog:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qlog,
                                          stderr=subprocess.STDOUT, start_new_session=True,
                                          pass_fds=ram.fds if ram is not None else (),
                                          preexec_fn=_die_with_parent())
        self._channel = self.mode.open_channel(self._tmp, deadline, self._health,
                                               lambda: self.qemu_log)

    def _stop_qemu(self) -> None:
        """Forget a QEMU that failed to restore, so that a cold boot can start afresh."""
        if self._channel is not None:
            self._channel.close()
        if self._qmp is not None:
            with contextlib.suppress(Exception):
                self._qmp.close()
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()
        self._proc = self._channel = self._qmp = None
        self._console_seen = 0
        for name in ("console.log", "agent.sock", "qmp.sock"):
            (self._tmp / name).unlink(missing_ok=True)

    def _share_mount_spec(self) -> tuple[str, ...]:
        """(source, target, fstype, options) of the share, or () when there is none."""
        if self.share is None or not self.mode.live_share:
            return ()
        return (SHARE_TAG, SHARE_MOUNT, "9p", SHARE_OPTIONS)

    def _mount_share(self) -> None:
        """Mount the share after a cold boot (a restore mounts it in its resume round trip)."""
        spec = self._share_mount_spec()
        if spec and not self._share_mounted:
            self.run(f"mount -t 9p -o {SHARE_OPTIONS} {SHARE_TAG} {SHARE_MOUNT}",
                     timeout=30, check=True)
            self._share_mounted = True

    def wait_ready(self, timeout: float = 60.0) -> None:
        """After ``gdb_wait``: wait for the agent once the debugger let the guest run."""
        assert self._channel is not None
        self._channel.wait_ready(timeout)
        self._mount_share()

    def shutdown(self, timeout: float = 10.0) -> None:
        """Stop QEMU: ask politely, wait up to ``timeout``, then kill. Safe to call twice."""
        if self._shut_down:
            return
        self._shut_down = True
        try:
            for dbg in list(self._debuggers):
                dbg.close()
            # A recorded guest's UART must never see its host end go away while QEMU runs:
            # a failed write is retried from QEMU's main loop, out of the recorded order, and
            # the replay then misses that write ("Missing character write event").
            if self._channel is not None and self.mode.close_channel_first:
                self._channel.close()
            if self._proc is not None and self._proc.poll() is None:
                self._quit_gracefully(timeout)
        finally:
            if self._channel is not None and not self.mode.close_channel_first:
                self._channel.close()
            if self._proc is not None and self._proc.poll() is None:
                LOG.warning("%s: QEMU did not quit in %g s; killing it", self.name, timeout)
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            if self._qmp is not None:
                try:
                    self._qmp.close()
                except Exception:       # the peer is gone; nothing left to tidy
                    pass
            self._keep_logs()
            self.mode.finished(self)
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)

    def _quit_gracefully(self, timeout: float) -> None:
        assert self._proc is not None
        try:
            # SIGTERM is QEMU's orderly "quit": it needs no QMP connection.
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass

    def _keep_logs(self) -> None:
        if self._tmp is None:
            return
        for name, attr in (("console.log", "_console_text"), ("qemu.log", "_qemu_log_text")):
            try:
                data = (self._tmp / name).read_bytes()
            except FileNotFoundError:
                continue
            setattr(self, attr, data if attr == "_console_text" else data.decode(errors="replace"))

    def wait(self, timeout: float) -> int:
        """Wait for QEMU to end by itself (a guest that powered off, a replay that ran out);
        its exit status. GuestTimeout if it still runs after ``timeout`` seconds."""
        if self._proc is None:
            raise VMError("QEMU was not started")
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise GuestTimeout(f"QEMU did not end within {timeout:g} s",
                               output=self.console_log) from None

    @property
    def exitcode(self) -> int | None:
        """QEMU's exit status once it has ended (None while it runs or before it started)."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def qemu_pid(self) -> int:
        """The QEMU process's id (for host tools such as gdb on QEMU: lab_vm.debug.qemu)."""
        if self._proc is None or self._proc.poll() is not None:
            raise VMError("QEMU is not running")
        return self._proc.pid

    @property
    def console_log(self) -> str:
        """Everything the guest kernel printed on its console (also after shutdown)."""
        return self._console_bytes().decode(errors="replace")

    def _console_bytes(self) -> bytes:
        if self._tmp is not None and not self._shut_down:
            try:
                return (self._tmp / "console.log").read_bytes()
            except FileNotFoundError:
                return b""
        return self._console_text

    @property
    def qemu_log(self) -> str:
        """QEMU's own stdout and stderr."""
        if self._tmp is not None and not self._shut_down:
            try:
                return (self._tmp / "qemu.log").read_text(errors="replace")
            except FileNotFoundError:
                return ""
        return self._qemu_log_text

    # -- health ------------------------------------------------------------------------------
    def _health(self) -> None:
        """Raise GuestPanic or QEMUExited if the VM is gone; cheap enough to call every 50 ms."""
        panic = self._find_panic()
        if panic is not None:
            raise panic
        if self._proc is not None and self._proc.poll() is not None:
            raise QEMUExited(f"QEMU exited with status {self._proc.returncode}",
                             command=self._proc.args, status=self._proc.returncode,
                             output=self.qemu_log + "\n" + self.console_log)

    def _find_panic(self) -> GuestPanic | None:
        data = self._console_bytes()
        # Only look at what is new, plus a margin for a line split across two reads.
        start = max(0, self._console_seen - 200)
        self._console_seen = len(data)
        match = PANIC_RE.search(data, start)
        if match is None:
            return None
        lines = data.decode(errors="replace").splitlines()
        excerpt = "\n".join(lines[-PANIC_CONTEXT:])
        return GuestPanic(f"the guest kernel panicked: {match.group().decode(errors='replace')}",
                          output=excerpt)

    # -- commands ----------------------------------------------------------------------------
    @property
    def channel(self) -> Channel:
        if self._channel is None or self._shut_down:
            raise VMError("the VM is not running")
        return self._channel

    def run(self, command: str, *, timeout: float = 30.0, check: bool = False,
            input: bytes = b"", max_output: int = DEFAULT_MAX_OUTPUT) -> Result:
        """Run ``sh -c command`` in the guest; return its Result (stdout, stderr, status)."""
        self.mode.note_command(command)
        return self.channel.run(command, timeout=timeout, input=input, check=check,
                                max_output=max_output)

    def start(self, command: str, *, input: bytes = b"",
              max_output: int = DEFAULT_MAX_OUTPUT) -> Job:
        """Start a guest command and return at once; ``job.wait(timeout)`` collects it."""
        self.mode.note_command(command)
        return self.channel.start(command, input=input, max_output=max_output)

    def ping(self, timeout: float = 5.0) -> float:
        return self.channel.ping(timeout)

    def write_file(self, path: str, data: bytes | str, *, mode: int = 0o644,
                   timeout: float = 30.0) -> None:
        """Write a file in the guest (through the channel, so no share is needed)."""
        if isinstance(data, str):
            data = data.encode()
        q = shlex.quote(path)
        self.run(f"cat > {q} && chmod {mode:o} {q}", input=data, timeout=timeout, check=True)

    def read_file(self, path: str, *, timeout: float = 30.0) -> bytes:
        return self.run(f"cat {shlex.quote(path)}", timeout=timeout, check=True).stdout

    def insmod(self, module: str | os.PathLike, *params: str, timeout: float = 30.0) -> Result:
        """Load a module: a guest path, or a host path that is copied into the guest first."""
        path = str(module)
        # a recorded guest has the share's files and the kernel's modules in its initramfs:
        # copying them through the paced channel would take minutes
        in_guest = self.mode.guest_path(self, Path(path))
        if in_guest is not None:
            path = in_guest
        elif Path(path).is_file() and not path.startswith(SHARE_MOUNT):
            guest = f"/tmp/{Path(path).name}"
            self.write_file(guest, Path(path).read_bytes(), timeout=timeout)
            path = guest
        args = " ".join(shlex.quote(p) for p in params)
        return self.run(f"insmod {shlex.quote(path)} {args}", timeout=timeout, check=True)

    def modprobe(self, name: str, *params: str, timeout: float = 30.0) -> Result | None:
        """Load one of the lab kernel's own modules (``brd``, ``null_blk``) and what it needs.

        Dependencies come from the module's own ``depends=`` tag; one already loaded
        is left alone (None is returned for it).
        """
        for dep in self.kernel.module_depends(name):
            self.modprobe(dep, timeout=timeout)
        if self.module_loaded(name, timeout=timeout):
            return None
        return self.insmod(self.kernel.module_path(name), *params, timeout=timeout)

    def module_loaded(self, name: str, *, timeout: float = 30.0) -> bool:
        """Whether the module ``name`` is loaded (see :func:`module_loaded_command`)."""
        return self.run(module_loaded_command(name), timeout=timeout).ok

    def rmmod(self, name: str, *, missing_ok: bool = False, timeout: float = 30.0) -> Result | None:
        """Unload ``name``; with ``missing_ok`` one that is not loaded is left alone (None)."""
        if missing_ok and not self.module_loaded(name, timeout=timeout):
            return None
        return self.run(f"rmmod {shlex.quote(name)}", timeout=timeout, check=True)

    def dmesg(self, *, timeout: float = 30.0) -> str:
        return self.run("dmesg", timeout=timeout, check=True).text

    # -- debugging ----------------------------------------------------------------------------
    def enable_gdbstub(self) -> int:
        """The gdbstub's port; opened now (HMP ``gdbserver``) if the VM started without one."""
        if self.gdb_port is None:
            port = free_port()
            self.qmp("human-monitor-command",
                     **{"command-line": f"gdbserver tcp:127.0.0.1:{port}"})
            self.gdb_port = port
            self.gdb = True
        return self.gdb_port

    def debugger(self, *, timeout: float = 30.0):
        """gdb attached to this guest, scripted through pwntools (see lab_vm.debug.guest)."""
        from ..debug.guest import Debugger

        self._health()
        dbg = Debugger(self, timeout=timeout)
        self._debuggers.append(dbg)
        return dbg

    def debugger_opened(self, dbg) -> None:
        """A debugger attached to this VM (closed by shutdown if still open)."""
        self._debuggers.append(dbg)

    def debugger_closed(self, dbg) -> None:
        if dbg in self._debuggers:
            self._debuggers.remove(dbg)

    def resume_if_paused(self) -> None:
        """Let a guest that a debugger left stopped run again (QMP ``cont``)."""
        if self.running and self.qmp("query-status")["status"] in ("paused", "debug"):
            self.qmp("cont")

    def check_health(self) -> None:
        """Raise GuestPanic or QEMUExited if the guest panicked or QEMU is gone."""
        self._health()

    # -- QEMU trace events ----------------------------------------------------------------
    @contextlib.contextmanager
    def tracing(self, *patterns: str, timeout: float = 10.0):
        """Record QEMU trace events (names or globs such as ``memory_region_ops_*``).

        ``with vm.tracing("memory_region_ops_read") as trace: vm.run(...)`` leaves
        the parsed events in ``trace.records`` once the block ends.
        """
        result = Trace(patterns)
        log = self._tmp / "trace.log"
        for pattern in patterns:
            self.qmp("trace-event-set-state", timeout=timeout, name=pattern, enable=True)
        start = log.stat().st_size if log.exists() else 0
        try:
            yield result
        finally:
            for pattern in patterns:
                self.qmp("trace-event-set-state", timeout=timeout, name=pattern, enable=False)
            with open(log, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
            names = {e["name"] for e in self.qmp("trace-event-get-state", name="*")
                     if any(fnmatch.fnmatchcase(e["name"], p) for p in patterns)}
            result.records = parse_trace(text, names)

    # -- ftrace in the guest -----------------------------------------------------------------
    @contextlib.contextmanager
    def ftrace(self, *, events=(), kprobes: dict[str, str] | None = None, tracer: str = "nop",
               functions=(), only=(), buffer_kb: int = 4096, clock: str = "mono",
               timeout: float = 30.0):
        """Trace inside the guest with ftrace while the block runs (see lab_vm.vm.ftrace).

        ``events``: ``"subsystem:name"`` (or a whole ``"subsystem"``); ``kprobes``: name →
        kprobe_events spec (``"edu_mmio_read addr=%si:u64"``); ``tracer``: ``"function"`` or
        ``"function_graph"`` limited to ``functions`` (for function_graph: the calls made inside
        them; ``only``: and of those, just these functions). The session's ``records``/``graph``
        are filled in when the block ends; tracefs is reset either way.
        """
        from .ftrace import Ftrace

        tracer_ = Ftrace(self, events=events, kprobes=kprobes, tracer=tracer,
                         functions=functions, only=only, buffer_kb=buffer_kb, clock=clock,
                         timeout=timeout)
        tracer_.start()
        try:
            yield tracer_.capture
            tracer_.stop()
        finally:
            tracer_.cleanup()

    # -- QMP ---------------------------------------------------------------------------------
    def qmp(self, command: str, timeout: float = 10.0, **args):
        """Send one QMP command (through the qemu.qmp library) and return its result."""
        try:
            if self._qmp is None:        # the first command connects
                self._health()
                assert self._tmp is not None
                qmp = QMPConnection(self.name)
                try:
                    qmp.connect(str(self._tmp / "qmp.sock"), timeout, alive=self._health)
                except BaseException:
                    qmp.close()
                    raise
                self._qmp = qmp
            return self._qmp.execute(command, args or None, timeout)
        except QMPError as exc:
            self._health()           # QEMU died: QEMUExited (with its log) says more
            raise VMError(f"QMP {command} failed: {exc}", command=command,
                          output=self.qemu_log) from exc


def module_loaded_command(name: str) -> str:
    """The guest command that succeeds if the module ``name`` is loaded: it is listed in
    /proc/modules (/sys/module also lists what is built into the kernel). The one test of
    "loaded" for LabVM and the checkers' Session alike."""
    name = shlex.quote(name.replace("-", "_"))
    return f"grep -q '^'{name}' ' /proc/modules"


def probe_kvm(kernel, initramfs) -> tuple[bool, str]:
    """Boot the lab VM under KVM with a short deadline: (works, reason). lab_vm.vm.accel decides
    with it (and caches the verdict); it never boots anything itself."""
    vm = LabVM(accel="kvm", kernel=kernel, initramfs=initramfs,
               boot_timeout=accel_mod.PROBE_TIMEOUT, name="kvm-probe")
    try:
        with vm:
            vm.run("true", timeout=accel_mod.PROBE_TIMEOUT, check=True)
        return True, f"a KVM probe boot reached userspace in {vm.boot_time:.2f} s"
    except LabVMError as exc:
        detail = accel_mod.last_meaningful_line(vm.qemu_log) or exc.message
        return False, f"a KVM probe boot failed ({type(exc).__name__}): {detail}"
