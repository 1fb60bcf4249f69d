"""Grade one working copy: build it in the sandbox, run the lab's tests in a fresh VM, a verdict.

The steps, and the verdict each can end in:

1. take the lab's source files (``sources`` in lab.toml) from the copy; none → ``no-output``
2. build them with the lab's own Kbuild in the bubblewrap sandbox → ``compile-error``;
   no ``.ko`` → ``no-output``
3. boot a fresh lab VM (a saved booted state restores in a fraction of a second), copy
   the module and the helpers in, and run each test; a panic → ``panic``; a command,
   a test or the whole submission over its time → ``timeout``. Either ends the run:
   the tests not reached score nothing. Otherwise the verdict is ``ok``.

Between tests the module is unloaded; if it will not go, the next test gets a new VM.
"""
from __future__ import annotations

import logging
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..build.initramfs import build_static
from ..build.kernel import Kernel, find_kernel
from ..errors import (ConfigError, GuestPanic, GuestTimeout, LabVMError, ModuleBuildError,
                      QEMUExited, VMError)
from ..machine import LabVM
from ..modules import compiler_errors
from . import hostrun
from . import results as R
from .checker import Session, TestFailure, TestSpec
from .lab import Lab
from .results import Report, TestResult, cap
from .sandbox import INSIDE, Sandbox
from .sources import NoModule, prepare

LOG = logging.getLogger(__name__)
GUEST_DIR = "/tmp/lab"           # where the module and the helpers go in the guest
CONSOLE_TAIL = 40                # console lines kept with a timeout
# The first line of an oops report, which says what went wrong and where.
OOPS_START = re.compile(r"BUG:|Oops|general protection fault|kernel BUG at|WARNING:|"
                        r"Unable to handle|invalid opcode|stack-protector|double fault")


@dataclass
class Built:
    ko: Path
    warnings: list[str]


def build(lab: Lab, work: Path, *, kernel: Kernel, timeout: float) -> Built:
    """``make M=`` in the sandbox; ModuleBuildError with the first compiler errors."""
    sandbox = Sandbox(work, readonly=[kernel.tree])
    cmd = ["make", "-j1", "-C", str(kernel.tree), f"M={INSIDE}", "modules"]
    result = sandbox.run(cmd, timeout=timeout)
    output = result.output.replace(f"{INSIDE}/", "")
    if result.timed_out:
        raise ModuleBuildError(f"the build took over {timeout:g} s", command=cmd, output=output,
                               errors=[f"the build took over {timeout:g} s and was stopped"])
    if result.status != 0:
        errors = compiler_errors(output)
        raise ModuleBuildError("the module does not compile", command=cmd,
                               status=result.status, output=output,
                               errors=errors or output.strip().splitlines()[-10:])
    ko = work / f"{lab.module}.ko"
    if not ko.is_file():
        raise NoModule(f"the build succeeded but made no {ko.name}")
    warnings = [line for line in output.splitlines() if ": warning: " in line]
    return Built(ko, warnings)


def compile_helpers(lab: Lab, dest: Path) -> dict[str, Path]:
    """The lab's helper programs, compiled static for the guest: {name: host path}."""
    dest.mkdir(parents=True, exist_ok=True)
    return {src.stem: build_static(src, dest / src.stem) for src in lab.helpers}


class _Guest:
    """The VM one working copy's tests run in; ``reset()`` asks for a fresh one."""

    def __init__(self, lab: Lab, ko: Path, helpers: dict[str, Path], name: str,
                 kernel: Kernel | None = None) -> None:
        self.lab, self.ko, self.helpers, self.name = lab, ko, helpers, name
        self.kernel = kernel            # the one the module was built against (None: the lab's)
        self.vm: LabVM | None = None
        self.guest_helpers = {n: f"{GUEST_DIR}/{n}" for n in helpers}
        self.module_path = f"{GUEST_DIR}/{lab.module}.ko"

    def ready(self) -> LabVM:
        if self.vm is None:
            # LabVM restores a saved guest and plugs the lab's devices in afterwards
            # (see LabVM._hotplugged: edu cannot be migrated).
            vm = LabVM(name=self.name, devices=self.lab.devices, cpus=self.lab.cpus,
                       memory=self.lab.memory, kernel=self.kernel)
            self.vm = vm
            vm.launch()
            vm.run(f"mkdir -p {GUEST_DIR}", timeout=10, check=True)
            vm.write_file(self.module_path, self.ko.read_bytes())
            for name, path in self.helpers.items():
                vm.write_file(self.guest_helpers[name], path.read_bytes(), mode=0o755)
        return self.vm

    def reset(self) -> None:
        if self.vm is not None:
            self.vm.shutdown()
            self.vm = None

    def console(self) -> str:
        return self.vm.console_log if self.vm is not None else ""

    def answers(self) -> bool:
        """Whether the guest still answers at all (a kernel loop on its one CPU: not)."""
        try:
            return self.vm is not None and self.vm.ping(timeout=2) >= 0
        except LabVMError:
            return False


