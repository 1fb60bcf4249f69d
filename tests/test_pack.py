"""`lab-vm pack`: only the lab's sources go in, checked to build (in the grading sandbox) and
to differ from the skeleton; and the archive grades exactly as the working copy it came from."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from lab_vm.grading.handout import SKELETON_DIGESTS, make_handout, skeleton_files
from lab_vm.grading.lab import load_lab
from lab_vm.grading.pack import PackError, pack
from lab_vm.baremetal.tinyvmm import kvm_problem

from conftest import REPO

PROBLEM = kvm_problem()
needs_kvm = pytest.mark.skipif(PROBLEM is not None, reason=f"/dev/kvm unusable: {PROBLEM}")
UART = REPO / "labs" / "01-uart"
EDU = REPO / "labs" / "02-edu-driver"


def lab_vm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([REPO / ".venv/bin/lab-vm", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture
def handout(tmp_path):
    """A student's copy of lab 1 as handed out: the skeleton is the working copy."""
    return make_handout(load_lab(UART), tmp_path / "handout").folder


def test_pack_refuses_the_skeleton_in_the_repository_and_in_a_handout(handout, tmp_path):
    for lab_dir in (UART, EDU):          # the default working copy in the repository: skeleton/
        lab = load_lab(lab_dir)
        with pytest.raises(PackError, match="still the skeleton"):
            pack(lab, lab.default_workdir(), tmp_path / "x.tar.gz")
    result = lab_vm("pack", ".", cwd=handout)
    assert result.returncode == 2 and "still the skeleton as handed out" in result.stderr
    assert not list(handout.glob("*.tar.gz"))
    digests = (handout / SKELETON_DIGESTS).read_text().split()
    assert digests[1] == "uart.py" and len(digests[0]) == 64


def test_pack_refuses_missing_sources_and_code_that_does_not_import(handout, tmp_path):
    lab = load_lab(handout)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PackError, match="has no uart.py"):
        pack(lab, empty, tmp_path / "x.tar.gz")
    (handout / "uart.py").write_text((UART / "solution/uart.py").read_text() + "\ndef f(:\n")
    with pytest.raises(PackError, match="(?s)does not import.*SyntaxError"):
        pack(lab, handout, tmp_path / "x.tar.gz")
    assert not (tmp_path / "x.tar.gz").exists()


def test_pack_takes_only_the_sources_and_lists_them(handout):
    shutil.copy(UART / "solution/uart.py", handout / "uart.py")
    (handout / "notes.txt").write_text("my notes\n")
    (handout / "__pycache__").mkdir()
    (handout / "__pycache__" / "uart.cpython-311.pyc").write_bytes(b"\0")
    result = lab_vm("pack", ".", "-o", "out/hand-in.tar.gz", cwd=handout)
    assert result.returncode == 0, result.stderr
    with tarfile.open(handout / "out" / "hand-in.tar.gz") as tar:
        assert tar.getnames() == ["01-uart", "01-uart/uart.py"]
        assert tar.extractfile("01-uart/uart.py").read() == (handout / "uart.py").read_bytes()
    assert "01-uart/uart.py" in result.stdout and "imports in the grading sandbox" in result.stdout
    left_out = next(line for line in result.stdout.splitlines() if line.startswith("not incl"))
    assert "notes.txt" in left_out and "run_guest.py" in left_out and "pyc" not in left_out
    again = lab_vm("pack", ".", "-o", "out/again.tar.gz", cwd=handout)
    assert again.returncode == 0, again.stderr
    assert (handout / "out/again.tar.gz").read_bytes() == \
        (handout / "out/hand-in.tar.gz").read_bytes()          # reproducible


