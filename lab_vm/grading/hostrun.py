"""Grade a lab whose code runs on the host: a Python VMM over /dev/kvm (``kind = "python"``).

The student's Python is untrusted, so it runs where a module lab's compiler
runs: in the bubblewrap sandbox (sandbox.py), with ``/dev/kvm`` passed in and
nothing else of the host. What it sees: the system's programs read only, the
Python installation this package runs on (read only), ``lab_vm.baremetal.tinyvmm`` alone
(a package of one module: nothing else of lab_vm is needed, nor wanted) and a
fresh folder per run holding the student's sources, the lab's harness (the
first ``build`` file of lab.toml, never the student's) and the guest program.
No network, a wall-clock timeout per run.

The steps, and the verdict each can end in:

1. take the lab's source files from the copy; none → ``no-output``
2. the harness imports them (``--check``) in the sandbox: a syntax error, a failing
   import or a missing name → ``compile-error``, with Python's own message
3. each test runs guest programs under the student's VMM, each run a fresh
   process: the harness prints one JSON line (what the guest sent, the registers
   at the end, how the run stopped). An exception in the student's code → the test
   is an error and the verdict ``crash`` (with the traceback); code that never
   returns → ``timeout``, with the stack where it was stuck (Python's faulthandler).
   Each run is a new process, so the next tests still run.

Where /dev/kvm is missing or cannot be used, :func:`require_kvm` says so and
nothing is graded: that is the machine's problem, not the student's.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..baremetal import tinyvmm
from ..errors import ConfigError, GuestTimeout, LabVMError, ModuleBuildError
from . import results as R
from .checker import TestFailure, TestSpec
from .lab import Lab
from .results import Report, TestResult, cap
from .sandbox import INSIDE, Sandbox
from .sources import NoModule, prepare

LOG = logging.getLogger(__name__)
KVM_DEVICE = "/dev/kvm"
MARKER = "@@run_guest@@ "          # the harness's result line (labs/01-uart/solution/run_guest.py)
CRASHED, BROKEN, NO_KVM = 3, 4, 5  # the harness's exit statuses
CHECK_TIMEOUT = 30.0               # seconds for the import check
RUN_MARGIN = 5.0                   # seconds the sandbox gives a run beyond the harness's own
TIMEOUT_DUMP = re.compile(r"^Timeout \(\d+:\d+:\d+\)!$", re.M)   # faulthandler's first line
MEMORY = 1 << 30                   # address space of a run: Python, the guest's RAM, the harness


class KVMMissing(ConfigError):
    """/dev/kvm cannot be used here, so a VMM lab cannot be graded or checked."""


class VMMCrash(LabVMError):
    """The student's code raised (``output`` holds the traceback) or its process died."""


class VMMHang(GuestTimeout):
    """The student's code did not return in time; ``output`` holds where it was stuck."""


def require_kvm(device: str | None = None) -> None:
    """Raise KVMMissing, saying why and what to do, unless ``device`` can run a VM."""
    device = device or KVM_DEVICE
    problem = tinyvmm.kvm_problem(device)
    if problem:
        raise KVMMissing(
            f"this lab runs your VMM on {device}, which cannot be used here: {problem}. "
            "Check it on a Linux machine with KVM (`ls -l /dev/kvm`; in a VM, enable nested "
            "virtualization); nothing was graded.")


@dataclass
class GuestRun:
    """What one run of a guest program under the student's VMM produced."""

    tx: bytes                       # every byte the guest sent through the UART
    stop: str | None                # the exit that ended the run (KVM_EXIT_HLT...), or None
    runaway: str | None             # why the run was stopped from outside, if it was
    exits: int
    regs: dict[str, int]            # rax, rbx, ... at the end
    last_exits: list[str] = field(default_factory=list)
    log: str = ""                   # what the VMM printed (and -v output)
    seconds: float = 0.0

    @property
    def halted(self) -> bool:
        return self.stop == "KVM_EXIT_HLT"

    def reg(self, name: str) -> int:
        """A 16-bit register (``ax`` ... ``di``) or a byte of one (``al``, ``ah`` ... ``dh``)."""
        if len(name) == 2 and name[0] in "abcd" and name[1] in "lh":
            return self.regs[f"r{name[0]}x"] >> (8 if name[1] == "h" else 0) & 0xFF
        return self.regs[f"r{name}"] & 0xFFFF

    def describe(self) -> str:
        """How the run ended and its last exits, for a failure message."""
        how = f"stopped at {self.stop}" if self.stop else f"was stopped: {self.runaway}"
        lines = [f"the guest made {self.exits} exits and {how}; it sent {self.tx[:200]!r}"]
        if self.last_exits:
            lines.append("its last exits:")
            lines += [f"    {line}" for line in self.last_exits]
        return "\n".join(lines)


