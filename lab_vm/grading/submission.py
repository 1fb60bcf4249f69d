"""Grade one submission: unpack it safely, then build and test it (runner.grade).

What a grading worker does per task, whether scripts/grade runs it in a thread here or a Dask
worker runs it on another machine (dask_pool.py); batch.py only schedules and writes rows.
"""
from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..build.kernel import Kernel
from ..vm.machine import LabVM
from . import results as R
from .archive import ArchiveError, unpack
from .lab import Lab
from .results import Report, TestResult
from .runner import CHECKING_BOOT_TIMEOUT, grade

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    student: str
    entry: Path


def grade_submission(lab: Lab, sub: Submission, scratch_root: Path, *, kernel: Kernel | None,
                     helpers: dict[str, Path]) -> Report:
    """One submission → its Report; never raises (a grader failure is the verdict ``error``)."""
    start = time.monotonic()
    blank = [TestResult(s.name, s.title, s.points, s.hidden) for s in lab.tests()]
    scratch = Path(tempfile.mkdtemp(prefix=f"{safe_name(sub.student)}-", dir=scratch_root))
    try:
        try:
            unpack(sub.entry, scratch / "submission")
        except ArchiveError as exc:
            return Report(lab.name, R.BAD_ARCHIVE, blank, exc.message,
                          duration=time.monotonic() - start)
        return grade(lab, scratch / "submission", scratch, kernel=kernel, helpers=helpers,
                     name=f"grade-{safe_name(sub.student)}")
    except Exception as exc:     # noqa: BLE001 — one submission must never stop the batch
        LOG.exception("grading %s failed", sub.student)
        return Report(lab.name, R.ERROR, blank, f"{type(exc).__name__}: {exc}",
                      duration=time.monotonic() - start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def warm_up(lab: Lab, *, kernel: Kernel | None = None) -> None:
    """Boot the grading VM once, alone, so that a saved booted state exists before two
    workers start: two first boots at once would both save the state, into the same file.
    (The lab's devices are hot-plugged after the restore: runner._Guest.)"""
    try:
        checking = kernel is not None and kernel.variant is not None
        with LabVM(name="grade-warm-up", cpus=lab.cpus, memory=lab.memory, kernel=kernel,
                   boot_timeout=CHECKING_BOOT_TIMEOUT if checking else 60.0) as vm:
            vm.run("true", timeout=30, check=True)
    except Exception as exc:    # noqa: BLE001 — each submission then reports what fails
        LOG.warning("the lab VM did not start for the warm-up: %s", exc)


def safe_name(name: str) -> str:
    """A student name as a file name: no separators, no dot-files."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "unnamed"
