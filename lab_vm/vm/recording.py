"""Recordings: the record and replay modes of a LabVM, and the folder a recording is.

(``lab_vm.vm.replay`` has :class:`~lab_vm.vm.replay.Replay`, the VM that replays one.)


QEMU's record/replay (``-icount …,rr=record|replay``) logs every
non-deterministic input of a TCG run — interrupts' timing, clock reads, bytes
on recorded character devices — and replays it instruction for instruction.
Its gdbstub then runs the guest backwards: ``reverse-stepi``,
``reverse-continue``, a watchpoint hit in reverse ("who last wrote this?").
A snapshot of the guest at the start (``rrsnapshot=init``, kept in a qcow2
image the guest never sees) is where every backwards step restarts from.

What QEMU 7.2 records, and what we built around it (measured here):

* Only a character device QEMU creates from a legacy option (``-serial``) is
  recorded. The agent's usual virtio-serial port uses ``-chardev``: input on
  it is not logged and a replay stalls where the agent opens the port. So in a
  recording the agent answers on the second UART (``-serial pipe:…``: a
  socket there lets writes fail, which breaks replays; see PipeTransport).
* Under record QEMU queues the host's bytes as events and later pushes them
  into the UART without looking at its 16-byte FIFO: anything beyond it is
  lost. The agent therefore acknowledges every read (``--paced``) and the host
  keeps at most :data:`WINDOW` bytes unacknowledged (``Channel(window=…)``).
* A 9p share completes its requests on QEMU's worker threads, which the log
  does not cover, and devices such as ``edu`` compute in a thread of their own:
  a recording refuses extra devices, and a share's files travel in an extra
  initramfs archive, unpacked at ``/mnt/share`` as if mounted.
* QEMU 7.2 refuses record/replay with more than one CPU ("not supported for
  'smp'"): a recorded VM has one.
* Under ``-icount`` the guest's TSC counts virtual nanoseconds: 1 GHz.
* Replaying a boot costs seconds, so once the recorded guest is up a second
  snapshot ("ready", HMP ``savevm``) is taken: replays start there, and
  reverse queries restart from the nearest snapshot, not from the boot.

A recording is one folder: ``recording.json`` (what was run, and the identity
of the kernel, initramfs and QEMU that ran it), ``replay.bin`` (QEMU's event
log), ``snapshots.qcow2``, ``initrd`` (the lab initramfs plus the run's files),
``channel.bin`` (every byte the agent sent) and ``console.log``. A replay on
other binaries is refused; a replay whose agent output differs from the
recording's has diverged and says so.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import time
from pathlib import Path

from ..build.cpio import CpioWriter
from .channel import Channel, PipeTransport
from ..errors import ConfigError, RecordingError
from .modes import SHARE_MOUNT, Mode
from .qemu_binary import qemu_identity

LOG = logging.getLogger(__name__)

FORMAT = "vmexit-recording-1"
ICOUNT = "shift=auto"
WINDOW = 16                      # the 16550 UART's receive FIFO, in bytes
MAX_SHARE_BYTES = 64 << 20       # a share is copied into guest RAM: keep it a lab folder
GUEST_MODULES = "/lib/modules/vmexit"   # where a recorded guest finds the kernel's modules
READY_SNAPSHOT = "ready"          # saved once the recorded guest's agent answered
SNAPSHOT_IMAGE_SIZE = "1G"       # qcow2 virtual size; holds only the snapshots' device state


def identity(vm) -> dict:
    """What must be the same for a replay to re-execute the recorded run."""
    return {"kernel": vm.kernel.key, "initramfs": vm.initramfs.key, **qemu_identity(vm.qemu)}


class Recording:
    """A recording folder, read from disk (``Recording(path)``) or being written."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        meta = self.path / "recording.json"
        if not meta.exists():
            raise RecordingError(f"{self.path} is not a recording (no recording.json): make one "
                                 "with `lab-vm record -o DIR -- CMD` or LabVM(record=DIR)")
        self.meta = json.loads(meta.read_text())
        if self.meta.get("format") != FORMAT:
            raise RecordingError(f"{self.path}: unknown recording format "
                                 f"{self.meta.get('format')!r} (this lab_vm reads {FORMAT})")
        if not self.meta.get("complete"):
            raise RecordingError(f"{self.path}: the recording did not finish (its VM was "
                                 "killed or crashed before shutdown): record it again")

    @property
    def commands(self) -> list[str]:
        return self.meta.get("commands", [])

    def channel_output(self) -> bytes:
        return (self.path / "channel.bin").read_bytes()

    def check(self, vm) -> None:
        """Refuse to replay on binaries other than the recorded ones; say which differ."""
        now = identity(vm)
        then = self.meta["identity"]
        differ = [k for k in now if then.get(k) != now[k]]
        if differ:
            raise RecordingError(
                f"{self.path} was recorded with another {', '.join(differ)} than this build "
                f"has (recorded {[then.get(k) for k in differ]}, now "
                f"{[now.get(k) for k in differ]}): a replay would run different code. "
                "Record it again with the current build.")


