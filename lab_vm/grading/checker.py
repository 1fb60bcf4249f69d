"""The checker API a lab's tests are written in, after xv6's ``gradelib.py``.

A lab's ``tests/check_*.py`` is a list of small functions::

    from lab_vm.grading import test, assert_lines_match

    @test(10, "probe reads the identification register")
    def identification(t):
        t.insmod()
        assert_lines_match(t.dmesg(), r"edu \\S+: identification 0x010000ed",
                           fix="read register 0x00 in probe and log it with dev_info()")

The functions run on the host, but every action and observation happens in
the guest: ``t`` is a :class:`Session` whose commands go through the VM's
channel, so the student's module only ever runs inside the VM. A test passes
when it returns; it fails by raising :class:`TestFailure` (``fail()``,
``expect()``, ``assert_lines_match()``), whose message says what went wrong and
what to fix. ``hidden=True`` marks a test the handout leaves out.
"""
from __future__ import annotations

import logging
import re
import shlex
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Iterable

from ..vm.channel import Result
from ..vm.machine import module_loaded_command
from ..errors import GuestTimeout

LOG = logging.getLogger(__name__)
ATTR = "__vmexit_test__"
OUTPUT_CAP = 256 << 10      # bytes of one command's output a test gets to see
TIMESTAMP_RE = re.compile(r"^\[\s*\d+\.\d+\] ", re.M)
# A WARN_ON(), an oops that did not panic, a sleeping-in-atomic splat: not a panic, but a bug.
KERNEL_TROUBLE = [r".*WARNING:", r".*\bBUG[: ]", r".*Call Trace:", r".*sleeping function called",
                  r".*scheduling while atomic", r".*ODEBUG:"]


@dataclass(frozen=True)
class TestSpec:
    """What ``@test`` records about a test function."""

    __test__ = False        # not a pytest test class, despite its name

    func: Callable[["Session"], None]
    points: int
    title: str
    hidden: bool = False
    timeout: float | None = None

    @property
    def name(self) -> str:
        return self.func.__name__


def test(points: int, title: str, *, hidden: bool = False,
         timeout: float | None = None) -> Callable:
    """Mark ``func(t)`` as a test worth ``points``; ``timeout`` overrides the lab's default."""
    if points < 0:
        raise ValueError(f"a test cannot be worth {points} points")

    def decorate(func: Callable[["Session"], None]) -> Callable[["Session"], None]:
        setattr(func, ATTR, TestSpec(func, points, title, hidden, timeout))
        return func
    return decorate


def collect(module: ModuleType) -> list[TestSpec]:
    """The module's tests in the order they are written in its file."""
    specs = [getattr(obj, ATTR) for obj in vars(module).values()
             if callable(obj) and isinstance(getattr(obj, ATTR, None), TestSpec)]
    return sorted(specs, key=lambda s: s.func.__code__.co_firstlineno)


class TestFailure(AssertionError):
    """A test failed: ``message`` says what was seen, ``fix`` what the student should change."""

    __test__ = False

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix


def fail(message: str, fix: str = "") -> None:
    raise TestFailure(message, fix)


def expect(condition: object, message: str, fix: str = "") -> None:
    if not condition:
        raise TestFailure(message, fix)


def assert_lines_match(text: str, *regexps: str, no: Iterable[str] = (), fix: str = "",
                       what: str = "output") -> None:
    """Every regexp must match some line (``re.match``: from the line's start); no ``no`` may.

    On failure the message shows the output around the lines that mattered,
    marked GOOD (matched a wanted regexp) or BAD (matched an unwanted one),
    then each wanted regexp no line matched as MISSING — as gradelib does.
    """
    lines = text.splitlines()
    wanted = list(regexps)
    unwanted = list(no)
    good: set[int] = set()
    bad: set[int] = set()
    for i, line in enumerate(lines):
        if any(re.match(r, line) for r in wanted):
            good.add(i)
            wanted = [r for r in wanted if not re.match(r, line)]
        if any(re.match(r, line) for r in unwanted):
            bad.add(i)
    if not wanted and not bad:
        return
    show = {n + d for n in good | bad for d in range(-2, 3)}
    if wanted:      # the end of the output is where the missing line should have been
        show.update(range(len(lines) - 5, len(lines)))
    msg = [f"the {what} does not match:"] if lines else [f"the {what} is empty"]
    last = -1
    for n in sorted(n for n in show if 0 <= n < len(lines)):
        if n != last + 1:
            msg.append("    ...")
        last = n
        tag = "BAD " if n in bad else "GOOD" if n in good else "    "
        msg.append(f"    {tag} {lines[n]}")
    if lines and last != len(lines) - 1:
        msg.append("    ...")
    if bad:
        msg.append(f"unexpected lines in the {what} (BAD above)")
    msg.extend(f"MISSING '{r}'" for r in wanted)
    raise TestFailure("\n".join(msg), fix)


