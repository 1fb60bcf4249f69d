"""A bubblewrap sandbox for compiling untrusted code.

Submissions are untrusted, and compiling them is running tools on them. The
sandbox sees an allowlist of the host, never the whole of it: the system's
programs and libraries read-only (``/usr`` and its ``/bin``, ``/lib``
links, the dynamic linker's cache), the trees the caller lends read-only (the
kernel tree), a fresh ``/tmp`` and the one work folder it may write. So a
``#include "/root/..."`` finds nothing, other students' work and the lab's
solution are not there, and nothing outside the work folder can be written.
A lab whose student code is a VMM (Python on the host, hostrun.py) also gets
``/dev/kvm``, and no other device of the host. It has no network (its own empty
network namespace), no capabilities, its own PID namespace (so killing it kills
everything it started), rlimits on file size and memory, a wall-clock timeout
and a cap on the output kept.
"""
from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import MissingArtifact

LOG = logging.getLogger(__name__)
INSIDE = "/tmp/build"          # where the work folder appears inside the sandbox
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What compilers need from /etc: the dynamic linker's cache and `awk`-style alternatives.
SYSTEM_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives")
ENV = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LC_ALL": "C"}


@dataclass
class SandboxResult:
    status: int | None          # None: killed at the timeout
    output: str                 # stdout and stderr, interleaved, at most output_cap bytes
    duration: float
    truncated: bool = False

    @property
    def timed_out(self) -> bool:
        return self.status is None


def bwrap() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise MissingArtifact("bubblewrap (bwrap) is not installed: run `scripts/setup` "
                              "(it installs the Debian package bubblewrap)")
    return path


class Sandbox:
    """Run commands with ``work`` writable at :data:`INSIDE` and ``readonly`` trees visible.

    ``devices`` are host device nodes passed in as they are (``/dev/kvm`` for a VMM lab);
    the sandbox's /dev otherwise holds only null, zero, random and the like.
    """

    def __init__(self, work: Path, *, readonly: Sequence[Path] = (),
                 devices: Sequence[str] = (), file_size: int = 64 << 20,
                 memory: int = 2 << 30, tmp_size: int = 256 << 20,
                 output_cap: int = 1 << 20) -> None:
        self.work = Path(work).resolve()
        self.readonly = [Path(p).resolve() for p in readonly]
        self.devices = list(devices)      # host device nodes passed in (a VMM lab: /dev/kvm)
        self.file_size = file_size
        self.memory = memory
        self.tmp_size = tmp_size
        self.output_cap = output_cap

    def command(self, argv: Sequence[str]) -> list[str]:
        """The bwrap command line that runs ``argv`` inside the sandbox."""
        cmd = [bwrap(), "--unshare-all", "--die-with-parent", "--new-session",
               "--cap-drop", "ALL", "--hostname", "sandbox"]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):          # merged /usr: /bin -> usr/bin
                cmd += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                cmd += ["--ro-bind", path, path]
        for path in SYSTEM_FILES:
            if os.path.exists(path):
                cmd += ["--ro-bind", path, path]
        cmd += ["--dev", "/dev", "--proc", "/proc",
                "--size", str(self.tmp_size), "--tmpfs", "/tmp"]
        for device in self.devices:
            cmd += ["--dev-bind", device, device]
        for tree in self.readonly:
            cmd += ["--ro-bind", str(tree), str(tree)]
        cmd += ["--bind", str(self.work), INSIDE, "--chdir", INSIDE]
        limits = []
        if shutil.which("prlimit"):
            limits = ["prlimit", f"--fsize={self.file_size}", f"--as={self.memory}", "--"]
        return cmd + limits + list(argv)

    def run(self, argv: Sequence[str], *, timeout: float) -> SandboxResult:
        """Run ``argv`` in the sandbox; on timeout everything in it is killed."""
        cmd = self.command(argv)
        LOG.debug("sandbox: %s", " ".join(cmd))
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=ENV, start_new_session=True)
        collected = bytearray()
        truncated = threading.Event()
        reader = threading.Thread(target=self._drain, args=(proc, collected, truncated),
                                  daemon=True)
        reader.start()
        try:
            status: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            status = None
            LOG.info("sandbox: %s did not finish in %g s; killing it", argv[0], timeout)
        finally:
            if proc.poll() is None:
                # bwrap is the process group's leader; its PID-namespace init dies with it
                # (--die-with-parent), which takes every process of the namespace along.
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            reader.join(timeout=5)
        return SandboxResult(status, collected.decode(errors="replace"),
                             time.monotonic() - start, truncated.is_set())

    def _drain(self, proc: subprocess.Popen, into: bytearray, truncated: threading.Event) -> None:
        """Read all output (so the child never blocks on a full pipe), keep the first cap bytes."""
        assert proc.stdout is not None
        with proc.stdout:
            for chunk in iter(lambda: proc.stdout.read1(1 << 16), b""):
                room = self.output_cap - len(into)
                if len(chunk) > room:
                    truncated.set()
                    chunk = chunk[:max(room, 0)]
                into += chunk