class _RecordReplay(Mode):
    """What recording and replaying share: the agent on a paced UART, -icount, the folder."""

    name = "record"
    live_share = False          # the share's files travel in the initrd (see the docstring)
    restorable = False          # a replay starts from the very first instruction
    icount = True
    close_channel_first = False
    first_snapshot = "init"     # saved (record) or loaded (replay) before the first instruction

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder).resolve()
        self._tee = None
        self._started = time.monotonic()
        self.ready_offset = 0

    def initrd(self, vm) -> Path:
        return self.folder / "initrd"

    def kernel_args(self) -> list[str]:
        # vmexit.channel: guest/init runs the agent on the UART, paced.
        # idle=poll: while the guest waits for the host, QEMU logs a checkpoint on every pass
        # of its vCPU loop, and a replay of them crawls. A halted guest made more of them than
        # a polling one: on boot + 4 commands, replay 40 s -> 14 s, recording 4.4 s -> 2.8 s.
        # (The polling loop's PAUSE still ends a pass each time: 150-450 k passes a second.)
        return ["vmexit.channel=ttyS1", "idle=poll"]

    def channel_args(self, tmp: Path) -> list[str]:
        # -serial, not -chardev: only chardevs made from legacy options are recorded.
        # pipe:, not a socket: see channel.PipeTransport.
        for end in ("in", "out"):
            if not (tmp / f"agent.{end}").exists():
                os.mkfifo(tmp / f"agent.{end}", 0o600)
        return ["-serial", f"pipe:{tmp / 'agent'}"]

    def open_channel(self, tmp: Path, deadline: float, health, qemu_log) -> Channel:
        return Channel(PipeTransport(tmp / "agent"), health, window=WINDOW,
                       tee=self._channel_tee(tmp))

    def snapshot_image(self, tmp: Path) -> Path:
        """The qcow2 image that holds the snapshots, as QEMU is to open it."""
        return self.folder / "snapshots.qcow2"

    def channel_copy(self, tmp: Path) -> Path:
        """Where the bytes the agent sends are kept."""
        return self.folder / "channel.bin"

    def qemu_args(self, tmp: Path) -> list[str]:
        log = self.folder / "replay.bin"
        first = self.first_snapshot
        # apic-common.vapic=off: the kvmvapic device's reset does run_on_cpu(), and a reverse
        # query loads a snapshot (a reset) from a timer on QEMU's main thread, which holds the
        # replay mutex the vCPU thread is waiting for: QEMU 7.2 deadlocks (seen on most
        # reverse-continues from mid-run). The device only patches Windows XP's TPR accesses.
        return ["-icount", f"{ICOUNT},rr={self.name},rrfile={log},rrsnapshot={first}",
                "-drive", f"file={self.snapshot_image(tmp)},if=none,id=rr",
                "-global", "apic-common.vapic=off"]

    def _channel_tee(self, tmp: Path):
        self._tee = open(self.channel_copy(tmp), "wb", buffering=0)
        return self._tee

    def close_tee(self) -> bytes:
        if self._tee is None:
            return b""
        self._tee.close()
        data = Path(self._tee.name).read_bytes()
        self._tee = None
        return data

    def guest_path(self, vm, host_path: Path) -> str | None:
        """Where a recorded guest already has a host file (a kernel module, a share file)."""
        host_path = Path(host_path).resolve()
        if vm.share is not None and host_path.is_relative_to(vm.share):
            return str(Path(SHARE_MOUNT, host_path.relative_to(vm.share)))
        if host_path.suffix == ".ko" and host_path.is_relative_to(vm.kernel.tree):
            return f"{GUEST_MODULES}/{host_path.name}"
        return None


