"""Clean up after a grading worker process that died without doing so itself.

A Dask worker killed with SIGKILL (or lost with its machine's OOM killer) cannot
end the QEMU it started for the submission it was grading: QEMU runs in a
session of its own so that the VM survives a Ctrl-C in the terminal. So each
worker process starts one reaper (``python -m lab_vm.grading.reaper PID TAG
DIR``) at its first task. The reaper waits for the worker to end, however it
ends, then kills every process whose environment carries ``VMEXIT_WORKER=TAG``
(the worker's QEMUs; its build sandboxes die with it already) and removes the
worker's scratch folder ``DIR``.
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from pathlib import Path

ENV = "VMEXIT_WORKER"
POLL = 0.5          # seconds between looks at the worker


def start_time(pid: int) -> str | None:
    """The process's start time (field 22 of /proc/PID/stat): tells a PID from its reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def tagged(tag: str) -> list[int]:
    """PIDs of the processes whose environment has ``VMEXIT_WORKER=tag``."""
    needle = f"{ENV}={tag}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in environ:
            found.append(int(entry.name))
    return found


def reap(tag: str, folder: Path) -> list[int]:
    """Kill what the worker left running, remove its folder; the PIDs killed."""
    killed = tagged(tag)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    shutil.rmtree(folder, ignore_errors=True)
    return killed


def main(argv: list[str]) -> int:
    pid, tag, folder = int(argv[0]), argv[1], Path(argv[2])
    born = start_time(pid)
    while born is not None and start_time(pid) == born:
        time.sleep(POLL)
    killed = reap(tag, folder)
    if killed:
        print(f"reaper: worker {pid} ended; killed {killed} it left running", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
