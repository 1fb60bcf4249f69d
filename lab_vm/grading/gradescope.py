"""A Gradescope autograder for a lab: the zip an instructor uploads, and what runs inside it.

Gradescope builds a Docker image from the zip once (``setup.sh``, as root), then
for each submission starts a container, puts the student's files in
``/autograder/submission``, runs ``/autograder/run_autograder`` and reads
``/autograder/results/results.json``: ``tests[]`` with ``name``, ``score``,
``max_score``, ``status``, ``output`` and ``visibility``, and the overall
``score``. Hidden tests (the lab's and the private ones) are
``after_published``: students see them once the instructor publishes grades.

The zip carries what grading needs and nothing of the solution: the ``lab_vm``
package, the lab in its grader shape (lab.toml, the full checker, the lab's
own build files; no ``solution/``), the private tests if any, and the lab kernel
this machine built and grades with — its ``vmlinux`` stripped of debug
information and the part of its build tree that ``make M=`` needs — so that a
submission is built against and booted on the same kernel as here. The image
base is Ubuntu 24.04 (noble), Gradescope's newest; its GCC 12 is the major
version Debian bookworm built the kernel with.

Grading inside is :func:`submission.grade_submission`, as everywhere: safe unpack,
the build in the bubblewrap sandbox, the module only inside the VM (TCG: the
container has no /dev/kvm).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from ..build.initramfs import build_initramfs
from ..build.kernel import Kernel
from ..paths import PACKAGE_DIR
from . import results as R
from .lab import LAB_FILE, Lab, load_lab
from .private import with_private_tests
from .results import Report, format_report
from .sandbox import Sandbox

LOG = logging.getLogger(__name__)
SOURCE = "vmexit"                # the zip's folder (Gradescope unpacks it in /autograder/source)
BASE_IMAGE = "Ubuntu 24.04"
KERNEL_INFO = "kernel.json"
# The parts of a built kernel tree that building an external module reads (as Debian's
# linux-headers packages ship them), besides every Makefile, Kbuild and Kconfig.
KERNEL_DIRS = ("include", "scripts", "arch/x86/include")
KERNEL_FILES = (".config", "Module.symvers", "modules.order", "System.map",
                "tools/objtool/objtool")
BUILD_LEFTOVERS = (".o", ".cmd", ".a", ".tmp", ".d")
EXECUTABLE = 0o755


# -- results.json --------------------------------------------------------------------------
def results_json(report: Report, *, execution_time: float | None = None) -> dict:
    """Gradescope's results.json for one graded submission.

    Students see results.json as soon as it is written and may resubmit at will, so what a
    hidden test did stays in that test (``after_published``): if the run ended in a hidden
    test (a panic, a timeout), the verdict and its console excerpt go into that test's output,
    not into the top-level output students see at once."""
    ended_in = next((r for r in report.results if r.status == "error"), None)
    hide_verdict = report.verdict != R.OK and ended_in is not None and ended_in.hidden
    verdict = [f"verdict: {report.verdict} — {R.VERDICT_TEXT.get(report.verdict, '')}"]
    if report.verdict != R.OK and report.detail:
        verdict.append(R.cap(report.detail))
    tests = []
    for n, r in enumerate(report.results, start=1):
        lines = [] if r.passed else [r.message] + ([f"fix: {r.fix}"] if r.fix else [])
        if hide_verdict and r is ended_in:
            lines += verdict
        tests.append({
            "name": r.title,
            "number": str(n),
            "score": r.points,
            "max_score": r.max_points,
            "status": "passed" if r.passed else "failed",
            "output": "\n".join(line for line in lines if line),
            "visibility": "after_published" if r.hidden else "visible",
        })
    overall = (["the run ended in a hidden test: what happened is shown with it once grades "
                "are published"] if hide_verdict else verdict)
    overall += [f"warning: {w}" for w in report.warnings[:10]]
    return {
        "score": report.score,
        "execution_time": round(execution_time if execution_time is not None
                                else report.duration),
        "output": "\n".join(overall),
        "output_format": "text",
        "visibility": "visible",
        "stdout_visibility": "hidden",
        "tests": tests,
    }


# -- inside the container ------------------------------------------------------------------
def shipped(source: Path) -> tuple[Lab, Kernel]:
    """The lab (with its private tests, if shipped) and the kernel of an autograder."""
    labs = sorted(p.parent for p in (source / "lab").glob(f"*/{LAB_FILE}"))
    if len(labs) != 1:
        raise SystemExit(f"{source}/lab holds no lab.toml: not an autograder made by "
                         "scripts/make-autograder")
    lab = load_lab(labs[0])
    if (source / "private").is_dir():
        lab = with_private_tests(lab, source / "private")
    info = json.loads((source / "kernel" / KERNEL_INFO).read_text())
    return lab, Kernel(source / "kernel" / "linux", info["key"])


def check_sandbox() -> None:
    """Fail loudly if bubblewrap cannot make its namespaces here (a container may forbid
    them): grading without the sandbox is not an option, and a build that fails for that
    reason must not reach a student as their compile error."""
    with tempfile.TemporaryDirectory(prefix="vmexit-sandbox-check-") as tmp:
        result = Sandbox(Path(tmp)).run(["true"], timeout=60)
    if result.status != 0:
        raise SystemExit("the build sandbox (bubblewrap) cannot run in this container, so "
                         "no submission can be graded safely: "
                         f"{result.output.strip()[:500] or result.status}")


def run(root: Path, source: Path) -> dict:
    """Grade ``root/submission`` into ``root/results/results.json``; returns that JSON."""
    from .submission import Submission, grade_submission
    from .runner import compile_helpers

    start = time.monotonic()
    lab, kernel = shipped(source)
    check_sandbox()
    results = root / "results"
    results.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="vmexit-gradescope-"))
    try:
        helpers = compile_helpers(lab, scratch / "helpers")
        report = grade_submission(lab, Submission("submission", root / "submission"),
                                  scratch, kernel=kernel, helpers=helpers)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    data = results_json(report, execution_time=time.monotonic() - start)
    tmp = results / ".results.json.tmp"
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, results / "results.json")
    print(format_report(report))        # run_autograder's stdout: for the instructor
    return data


def prepare(source: Path) -> None:
    """At image build (setup.sh): the initramfs, and a booted guest saved for fast starts."""
    from .submission import warm_up

    lab, kernel = shipped(source)
    check_sandbox()
    build_initramfs()
    warm_up(lab, kernel=kernel)


# -- making the zip ------------------------------------------------------------------------
def kernel_files(tree: Path) -> list[Path]:
    """The files of a built kernel tree that building a module against it needs (relative)."""
    keep: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(tree):
        rel_dir = Path(dirpath).relative_to(tree)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        wanted_dir = any(rel_dir == Path(d) or Path(d) in rel_dir.parents for d in KERNEL_DIRS)
        for name in filenames:
            rel = rel_dir / name
            if name.endswith(BUILD_LEFTOVERS) or name.startswith("."):
                if rel.as_posix() != ".config":
                    continue
            if (wanted_dir or name.startswith(("Makefile", "Kbuild", "Kconfig"))
                    or rel.as_posix() in KERNEL_FILES):
                keep.append(rel)
    keep += [Path(line).with_suffix(".ko")                    # the kernel's own modules
             for line in (tree / "modules.order").read_text().split()
             if (tree / Path(line).with_suffix(".ko")).is_file()]
    keep.append(Path("include/config/kernel.release"))
    return sorted(set(keep))


def make_autograder(lab: Lab, out: Path, *, kernel: Kernel, repo: Path) -> dict:
    """Write the autograder zip for ``lab`` (with its private tests, if set) to ``out``."""
    with tempfile.TemporaryDirectory(prefix="vmexit-autograder-") as tmp:
        vmlinux = Path(tmp) / "vmlinux"
        subprocess.run(["objcopy", "--strip-debug", str(kernel.vmlinux), str(vmlinux)],
                       check=True, timeout=300)
        members: list[tuple[str, Path | bytes, int]] = []

        def add(name: str, data: Path | bytes, mode: int = 0o644) -> None:
            members.append((f"{name}", data, mode))

        here = Path(__file__).resolve().parent
        add("setup.sh", (here / "autograder" / "setup.sh"), EXECUTABLE)
        add("run_autograder", (here / "autograder" / "run_autograder"), EXECUTABLE)
        for path in sorted(PACKAGE_DIR.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                add(f"{SOURCE}/lab_vm/{path.relative_to(PACKAGE_DIR).as_posix()}", path,
                    EXECUTABLE if path.stat().st_mode & stat.S_IXUSR else 0o644)
        add(f"{SOURCE}/pyproject.toml", repo / "pyproject.toml")
        pins = [line for line in (repo / "requirements.txt").read_text().splitlines()
                if line.startswith("qemu.qmp==")]
        add(f"{SOURCE}/requirements.txt",
            ("# what lab_vm's grading imports (pinned as in the repository)\n"
             + "\n".join(pins) + "\n").encode())
        lab_dir = f"{SOURCE}/lab/{lab.name}"
        add(f"{lab_dir}/{LAB_FILE}", lab.root / LAB_FILE)
        for path in sorted((lab.root / "tests").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                add(f"{lab_dir}/tests/{path.relative_to(lab.root / 'tests').as_posix()}", path)
        if lab.checker.parent != lab.root / "tests":
            add(f"{lab_dir}/{lab.checker.relative_to(lab.root).as_posix()}", lab.checker)
        for name in lab.build:
            add(f"{lab_dir}/{name}", lab.build_file(name))
        if lab.private_tests is not None:
            for path in sorted(lab.private_tests.iterdir()):
                if path.is_file() and path.suffix in (".py", ".c"):
                    add(f"{SOURCE}/private/{path.name}", path)
        tree = kernel.tree
        for rel in kernel_files(tree):
            path = tree / rel
            add(f"{SOURCE}/kernel/linux/{rel.as_posix()}", path,
                EXECUTABLE if path.stat().st_mode & stat.S_IXUSR else 0o644)
        add(f"{SOURCE}/kernel/linux/vmlinux", vmlinux)
        add(f"{SOURCE}/kernel/{KERNEL_INFO}",
            json.dumps({"key": kernel.key, "release": kernel.release,
                        "compiler": _config_value(tree / ".config", "CONFIG_CC_VERSION_TEXT")},
                       indent=1).encode())
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.tmp")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as zf:
            for name, data, mode in members:
                info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
                info.external_attr = (stat.S_IFREG | mode) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                zf.writestr(info, data.read_bytes() if isinstance(data, Path) else data)
        os.replace(partial, out)
    return {"zip": str(out), "files": len(members), "bytes": out.stat().st_size}


def _config_value(config: Path, name: str) -> str:
    for line in config.read_text().splitlines():
        if line.startswith(f"{name}="):
            return line.split("=", 1)[1].strip('"')
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab_vm.grading.gradescope")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="grade ROOT/submission into ROOT/results/results.json")
    run_p.add_argument("--root", type=Path, default=Path("/autograder"))
    run_p.add_argument("--source", type=Path, required=True)
    prep = sub.add_parser("prepare", help="build the initramfs and save a booted guest")
    prep.add_argument("--source", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)
    if args.command == "run":
        run(args.root.resolve(), args.source.resolve())
    else:
        prepare(args.source.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
