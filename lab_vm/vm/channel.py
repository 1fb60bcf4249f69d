"""The guest command channel: run a command in the guest, get its output and exit status.

The host end of the virtio-serial port that ``vmexit-agent`` (``guest/agent.c``)
serves. A reader thread demultiplexes reply frames into :class:`Job` objects,
so several commands can be in flight and a guest that writes a lot never blocks
on a host that is busy elsewhere. The wire format is described in agent.c.
"""
from __future__ import annotations

import itertools
import logging
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from ..errors import CommandFailed, GuestTimeout, VMError

LOG = logging.getLogger(__name__)

REQ_RUN, REQ_KILL, REQ_PING, REQ_RESUMED = 1, 2, 3, 4
REP_STDOUT, REP_STDERR, REP_EXIT, REP_PONG, REP_READY, REP_ERROR, REP_CREDIT = 1, 2, 3, 4, 5, 6, 7
REQ_HEADER = struct.Struct("<4sIIII")
REP_HEADER = struct.Struct("<4sIII")
POLL = 0.05          # how often a waiting caller checks that the VM is still alive
DEFAULT_MAX_OUTPUT = 64 << 20


@dataclass
class Result:
    """What a finished guest command produced."""

    command: str
    status: int
    stdout: bytes
    stderr: bytes
    duration: float
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.status == 0

    @property
    def text(self) -> str:
        """stdout decoded as UTF-8 (undecodable bytes replaced)."""
        return self.stdout.decode(errors="replace")

    @property
    def output(self) -> str:
        """stdout then stderr as text, for messages."""
        return (self.stdout + self.stderr).decode(errors="replace")

    def key_values(self) -> dict[str, float]:
        """The ``name=number`` pairs of stdout (key_values())."""
        return key_values(self.text)


KEY_VALUE_RE = re.compile(r"(\w+)=(-?\d+(?:\.\d+)?)")


def key_values(text: str) -> dict[str, float]:
    """The ``name=number`` pairs a guest program prints as its summary (blkstress's
    ``writes=40 reads=40 bad_reads=0 …``), as floats; a later pair of a name wins."""
    return {k: float(v) for k, v in KEY_VALUE_RE.findall(text)}


@dataclass
class Job:
    """A command running in the guest. ``wait()`` returns its :class:`Result`."""

    channel: "Channel"
    id: int
    command: str
    max_output: int
    started: float = field(default_factory=time.monotonic)
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    status: int | None = None
    error: str | None = None
    truncated: bool = False
    finished: float | None = None

    def _add(self, buf: bytearray, data: bytes) -> None:
        room = self.max_output - len(self.stdout) - len(self.stderr)
        if len(data) > room:
            self.truncated = True
            data = data[:max(room, 0)]
        buf += data

    @property
    def done(self) -> bool:
        return self.status is not None or self.error is not None

    def wait(self, timeout: float, *, check: bool = False) -> Result:
        """Wait for the command to end; on timeout kill it in the guest and raise GuestTimeout."""
        self.channel.wait_for(lambda: self.done, timeout,
                              on_timeout=lambda: self._timed_out(timeout))
        self.channel.forget(self.id)
        if self.error is not None:
            raise VMError(f"the guest agent could not run {self.command!r}: {self.error}",
                          command=self.command)
        result = Result(self.command, self.status, bytes(self.stdout), bytes(self.stderr),
                        (self.finished or time.monotonic()) - self.started, self.truncated)
        if check and result.status != 0:
            raise CommandFailed(f"guest command {self.command!r} exited with status "
                                f"{result.status}", command=self.command, status=result.status,
                                output=result.output, stdout=result.stdout, stderr=result.stderr)
        return result

    def kill(self) -> None:
        """Kill the command's whole process group in the guest (best effort)."""
        self.channel.send(REQ_KILL, self.id)

    def _timed_out(self, timeout: float) -> GuestTimeout:
        self.kill()
        self.channel.forget(self.id)
        partial = (bytes(self.stdout) + bytes(self.stderr)).decode(errors="replace")
        return GuestTimeout(f"guest command {self.command!r} did not finish in {timeout:g} s "
                            "(it was killed in the guest)", command=self.command, output=partial)


