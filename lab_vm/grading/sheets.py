"""Grade sheets an LMS imports, and each student's feedback zipped for upload.

``lms-grades.csv`` has one row per student in the column shape Canvas's
gradebook import reads (``Student``, ``ID``, ``SIS User ID``, ``SIS Login ID``,
``Section``, then one column per assignment: here the lab's total). Moodle's
"Import grades: CSV file" takes the same file: map ``SIS User ID`` (or
``SIS Login ID``) to the user field it holds (ID number, username or email)
and the lab's column to the grade item.

Who a submission belongs to comes from an optional roster CSV with a header
row and the columns ``submission`` (the submission's name as the grader reads
it: ``alice`` for ``alice.tar.gz`` or the folder ``alice/``; the file name
itself also matches) and ``id`` (what the LMS matches: SIS user id, username
or email), and optionally ``name``, ``login`` and ``section``. Without a roster
a submission's name is its id. A student with several submissions gets the
best total; a roster student with none gets an empty cell (an LMS import
leaves an empty cell alone); a submission the roster does not know is left
out of the sheet and reported.

``feedback-zips/<id>.zip`` holds that student's feedback file(s), one zip per
student, byte-identical from one run to the next.
"""
from __future__ import annotations

import csv
import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .results import Report

SHEET = "lms-grades.csv"
ZIPS = "feedback-zips"
COLUMNS = ["Student", "ID", "SIS User ID", "SIS Login ID", "Section"]
ZIP_TIME = (1980, 1, 1, 0, 0, 0)        # fixed: the same feedback gives the same zip


@dataclass(frozen=True)
class RosterEntry:
    id: str
    name: str = ""
    login: str = ""
    section: str = ""


def read_roster(path: Path) -> dict[str, RosterEntry]:
    """{submission name: student} from a roster CSV; errors name the file and the row."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")     # a spreadsheet's BOM is fine
    except OSError as exc:
        raise ConfigError(f"cannot read the roster {path}: {exc}") from exc
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip().lower() for h in reader.fieldnames or []]
    if "submission" not in header or "id" not in header:
        raise ConfigError(f"the roster {path} needs a header row with the columns "
                          f"'submission' and 'id' (it has {', '.join(header) or 'none'})")
    roster: dict[str, RosterEntry] = {}
    for n, row in enumerate(reader, start=2):
        row = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        sub, sid = row.get("submission", ""), row.get("id", "")
        if not sub or not sid:
            raise ConfigError(f"{path}, row {n}: 'submission' and 'id' must not be empty")
        if sub in roster:
            raise ConfigError(f"{path}, row {n}: the submission {sub!r} is listed twice")
        roster[sub] = RosterEntry(sid, row.get("name", ""), row.get("login", ""),
                                  row.get("section", ""))
    return roster


def write_sheets(lab, graded: list[tuple[str, str, str, Report]], out: Path, *,
                 roster: dict[str, RosterEntry] | None = None) -> list[str]:
    """Write the LMS sheet and the feedback zips for ``graded`` = [(student, entry file
    name, feedback name, report)]; returns warnings (submissions the roster lacks...)."""
    from .store import write_atomic

    warnings: list[str] = []
    best: dict[str, tuple[RosterEntry, int, list[str]]] = {}
    for student, entry, fname, report in graded:
        who = _who(student, entry, roster)
        if who is None:
            warnings.append(f"{student} ({entry}) is not in the roster: left out of {SHEET}")
            continue
        _, score, files = best.get(who.id, (who, -1, []))
        best[who.id] = (who, max(score, report.score), files + [fname])
    for sid in {w.id for w in (roster or {}).values()} - set(best):
        who = next(w for w in roster.values() if w.id == sid)
        best[sid] = (who, -1, [])
        warnings.append(f"{who.name or sid} has no submission: their cell is left empty")
    column = f"{lab.title} ({lab.name})"
    sheet = io.StringIO(newline="")
    writer = csv.writer(sheet)
    writer.writerow([*COLUMNS, column])
    for sid in sorted(best):
        who, score, _ = best[sid]
        writer.writerow([who.name or sid, "", sid, who.login, who.section,
                         score if score >= 0 else ""])
    write_atomic(out / SHEET, sheet.getvalue())

    zips = out / ZIPS
    zips.mkdir(exist_ok=True)
    wanted = set()
    for sid, (_, _, files) in best.items():
        if not files:
            continue
        name = f"{_safe(sid)}.zip"
        wanted.add(name)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for fname in files:
                info = zipfile.ZipInfo(f"{lab.name}-{fname}.txt" if len(files) > 1
                                       else f"{lab.name}-feedback.txt", ZIP_TIME)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, (out / "feedback" / f"{fname}.txt").read_bytes())
        write_atomic(zips / name, buf.getvalue())
    for old in zips.iterdir():
        if old.name not in wanted:
            old.unlink()
    return warnings


def _who(student: str, entry: str, roster: dict[str, RosterEntry] | None) -> RosterEntry | None:
    if roster is None:
        return RosterEntry(student)
    return roster.get(student) or roster.get(entry)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]", "_", name).lstrip(".") or "unnamed"
