"""Streamed, resumable results: one row file per graded submission, written as it finishes.

A batch writes ``rows/<name>.json`` and ``feedback/<name>.txt`` for each
submission the moment its grade is known, each atomically (a temporary file in
the same folder, then ``rename``), feedback first: a row on disk always has its
feedback, and an interrupted batch (Ctrl-C, a lost machine) keeps every grade
it finished. A row carries two keys: the hash of the submission's content and
the hash of everything else its grade depends on (the lab's checker and the
files beside it, build files, helpers and settings, the private tests, the
kernel it was built against). A rerun into the same folder reuses a row whose keys both match and
grades the rest, so it grades only what is missing or whose input changed (and what the
grader itself failed on: batch.py retries the verdict ``error``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from .results import Report

LOG = logging.getLogger(__name__)
ROWS = "rows"
FEEDBACK = "feedback"
# Bumped when grading itself changes in a way that changes grades (old rows are then stale).
GRADER_VERSION = "1"
HASH_CAP = 64 << 20     # bytes of a folder's contents read; past that, sizes and times stand in


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write ``path`` whole or not at all: a reader sees the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def content_hash(entry: Path) -> str:
    """sha256 of a submission as the grader would read it: an archive's bytes, or a folder's
    tree (names, kinds, link targets, contents), never following links."""
    h = hashlib.sha256()
    if entry.is_file() and not entry.is_symlink():
        with open(entry, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()
    if entry.is_symlink() or not entry.is_dir():
        h.update(f"other {entry.is_symlink() and os.readlink(entry)}".encode())
        return h.hexdigest()
    budget = HASH_CAP
    for dirpath, dirnames, filenames in os.walk(entry, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames
                                        if os.path.islink(os.path.join(dirpath, d))]):
            path = Path(dirpath, name)
            rel = path.relative_to(entry).as_posix()
            st = path.lstat()
            if path.is_symlink():
                h.update(f"L {rel} -> {os.readlink(path)}\0".encode())
            elif path.is_file() and st.st_size <= budget:
                budget -= st.st_size
                h.update(f"F {rel} {st.st_size}\0".encode())
                h.update(path.read_bytes())
            else:
                h.update(f"? {rel} {st.st_mode} {st.st_size} {st.st_mtime_ns}\0".encode())
    return h.hexdigest()


def lab_hash(lab, kernel_key: str) -> str:
    """sha256 of what a grade depends on besides the submission."""
    from .private import private_files

    h = hashlib.sha256(f"grader {GRADER_VERSION}\0kernel {kernel_key}\0".encode())
    # The checker's whole folder: a checker reads files beside it (lab 1's guests/*.S).
    beside = sorted(p for p in lab.checker.parent.rglob("*")
                    if p.is_file() and "__pycache__" not in p.parts)
    files = [lab.root / "lab.toml", lab.checker, *beside, *lab.helpers,
             *(lab.build_file(name) for name in lab.build)]
    if lab.private_tests is not None:
        files += private_files(lab.private_tests)
    seen: set[Path] = set()
    for path in files:
        if path in seen:
            continue
        seen.add(path)
        name = path.relative_to(lab.root) if path.is_relative_to(lab.root) else path.name
        h.update(f"{name}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()


class ResultStore:
    """The rows and feedback files of one results folder."""

    def __init__(self, out: Path, lab_key: str) -> None:
        self.out = out
        self.lab_key = lab_key
        self.rows = out / ROWS
        self.feedback = out / FEEDBACK

    def load(self, name: str, student: str, sub_key: str) -> Report | None:
        """The stored report of ``student`` if it was graded from the same inputs."""
        path = self.rows / f"{name}.json"
        try:
            row = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            LOG.warning("%s is unreadable (%s): grading %s again", path, exc, student)
            return None
        if (row.get("student"), row.get("submission_hash"), row.get("lab_hash")) != \
                (student, sub_key, self.lab_key):
            return None
        if not (self.feedback / f"{name}.txt").is_file():
            return None
        try:
            return Report.from_dict(row["report"])
        except (KeyError, TypeError) as exc:
            LOG.warning("%s is not a row (%s): grading %s again", path, exc, student)
            return None

    def save(self, name: str, student: str, entry: str, sub_key: str, report: Report,
             feedback: str) -> None:
        """Write the feedback, then the row (so that a row always has its feedback)."""
        write_atomic(self.feedback / f"{name}.txt", feedback)
        row = {"student": student, "entry": entry, "submission_hash": sub_key,
               "lab_hash": self.lab_key, "report": report.to_dict()}
        write_atomic(self.rows / f"{name}.json", json.dumps(row, indent=1) + "\n")

    def prune(self, names: set[str]) -> None:
        """Remove the rows and feedback of submissions no longer in the folder, and the
        temporary files of a writer that was killed mid-write."""
        for folder, suffix in ((self.rows, ".json"), (self.feedback, ".txt")):
            if folder.is_dir():
                for path in folder.iterdir():
                    if path.name.startswith(".") and path.name.endswith(".tmp"):
                        path.unlink()
                    elif path.suffix == suffix and path.stem not in names:
                        LOG.info("removing %s: no such submission any more", path)
                        path.unlink()