def grade_copy_and_archive(lab_name: str, handout: Path, tmp_path: Path, *,
                           timeout: float) -> dict[str, dict]:
    """Pack ``handout``, grade the working copy and the archive side by side with scripts/grade:
    the grade sheet's rows, by student ("copy", "packed")."""
    packed = pack(load_lab(handout), handout, tmp_path / "packed.tar.gz")
    subs = tmp_path / "submissions"
    subs.mkdir()
    shutil.copytree(handout, subs / "copy")
    shutil.copy(packed.archive, subs / "packed.tar.gz")
    out = tmp_path / "results"
    # short: QEMU's unix sockets live in TMPDIR, and a socket path has at most 107 bytes
    tmp = Path(tempfile.mkdtemp(prefix="vg-", dir="/tmp"))
    try:
        proc = subprocess.run([REPO / "scripts" / "grade", lab_name, subs, "--out", out],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "TMPDIR": str(tmp)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr
    with open(out / "grades.csv") as f:
        return {row.pop("student"): row for row in csv.DictReader(f)}


@needs_kvm
def test_the_packed_archive_grades_as_the_working_copy(handout, tmp_path):
    # Half the work done: TODOs 1-7 solved, the divisor latch (8, 9) not yet.
    lab = load_lab(UART)
    (handout / "uart.py").write_text(skeleton_files(lab, reveal=7)["uart.py"])
    rows = grade_copy_and_archive("01-uart", handout, tmp_path, timeout=900)
    assert rows["copy"] == rows["packed"]
    assert rows["copy"]["verdict"] == "ok" and rows["copy"]["divisor_latch"] == "0"
    assert 0 < int(rows["copy"]["total"]) < int(rows["copy"]["max"])


@pytest.mark.slow
def test_pack_builds_a_module_lab_with_its_own_kbuild(built, tmp_path):
    copy = tmp_path / "edu"
    copy.mkdir()
    shutil.copy(EDU / "solution" / "edu.c", copy)
    (copy / "Kbuild").write_text("obj-m += not-the-labs.o\n")      # never used
    packed = pack(load_lab(EDU), copy, tmp_path / "edu.tar.gz")
    assert "edu.ko builds with the lab's own Kbuild" in packed.build
    assert list(packed.files) == ["02-edu-driver/edu.c"] and packed.left_out == ["Kbuild"]
    (copy / "edu.c").write_text((EDU / "solution" / "edu.c").read_text()
                                + "static int broken(void) { return }\n")
    with pytest.raises(PackError, match="(?s)does not compile.*edu.c:\\d+"):
        pack(load_lab(EDU), copy, tmp_path / "bad.tar.gz")


def test_every_handout_says_how_to_submit_and_how_to_debug():
    from lab_vm.grading.lab import find_labs
    from lab_vm.grading import reports
    from lab_vm.grading.runner import select

    for lab in find_labs(REPO / "labs"):
        text = (lab.root / "README.md").read_text()
        for heading in ("## How to submit", "## Hints", "## Debugging"):
            assert f"\n{heading}\n" in text, f"{lab.name}: no {heading}"
        assert "lab-vm pack ." in text and "**Time:** about" in text, lab.name
        # The one-test example names a test that exists; gdb's breakpoint, a function that does.
        words = [line.split("-k ", 1)[1].split("`")[0] for line in text.splitlines()
                 if "lab-vm check . -k " in line]
        assert words and all(select(lab.tests(hidden=False), [w]) for w in words), lab.name
        if lab.kind == "module":
            assert "Reading an oops" in text and "lab-vm gdb" in text, lab.name
            # Graded on the checking kernel: the student reads each verdict it gives and what
            # it costs in this lab (its lab.toml), and the fast kernel's escape hatch.
            assert reports.kernel_variant(lab) == "checking", lab.name
            flat = " ".join(text.split())
            assert "checking kernel" in flat and "lab-vm check . --fast" in flat, lab.name
            for verdict, cost in reports.points(lab).items():
                assert f"(`{verdict}`, −{cost})" in flat, (lab.name, verdict, cost)
            breaks = [line.split("`break ", 1)[1].split("`")[0] for line in text.splitlines()
                      if "`break " in line]
            source = (lab.solution / lab.sources[0]).read_text()
            assert breaks and all(f" {b}(" in source for b in breaks), lab.name


@pytest.mark.slow
def test_a_packed_module_lab_grades_as_its_working_copy(built, tmp_path):
    # TODOs 1-5 of the edu driver done: probe, mapping, identification, liveness.
    lab = load_lab(EDU)
    handout = make_handout(lab, tmp_path / "handout").folder
    (handout / "edu.c").write_text(skeleton_files(lab, reveal=5)["edu.c"])
    rows = grade_copy_and_archive("02-edu-driver", handout, tmp_path, timeout=1200)
    assert rows["copy"] == rows["packed"]
    assert rows["copy"]["verdict"] == "ok" and 0 < int(rows["copy"]["total"]) < 120


@pytest.mark.slow
def test_the_handouts_gdb_recipe_stops_in_the_module(built, tmp_path):
    # What labs/02-edu-driver/README.md's debugging section tells a student to type.
    shutil.copy(EDU / "solution" / "edu.c", tmp_path)
    shutil.copy(EDU / "solution" / "Kbuild", tmp_path)
    assert lab_vm("module", ".", cwd=tmp_path).returncode == 0
    script = "break edu_probe\ncontinue\nbt 1\ndelete\ncontinue &\nshell sleep 3\ninterrupt\nquit\n"
    proc = subprocess.run([REPO / ".venv/bin/lab-vm", "gdb", "--share", ".", "--device", "edu",
                           "--", "insmod", "/mnt/share/edu.ko"], cwd=tmp_path, input=script,
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "Breakpoint 1, edu_probe (pdev=" in out and "edu.c:" in out, out
    assert "`insmod /mnt/share/edu.ko` exited with status 0" in out, out
