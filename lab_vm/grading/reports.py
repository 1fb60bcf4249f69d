"""The checking kernel's bug reports, turned into verdicts that cost a lab's points.

The checking kernel (``lab_vm/kconfig/checking/``) prints a report when a module
sleeps in atomic context, takes locks in an order that can deadlock, touches freed
memory, frees an armed timer; kmemleak lists what nobody points to any more. Each
report becomes one row of the results, named by its verdict:

===================  ======================================================================
verdict              the kernel said
===================  ======================================================================
sleeps-in-atomic     BUG: sleeping function called from invalid context / scheduling while
                     atomic (DEBUG_ATOMIC_SLEEP)
lock-order           lockdep: possible circular locking dependency, inconsistent lock state,
                     recursive locking...; spinlock and mutex debugging
use-after-free       SLUB debugging (poison overwritten, object already free), KFENCE, KASAN:
                     freed memory written or read, a double free
out-of-bounds        SLUB (red zone overwritten), KFENCE, KASAN: an access outside the object
bad-object           debugobjects (ODEBUG): a timer or work freed while armed, or not initialised
leak                 kmemleak, after rmmod: an allocation nothing points to
===================  ======================================================================

A verdict is counted once per submission, however often its report came, and costs
the points the lab's ``lab.toml`` gives it in its ``[checking]`` table
(:data:`DEFAULT_POINTS` otherwise). The row's message names the function and the
lock the report named, and the fix says what to do. Parsing is plain text in,
:class:`KernelReport` out, so it is tested on recorded kernel logs.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

LOG = logging.getLogger(__name__)

SLEEPS, LOCKS, UAF, OOB, BAD_OBJECT, LEAK = (
    "sleeps-in-atomic", "lock-order", "use-after-free", "out-of-bounds", "bad-object", "leak")
VERDICTS = (SLEEPS, LOCKS, UAF, OOB, BAD_OBJECT, LEAK)
# Points a verdict costs when a lab's lab.toml does not say ([checking] table).
DEFAULT_POINTS = {SLEEPS: 10, LOCKS: 10, UAF: 10, OOB: 10, BAD_OBJECT: 10, LEAK: 5}

TITLE = {
    SLEEPS: "the checking kernel: no sleeping in atomic context",
    LOCKS: "the checking kernel: locks taken safely (lockdep)",
    UAF: "the checking kernel: no use of freed memory",
    OOB: "the checking kernel: no access outside an allocation",
    BAD_OBJECT: "the checking kernel: no timer or work freed while armed",
    LEAK: "the checking kernel: nothing leaked after rmmod (kmemleak)",
}
FIX = {
    SLEEPS: "do not call what may sleep (mutex_lock, msleep, kmalloc(GFP_KERNEL), "
            "copy_to_user...) while holding a spinlock, with interrupts off or in an interrupt "
            "handler: move it out of the locked section, protect data shared with a handler "
            "with a spinlock, allocate with GFP_ATOMIC there or do the work in a threaded "
            "handler",
    LOCKS: "take locks in one fixed order everywhere; a lock an interrupt handler takes must "
           "be taken with spin_lock_irqsave()/spin_lock_irq() everywhere else, and a mutex "
           "never in an interrupt handler",
    UAF: "do not touch an object after kfree() (or after the last reference went): free it "
         "last, set the pointer to NULL, and free each allocation exactly once",
    OOB: "check sizes and indices against the allocation: the access above is past its end",
    BAD_OBJECT: "stop timers and work before freeing what holds them or unloading the module: "
                "hrtimer_cancel(), del_timer_sync(), cancel_work_sync(); initialise them "
                "before use",
    LEAK: "free in release/remove/exit what open/probe/init allocated (or use devm_*/pcim_* "
          "allocations that are freed for you)",
}

TIMESTAMP_RE = re.compile(r"^\[\s*\d+\.\d+\] ?", re.M)
FRAME_RE = re.compile(r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?:\? )?"
                      r"(?P<func>[A-Za-z_.$][\w.$]*)\+0x[0-9a-f]+/0x[0-9a-f]+"
                      r"(?: \[(?P<module>\w+)\])?\s*$")
# a frame kallsyms could not name: after rmmod, the module's own (SLUB's stack of a freed
# object found by the validation the grader starts once the module is gone)
BARE_FRAME_RE = re.compile(r"^\s*(?:\[<[0-9a-f]+>\]\s*)?(?P<address>0x[0-9a-f]+)\s*$")
# a lock in lockdep's notation: "ffff... (&edu->lock){+.+.}-{3:3}, at: edu_irq+0x1c/0x90 [edu]"
LOCK_RE = re.compile(r"\((?P<lock>[^(){}]+)\)\{[^}]*\}(?:-\{\d:\d\})?"
                     r"(?:, at: (?P<at>[\w.$]+)\+\S+(?: \[(?P<module>\w+)\])?)?")
# Lines that start a report: (kind or None = decided by a later look, regex).
HEADERS: list[tuple[str | None, re.Pattern]] = [
    (SLEEPS, re.compile(r"BUG: sleeping function called from invalid context.*")),
    (SLEEPS, re.compile(r"BUG: scheduling while atomic.*")),
    (SLEEPS, re.compile(r"do not call blocking ops when !TASK_RUNNING.*")),
    # lockdep's bracketed form: "[ BUG: Invalid wait context ]" (a mutex in an IRQ handler)
    (LOCKS, re.compile(r"\[ BUG: (?P<what>[^\]]+) \]")),
    (LOCKS, re.compile(r"WARNING: (possible circular locking dependency detected|"
                       r"inconsistent lock state|possible recursive locking detected|"
                       r"possible irq lock inversion dependency detected|"
                       r"\S+-safe -> \S+-unsafe lock order detected|bad unlock balance detected|"
                       r"held lock freed|lock held when returning to user space|"
                       r"suspicious RCU usage)!?.*")),
    (LOCKS, re.compile(r"BUG: (spinlock|rwlock) \S+ (bad magic|already unlocked|wrong owner|"
                       r"recursion|lockup suspected).*")),
    (LOCKS, re.compile(r"(WARNING: .*)?DEBUG_LOCKS_WARN_ON\(.*")),
    (None, re.compile(r"BUG: KASAN: (?P<what>[\w-]+) in (?P<func>[\w.$]+)\S*"
                      r"(?: \[(?P<module>\w+)\])?")),
    # KFENCE (mm/kfence/report.c): "use-after-free read", "out-of-bounds write", "invalid
    # read", and two named in two words: "memory corruption" (a write past the object, found at
    # kfree) and "invalid free" (a double free)
    (None, re.compile(r"BUG: KFENCE: (?P<what>[\w-]+(?: (?:read|write|corruption|free))?) in "
                      r"(?P<func>[\w.$]+)\S*(?: \[(?P<module>\w+)\])?")),
    # SLUB: "Poison overwritten", "Object already free", "Right Redzone overwritten", and
    # what follows from them ("Slab disabled since SLUB metadata consistency check failed")
    (None, re.compile(r"BUG (?P<cache>[\w-]+) \(.*\): (?P<what>.+)")),
    (BAD_OBJECT, re.compile(r"ODEBUG: (?P<what>.+?) (?:\(active state \d+\) )?"
                            r"(?:object: \S+ )?object type: (?P<type>\S+)"
                            r"(?: hint: (?P<hint>[\w.$]+)\S*(?: \[(?P<module>\w+)\])?)?")),
]
# Where a report ends: KASAN and KFENCE close with a rule of '=', SLUB with its FIX line,
# WARN() with its end line, the rest with the end of their (last) stack dump.
END_RULE = re.compile(r"^={10,}\s*$")
END_SLUB = re.compile(r"^FIX \S+: ")
END_WARN = re.compile(r"---\[ end trace")
END_TASK = re.compile(r"^\s*</TASK>\s*$")
# Frames of the reporting machinery itself, skipped when looking for the function at fault.
MACHINERY = re.compile(r"^(dump_stack\w*|show_stack|__might_\w+|might_\w+|__schedule_bug|"
                       r"__schedule|schedule\w*|__warn|report_bug|handle_bug|exc_invalid_op|"
                       r"asm_exc_invalid_op|debug_\w+|kasan_\w+|__kasan_\w+|print_\w+|"
                       r"lock_acquire|lock_release|__lock_acquire|_raw_\w+|__mutex_lock\w*|"
                       r"mutex_lock\w*|msleep\w*|usleep_range\w*|__kmalloc\w*|kmalloc\w*|"
                       r"kmem_cache_\w+|slab_\w+|__slab_\w+|check_\w+|mark_lock\w*|"
                       r"__asan_\w+|check_memory_region\w*|_copy_\w+|copy_\w+user\w*|"
                       r"lockdep_\w+|valid_state|mark_usage|__might_fault)$")


@dataclass
class KernelReport:
    """One report of the checking kernel, as parsed from its log."""

    verdict: str
    headline: str                 # the report's first line, e.g. "BUG: KASAN: use-after-free in f"
    function: str = ""            # where it happened ("stat_get [hrlate]"), when the report says
    locks: list[str] = field(default_factory=list)   # lock names it shows, in its order
    text: str = ""                # the whole report, for the student to read
    others: list[str] = field(default_factory=list)  # the module's other functions it shows

    def summary(self) -> str:
        where = f" in {self.function}" if self.function else ""
        also = f" (the report also shows {', '.join(self.others)})" if self.others else ""
        held = f"; locks: {', '.join(self.locks)}" if self.locks else ""
        return (f"{self.headline}{where if where.strip() not in self.headline else ''}"
                f"{also}{held}")


def _kasan_verdict(what: str) -> str:
    return UAF if "free" in what.lower() or "already free" in what.lower() else OOB


def _end(lines: list[str], start: int, verdict_hint: str, limit: int = 300) -> int:
    """The index just past a report that starts at ``start``."""
    end_re = {"rule": END_RULE, "warn": END_WARN, "slub": END_SLUB}.get(verdict_hint, END_TASK)
    for j in range(start + 1, min(len(lines), start + limit)):
        if end_re.search(lines[j]):
            return j + 1
        if j > start + 1 and any(h.search(lines[j]) for _, h in HEADERS):
            return j
    return min(len(lines), start + 60)


def _frames(lines: list[str]) -> list[tuple[str, str | None]]:
    """The reliable frames: "? f+0x.." is a stale return address the unwinder guessed."""
    out = []
    for line in lines:
        m = FRAME_RE.match(line)
        if m and not line.lstrip().startswith("? "):
            out.append((m["func"], m["module"]))
            continue
        bare = BARE_FRAME_RE.match(line)
        if bare and in_module(bare["address"], ""):
            out.append((bare["address"], None))
    return out


def _module_frame(frames: list[tuple[str, str | None]], module: str | None) -> str:
    for func, mod in frames:
        if mod and (module is None or mod == module):
            return f"{func} [{mod}]"
    return ""


def _culprit(frames: list[tuple[str, str | None]], module: str | None) -> str:
    """The frame to name: the first in the student's module, else the first address in an
    unloaded module (the caller names it from the .ko), else the first not machinery."""
    if _module_frame(frames, module):
        return _module_frame(frames, module)
    for func, _mod in frames:
        if func.startswith("0x"):
            return func
    for func, mod in frames:
        if not MACHINERY.match(func) and not func.startswith(("0x", "?")):
            return f"{func} [{mod}]" if mod else func
    return ""


def _locks(lines: list[str]) -> list[str]:
    found: list[str] = []
    for line in lines:
        for m in LOCK_RE.finditer(line):
            name = m["lock"].strip()
            if name and name not in found:
                found.append(name)
    return found


def _header(line: str) -> tuple[str | None, re.Match] | None:
    """(kind, match) if ``line`` starts a report (kind None: the match decides)."""
    for kind, header in HEADERS:
        m = header.search(line)
        if m:
            return kind, m
    return None


def parse(log: str, *, module: str | None = None) -> list[KernelReport]:
    """The checking kernel's reports in a kernel log (dmesg or console), in order."""
    lines = TIMESTAMP_RE.sub("", log).splitlines()
    reports = []
    i = 0
    while i < len(lines):
        found = _header(lines[i])
        if found is None:
            i += 1
            continue
        verdict, m = found
        start = i
        # the banner above lockdep's and KASAN's reports, or WARN()'s "cut here"
        if start > 0 and (END_RULE.match(lines[start - 1]) or re.match(r"^-{10,}\s*$",
                                                                        lines[start - 1])
                          or "cut here" in lines[start - 1]):
            start -= 1
        func = ""
        if verdict is None:
            what = m["what"]
            slub = "cache" in m.re.groupindex
            verdict = (OOB if "Redzone" in what else UAF) if slub else _kasan_verdict(what)
            end = _end(lines, i, "slub" if slub else "rule")
        elif verdict == BAD_OBJECT:
            end = _end(lines, i, "warn")
        else:
            end = _end(lines, i, "task")
        body = lines[i:end]
        frames = _frames(body)
        if "func" in m.re.groupindex and m["func"]:        # KASAN, KFENCE: "... in func"
            func = m["func"] + (f" [{m['module']}]" if m["module"] else "")
        elif verdict == BAD_OBJECT:
            # the hint is the object's callback (a timer's function); at rmmod the module's
            # symbols are gone and it is a bare address, so a frame of the module goes first
            hint = (m["hint"] or "") + (f" [{m['module']}]" if m["module"] else "")
            func = _module_frame(frames, module) or hint
        else:
            func = _culprit(frames, module)
        locks = _locks(body[:40])
        if verdict == LOCKS:
            # lockdep's first "at:" is where the lock at fault is taken now: the culprit
            ats = [m2 for line in body[:40] for m2 in LOCK_RE.finditer(line) if m2["at"]]
            mine = [a for a in ats if a["module"] and (module is None or a["module"] == module)]
            ats = mine or ats
            if ats:
                func = ats[0]["at"] + (f" [{ats[0]['module']}]" if ats[0]["module"] else "")
        headline = lines[i].strip()
        if verdict == BAD_OBJECT:
            headline = headline[headline.index("ODEBUG:"):]
        # e.g. lockdep's "{HARDIRQ-ON-W} state was registered at:" the other place at fault
        others = []
        for name, mod in frames:
            named = f"{name} [{mod}]"
            if mod and (module is None or mod == module) and named != func \
                    and named not in others:
                others.append(named)
        reports.append(KernelReport(verdict, headline, func, locks, "\n".join(lines[start:end]),
                                    others[:3]))
        i = max(end, i + 1)
    return reports