def oops_excerpt(console: str, limit: int = 60) -> str:
    """The console from an oops' first line to the panic it caused (the start says where)."""
    lines = console.splitlines()
    panics = [i for i, line in enumerate(lines) if "Kernel panic - not syncing" in line]
    if not panics:
        return ""
    end = panics[-1]
    starts = [i for i in range(max(0, end - 400), end + 1) if OOPS_START.search(lines[i])]
    excerpt = lines[starts[0] if starts else max(0, end - limit):end + 1]
    if len(excerpt) > limit:
        excerpt = excerpt[:limit - 10] + ["[...]"] + excerpt[-10:]
    return "\n".join(excerpt)


def _timeout_detail(guest: _Guest, spec: TestSpec, exc: GuestTimeout) -> str:
    detail = [f"in the test {spec.title!r}: {exc.message}"]
    if exc.output.strip():
        detail.append(f"its output so far: {exc.output.strip()[-2000:]}")
    if not guest.answers():
        detail.append("the guest no longer answers at all: something loops in kernel code and "
                      "never gives the CPU back (this kernel does not preempt kernel code)")
    tail = guest.console().splitlines()[-CONSOLE_TAIL:]
    if tail:
        detail.append("last kernel console lines:\n" + "\n".join(tail))
    return "\n".join(detail)


def run_tests(lab: Lab, ko: Path, helpers: dict[str, Path], tests: list[TestSpec], *,
              deadline: float, name: str = "grade",
              kernel: Kernel | None = None) -> tuple[list[TestResult], str, str]:
    """Run ``tests`` against the module ``ko``: (results, verdict, detail)."""
    results = [TestResult(s.name, s.title, s.points, s.hidden) for s in tests]
    guest = _Guest(lab, ko, helpers, name, kernel)
    verdict, detail = R.OK, ""
    try:
        for spec, res in zip(tests, results):
            start = time.monotonic()
            if start >= deadline:
                verdict = R.TIMEOUT
                detail = f"the submission used up its {lab.submission_timeout:g} s"
                break
            try:
                verdict, detail = _run_one(lab, guest, spec, res,
                                           min(start + (spec.timeout or lab.test_timeout),
                                               deadline))
            finally:
                res.duration = time.monotonic() - start
            LOG.info("%s: %s: %s (%.1f s)", name, spec.name, res.status, res.duration)
            if verdict != R.OK:
                break
    finally:
        guest.reset()
    for res in results:
        if res.status == "not run" and verdict != R.OK:
            res.message = f"not run: the run ended with {verdict} in an earlier test"
    return results, verdict, detail


def _run_one(lab: Lab, guest: _Guest, spec: TestSpec, res: TestResult,
             deadline: float) -> tuple[str, str]:
    """Run one test into ``res``; returns the verdict so far (and its detail)."""
    try:
        vm = guest.ready()
    except LabVMError as exc:       # the lab VM itself would not start: not the student's doing
        res.status, res.message = "error", f"the lab VM could not start: {exc.message}"
        return R.ERROR, str(exc)
    try:
        vm.run("dmesg -c > /dev/null", timeout=lab.command_timeout)
        session = Session(vm, module=lab.module, module_path=guest.module_path,
                          helpers=guest.guest_helpers, command_timeout=lab.command_timeout,
                          deadline=deadline)
        try:
            spec.func(session)
            res.status, res.points = "pass", res.max_points
        except TestFailure as failure:
            res.status, res.message, res.fix = "fail", failure.message, failure.fix
        _unload(lab, guest)
        return R.OK, ""
    except GuestPanic as exc:
        res.status = "error"
        res.message = "the guest kernel panicked during this test (see the verdict below)"
        return R.PANIC, oops_excerpt(guest.console()) or f"{exc.message}\n{exc.output}"
    except GuestTimeout as exc:
        res.status = "error"
        res.message = f"timed out: {exc.message}"
        return R.TIMEOUT, _timeout_detail(guest, spec, exc)
    except QEMUExited as exc:
        # The guest took QEMU down with it (a triple fault ends QEMU: -no-reboot).
        res.status = "error"
        res.message = "the VM died during this test (see the verdict below)"
        return R.PANIC, f"{exc.message}\n{exc.output[-4000:]}"
    except VMError as exc:
        res.status, res.message = "error", f"the VM failed: {exc.message}"
        return R.ERROR, str(exc)
    except LabVMError:
        raise
    except Exception as exc:        # a bug in the checker: the student is not to blame
        LOG.exception("the test %s raised", spec.name)
        res.status = "error"
        res.message = f"the checker itself failed: {type(exc).__name__}: {exc}"
        guest.reset()
        return R.OK, ""