class PipeTransport:
    """The host end of QEMU's ``pipe:`` chardev (two FIFOs), with the socket calls Channel uses.

    A recorded guest's UART writes one byte per call. To a unix socket each byte is a
    buffer of its own (~1 kB of the sender's quota), so a host that reads a little late makes
    QEMU's write fail with EAGAIN; QEMU then retries from its main loop, outside the
    recorded order, and the replay breaks ("Missing character write event"). A FIFO packs
    the bytes into 64 kB; opened here read-write, neither side ever waits for the other.
    """

    def __init__(self, base: os.PathLike) -> None:
        self._in = os.open(f"{base}.in", os.O_RDWR)       # host -> guest
        self._out = os.open(f"{base}.out", os.O_RDWR)     # guest -> host
        self._closed = threading.Event()

    def recv(self, size: int) -> bytes:
        import select

        while not self._closed.is_set():
            ready, _, _ = select.select([self._out], [], [], 0.05)
            if ready:
                return os.read(self._out, size)
        return b""

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._in, view):]

    def shutdown(self, how) -> None:
        self._closed.set()

    def close(self) -> None:
        self._closed.set()
        for fd in (self._in, self._out):
            try:
                os.close(fd)
            except OSError:
                pass
        self._in = self._out = -1


class Channel:
    """The host end of the agent's port, connected to QEMU's unix socket chardev.

    ``window``: for a UART under record/replay (agent.c, REP_CREDIT), send at most
    this many bytes the agent has not yet acknowledged. ``tee``: a file that gets
    every byte the guest sends, as sent (a recording keeps it to compare replays).
    """

    def __init__(self, sock: socket.socket, health: Callable[[], None], *,
                 window: int | None = None, tee=None) -> None:
        self.sock = sock
        self.health = health           # raises if the VM died; called while waiting
        self.window = window
        self.tee = tee
        self._sent = 0                 # bytes sent and bytes the agent acknowledged
        self._credited = 0
        self._ids = itertools.count(1)
        self._jobs: dict[int, Job] = {}
        self._pongs: set[int] = set()
        self._errors: dict[int, str] = {}
        self._ready: list[bytes] = []
        self._closed: str | None = None
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_loop, name="vmexit-channel",
                                        daemon=True)
        self._reader.start()

    # -- sending -----------------------------------------------------------------------------
    def send(self, kind: int, job_id: int, command: bytes = b"", data: bytes = b"") -> None:
        header = REQ_HEADER.pack(b"VMXQ", job_id, kind, len(command), len(data))
        with self._send_lock:
            try:
                if self.window is None:
                    self.sock.sendall(header + command + data)
                else:
                    self._send_paced(header + command + data)
            except OSError as exc:
                raise VMError(f"the guest channel is closed: {exc}") from exc

    def _send_paced(self, frame: bytes, timeout: float = 60.0) -> None:
        """Send in pieces no larger than the guest's receive FIFO has room for."""
        view = memoryview(frame)
        while view:
            self.wait_for(lambda: self._sent - self._credited < self.window, timeout,
                          on_timeout=lambda: GuestTimeout(
                              f"the guest agent read nothing for {timeout:g} s"))
            piece = view[:self.window - (self._sent - self._credited)]
            self.sock.sendall(piece)
            self._sent += len(piece)
            view = view[len(piece):]

    def start(self, command: str, *, input: bytes = b"",
              max_output: int = DEFAULT_MAX_OUTPUT) -> Job:
        job = Job(self, next(self._ids), command, max_output)
        with self._cond:
            self._jobs[job.id] = job
        self.send(REQ_RUN, job.id, command.encode(), input)
        return job

    def run(self, command: str, *, timeout: float, input: bytes = b"", check: bool = False,
            max_output: int = DEFAULT_MAX_OUTPUT) -> Result:
        return self.start(command, input=input, max_output=max_output).wait(timeout, check=check)

    def ping(self, timeout: float) -> float:
        """Round trip to the agent without running anything; returns seconds."""
        start = time.monotonic()
        self._answered(REQ_PING, b"ping", b"", timeout, "answer a ping")
        return time.monotonic() - start

    def resumed(self, timeout: float, *, mount: Sequence[str] = ()) -> None:
        """Tell a restored guest the host's wall clock and give it fresh randomness; with
        ``mount`` (source, target, fstype, options), also mount that file system — all in
        one round trip."""
        now = time.time_ns()
        payload = struct.pack("<qq", now // 1_000_000_000, now % 1_000_000_000)
        spec = b"\0".join(part.encode() for part in mount) + b"\0" if mount else b""
        self._answered(REQ_RESUMED, spec, payload + os.urandom(64), timeout,
                       "take the clock and seed" + (" and mount the share" if mount else "")
                       + " after a restore")

    def _answered(self, kind: int, command: bytes, data: bytes, timeout: float,
                  what: str) -> None:
        rid = next(self._ids)
        self.send(kind, rid, command, data)
        self.wait_for(lambda: rid in self._pongs or rid in self._errors, timeout,
                      on_timeout=lambda: GuestTimeout(
                          f"the guest agent did not {what} within {timeout:g} s"))
        with self._cond:
            self._pongs.discard(rid)
            error = self._errors.pop(rid, None)
        if error is not None:
            raise VMError(f"the guest agent could not {what}: {error}")

    @property
    def greeted(self) -> bool:
        """Whether the agent has started (its greeting came), without waiting for it."""
        return bool(self._ready)

    def wait_ready(self, timeout: float) -> bytes:
        """Wait for the agent's greeting (sent once when it starts)."""
        self.wait_for(lambda: self.greeted, timeout, on_timeout=lambda: GuestTimeout(
            f"the guest did not get ready within {timeout:g} s"))
        return self._ready[0]

    def forget(self, job_id: int) -> None:
        with self._cond:
            self._jobs.pop(job_id, None)

    # -- waiting -----------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], bool], timeout: float, *,
                 on_timeout: Callable[[], Exception]) -> None:
        """Wait until ``predicate()``, checking VM health every POLL seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                if self._closed is not None:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(POLL, left))
                self._cond.release()
                try:
                    self.health()
                finally:
                    self._cond.acquire()
            if predicate():
                return
        self.health()   # a dead VM explains a closed channel or a timeout better than we can
        if self._closed is not None:
            raise VMError(f"the guest channel closed: {self._closed}")
        raise on_timeout()

    # -- receiving ---------------------------------------------------------------------------
    def _read_loop(self) -> None:
        buf = bytearray()
        reason = "end of stream (QEMU exited?)"
        try:
            while True:
                chunk = self.sock.recv(1 << 20)
                if not chunk:
                    break
                if self.tee is not None:
                    self.tee.write(chunk)
                buf += chunk
                self._parse(buf)
        except OSError as exc:
            reason = str(exc)
        except Exception as exc:   # a protocol error must not go unseen in a daemon thread
            LOG.exception("guest channel reader failed")
            reason = f"reader failed: {exc!r}"
        with self._cond:
            self._closed = reason
            self._cond.notify_all()

    def _parse(self, buf: bytearray) -> None:
        size = REP_HEADER.size
        while len(buf) >= size:
            magic, job_id, kind, length = REP_HEADER.unpack_from(buf)
            if magic != b"VMXA":
                # Bytes from before the agent started (or a torn frame): resynchronise.
                at = buf.find(b"VMXA", 1)
                LOG.debug("channel: skipping %d stray bytes", at if at > 0 else len(buf))
                del buf[:at if at > 0 else max(0, len(buf) - 3)]
                continue
            if len(buf) < size + length:
                return
            data = bytes(buf[size:size + length])
            del buf[:size + length]
            self._dispatch(job_id, kind, data)

    def _dispatch(self, job_id: int, kind: int, data: bytes) -> None:
        with self._cond:
            if kind == REP_READY:
                self._ready.append(data)
            elif kind == REP_CREDIT:
                self._credited += struct.unpack("<I", data)[0]
            elif kind == REP_PONG:
                self._pongs.add(job_id)
            else:
                job = self._jobs.get(job_id)
                if job is None:
                    if kind == REP_ERROR:       # the answer to a ping-like request
                        self._errors[job_id] = data.decode(errors="replace")
                        self._cond.notify_all()
                    return          # else: a job we gave up on (timed out) still talking
                if kind == REP_STDOUT:
                    job._add(job.stdout, data)
                elif kind == REP_STDERR:
                    job._add(job.stderr, data)
                elif kind == REP_EXIT:
                    job.status = struct.unpack("<i", data)[0]
                    job.finished = time.monotonic()
                elif kind == REP_ERROR:
                    job.error = data.decode(errors="replace")
            self._cond.notify_all()

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self._reader.join(timeout=2)
