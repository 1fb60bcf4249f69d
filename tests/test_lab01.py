"""Lab 1 (a UART in the tiny Python VMM): its handout, and — on the real /dev/kvm, in the real
bubblewrap sandbox — full marks for the solution, few for the skeleton, precise verdicts for
code that hangs or crashes, a sandbox that shows the student's code nothing of the host, and
a clear message where /dev/kvm cannot be used."""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest

from lab_vm.tools import cli
from lab_vm.grading import hostrun
from lab_vm.grading.batch import grade_batch
from lab_vm.grading.handout import (SKELETON_DIGESTS, make_handout, secret_lines,
                                    skeleton_is_current)
from lab_vm.grading.lab import load_lab
from lab_vm.baremetal.tinyvmm import kvm_problem

from conftest import REPO

LAB_DIR = REPO / "labs" / "01-uart"
SOLUTION = LAB_DIR / "solution" / "uart.py"
PROBLEM = kvm_problem()
needs_kvm = pytest.mark.skipif(PROBLEM is not None, reason=f"/dev/kvm unusable: {PROBLEM}")


@pytest.fixture(scope="module")
def lab():
    return load_lab(LAB_DIR)


def _check(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([REPO / ".venv/bin/lab-vm", "check", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def variant(old: str, new: str) -> str:
    """The solution with one line changed: a submission with one known bug."""
    text = SOLUTION.read_text()
    assert text.count(old) == 1, old
    return text.replace(old, new)


def test_skeleton_is_current_and_the_handout_keeps_its_secrets(lab, tmp_path):
    assert lab.kind == "python"
    assert skeleton_is_current(lab) == [], "run scripts/make-handouts to regenerate skeleton/"
    handout = make_handout(lab, tmp_path)        # raises if a solution line would leak
    secrets = secret_lines(lab)
    assert len(secrets) > 15
    texts = {p.relative_to(handout.folder).as_posix(): p.read_text()
             for p in handout.folder.rglob("*") if p.is_file()}
    assert {"uart.py", "run_guest.py", "tests/check_uart.py", "tests/guests/echo.S",
            SKELETON_DIGESTS} <= set(texts)
    for name, text in texts.items():
        assert not secrets & {line.strip() for line in text.splitlines()}, name
    hidden = [s for s in lab.tests() if s.hidden]
    assert hidden and not any(f"def {s.name}(" in texts["tests/check_uart.py"] for s in hidden)
    assert sum(s.points for s in lab.tests(hidden=False)) == 100
    assert "/dev/kvm" in texts["README.md"] and "lab-vm check ." in texts["README.md"]
    with tarfile.open(handout.tarball) as tar:
        assert "01-uart/tests/guests/polite.S" in tar.getnames()


@needs_kvm
def test_the_solution_gets_full_marks_hidden_tests_included():
    result = _check("labs/01-uart", "--dir", "labs/01-uart/solution", "--hidden")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "Score: 120/120", result.stdout


@needs_kvm
def test_the_skeleton_in_a_handout_scores_low(lab, tmp_path):
    handout = make_handout(lab, tmp_path)
    result = _check(".", cwd=handout.folder)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "Score: 10/100", result.stdout
    assert "the guest did not halt within 5000 exits" in result.stdout   # polls LSR forever
    assert "from port 0x3fd: the VMM answered 0x00" in result.stdout
    assert "(TODO 1)" in result.stdout


@needs_kvm
def test_check_k_runs_only_the_matching_tests():
    result = _check("labs/01-uart", "--dir", "labs/01-uart/solution", "-k", "divisor")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "Score: 15/15" and len(lines) == 2, result.stdout
    result = _check("labs/01-uart", "-k", "no-such-test")
    assert result.returncode == 2
    assert "no test matches 'no-such-test'" in result.stderr and "runs_to_hlt" in result.stderr


def test_without_kvm_check_and_grade_say_so(monkeypatch, tmp_path, capsys, lab):
    monkeypatch.setattr(hostrun, "KVM_DEVICE", "/nonexistent/kvm")
    status = cli.main(["check", str(LAB_DIR), "--dir", str(LAB_DIR / "solution")])
    err = capsys.readouterr().err
    assert status == 2
    assert "KVMMissing" in err and "/nonexistent/kvm does not exist" in err
    assert "nothing was graded" in err
    subs = tmp_path / "subs"
    (subs / "alice").mkdir(parents=True)
    with pytest.raises(hostrun.KVMMissing, match="cannot be used"):
        grade_batch(lab, subs, tmp_path / "out", progress=None)
    assert not (tmp_path / "out").exists()


PROBE = '''
import json, os, socket
from lab_vm.baremetal.tinyvmm import FINAL_EXITS


def facts():
    found = {"root": sorted(os.listdir("/")), "dev": sorted(os.listdir("/dev"))}
    for path in ("/work", "/home", "/root/.ssh", "/etc/passwd", "/etc/shadow", REPO):
        found[path] = os.path.exists(path)
    try:
        open("/usr/pwned", "w")
        found["write /usr"] = True
    except OSError:
        found["write /usr"] = False
    try:
        socket.create_connection(("1.1.1.1", 53), timeout=2)
        found["network"] = True
    except OSError:
        found["network"] = False
    found["interfaces"] = [line.split(":")[0].strip()
                           for line in open("/proc/net/dev").read().splitlines()[2:]]
    return found


class UART:
    def __init__(self, rx=b""):
        self.tx = bytearray(json.dumps(facts()).encode())


def answer(uart, exit):
    return 0


def handle(uart, exit):
    return exit.reason not in FINAL_EXITS
'''


@needs_kvm
def test_the_sandbox_shows_the_students_code_kvm_and_nothing_else(lab, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "uart.py").write_text(PROBE.replace("REPO", repr(str(REPO))))
    shutil.copy(LAB_DIR / "solution" / "run_guest.py", work)
    session = hostrun.HostSession(lab, work, hostrun.Runtime(tmp_path), tmp_path,
                                  deadline=1e12)
    run = session.run(LAB_DIR / "tests" / "guests" / "halt.S")
    assert run.halted
    found = json.loads(run.tx)
    assert "kvm" in found["dev"]
    assert not any(found[p] for p in ("/work", "/home", "/root/.ssh", "/etc/passwd",
                                      "/etc/shadow", str(REPO))), found
    assert not found["write /usr"] and not Path("/usr/pwned").exists()
    assert not found["network"] and found["interfaces"] == ["lo"], found


@needs_kvm
def test_grade_gives_hangs_crashes_and_broken_code_precise_verdicts(lab, tmp_path):
    subs = tmp_path / "submissions"
    subs.mkdir()
    shutil.copytree(LAB_DIR / "solution", subs / "solution")
    with tarfile.open(subs / "skeleton.tar.gz", "w:gz") as tar:
        tar.add(LAB_DIR / "skeleton" / "uart.py", "01-uart/uart.py")
    # Loops for ever in write() on the scratch register: the tests that write SCR hang.
    (subs / "hangs").mkdir()
    (subs / "hangs" / "uart.py").write_text(variant(
        "            self.scr = value\n",
        "            while value:  # spins for ever\n                pass\n"))
    # Raises in read() on LSR: the tests that read the line status crash.
    (subs / "crashes").mkdir()
    (subs / "crashes" / "uart.py").write_text(variant(
        "            return LSR_THRE | LSR_TEMT | (LSR_DR if self.rx else 0)\n",
        "            return self.line_status\n"))
    (subs / "syntax").mkdir()
    (subs / "syntax" / "uart.py").write_text(SOLUTION.read_text() + "\ndef broken(:\n")
    (subs / "empty").mkdir()
    (subs / "empty" / "notes.txt").write_text("I will hand it in tomorrow\n")
    out = tmp_path / "results"
    tmp = Path(tempfile.mkdtemp(prefix="vg-", dir="/tmp"))
    try:
        proc = subprocess.run([REPO / "scripts" / "grade", "01-uart", subs, "--out", out],
                              capture_output=True, text=True, timeout=900,
                              env={**os.environ, "TMPDIR": str(tmp)})
        assert proc.returncode == 0, proc.stderr
        assert list(tmp.iterdir()) == [], "the grader left temporary files"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(out / "grades.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    feedback = {p.stem: p.read_text() for p in (out / "feedback").iterdir()}
    got = {s: (r["verdict"], int(r["total"])) for s, r in rows.items()}
    assert got == {"solution": ("ok", 120), "skeleton": ("ok", 10),
                   "hangs": ("timeout", 100), "crashes": ("crash", 65),
                   "syntax": ("compile-error", 0), "empty": ("no-output", 0)}, feedback
    assert rows["hangs"]["scratch"] == "0" and rows["hangs"]["receive"] == "20"
    # The hang's feedback shows where the student's code was stuck; the crash's, where it raised.
    assert "did not return within" in feedback["hangs"]
    assert 'uart.py", line' in feedback["hangs"] and "in write" in feedback["hangs"]
    assert "AttributeError" in feedback["crashes"] and "line_status" in feedback["crashes"]
    assert 'File "uart.py", line' in feedback["crashes"]
    assert "During handling" not in feedback["crashes"]      # the VM closed cleanly after it
    assert "run_guest.py" not in feedback["crashes"].split("verdict: crash")[-1]
    assert "SyntaxError" in feedback["syntax"]
    assert "no uart.py found" in feedback["empty"]


PRIVATE = '''
from lab_vm.grading import expect, test


@test(8, "the course's own: SCR keeps 0x5a")
def course_scr(t):
    run = t.run("""
	.code16
	.globl _start
_start:
	mov	$0x3ff, %dx
	mov	$0x5a, %al
	out	%al, %dx
	in	%dx, %al
	mov	%al, %bl
	hlt
""")
    expect(run.halted and run.reg("bl") == 0x5a, f"SCR lost its value: {run.describe()}",
           "keep what was written to SCR")
'''


@needs_kvm
def test_private_tests_add_their_points_to_a_python_lab(tmp_path):
    """A Python lab takes a course's private tests as a module lab does (tests/test_grading.py):
    same @test API, run after the lab's own, their points in the total."""
    private = tmp_path / "course-private"
    private.mkdir()
    (private / "check_course.py").write_text(PRIVATE)
    subs = tmp_path / "submissions"
    shutil.copytree(LAB_DIR / "solution", subs / "solution")
    (subs / "skeleton").mkdir()
    shutil.copy(LAB_DIR / "skeleton" / "uart.py", subs / "skeleton")
    out = tmp_path / "results"
    proc = subprocess.run([REPO / "scripts" / "grade", "01-uart", subs, "--out", out,
                           "--private-tests", private], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    with open(out / "grades.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert list(rows["solution"])[-4:] == ["course_scr", "total", "max", "verdict"]
    assert {s: (r["course_scr"], r["total"], r["max"]) for s, r in rows.items()} == \
        {"solution": ("8", "128", "128"), "skeleton": ("0", "10", "128")}
    assert "keep what was written to SCR" in (out / "feedback" / "skeleton.txt").read_text()