class Runtime:
    """The read-only things every sandboxed run sees: the Python and ``lab_vm.baremetal.tinyvmm``
    (alone in its package)."""

    def __init__(self, scratch: Path) -> None:
        self.python = Path(os.path.realpath(sys.executable))
        self.prefix = Path(sys.base_prefix).resolve()
        self.pylib = scratch / "pylib"
        package = self.pylib / "lab_vm" / "baremetal"
        package.mkdir(parents=True, exist_ok=True)
        for init in (package.parent / "__init__.py", package / "__init__.py"):
            init.write_text('"""Only lab_vm.baremetal.tinyvmm, for a sandboxed VMM."""\n')
        shutil.copyfile(Path(tinyvmm.__file__), package / "tinyvmm.py")

    @property
    def readonly(self) -> list[Path]:
        under_usr = self.prefix == Path("/usr") or Path("/usr") in self.prefix.parents
        return [self.pylib] + ([] if under_usr else [self.prefix])

    def command(self, harness: str, *args: str) -> list[str]:
        return ["env", f"PYTHONPATH={self.pylib}", "PYTHONDONTWRITEBYTECODE=1",
                str(self.python), "-s", harness, *args]


def harness_name(lab: Lab) -> str:
    if not lab.build:
        raise ConfigError(f"{lab.root / 'lab.toml'}: a Python lab names its harness first in "
                          "build = [...]")
    return lab.build[0]


def import_check(lab: Lab, work: Path, runtime: Runtime, *, timeout: float) -> None:
    """The harness imports the student's code in the sandbox; ModuleBuildError if it cannot."""
    cmd = runtime.command(harness_name(lab), "--check")
    result = Sandbox(work, readonly=runtime.readonly, memory=MEMORY).run(cmd, timeout=timeout)
    output = result.output.replace(f"{INSIDE}/", "")
    if result.timed_out:
        raise ModuleBuildError(f"importing {', '.join(lab.sources)} took over {timeout:g} s",
                               command=cmd, output=output,
                               errors=[f"importing your code took over {timeout:g} s: does "
                                       "it run something at import time?"])
    if result.status != 0:
        raise ModuleBuildError(f"{', '.join(lab.sources)} does not import", command=cmd,
                               status=result.status, output=output,
                               errors=output.strip().splitlines()[-20:])


class HostSession:
    """What a test of a Python lab gets: ``t.run(guest, rx=...)`` runs the student's VMM.

    ``guest`` is GNU as source text (16-bit, ``.code16``) or the path of a ``.S``
    file; the harness assembles it inside the sandbox. Each run is a new process
    in a fresh folder, so one run cannot leave anything for the next.
    """

    def __init__(self, lab: Lab, work: Path, runtime: Runtime, scratch: Path, *,
                 deadline: float) -> None:
        self.lab, self.work, self.runtime, self.scratch = lab, work, runtime, scratch
        self.deadline = deadline
        self.runs = 0

    def run(self, guest: str | Path, *, rx: bytes = b"", max_exits: int = 20000,
            timeout: float = 10.0) -> GuestRun:
        left = self.deadline - time.monotonic() - RUN_MARGIN
        if left <= 1:
            raise VMMHang("the test ran out of time before its next guest run")
        timeout = min(timeout, left)
        self.runs += 1
        folder = self.scratch / f"run-{self.runs}"
        shutil.copytree(self.work, folder)
        source = Path(guest).read_text() if isinstance(guest, Path) else guest
        (folder / "guest.S").write_text(source)
        cmd = self.runtime.command(harness_name(self.lab), "guest.S", "--json",
                                   "--rx-hex", rx.hex(), "--max-exits", str(max_exits),
                                   "--timeout", f"{timeout:g}")
        sandbox = Sandbox(folder, readonly=self.runtime.readonly, devices=[KVM_DEVICE],
                          memory=MEMORY)
        result = sandbox.run(cmd, timeout=timeout + RUN_MARGIN)
        shutil.rmtree(folder, ignore_errors=True)
        output = result.output.replace(f"{INSIDE}/", "")
        lines = output.splitlines()
        log = "\n".join(line for line in lines if not line.startswith(MARKER))
        if result.timed_out or TIMEOUT_DUMP.search(output):
            raise VMMHang(f"your VMM did not return within {timeout:g} s (a loop in your code; "
                          "the stack below shows where it was)", output=cap(log, 4000))
        if result.status == NO_KVM:
            raise KVMMissing(f"the VMM could not use {KVM_DEVICE} in the sandbox:\n{log}")
        if result.status != 0:
            why = {CRASHED: "your code raised an exception",
                   BROKEN: "uart.py no longer has what the harness calls"}.get(
                       result.status, f"the VMM process ended with status {result.status}"
                       " (killed: a crash in C code, or over its memory limit)")
            raise VMMCrash(why, status=result.status,
                           output=cap(_student_frames(log, self.lab.sources), 4000))
        found = [line for line in lines if line.startswith(MARKER)]
        if not found:
            raise VMMCrash("the harness printed no result (did your code end the process?)",
                           output=cap(log, 4000))
        data = json.loads(found[-1][len(MARKER):])
        return GuestRun(bytes.fromhex(data["tx"]), data["stop"], data["runaway"],
                        data["exits"], data["regs"], data["last_exits"], log,
                        data["seconds"])


