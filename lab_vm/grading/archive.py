"""Taking a submission apart safely: a folder, a ``.tar.gz``/``.tgz``/``.tar`` or a ``.zip``.

Nothing in a submission is trusted. Members are never extracted by the
archive libraries (which would follow names like ``../x`` or ``/etc/x`` and
create links): each member is checked, then only regular files are written,
by us, under the destination. A name that is absolute or climbs out with
``..``, a link that points outside the submission, a device or FIFO, too many
files or too many bytes makes the whole submission a ``bad-archive``: an
instructor should look at it rather than have half of it graded. Links that
stay inside are allowed but not followed or recreated. The submission itself
(folder or archive) is only ever read.
"""
from __future__ import annotations

import logging
import os
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import LabVMError

LOG = logging.getLogger(__name__)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


class ArchiveError(LabVMError):
    """The submission is not a safe, readable archive or folder (verdict ``bad-archive``)."""


@dataclass(frozen=True)
class Limits:
    max_files: int = 500
    max_bytes: int = 20 << 20       # all files together
    max_file_bytes: int = 4 << 20   # one file
    max_depth: int = 16


def student_name(entry: Path) -> str:
    """``alice.tar.gz`` → ``alice``, ``bob.txt`` → ``bob``; a folder keeps its name."""
    name = entry.name
    if entry.is_dir():
        return name
    for suffix in ARCHIVE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[:-len(suffix)] or name
    return entry.stem or name


def unpack(entry: Path, dest: Path, limits: Limits = Limits()) -> list[Path]:
    """Copy or extract the submission ``entry`` into the empty folder ``dest``.

    Returns the regular files written (relative to ``dest``). Raises
    ArchiveError for anything unsafe or unreadable.
    """
    dest.mkdir(parents=True, exist_ok=True)
    writer = _Writer(dest, limits)
    if entry.is_symlink():
        raise ArchiveError(f"{entry.name} is a symbolic link, not a submission")
    if entry.is_dir():
        _copy_folder(entry, writer)
    elif entry.is_file():
        lower = entry.name.lower()
        if lower.endswith(".zip"):
            _extract_zip(entry, writer)
        elif lower.endswith((".tar.gz", ".tgz", ".tar")):
            _extract_tar(entry, writer)
        else:
            raise ArchiveError(f"{entry.name} is neither a folder nor a .tar.gz, .tgz, .tar "
                               "or .zip archive")
    else:
        raise ArchiveError(f"{entry.name} is not a regular file or folder")
    LOG.debug("%s: %d files, %d bytes", entry.name, len(writer.written), writer.total)
    return writer.written


class _Writer:
    """Writes checked members under ``dest`` and enforces the limits."""

    def __init__(self, dest: Path, limits: Limits) -> None:
        self.dest = dest
        self.limits = limits
        self.written: list[Path] = []
        self.total = 0

    def check_name(self, name: str) -> PurePosixPath:
        path = PurePosixPath(name.replace("\\", "/"))
        if path.is_absolute() or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise ArchiveError(f"the member {name!r} has an absolute path")
        if ".." in path.parts:
            raise ArchiveError(f"the member {name!r} climbs out of the archive with '..'")
        if len(path.parts) > self.limits.max_depth:
            raise ArchiveError(f"the member {name!r} is nested too deeply")
        return PurePosixPath(*[p for p in path.parts if p not in ("", ".")])

    def check_link(self, name: str, target: str) -> None:
        """A link may point only at something inside the archive."""
        if target.startswith("/") or not target:
            raise ArchiveError(f"the link {name!r} points outside the submission ({target!r})")
        resolved = PurePosixPath(name).parent
        for part in PurePosixPath(target).parts:
            if part == "..":
                if not resolved.parts:
                    raise ArchiveError(f"the link {name!r} points outside the submission "
                                       f"({target!r})")
                resolved = resolved.parent
            elif part != ".":
                resolved = resolved / part

    def add(self, name: str, size: int, read) -> None:
        """Write one regular file; ``read(n)`` returns at most n bytes of its contents."""
        rel = self.check_name(name)
        if not rel.parts:
            return
        if len(self.written) >= self.limits.max_files:
            raise ArchiveError(f"the submission holds more than {self.limits.max_files} files")
        if size > self.limits.max_file_bytes:
            raise ArchiveError(f"{name!r} is {size} bytes, over the limit of "
                               f"{self.limits.max_file_bytes}")
        data = read(self.limits.max_file_bytes + 1)
        if len(data) > self.limits.max_file_bytes:
            raise ArchiveError(f"{name!r} is over the limit of {self.limits.max_file_bytes} bytes")
        self.total += len(data)
        if self.total > self.limits.max_bytes:
            raise ArchiveError(f"the submission holds more than {self.limits.max_bytes} bytes")
        target = self.dest.joinpath(*rel.parts)
        # A member named like an earlier folder (or the reverse) is refused, not merged.
        for parent in reversed(target.parents):
            if parent.is_symlink() or (parent.exists() and not parent.is_dir()):
                raise ArchiveError(f"the member {name!r} goes through a non-folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(target, "xb") as out:     # "x": never overwrite, never follow a link
                out.write(data)
        except FileExistsError:
            raise ArchiveError(f"the member {name!r} appears twice") from None
        self.written.append(target.relative_to(self.dest))


def _copy_folder(root: Path, writer: _Writer) -> None:
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                writer.check_link(rel, os.readlink(path))
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    writer.add(rel, st.st_size, f.read)
            elif not stat.S_ISDIR(st.st_mode):
                raise ArchiveError(f"{rel!r} is a device, socket or FIFO")
        dirnames[:] = sorted(d for d in dirnames if not (here / d).is_symlink())


def _extract_tar(path: Path, writer: _Writer) -> None:
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                writer.check_name(member.name)
                if member.issym() or member.islnk():
                    # A hard link's target is a member name; a symlink's is relative to its dir.
                    target = member.linkname
                    if member.islnk():
                        writer.check_name(target)
                    else:
                        writer.check_link(member.name, target)
                elif member.isreg():
                    f = tar.extractfile(member)
                    assert f is not None
                    writer.add(member.name, member.size, f.read)
                elif not member.isdir():
                    raise ArchiveError(f"the member {member.name!r} is a device or FIFO")
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise ArchiveError(f"{path.name} is not a readable tar archive: {exc}") from None


def _extract_zip(path: Path, writer: _Writer) -> None:
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                writer.check_name(info.filename)
                mode = info.external_attr >> 16
                if stat.S_ISLNK(mode):
                    with zf.open(info) as f:
                        writer.check_link(info.filename, f.read(4096).decode(errors="replace"))
                elif info.is_dir():
                    continue
                elif stat.S_IFMT(mode) not in (0, stat.S_IFREG):   # 0: made on a non-Unix
                    raise ArchiveError(f"the member {info.filename!r} is a device or FIFO")
                else:
                    with zf.open(info) as f:
                        writer.add(info.filename, info.file_size, f.read)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            NotImplementedError) as exc:
        raise ArchiveError(f"{path.name} is not a readable zip archive: {exc}") from None
