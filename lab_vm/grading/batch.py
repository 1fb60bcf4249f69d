"""Batch grading (``scripts/grade``): a folder of submissions → grades.csv, grades.json, feedback.

Each entry of the submissions folder — a folder, ``.tar.gz``/``.tgz``/``.tar`` or ``.zip``
named after its student — is unpacked safely into a scratch folder, built in the
sandbox and tested in a VM of its own (runner.grade). Two are graded at once
(the machine has two cores), or many on a Dask cluster (dask_pool.py). Whatever
happens to one submission becomes its row — a verdict, never an exception that
stops the batch. Rows are written as they come and reused by a rerun
(store.py). The submissions folder is only read; everything written goes to
``out`` and to temporary folders, removed at the end.
"""
from __future__ import annotations

import concurrent.futures
import csv
import io
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TextIO

from ..build.kernel import Kernel
from ..errors import ConfigError
from . import results as R
from .archive import student_name
from .hostrun import require_kvm
from .lab import Lab
from .results import Report, format_report
from .runner import compile_helpers
from .runner import grading_kernel
from .sandbox import bwrap
from .sheets import RosterEntry, read_roster, write_sheets
from .store import ResultStore, content_hash, lab_hash, write_atomic
from .submission import Submission, grade_submission, safe_name, warm_up

LOG = logging.getLogger(__name__)


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


def grade_batch(lab: Lab, submissions: Path, out: Path, *, parallel: int = 2,
                workers: int | None = None, scheduler: str | None = None,
                roster: Path | None = None, regrade: bool = False,
                progress: TextIO | None = sys.stderr) -> list[tuple[Submission, Report]]:
    """Grade every submission in ``submissions``; write the grades and feedback into ``out``.

    Here ``parallel`` at a time, or on Dask: ``workers`` local worker processes, or the
    cluster of ``scheduler``. Each grade is written as soon as it is known (store.py);
    a submission graded before from the same inputs is not graded again (unless
    ``regrade``). ``roster`` maps submissions to student ids for the LMS sheet (sheets.py).
    """
    submissions, out = submissions.resolve(), out.resolve()
    if not submissions.is_dir():
        raise ConfigError(f"{submissions} is not a folder of submissions")
    if out == submissions or submissions in out.parents:
        raise ConfigError("--out must not be inside the submissions folder (it is never "
                          "written to)")
    roster_map = read_roster(roster) if roster is not None else None
    bwrap()                              # fail before grading anything if a tool is missing
    if lab.kind == "python":             # a VMM on the host: /dev/kvm, no kernel, no VM
        require_kvm()
    kernel = grading_kernel(lab)
    subs = discover(submissions)
    names = _feedback_files(subs)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out, lab_hash(lab, kernel.key if kernel else "none"))
    store.prune({name for name in names.values()})
    keys = {sub: content_hash(sub.entry) for sub in subs}
    graded: dict[Submission, Report] = {}
    for sub in subs:
        report = None if regrade else store.load(names[sub], sub.student, keys[sub])
        if report is not None and report.verdict != R.ERROR:   # the grader's failure: retry
            graded[sub] = report
    todo = [sub for sub in subs if sub not in graded]
    started = time.monotonic()
    where = (f"on the Dask cluster {scheduler}" if scheduler else
             f"on {workers} local Dask workers" if workers else f"{parallel} at a time")
    kept = f" ({len(graded)} graded before from the same inputs)" if graded else ""
    _say(progress, f"grading {len(todo)} of {len(subs)} submissions of {lab.name} "
         f"{where}{kept}")
    width = len(str(len(subs)))

    def finished(sub: Submission, report: Report) -> None:
        store.save(names[sub], sub.student, sub.entry.name, keys[sub], report,
                   feedback_text(lab, sub, report))
        graded[sub] = report
        _say(progress, f"[{len(graded):>{width}}/{len(subs)}] "
             f"{sub.student:<24} {report.verdict:<13} "
             f"{report.score:>3}/{report.max_score:<3} {report.duration:6.1f} s")

    if todo and (workers or scheduler):
        from .dask_pool import dask_client, grade_on_dask
        if not scheduler and lab.kind == "module":
            warm_up(lab, kernel=kernel)  # the local workers share this machine's saved state
        with dask_client(workers=workers, scheduler=scheduler) as client:
            grade_on_dask(client, lab, kernel, todo, finished, lab_key=store.lab_key)
    elif todo:
        _grade_here(lab, todo, finished, parallel=parallel, kernel=kernel)
    ordered = [(sub, graded[sub]) for sub in subs]
    for warning in write_results(lab, ordered, out, names=names, roster=roster_map):
        _say(progress, f"warning: {warning}")
    _say(progress, f"graded {len(todo)} submissions in {time.monotonic() - started:.1f} s; "
         f"results in {out}")
    return ordered