# -- kmemleak ----------------------------------------------------------------------------------
KMEMLEAK = "/sys/kernel/debug/kmemleak"
LEAK_RE = re.compile(r"^unreferenced object (?P<addr>0x[0-9a-f]+) \(size (?P<size>\d+)\):")
LEAK_FRAME_RE = re.compile(r"^\s*\[<[0-9a-f]+>\] (?P<sym>\S+)(?: \[(?P<module>\w+)\])?")
# Where x86-64 puts modules without KASLR (MODULES_VADDR .. MODULES_END): a frame printed as a
# bare address there belongs to a module that is gone (rmmod), so kallsyms could not name it.
MODULES_START, MODULES_END = 0xffffffffa0000000, 0xffffffffff000000


@dataclass
class Leak:
    size: int
    frames: list[str]             # the allocation's backtrace, innermost first
    comm: str = ""
    text: str = ""


def parse_kmemleak(text: str) -> list[Leak]:
    """The objects of ``cat /sys/kernel/debug/kmemleak``."""
    leaks: list[Leak] = []
    current: list[str] = []
    for line in text.splitlines() + ["unreferenced object 0x0 (size 0):"]:
        if LEAK_RE.match(line) and current:
            head = LEAK_RE.match(current[0])
            comm = re.search(r'comm "([^"]*)"', "\n".join(current[:3]))
            frames = [m["sym"] + (f" [{m['module']}]" if m["module"] else "")
                      for m in map(LEAK_FRAME_RE.match, current) if m]
            leaks.append(Leak(int(head["size"]), frames, comm[1] if comm else "",
                              "\n".join(current)))
            current = []
        if LEAK_RE.match(line) or current:
            current.append(line)
    return leaks


