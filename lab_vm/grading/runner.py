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

The VM runs the *checking kernel* (lockdep, SLUB debugging, kmemleak...:
lab_vm/kconfig/checking) unless the lab's lab.toml says ``[checking] kernel = "fast"``.
After each test its kernel log is read for that kernel's bug reports, and after the last
one SLUB checks every cache and kmemleak scans for what the module leaked; each kind of
report seen becomes a result row of its own that takes off the lab's points for it
(:mod:`.reports`).
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
from ..errors import (ConfigError, GuestPanic, GuestTimeout, LabVMError, MissingArtifact,
                      ModuleBuildError, QEMUExited, VMError)
from ..vm.machine import LabVM
from ..build.modules import MODULE_FLAGS, compiler_errors
from . import hostrun, reports
from . import results as R
from .checker import Session, TestFailure, TestSpec
from .lab import Lab
from .results import Report, TestResult, cap
from .sandbox import INSIDE, Sandbox
from .sources import NoModule, prepare

LOG = logging.getLogger(__name__)
GUEST_DIR = "/tmp/lab"           # where the module and the helpers go in the guest
CONSOLE_TAIL = 40                # console lines kept with a timeout
CHECKING_BOOT_TIMEOUT = 180.0    # s: a cold boot of the checking kernel on a busy machine
KMEMLEAK_MIN_AGE_S = 5.5         # s: kmemleak reports nothing younger than 5 s (and a margin)
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
    cmd = ["make", "-j1", "-C", str(kernel.tree), f"M={INSIDE}", *MODULE_FLAGS, "modules"]
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


def grading_kernel(lab: Lab, choice: Kernel | str | None = None) -> Kernel | None:
    """The kernel a lab is graded on: ``choice`` ("fast", "checking", a Kernel), else the lab's
    (the checking kernel unless lab.toml asks for the fast one); None for a Python lab, whose
    VMM runs on the host. scripts/grade, its Dask workers and the Gradescope autograder ask
    here too."""
    if lab.kind == "python":
        return None
    if isinstance(choice, Kernel):
        return choice
    if choice is None:
        variant = reports.kernel_variant(lab)
        try:
            return find_kernel(variant)
        except MissingArtifact as exc:
            # no silent fallback to the fast kernel: it would give full marks to the bugs
            # this kernel is there to see
            raise MissingArtifact(f"{exc.message}; `lab-vm check --fast` runs the tests on "
                                  "the book's kernel meanwhile (it does not see sleeping in "
                                  "atomic context, lock-order bugs, leaks...)") from None
    if choice not in ("fast", "checking"):
        raise ConfigError(f"unknown kernel {choice!r}: choose fast or checking")
    return find_kernel(None if choice == "fast" else choice)