class Session:
    """What a test function gets: the guest, the student's module in it, and helpers.

    Every command runs in the guest with a timeout bounded by what is left of
    the test's time; a command that overstays raises GuestTimeout, which ends
    the submission's run with the verdict ``timeout``.
    """

    def __init__(self, vm, *, module: str, module_path: str, helpers: dict[str, str],
                 command_timeout: float, deadline: float) -> None:
        self.vm = vm
        self.module = module              # the module's name, as lsmod shows it
        self.module_path = module_path    # the .ko inside the guest
        self.helpers = helpers            # helper name -> path inside the guest
        self.command_timeout = command_timeout
        self.deadline = deadline
        self.text_bases: list[int] = []   # where each insmod put the module's .text (kmemleak)

    # -- running things in the guest ----------------------------------------------------------
    def sh(self, command: str, *, timeout: float | None = None, check: bool = False,
           input: bytes = b"") -> Result:
        """Run ``sh -c command`` in the guest; ``check`` turns a non-zero status into a failure."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise GuestTimeout(f"the test ran out of time before `{command}`", command=command)
        result = self.vm.run(command, timeout=min(timeout or self.command_timeout, left),
                             input=input, max_output=OUTPUT_CAP)
        LOG.debug("guest: %s -> %d (%.2f s)", command, result.status, result.duration)
        if check and result.status != 0:
            raise TestFailure(f"`{command}` failed (status {result.status}): "
                              f"{result.output.strip()[:2000]}")
        return result

    def read(self, path: str) -> str:
        """The contents of a guest file, stripped; a read error fails the test."""
        result = self.sh(f"cat {shlex.quote(path)}")
        if result.status != 0:
            raise TestFailure(f"reading {path} failed: {result.stderr.decode(errors='replace')}"
                              .strip())
        return result.text.strip()

    def write(self, path: str, value: str) -> Result:
        """``echo value > path`` in the guest; the caller looks at ``.ok`` and ``.stderr``."""
        return self.sh(f"echo {shlex.quote(value)} > {shlex.quote(path)}")

    def helper(self, name: str) -> str:
        """The guest path of a compiled helper program (``helpers`` in lab.toml)."""
        try:
            return self.helpers[name]
        except KeyError:
            raise KeyError(f"no helper {name!r}; the lab has {sorted(self.helpers)}") from None

    # -- the student's module -----------------------------------------------------------------
    def insmod(self, *params: str) -> Result:
        """Load the student's module; a refusal fails the test with the kernel's messages."""
        args = " ".join(shlex.quote(p) for p in params)
        result = self.sh(f"insmod {self.module_path} {args}".strip())
        if result.status != 0:
            raise TestFailure(
                f"insmod {self.module}.ko failed: {result.output.strip()}\n"
                f"kernel messages:\n{_indent(self.dmesg()[-3000:]) or '    (none)'}",
                "the module's init function (or the probe it triggers) returned an error; "
                "the kernel messages above say which")
        base = self.sh(f"cat /sys/module/{self.module}/sections/.text").text.strip()
        if base.startswith("0x"):
            self.text_bases.append(int(base, 16))
        return result

    def rmmod(self) -> Result:
        result = self.sh(f"rmmod {self.module}")
        if result.status != 0:
            raise TestFailure(f"rmmod {self.module} failed: {result.output.strip()}",
                              "the module must unload: release everything probe and init took")
        return result

    def loaded(self, name: str | None = None) -> bool:
        """Whether the student's module (or the module ``name``) is loaded."""
        # through sh(): the test's deadline holds for this command too
        return self.sh(module_loaded_command(name or self.module)).ok

    def dmesg(self) -> str:
        """Kernel messages since the test started, without timestamps."""
        return TIMESTAMP_RE.sub("", self.sh("dmesg").text)

    def expect_quiet_kernel(self, fix: str = "the kernel complained while your module was "
                            "loaded (see BAD)") -> None:
        """No WARNING, BUG or call trace in this test's kernel log.

        The bug reports the checking kernel makes (sleeping in atomic context, lockdep,
        SLUB, KFENCE, debugobjects) are left out: the runner turns each kind into a verdict of
        its own that costs the lab's points once (lab_vm.grading.reports), not every test.
        """
        from . import reports

        assert_lines_match(reports.quiet(self.dmesg()), no=KERNEL_TROUBLE, what="kernel log",
                           fix=fix)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())