def in_module(frame: str, module: str) -> bool:
    """Whether a backtrace frame is the module's: named ``[module]``, or an unloaded module's."""
    if frame.endswith(f"[{module}]"):
        return True
    if frame.startswith("0x"):
        try:
            return MODULES_START <= int(frame, 16) < MODULES_END
        except ValueError:
            return False
    return False


class Symbols:
    """A module's functions from its .ko, to name frames kmemleak printed as bare addresses.

    After rmmod, kallsyms no longer knows the module, so kmemleak prints its frames as
    addresses; the grader noted where the module's .text was loaded (``text_base``).
    """

    def __init__(self, ko: Path) -> None:
        from elftools.elf.elffile import ELFFile

        self.functions: list[tuple[int, int, str]] = []
        with open(ko, "rb") as f:
            elf = ELFFile(f)
            text = elf.get_section_by_name(".text")
            symtab = elf.get_section_by_name(".symtab")
            if text is None or symtab is None:
                return
            index = next(i for i, s in enumerate(elf.iter_sections()) if s.name == ".text")
            for sym in symtab.iter_symbols():
                if (sym["st_info"]["type"] == "STT_FUNC" and sym["st_shndx"] == index
                        and sym.name):
                    self.functions.append((sym["st_value"], sym["st_size"], sym.name))

    def name(self, address: int, text_base: int) -> str | None:
        offset = address - text_base
        for start, size, name in self.functions:
            if start <= offset < start + max(size, 1):
                return f"{name}+{offset - start:#x}"
        return None


