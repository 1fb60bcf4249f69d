"""Batch grading (``scripts/grade``): a folder of submissions → grades.csv, grades.json, feedback.

Each entry of the submissions folder — a folder, ``.tar.gz``/``.tgz``/``.tar`` or ``.zip``
named after its student — is unpacked safely into a scratch folder, built in the
sandbox and tested in a VM of its own (runner.grade). Two are graded at once
(the machine has two cores). Whatever happens to one submission becomes its
row — a verdict, never an exception that stops the batch. The submissions
folder is only read; everything written goes to ``out`` and to one temporary
folder, removed at the end.
"""
from __future__ import annotations

import concurrent.futures
import csv
import json
import logging
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..build.kernel import Kernel
from ..errors import ConfigError
from ..machine import LabVM
from . import results as R
from .archive import ArchiveError, student_name, unpack
from .hostrun import require_kvm
from .lab import Lab
from .results import Report, TestResult, format_report
from .runner import CHECKING_BOOT_TIMEOUT, compile_helpers, grade, grading_kernel
from .sandbox import bwrap

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Submission:
    student: str
    entry: Path


def discover(folder: Path) -> list[Submission]:
    """The submissions in ``folder``, sorted; dot-files are skipped, names made unique."""
    subs: list[Submission] = []
    seen: set[str] = set()
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        name = student_name(entry)
        if name in seen:                 # alice/ and alice.zip: keep both, distinctly
            name = entry.name
        seen.add(name)
        subs.append(Submission(name, entry))
    return subs


def grade_submission(lab: Lab, sub: Submission, scratch_root: Path, *, kernel: Kernel | None,
                     helpers: dict[str, Path]) -> Report:
    """One submission → its Report; never raises (a grader failure is the verdict ``error``)."""
    start = time.monotonic()
    blank = [TestResult(s.name, s.title, s.points, s.hidden) for s in lab.tests()]
    scratch = Path(tempfile.mkdtemp(prefix=f"{_safe(sub.student)}-", dir=scratch_root))
    try:
        try:
            unpack(sub.entry, scratch / "submission")
        except ArchiveError as exc:
            return Report(lab.name, R.BAD_ARCHIVE, blank, exc.message,
                          duration=time.monotonic() - start)
        return grade(lab, scratch / "submission", scratch, kernel=kernel, helpers=helpers,
                     name=f"grade-{_safe(sub.student)}")
    except Exception as exc:     # noqa: BLE001 — one submission must never stop the batch
        LOG.exception("grading %s failed", sub.student)
        return Report(lab.name, R.ERROR, blank, f"{type(exc).__name__}: {exc}",
                      duration=time.monotonic() - start)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def grade_batch(lab: Lab, submissions: Path, out: Path, *, parallel: int = 2,
                progress: TextIO | None = sys.stderr) -> list[tuple[Submission, Report]]:
    """Grade every submission in ``submissions``; write the grades and feedback into ``out``."""
    submissions, out = submissions.resolve(), out.resolve()
    if not submissions.is_dir():
        raise ConfigError(f"{submissions} is not a folder of submissions")
    if out == submissions or submissions in out.parents:
        raise ConfigError("--out must not be inside the submissions folder (it is never "
                          "written to)")
    bwrap()                              # fail before grading anything if a tool is missing
    if lab.kind == "python":             # a VMM on the host: /dev/kvm, no kernel, no VM
        require_kvm()
    # the checking kernel unless lab.toml says "fast"
    kernel = grading_kernel(lab) if lab.kind == "module" else None
    subs = discover(submissions)
    out.mkdir(parents=True, exist_ok=True)
    graded: dict[Submission, Report] = {}
    started = time.monotonic()
    _say(progress, f"grading {len(subs)} submissions of {lab.name}, {parallel} at a time")
    scratch_root = Path(tempfile.mkdtemp(prefix="vmexit-grade-"))
    try:
        helpers = compile_helpers(lab, scratch_root / "helpers")
        if lab.kind == "module":
            _warm_up(lab, kernel)
        with concurrent.futures.ThreadPoolExecutor(parallel, "grade") as pool:
            futures = {pool.submit(grade_submission, lab, sub, scratch_root, kernel=kernel,
                                   helpers=helpers): sub for sub in subs}
            try:
                for future in concurrent.futures.as_completed(futures):
                    sub = futures[future]
                    report = graded[sub] = future.result()
                    _say(progress, f"[{len(graded):>{len(str(len(subs)))}}/{len(subs)}] "
                         f"{sub.student:<24} {report.verdict:<13} "
                         f"{report.score:>3}/{report.max_score:<3} {report.duration:6.1f} s")
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    finally:
        shutil.rmtree(scratch_root, ignore_errors=True)
    ordered = [(sub, graded[sub]) for sub in subs]
    write_results(lab, ordered, out)
    _say(progress, f"graded {len(subs)} submissions in {time.monotonic() - started:.1f} s; "
         f"results in {out}")
    return ordered


def _warm_up(lab: Lab, kernel: Kernel | None = None) -> None:
    """Boot the grading VM once, alone, so that a saved booted state exists before two
    workers start: two first boots at once would both save the state, into the same file.
    (The lab's devices are hot-plugged after the restore: runner._Guest.)"""
    try:
        with LabVM(name="grade-warm-up", cpus=lab.cpus, memory=lab.memory, kernel=kernel,
                   boot_timeout=CHECKING_BOOT_TIMEOUT) as vm:
            vm.run("true", timeout=30, check=True)
    except Exception as exc:    # noqa: BLE001 — each submission then reports what fails
        LOG.warning("the lab VM did not start for the warm-up: %s", exc)


def write_results(lab: Lab, graded: list[tuple[Submission, Report]], out: Path) -> None:
    """grades.csv, grades.json and feedback/<student>.txt."""
    tests = lab.tests()
    max_score = sum(t.points for t in tests)
    files = _feedback_files([sub for sub, _ in graded])
    with open(out / "grades.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student", *(t.name for t in tests), "total", "max", "verdict"])
        for sub, report in graded:
            points = {r.name: r.points for r in report.results}
            writer.writerow([sub.student, *(points.get(t.name, 0) for t in tests),
                             report.score, max_score, report.verdict])
    data = {
        "lab": lab.name, "title": lab.title, "max": max_score,
        "tests": [{"name": t.name, "title": t.title, "points": t.points, "hidden": t.hidden}
                  for t in tests],
        "submissions": [{"student": sub.student, "entry": sub.entry.name,
                         "feedback": f"feedback/{files[sub]}", **report.to_dict()}
                        for sub, report in graded],
    }
    (out / "grades.json").write_text(json.dumps(data, indent=1) + "\n")
    feedback = out / "feedback"
    feedback.mkdir(exist_ok=True)
    for sub, report in graded:
        (feedback / files[sub]).write_text(
            f"{lab.title} ({lab.name})\nstudent: {sub.student}\nverdict: {report.verdict}\n\n"
            f"{format_report(report)}\n")


def _feedback_files(subs: list[Submission]) -> dict[Submission, str]:
    """A distinct, safe file name per student ("a b" and "a_b" must not share one)."""
    names: dict[Submission, str] = {}
    used: set[str] = set()
    for sub in subs:
        base = name = _safe(sub.student)
        n = 2
        while name.lower() in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name.lower())
        names[sub] = f"{name}.txt"
    return names


def _safe(name: str) -> str:
    """A student name as a file name: no separators, no dot-files."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "unnamed"


def _say(stream: TextIO | None, line: str) -> None:
    if stream is not None:
        print(line, file=stream, flush=True)