def _student_frames(log: str, sources: tuple[str, ...]) -> str:
    """A traceback without the harness's and tinyvmm's frames: where the student's code failed."""
    out, skip = [], False
    for line in log.splitlines():
        frame = re.match(r'\s*File "([^"]+)", line', line)
        if frame:
            skip = Path(frame.group(1)).name not in sources
        elif not line.startswith("    "):
            skip = False
        if not skip:
            out.append(line)
    return "\n".join(out)


def run_tests(lab: Lab, work: Path, runtime: Runtime, scratch: Path, tests: list[TestSpec], *,
              deadline: float, name: str) -> tuple[list[TestResult], str, str]:
    """Every test, each with its own runs; (results, verdict, detail of the first bad run)."""
    results = [TestResult(s.name, s.title, s.points, s.hidden) for s in tests]
    verdict, detail = R.OK, ""
    for spec, res in zip(tests, results):
        start = time.monotonic()
        if start >= deadline:
            res.message = f"not run: the submission used up its {lab.submission_timeout:g} s"
            if verdict == R.OK:
                verdict, detail = R.TIMEOUT, res.message
            continue
        session = HostSession(lab, work, runtime, scratch,
                              deadline=min(start + (spec.timeout or lab.test_timeout), deadline))
        try:
            spec.func(session)
            res.status, res.points = "pass", res.max_points
        except TestFailure as failure:
            res.status, res.message, res.fix = "fail", failure.message, failure.fix
        except VMMHang as exc:
            res.status, res.message = "error", f"timed out: {exc.message}\n{exc.output}"
            if verdict == R.OK:
                verdict, detail = R.TIMEOUT, f"in the test {spec.title!r}: {exc.message}\n" \
                    f"{exc.output}"
        except VMMCrash as exc:
            res.status, res.message = "error", f"{exc.message}:\n{exc.output}"
            if verdict == R.OK:
                verdict, detail = R.CRASH, f"in the test {spec.title!r}: {exc.message}\n" \
                    f"{exc.output}"
        except LabVMError:
            raise
        except Exception as exc:        # a bug in the checker: the student is not to blame
            LOG.exception("the test %s raised", spec.name)
            res.status = "error"
            res.message = f"the checker itself failed: {type(exc).__name__}: {exc}"
        finally:
            res.duration = time.monotonic() - start
        LOG.info("%s: %s: %s (%.1f s)", name, spec.name, res.status, res.duration)
    return results, verdict, detail


def grade(lab: Lab, tree: Path, scratch: Path, tests: list[TestSpec], *,
          name: str = "grade") -> Report:
    """Grade the working copy ``tree`` of a Python lab (read only) into ``scratch``."""

    start = time.monotonic()
    deadline = start + lab.submission_timeout
    blank = [TestResult(s.name, s.title, s.points, s.hidden) for s in tests]

    def report(verdict: str, results: list[TestResult], detail: str = "") -> Report:
        return Report(lab.name, verdict, results, cap(detail), [], time.monotonic() - start)

    require_kvm()
    work = scratch / "work"
    runtime = Runtime(scratch)
    try:
        prepare(lab, tree, work)
        import_check(lab, work, runtime,
                     timeout=min(CHECK_TIMEOUT, max(1.0, deadline - time.monotonic())))
    except NoModule as exc:
        return report(R.NO_OUTPUT, blank, exc.message)
    except ModuleBuildError as exc:
        return report(R.COMPILE_ERROR, blank, "\n".join(exc.errors) or exc.output)
    results, verdict, detail = run_tests(lab, work, runtime, scratch, tests, deadline=deadline,
                                         name=name)
    return report(verdict, results, detail)


def check_sources(lab: Lab, work: Path, *, timeout: float = CHECK_TIMEOUT) -> None:
    """``lab-vm pack``'s build check for a Python lab: the import check alone (no KVM)."""
    with tempfile.TemporaryDirectory(prefix="vmexit-pycheck-") as scratch:
        import_check(lab, work, Runtime(Path(scratch)), timeout=timeout)
