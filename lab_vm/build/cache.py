"""Cache entries keyed by a hash of their inputs.

An entry is a directory ``<cache>/<kind>-<key>/``. It is valid only once the
file ``COMPLETE`` exists in it, written as the very last step of a build, so an
interrupted build never leaves an entry that looks valid (the next build
resumes in the same directory: make is incremental). The directory name is
final from the start because a kernel's DWARF records its build directory, and
gdb must find the sources there later.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
from pathlib import Path

from .. import paths
from ..errors import BuildError

LOG = logging.getLogger(__name__)
STAMP = "COMPLETE"


def digest(*parts) -> str:
    """A short stable hash of strings, bytes and file contents (Path objects)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            h.update(part.name.encode() + b"\0" + part.read_bytes())
        elif isinstance(part, bytes):
            h.update(part)
        else:
            h.update(str(part).encode())
        h.update(b"\0\0")
    return h.hexdigest()[:16]


class Entry:
    """One cache entry: ``path`` is its directory, ``valid`` whether it is complete."""

    def __init__(self, kind: str, key: str, root: Path | None = None) -> None:
        self.kind = kind
        self.key = key
        self.path = (root or paths.cache_dir()) / f"{kind}-{key}"

    @property
    def valid(self) -> bool:
        return (self.path / STAMP).is_file()

    def info(self) -> dict:
        """What was recorded when the entry was completed."""
        try:
            return json.loads((self.path / STAMP).read_text())
        except (OSError, ValueError) as exc:
            raise BuildError(f"the cache entry {self.path} has an unreadable {STAMP} ({exc}): "
                             f"rebuild it (remove the folder)") from exc

    def complete(self, **info) -> None:
        (self.path / STAMP).write_text(json.dumps(info, indent=1, sort_keys=True))

    def invalidate(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.path / STAMP).unlink()

    @contextlib.contextmanager
    def locked(self, timeout: float = 3600.0):
        """Hold an exclusive lock on the entry while building it (two builders wait, not race)."""
        import time

        lock_path = self.path.parent / f".{self.path.name}.lock"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = open(lock_path, "w")
        except OSError as exc:
            raise BuildError(f"the build cache {self.path.parent} is not usable ({exc}): set "
                             "VMEXIT_CACHE to a folder you can write") from exc
        with lock:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise BuildError(f"{lock_path} stayed locked for {timeout:.0f} s: another "
                                         "build holds it (wait for it, or remove the lock if "
                                         "none runs)") from None
                    LOG.info("waiting for another build of %s", self.path.name)
                    time.sleep(1.0)
            try:
                yield self
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def prune(kind: str, keep: int, root: Path | None = None) -> list[Path]:
    """Delete all but the ``keep`` most recently completed entries of ``kind``.

    Kernel trees are 2 GB each; without this every change of a config fragment
    would leave one behind. Incomplete entries are left alone: one may be
    building right now. Only entries of exactly ``kind`` count: keys hold no
    ``-``, so ``kernel-checking-<key>`` (another kind) is not a ``kernel`` entry.
    """
    import shutil

    base = root or paths.cache_dir()
    done = sorted((p for p in base.glob(f"{kind}-*")
                   if "-" not in p.name[len(kind) + 1:] and (p / STAMP).is_file()),
                  key=lambda p: (p / STAMP).stat().st_mtime, reverse=True)
    for old in done[keep:]:
        LOG.info("pruning the old cache entry %s", old)
        shutil.rmtree(old, ignore_errors=True)
    return done[keep:]