class RecordMode(_RecordReplay):
    """A LabVM that records its run into a folder (``LabVM(record=DIR)``)."""

    name = "record"

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.commands: list[str] = []

    def note_command(self, command: str) -> None:
        self.commands.append(command)

    def ready(self, vm, timeout: float = 60.0) -> None:
        """The recorded guest is booted: save a snapshot there (HMP savevm).

        A replay starts from it instead of replaying the boot, and a reverse
        query restarts from it, so neither pays for the boot again. Where the
        agent's output stood is kept, to compare a replay's output from there.
        """
        start = time.monotonic()
        out = vm.qmp("human-monitor-command", timeout=timeout,
                     **{"command-line": f"savevm {READY_SNAPSHOT}"})
        if out.strip():
            raise RecordingError(f"QEMU could not save the {READY_SNAPSHOT!r} snapshot: "
                                 f"{out.strip()}")
        self.ready_offset = self._tee.tell() if self._tee is not None else 0
        LOG.info("recording: snapshot %r saved in %.2f s", READY_SNAPSHOT,
                 time.monotonic() - start)

    def before_start(self, vm) -> None:
        """Create the folder: the initrd with the run's files, the snapshot image, the metadata."""
        if self.folder.exists() and any(self.folder.iterdir()):
            if not (self.folder / "recording.json").exists():
                raise ConfigError(f"{self.folder} exists and is not a recording: choose an "
                                  "empty or new folder")
            shutil.rmtree(self.folder)      # an older recording at the same place is replaced
        self.folder.mkdir(parents=True, exist_ok=True)
        extra = run_files_archive(vm.kernel, vm.share)
        with open(self.initrd(vm), "wb") as out:
            with open(vm.initramfs.path, "rb") as base:
                shutil.copyfileobj(base, out)
            out.write(extra)     # the kernel unpacks concatenated archives in order
        cmd = ["qemu-img", "create", "-q", "-f", "qcow2", str(self.folder / "snapshots.qcow2"),
               SNAPSHOT_IMAGE_SIZE]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RecordingError(f"qemu-img could not run ({exc}): is qemu-utils installed? "
                                 "run `scripts/setup`", command=cmd) from exc
        if proc.returncode != 0:
            raise RecordingError("qemu-img could not create the snapshot image",
                                 command=proc.args, status=proc.returncode, output=proc.stderr)
        self._write_meta(vm, complete=False, commands=[])

    def _write_meta(self, vm, *, complete: bool, commands: list[str]) -> None:
        meta = {"format": FORMAT, "complete": complete, "identity": identity(vm),
                "memory": vm.memory, "cpus": vm.cpus, "firmware": vm.firmware,
                "append": vm.append, "qemu_args": vm.qemu_args,
                "share": str(vm.share) if vm.share is not None else None,
                "commands": commands, "ready_offset": self.ready_offset,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "seconds": round(time.monotonic() - self._started, 3),
                "command_line": vm.last_command_line}
        tmp = self.folder / "recording.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1) + "\n")
        os.replace(tmp, self.folder / "recording.json")

    def finished(self, vm) -> None:
        """After QEMU quit (LabVM.shutdown): complete the recording."""
        self.close_tee()
        status = vm.exitcode
        # QEMU finishes the log when it quits in order (SIGTERM, or the guest powered off)
        complete = status == 0
        if not complete:
            LOG.warning("the recording in %s is incomplete: QEMU ended with status %s",
                        self.folder, status)
        (self.folder / "console.log").write_text(vm.console_log)
        self._write_meta(vm, complete=complete, commands=self.commands)