class _Guest:
    """The VM one working copy's tests run in; ``reset()`` asks for a fresh one."""

    def __init__(self, lab: Lab, ko: Path, helpers: dict[str, Path], name: str,
                 kernel: Kernel | None = None, kernel_args: str = "") -> None:
        self.lab, self.ko, self.helpers, self.name = lab, ko, helpers, name
        self.kernel = kernel
        self.kernel_args = kernel_args
        self.vm: LabVM | None = None
        # what the checking kernel reported, and where the module's code was (for kmemleak)
        self.findings: list[reports.Finding] = []
        self.text_bases: list[int] = []
        self.leaks_checked = False
        self.guest_helpers = {n: f"{GUEST_DIR}/{n}" for n in helpers}
        self.module_path = f"{GUEST_DIR}/{lab.module}.ko"

    def ready(self) -> LabVM:
        if self.vm is None:
            # LabVM restores a saved guest and plugs the lab's devices in afterwards
            # (see LabVM._hotplugged: edu cannot be migrated).
            # the checking kernel's cold boot (the first, before its state is saved) runs
            # lockdep, debugobjects and kmemleak over all of boot: give it longer
            checking = self.kernel is not None and self.kernel.variant is not None
            vm = LabVM(name=self.name, devices=self.lab.devices, cpus=self.lab.cpus,
                       memory=self.lab.memory, kernel=self.kernel, append=self.kernel_args,
                       boot_timeout=CHECKING_BOOT_TIMEOUT if checking else 60.0)
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

    def drain(self, test: str) -> None:
        """Read (and clear) the kernel log: its bug reports become findings of ``test``."""
        if self.vm is None:
            return
        try:
            log = self.vm.run("dmesg -c", timeout=self.lab.command_timeout).text
        except LabVMError as exc:
            LOG.info("%s: the kernel log could not be read after %s: %s", self.name, test, exc)
            return
        self.note(test, log)

    def note(self, test: str, log: str) -> None:
        for report in reports.parse(log, module=self.lab.module):
            if report.function.startswith("0x") and reports.in_module(report.function,
                                                                      self.lab.module):
                # a bare address of the module, gone: an armed timer found at rmmod, or SLUB's
                # record of a freed object's owner found by the validation after it
                named = self._name(int(report.function, 16))
                report.function = named or f"{report.function} (in {self.lab.module}, unloaded)"
            self.findings.append(reports.Finding(test, report))

    def _name(self, address: int) -> str | None:
        try:
            symbols = reports.Symbols(self.ko)
        except Exception as exc:    # noqa: BLE001 — the report keeps its bare address
            LOG.info("no symbols from %s: %s", self.ko, exc)
            return None
        named = reports.name_address(address, self.lab.module, self.text_bases, symbols)
        # a function, as the reports of a loaded module name theirs: no offset
        return re.sub(r"\+0x[0-9a-f]+ ", " ", named) if named else None

    def check_leaks(self, test: str) -> None:
        """Once the module is gone: what it wrote into freed memory, and what it leaked.

        SLUB validates every cache: a write into a freed object that nothing allocated
        again is reported now (the reports go through ``drain`` as the others do).
        kmemleak reports an object only on a scan that finds it unreferenced and
        unchanged since the scan before, and at least 5 s old (``MSECS_MIN_AGE``,
        mm/kmemleak.c): two scans, the second once everything the module allocated
        is that old (the module is gone when this is called), so a leak in the last
        test is not missed on a machine that finishes the grading within 5 s of it.
        """
        if self.vm is None or self.leaks_checked:
            return
        self.leaks_checked = True
        gone = time.monotonic()
        path = reports.KMEMLEAK
        probe = self.vm.run(f"test -w {path}", timeout=self.lab.command_timeout)
        if not probe.ok:
            return                  # the fast kernel: no kmemleak, no SLUB debugging
        self.vm.run("for f in /sys/kernel/slab/*/validate; do echo 1 > $f; done 2>/dev/null",
                    timeout=max(30.0, self.lab.command_timeout))
        self.drain(test)
        self.vm.run(f"echo scan > {path}", timeout=max(30.0, self.lab.command_timeout))
        wait = KMEMLEAK_MIN_AGE_S - (time.monotonic() - gone)
        if wait > 0:
            time.sleep(wait)        # the guest's clock runs on meanwhile (no -icount here)
        result = self.vm.run(f"echo scan > {path} && cat {path}",
                             timeout=max(30.0, self.lab.command_timeout))
        leaks = reports.module_leaks(reports.parse_kmemleak(result.text), self.lab.module)
        if not leaks:
            return
        try:
            symbols = reports.Symbols(self.ko)
        except Exception as exc:    # noqa: BLE001 — the leak is reported without names
            LOG.info("no symbols from %s: %s", self.ko, exc)
            symbols = None
        where = reports.name_leak_frames(leaks[0], self.lab.module, self.text_bases, symbols)
        total = sum(leak.size for leak in leaks)
        headline = (f"kmemleak: {len(leaks)} object(s), {total} bytes, allocated by "
                    f"{self.lab.module} and still allocated after rmmod with nothing "
                    "pointing to them")
        text = "\n\n".join(leak.text for leak in leaks[:3])
        self.findings.append(reports.Finding(test, reports.KernelReport(
            reports.LEAK, headline, where, [], text)))

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
              deadline: float, name: str = "grade", kernel: Kernel | None = None,
              kernel_args: str = "") -> tuple[list[TestResult], str, str]:
    """Run ``tests`` against the module ``ko``: (results, verdict, detail).

    The results end with a row for each kind of bug report the kernel made (reports).
    """
    results = [TestResult(s.name, s.title, s.points, s.hidden) for s in tests]
    guest = _Guest(lab, ko, helpers, name, kernel, kernel_args)
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
                guest.note(spec.name, guest.console())   # what a panic printed, at least
                break
        if verdict == R.OK and tests:
            guest.check_leaks(tests[-1].name)
    finally:
        guest.reset()
    results += reports.results(guest.findings, reports.points(lab))
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
        finally:
            # where insmod put the module's code: kmemleak prints its frames as bare
            # addresses once it is unloaded, and reports.Symbols names them from these
            guest.text_bases += [b for b in session.text_bases if b not in guest.text_bases]
        _unload(lab, guest, spec.name)
        guest.drain(spec.name)
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


def _unload(lab: Lab, guest: _Guest, test: str = "") -> None:
    """Leave no module behind for the next test; a module that will not go costs a new VM."""
    vm = guest.vm
    if vm is None:
        return
    if not vm.module_loaded(lab.module, timeout=lab.command_timeout):
        return
    vm.run(f"rmmod {lab.module} || rmmod -f {lab.module}", timeout=lab.command_timeout)
    if vm.module_loaded(lab.module, timeout=lab.command_timeout):
        LOG.info("%s: %s stays loaded; the next test gets a fresh VM", guest.name, lab.module)
        guest.drain(test)
        guest.check_leaks(test)     # nothing it allocated is unreferenced yet, but earlier...
        guest.reset()
        guest.leaks_checked = False


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
          kernel: Kernel | str | None = None, helpers: dict[str, Path] | None = None,
          name: str = "grade", only: Sequence[str] = (), kernel_args: str = "") -> Report:
    """Grade the working copy ``tree`` (read only); ``scratch`` is an empty folder to build in.

    ``only`` keeps the tests :func:`select` picks (``lab-vm check -k``); ``kernel`` is the
    one to build against and boot ("fast", "checking", a Kernel), by default the lab's
    (:func:`grading_kernel`). ``kernel_args`` go on the guest's command line: only
    scripts/bench-checking uses them, to turn one detector off at boot and time the rest.
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

    kernel = grading_kernel(lab, kernel)
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
                                         name=name, kernel=kernel, kernel_args=kernel_args)
    return report(verdict, results, detail, _short(built.warnings))


def _short(warnings: list[str], limit: int = 10) -> list[str]:
    return [re.sub(r"\s+", " ", w)[:300] for w in warnings[:limit]]


def check(lab: Lab, tree: Path | None = None, *, hidden: bool = False,
          only: Sequence[str] = (), kernel: Kernel | str | None = None) -> Report:
    """``lab-vm check``: grade a student's working copy (public tests unless ``hidden``)."""
    tree = (tree or lab.default_workdir()).resolve()
    with tempfile.TemporaryDirectory(prefix="vmexit-check-") as scratch:
        return grade(lab, tree, Path(scratch), hidden=hidden, name="check", only=only,
                     kernel=kernel)