def name_address(address: int, module: str, bases: list[int],
                 symbols: Symbols | None) -> str | None:
    """An unloaded module's address as ``function+0xoff [module]``, if the .ko can say."""
    if symbols is not None:
        for base in bases:
            named = symbols.name(address, base)
            if named:
                return f"{named} [{module}]"
    return None


def name_leak_frames(leak: Leak, module: str, bases: list[int], symbols: Symbols | None) -> str:
    """The leak's allocating frame in the module, named if the .ko can say."""
    for frame in leak.frames:
        if frame.endswith(f"[{module}]"):
            return frame
        if in_module(frame, module):
            return (name_address(int(frame, 16), module, bases, symbols)
                    or f"{frame} (in {module}, already unloaded)")
    return ""


def module_leaks(leaks: list[Leak], module: str) -> list[Leak]:
    """The leaks whose allocation went through the module (the rest are not the student's)."""
    return [leak for leak in leaks if any(in_module(f, module) for f in leak.frames)]


# -- the lab's rules ---------------------------------------------------------------------------
def points(lab) -> dict[str, int]:
    """What each verdict costs in ``lab`` (its lab.toml ``[checking]`` table over the defaults)."""
    table = dict(lab.extra.get("checking", {})) if lab is not None else {}
    table.pop("kernel", None)
    unknown = set(table) - set(VERDICTS)
    if unknown:
        from ..errors import ConfigError

        raise ConfigError(f"{lab.root}/lab.toml: [checking] names unknown verdicts "
                          f"{sorted(unknown)}; known: {', '.join(VERDICTS)}")
    return {**DEFAULT_POINTS, **{k: int(v) for k, v in table.items()}}


