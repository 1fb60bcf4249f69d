"""Fixture submissions of lab 2 (the edu driver), each with the verdict and points it must get.

The submissions are made from small source trees: the lab's solution and skeleton with a
one-line edit each (a typo, a NULL write, an endless loop, a flood of messages), the hostile
build files of ``evil-makefile/``, and archives built here (a symlink to a host file, a
``../`` name, nothing at all), so no binary archive is kept in the repository.
``make_fixtures()`` writes one of each; ``make_submissions()`` as many as asked, cycling
(for the grading benchmark).
"""
from __future__ import annotations

import io
import shutil
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
LAB = REPO / "labs" / "02-edu-driver"

POINTS = {"loads_and_unloads": 10, "binds": 10, "identification": 10, "liveness": 15,
          "factorial": 15, "interrupts": 15, "poll": 15, "clean_remove": 10,
          "bad_input": 10, "many": 10}
FIRST_FOUR = {k: POINTS[k] for k in ("loads_and_unloads", "binds", "identification",
                                     "liveness")}
# Files a hostile Makefile/Kbuild would create if a grader ran them.
PWNED = [Path("/tmp/vmexit-pwned-by-makefile"), Path("/tmp/vmexit-pwned-by-kbuild")]
PWNED_BESIDE = "vmexit-pwned-outside"      # next to the submissions folder's entries


@dataclass(frozen=True)
class Expected:
    verdict: str
    points: dict[str, int] = field(default_factory=dict)   # tests not named score 0

    @property
    def total(self) -> int:
        return sum(self.points.values())


def solution() -> str:
    return (LAB / "solution" / "edu.c").read_text()


def skeleton() -> str:
    return (LAB / "skeleton" / "edu.c").read_text()


def partial() -> str:
    """TODOs 1-5 done: binds, identifies, liveness; no interrupts, no factorials."""
    from lab_vm.grading.handout import skeleton_files
    from lab_vm.grading.lab import load_lab

    return skeleton_files(load_lab(LAB), reveal=5)["edu.c"]


def edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"the fixture edit expects {old!r} once in the solution"
    return text.replace(old, new)


def does_not_compile() -> str:
    return edit(solution(), "return IRQ_WAKE_THREAD;", "return IRQ_WAKE_THREAD")


def panics_at_insmod() -> str:
    # edu->regs is still NULL here: the write oopses, and oops=panic makes it a panic.
    return edit(solution(), "\tmutex_init(&edu->lock);\n",
                "\tmutex_init(&edu->lock);\n\t*(volatile u32 *)edu->regs = 0;\n")


def loops_in_read() -> str:
    return edit(solution(),
                "\tlong left = wait_event_interruptible_timeout(edu->done, "
                "!READ_ONCE(edu->busy), HZ);\n",
                "\tlong left = 1;\n\n\twhile (READ_ONCE(edu->result) != 0xdeadbeef)\n"
                "\t\tcpu_relax();\n")


SPAM_LINES = 20000      # about 2.6 MB of kernel messages at every probe


def prints_megabytes() -> str:
    # pr_info: the kernel log takes megabytes in a blink. (At pr_err they would also go to
    # the serial console, which under TCG carries some 30 KB/s: a flood there is a timeout.)
    return edit(solution(), "\tpci_set_drvdata(pdev, edu);\n",
                "\tpci_set_drvdata(pdev, edu);\n"
                "\t{\n"
                "\t\tint i;\n\n"
                f"\t\tfor (i = 0; i < {SPAM_LINES}; i++)\n"
                "\t\t\tpr_info(\"edu: %05d all work and no play makes Jack a dull boy, "
                "all work and no play makes Jack a dull boy\\n\", i);\n"
                "\t}\n")


# -- packaging -----------------------------------------------------------------------------
def as_folder(dest: Path, name: str, files: dict[str, str | bytes]) -> Path:
    root = dest / name
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return root


def as_tar(dest: Path, name: str, members: list[tarfile.TarInfo | tuple[str, str]],
           suffix: str = ".tar.gz") -> Path:
    path = dest / f"{name}{suffix}"
    with tarfile.open(path, "w:gz") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                data = member[1].encode()
                info = tarfile.TarInfo(member[0])
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return path


def as_zip(dest: Path, name: str, files: dict[str, str]) -> Path:
    path = dest / f"{name}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for rel, text in files.items():
            zf.writestr(rel, text)
    return path


def symlink(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def _evil(dest: Path, name: str) -> Path:
    root = as_folder(dest, name, {"edu.c": solution()})
    for f in (HERE / "evil-makefile").iterdir():
        shutil.copyfile(f, root / f.name)
    return root


Maker = Callable[[Path, str], Path]
KINDS: dict[str, tuple[Maker, Expected]] = {
    "solution": (lambda d, n: as_folder(d, n, {"edu.c": solution(), "NOTES.md": "done\n"}),
                 Expected("ok", POINTS)),
    "skeleton": (lambda d, n: as_tar(d, n, [("edu-driver/edu.c", skeleton()),
                                            ("edu-driver/Kbuild", "obj-m += edu.o\n")]),
                 Expected("ok", {"loads_and_unloads": 10})),
    "partial": (lambda d, n: as_zip(d, n, {"lab2/edu.c": partial()}),
                Expected("ok", FIRST_FOUR)),
    "compile-error": (lambda d, n: as_folder(d, n, {"edu.c": does_not_compile()}),
                      Expected("compile-error")),
    "panic-at-insmod": (lambda d, n: as_tar(d, n, [("edu.c", panics_at_insmod())],
                                            suffix=".tgz"),
                        Expected("panic")),
    "loops-in-read": (lambda d, n: as_folder(d, n, {"src/edu.c": loops_in_read()}),
                      Expected("timeout", FIRST_FOUR)),
    "hostile-makefile": (_evil, Expected("ok", POINTS)),
    "symlink-to-host": (lambda d, n: as_tar(d, n, [symlink("edu.c", "/etc/passwd"),
                                                   ("README", "see edu.c\n")]),
                        Expected("bad-archive")),
    "dotdot-paths": (lambda d, n: as_tar(d, n, [("../../edu.c", solution())]),
                     Expected("bad-archive")),
    "empty-archive": (lambda d, n: as_zip(d, n, {}), Expected("no-output")),
    "megabytes": (lambda d, n: as_folder(d, n, {"edu.c": prints_megabytes()}),
                  Expected("ok", POINTS)),
    "not-an-archive": (lambda d, n: as_folder(d, "", {f"{n}.txt": "my driver is in my head\n"}),
                       Expected("bad-archive")),
}


def make_fixtures(dest: Path) -> dict[str, Expected]:
    """One submission of each kind in ``dest``: {student: what grading it must give}."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, (make, _) in KINDS.items():
        make(dest, name)
    return {name: expected for name, (_, expected) in KINDS.items()}


def make_submissions(dest: Path, count: int, kinds: list[str] | None = None
                     ) -> dict[str, Expected]:
    """``count`` submissions cycling through ``kinds`` (default: all), named kind-NN."""
    dest.mkdir(parents=True, exist_ok=True)
    kinds = kinds or list(KINDS)
    expected = {}
    for i in range(count):
        kind = kinds[i % len(kinds)]
        name = f"{kind}-{i:02d}"
        KINDS[kind][0](dest, name)
        expected[name] = KINDS[kind][1]
    return expected