class ReplayMode(_RecordReplay):
    """A LabVM that re-executes a recording (see lab_vm.vm.replay.Replay)."""

    name = "replay"
    first_snapshot = READY_SNAPSHOT     # saved by RecordMode.ready(): no boot to replay

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.replayed: bytes | None = None

    def snapshot_image(self, tmp: Path) -> Path:
        # QEMU locks the image it opens for writing: each replay gets its own copy,
        # so that two replays of one recording can run at once.
        return Path(shutil.copyfile(self.folder / "snapshots.qcow2", tmp / "snapshots.qcow2"))

    def channel_copy(self, tmp: Path) -> Path:
        return tmp / "replayed.bin"       # compared with the recording's after the run

    def finished(self, vm) -> None:
        """After QEMU quit: keep what the agent said, to compare with the recording."""
        self.replayed = self.close_tee()


def run_files_archive(kernel, share: Path | None) -> bytes:
    """A cpio archive with what a recorded run may need and cannot fetch while recorded:

    the lab kernel's own modules (``modprobe brd``) in :data:`GUEST_MODULES`,
    and the share's files under /mnt/share, as if it were mounted.
    """
    out = io.BytesIO()
    cpio = CpioWriter(out)
    cpio.directory(GUEST_MODULES.lstrip("/"), 0o755)
    for ko in kernel_modules(kernel):
        cpio.file(f"{GUEST_MODULES.lstrip('/')}/{ko.name}", ko.read_bytes(), 0o644)
    if share is not None:
        _add_tree(cpio, share, SHARE_MOUNT.lstrip("/"))
    cpio.close()
    return out.getvalue()


def kernel_modules(kernel) -> list[Path]:
    order = kernel.tree / "modules.order"
    if not order.exists():
        return []
    found = (kernel.tree / Path(line).with_suffix(".ko") for line in order.read_text().split())
    return [ko for ko in found if ko.exists()]


def _add_tree(cpio: CpioWriter, top: Path, guest_top: str) -> None:
    """Add ``top``'s directories, files and symlinks (no devices) under ``guest_top``."""
    total = 0
    for root, dirs, files in os.walk(top):
        dirs.sort()
        rel_root = Path(root).relative_to(top)
        for name in [*dirs, *sorted(files)]:
            path = Path(root, name)
            guest = str(Path(guest_top, rel_root, name))
            if path.is_symlink():
                cpio.symlink(guest, os.readlink(path))
            elif path.is_dir():
                cpio.directory(guest, path.stat().st_mode & 0o7777)
            elif path.is_file():
                total += path.stat().st_size
                if total > MAX_SHARE_BYTES:
                    raise ConfigError(f"the share {top} holds over {MAX_SHARE_BYTES >> 20} MiB: "
                                      "a recording copies it into guest memory; share a "
                                      "smaller folder")
                cpio.file(guest, path.read_bytes(), path.stat().st_mode & 0o7777)


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """The agent's reply frames in a channel byte stream: (job id, kind, payload)."""
    from .channel import REP_HEADER

    out, at = [], data.find(b"VMXA")
    while 0 <= at and at + REP_HEADER.size <= len(data):
        _, job_id, kind, length = REP_HEADER.unpack_from(data, at)
        end = at + REP_HEADER.size + length
        if end > len(data):
            break
        out.append((job_id, kind, data[at + REP_HEADER.size:end]))
        at = data.find(b"VMXA", end)
    return out


def outputs(data: bytes) -> dict[int, bytes]:
    """Each command's standard output in a channel byte stream, by job id."""
    from .channel import REP_STDOUT

    result: dict[int, bytes] = {}
    for job_id, kind, payload in frames(data):
        if kind == REP_STDOUT:
            result[job_id] = result.get(job_id, b"") + payload
    return result