def _unload(lab: Lab, guest: _Guest) -> None:
    """Leave no module behind for the next test; a module that will not go costs a new VM."""
    vm = guest.vm
    if vm is None:
        return
    gone = f"! grep -q '^{lab.module} ' /proc/modules"
    if vm.run(gone, timeout=lab.command_timeout).ok:
        return
    vm.run(f"rmmod {lab.module} || rmmod -f {lab.module}", timeout=lab.command_timeout)
    if not vm.run(gone, timeout=lab.command_timeout).ok:
        LOG.info("%s: %s stays loaded; the next test gets a fresh VM", guest.name, lab.module)
        guest.reset()


def select(tests: list[TestSpec], only: Sequence[str]) -> list[TestSpec]:
    """The tests whose name or title holds one of ``only`` (any case); all when it is empty."""
    if not only:
        return tests
    chosen = [s for s in tests if any(k.lower() in s.name.lower() or k.lower() in s.title.lower()
                                      for k in only)]
    if not chosen:
        raise ConfigError(f"no test matches {', '.join(map(repr, only))}; the tests are: "
                          + ", ".join(s.name for s in tests))
    return chosen


def grade(lab: Lab, tree: Path, scratch: Path, *, hidden: bool = True,
          kernel: Kernel | None = None, helpers: dict[str, Path] | None = None,
          name: str = "grade", only: Sequence[str] = ()) -> Report:
    """Grade the working copy ``tree`` (read only); ``scratch`` is an empty folder to build in.

    ``only`` keeps the tests :func:`select` picks (``lab-vm check -k``).
    """
    start = time.monotonic()
    deadline = start + lab.submission_timeout
    tests = select(lab.tests(hidden=hidden), only)
    if lab.kind == "python":            # run on the host, in the sandbox: no kernel, no VM
        return hostrun.grade(lab, tree, scratch, tests, name=name)
    blank = [TestResult(s.name, s.title, s.points, s.hidden) for s in tests]

    def report(verdict: str, results: list[TestResult], detail: str = "",
               warnings: list[str] | None = None) -> Report:
        return Report(lab.name, verdict, results, cap(detail), warnings or [],
                      time.monotonic() - start)

    kernel = kernel or find_kernel()
    work = scratch / "build"
    try:
        prepare(lab, tree, work)
        built = build(lab, work, kernel=kernel,
                      timeout=min(lab.build_timeout, max(1.0, deadline - time.monotonic())))
    except NoModule as exc:
        return report(R.NO_OUTPUT, blank, exc.message)
    except ModuleBuildError as exc:
        return report(R.COMPILE_ERROR, blank, "\n".join(exc.errors) or exc.output)
    if helpers is None:
        helpers = compile_helpers(lab, scratch / "helpers")
    results, verdict, detail = run_tests(lab, built.ko, helpers, tests, deadline=deadline,
                                         name=name, kernel=kernel)
    return report(verdict, results, detail, _short(built.warnings))


def _short(warnings: list[str], limit: int = 10) -> list[str]:
    return [re.sub(r"\s+", " ", w)[:300] for w in warnings[:limit]]


def check(lab: Lab, tree: Path | None = None, *, hidden: bool = False,
          only: Sequence[str] = ()) -> Report:
    """``lab-vm check``: grade a student's working copy (public tests unless ``hidden``)."""
    tree = (tree or lab.default_workdir()).resolve()
    with tempfile.TemporaryDirectory(prefix="vmexit-check-") as scratch:
        return grade(lab, tree, Path(scratch), hidden=hidden, name="check", only=only)
