"""What grading a working copy produced: per-test results, a verdict, and how to print them."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

# The verdicts, in the order a run can end. "ok" means every test ran (whatever it scored).
OK, COMPILE_ERROR, PANIC, TIMEOUT, NO_OUTPUT, BAD_ARCHIVE = (
    "ok", "compile-error", "panic", "timeout", "no-output", "bad-archive")
ERROR = "error"     # the grader itself failed (not the student's doing); the message says why
CRASH = "crash"     # a Python lab: the student's code raised or its process died
VERDICTS = (OK, COMPILE_ERROR, PANIC, TIMEOUT, NO_OUTPUT, BAD_ARCHIVE, ERROR, CRASH)
DETAIL_CAP = 8000   # characters of compiler output / console excerpt kept in a report


@dataclass
class TestResult:
    __test__ = False        # not a pytest test class, despite its name

    name: str
    title: str
    max_points: int
    hidden: bool = False
    points: int = 0
    status: str = "not run"     # "pass", "fail", "error" (the VM broke during it), "not run"
    message: str = ""
    fix: str = ""
    duration: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "pass"


@dataclass
class Report:
    """The outcome for one working copy (or submission)."""

    lab: str
    verdict: str
    results: list[TestResult]
    detail: str = ""            # compiler errors, the oops excerpt, the archive problem...
    warnings: list[str] = field(default_factory=list)
    duration: float = 0.0

    @property
    def score(self) -> int:
        return sum(r.points for r in self.results)

    @property
    def max_score(self) -> int:
        return sum(r.max_points for r in self.results)

    @property
    def full_marks(self) -> bool:
        return self.verdict == OK and self.score == self.max_score

    def to_dict(self) -> dict:
        data = asdict(self)
        data.update(score=self.score, max_score=self.max_score)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Report":
        """The inverse of :meth:`to_dict` (a row read back from disk, or from a Dask worker)."""
        fields = set(TestResult.__dataclass_fields__)
        return cls(data["lab"], data["verdict"],
                   [TestResult(**{k: v for k, v in r.items() if k in fields})
                    for r in data["results"]],
                   data.get("detail", ""), list(data.get("warnings", [])),
                   data.get("duration", 0.0))


def cap(text: str, limit: int = DETAIL_CAP) -> str:
    """At most ``limit`` characters, keeping the start and the end (where panics end)."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n[... {len(text) - limit} characters left out ...]\n{text[-half:]}"


VERDICT_TEXT = {
    OK: "all tests ran",
    COMPILE_ERROR: "the module does not compile",
    PANIC: "the guest kernel panicked (an oops in the module)",
    TIMEOUT: "the guest stopped answering (a command did not finish in time)",
    NO_OUTPUT: "nothing to test: no source file or no module came out of the build",
    BAD_ARCHIVE: "the submission could not be taken apart safely",
    ERROR: "the grader failed",
    CRASH: "your code raised an exception or its process died (the traceback says where)",
}


def format_report(report: Report, *, width: int = 62) -> str:
    """Human-readable: one line per test, failures explained, ``Score: X/Y`` as the last line."""
    out = []
    for r in report.results:
        label = f"{r.title}{' (hidden)' if r.hidden else ''} "
        state = {"pass": "OK", "fail": "FAIL", "error": "ERROR"}.get(r.status, "NOT RUN")
        out.append(f"{label:.<{width}} {state:<7} {r.points:>3}/{r.max_points:<3}"
                   f" ({r.duration:.1f} s)")
        if r.status != "pass":
            out.extend("    " + line for line in r.message.splitlines())
            if r.fix:
                out.append(f"    fix: {r.fix}")
    if report.verdict != OK:
        out.append("")
        out.append(f"verdict: {report.verdict} — {VERDICT_TEXT.get(report.verdict, '')}")
        if report.detail:
            out.extend("    " + line for line in cap(report.detail).splitlines())
    for warning in report.warnings[:10]:
        out.append(f"warning: {warning}")
    out.append(f"Score: {report.score}/{report.max_score}")
    return "\n".join(out)