def _grade_here(lab: Lab, subs: list[Submission], finished, *, parallel: int,
                kernel: Kernel) -> None:
    """Grade on this machine, ``parallel`` at a time (threads: each waits on its VM)."""
    scratch_root = Path(tempfile.mkdtemp(prefix="vmexit-grade-"))
    try:
        helpers = compile_helpers(lab, scratch_root / "helpers")
        if lab.kind == "module":
            warm_up(lab, kernel=kernel)
        with concurrent.futures.ThreadPoolExecutor(parallel, "grade") as pool:
            futures = {pool.submit(grade_submission, lab, sub, scratch_root, kernel=kernel,
                                   helpers=helpers): sub for sub in subs}
            done: set = set()
            try:
                for future in concurrent.futures.as_completed(futures):
                    done.add(future)
                    finished(futures[future], future.result())
            except BaseException:
                # Ctrl-C: the gradings already running finish (their threads cannot be
                # stopped, and their VMs end with them); keep their rows, start no more.
                pool.shutdown(wait=True, cancel_futures=True)
                for future, sub in futures.items():
                    if future not in done and future.done() and not future.cancelled():
                        finished(sub, future.result())
                raise
    finally:
        shutil.rmtree(scratch_root, ignore_errors=True)


def feedback_text(lab: Lab, sub: Submission, report: Report) -> str:
    """What one student reads: the lab, the verdict, then the report ending in its score."""
    return (f"{lab.title} ({lab.name})\nstudent: {sub.student}\nverdict: {report.verdict}\n\n"
            f"{format_report(report)}\n")


def write_results(lab: Lab, graded: list[tuple[Submission, Report]], out: Path, *,
                  names: dict[Submission, str] | None = None,
                  roster: dict[str, RosterEntry] | None = None) -> list[str]:
    """grades.csv, grades.json, feedback/<student>.txt (if not written yet), the LMS sheet
    and the per-student feedback zips (sheets.py); returns the sheet's warnings."""
    tests = lab.tests()
    max_score = sum(t.points for t in tests)
    names = names or _feedback_files([sub for sub, _ in graded])
    rows = io.StringIO(newline="")
    writer = csv.writer(rows)
    writer.writerow(["student", *(t.name for t in tests), "total", "max", "verdict"])
    for sub, report in graded:
        points = {r.name: r.points for r in report.results}
        writer.writerow([sub.student, *(points.get(t.name, 0) for t in tests),
                         report.score, max_score, report.verdict])
    write_atomic(out / "grades.csv", rows.getvalue())
    data = {
        "lab": lab.name, "title": lab.title, "max": max_score,
        "tests": [{"name": t.name, "title": t.title, "points": t.points, "hidden": t.hidden}
                  for t in tests],
        "submissions": [{"student": sub.student, "entry": sub.entry.name,
                         "feedback": f"feedback/{names[sub]}.txt", **report.to_dict()}
                        for sub, report in graded],
    }
    write_atomic(out / "grades.json", json.dumps(data, indent=1) + "\n")
    for sub, report in graded:
        path = out / "feedback" / f"{names[sub]}.txt"
        if not path.is_file():
            write_atomic(path, feedback_text(lab, sub, report))
    return write_sheets(lab, [(sub.student, sub.entry.name, names[sub], report)
                              for sub, report in graded], out, roster=roster)


def _feedback_files(subs: list[Submission]) -> dict[Submission, str]:
    """A distinct, safe file name (without suffix) per student ("a b" and "a_b" must not
    share one): their feedback, row and zip are named after it."""
    names: dict[Submission, str] = {}
    used: set[str] = set()
    for sub in subs:
        base = name = safe_name(sub.student)
        n = 2
        while name.lower() in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name.lower())
        names[sub] = name
    return names


def _say(stream: TextIO | None, line: str) -> None:
    if stream is not None:
        print(line, file=stream, flush=True)
