"""Run a long build command and show one live line of progress instead of silence."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import deque

from ..errors import BuildError

LOG = logging.getLogger(__name__)


def run_logged(cmd: list[str], *, cwd, log_path, label: str, timeout: float,
               env: dict | None = None, stream=None) -> None:
    """Run ``cmd``, write all its output to ``log_path``, show progress on ``stream``.

    On a terminal the progress is one line rewritten in place; elsewhere (CI, a
    notebook) a line every 15 s. A failure raises :class:`BuildError` carrying
    the last lines of output.
    """
    stream = stream or sys.stderr
    tty = hasattr(stream, "isatty") and stream.isatty()
    last_lines: deque[str] = deque(maxlen=60)
    start = time.monotonic()
    shown = 0.0
    count = 0
    LOG.info("%s: %s (log: %s)", label, " ".join(cmd), log_path)
    with open(log_path, "ab") as log, subprocess.Popen(
        cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})}, start_new_session=True,
    ) as proc:
        try:
            for raw in proc.stdout:
                log.write(raw)
                line = raw.decode(errors="replace").rstrip()
                last_lines.append(line)
                count += 1
                now = time.monotonic()
                if now - start > timeout:
                    raise BuildError(f"{label} took longer than {timeout:.0f} s", command=cmd,
                                     output="\n".join(last_lines))
                if tty and now - shown > 0.2:
                    stream.write(f"\r\x1b[K{label} {now - start:5.0f}s  {line[:70]}")
                    stream.flush()
                    shown = now
                elif not tty and now - shown > 15:
                    stream.write(f"{label} {now - start:5.0f}s  {count} lines  {line[:70]}\n")
                    stream.flush()
                    shown = now
            status = proc.wait()
        except BaseException:
            # Ctrl-C or a timeout: end the whole build tree, never leave make running.
            _kill_group(proc)
            raise
    if tty:
        stream.write("\r\x1b[K")
    if status != 0:
        raise BuildError(f"{label} failed with status {status} (full log: {log_path})",
                         command=cmd, status=status, output="\n".join(last_lines))
    stream.write(f"{label} done in {time.monotonic() - start:.0f} s\n")
    stream.flush()


def _kill_group(proc: subprocess.Popen) -> None:
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