def kernel_variant(lab) -> str | None:
    """The kernel a lab is graded on: ``checking`` unless its lab.toml says ``kernel = "fast"``."""
    choice = lab.extra.get("checking", {}).get("kernel", "checking") if lab else "checking"
    if choice not in ("checking", "fast"):
        from ..errors import ConfigError

        raise ConfigError(f"{lab.root}/lab.toml: [checking] kernel = {choice!r}: "
                          "choose \"checking\" or \"fast\"")
    return None if choice == "fast" else "checking"


@dataclass
class Finding:
    """A verdict seen in one test: the report, and the test it came in."""

    test: str
    report: KernelReport


def results(findings: list[Finding], rules: dict[str, int]):
    """One result row per verdict seen (first report shown, other tests named), points < 0."""
    from .results import TestResult

    rows = []
    for verdict in VERDICTS:
        mine = [f for f in findings if f.report.verdict == verdict]
        if not mine:
            continue
        first = mine[0]
        others = sorted({f.test for f in mine[1:]} - {first.test})
        msg = [f"in the test {first.test!r} the kernel reported: {first.report.summary()}"]
        if first.report.function:
            msg.append(f"where: {first.report.function}")
        if first.report.locks:
            msg.append(f"locks: {', '.join(first.report.locks)}")
        if others:
            msg.append(f"the same kind of report also came in: {', '.join(others)}")
        excerpt = first.report.text.splitlines()
        if len(excerpt) > 40:
            excerpt = excerpt[:40] + [f"[... {len(excerpt) - 40} more lines]"]
        msg.append("the report:")
        msg.extend("  " + line for line in excerpt)
        cost = rules.get(verdict, DEFAULT_POINTS[verdict])
        rows.append(TestResult(verdict, TITLE[verdict], 0, points=-cost, status="fail",
                               message="\n".join(msg), fix=FIX[verdict]))
    return rows


def quiet(log: str) -> str:
    """``log`` without the reports that become verdicts (a checker leaves those to them)."""
    lines = TIMESTAMP_RE.sub("", log).splitlines()
    drop: set[int] = set()
    text = "\n".join(lines)
    for report in parse(text):
        body = report.text.splitlines()
        for k in range(len(lines) - len(body) + 1):
            if lines[k:k + len(body)] == body:
                drop.update(range(k, k + len(body)))
                break
    return "\n".join(line for k, line in enumerate(lines) if k not in drop)
