"""Lab 3 (a stacking block driver): its handout is sound, the chapter's bug patch still applies,
and in the VM the skeleton scores low, the solution full marks and the chapter's buggy variant
loses the concurrency tests (real module builds, real VMs with two CPUs)."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from lab_vm.grading.handout import make_handout, secret_lines, skeleton_is_current
from lab_vm.grading.lab import load_lab

from conftest import REPO

LAB_DIR = REPO / "labs" / "03-stacking-blockdev"
PATCH = REPO / "book" / "code" / "03-bio-iteration" / "shared-iterator.patch"
LAB_VM = REPO / ".venv" / "bin" / "lab-vm"


@pytest.fixture(scope="module")
def lab():
    return load_lab(LAB_DIR)


def test_lab_asks_for_two_cpus_and_has_hidden_tests(lab):
    assert lab.cpus >= 2 and lab.module == "xform" and lab.sources == ("xform.c",)
    assert any(s.hidden for s in lab.tests()) and sum(s.points for s in lab.tests(hidden=False)) \
        == 100


def test_skeleton_is_current_and_the_handout_leaks_nothing(lab, tmp_path):
    assert skeleton_is_current(lab) == [], "run scripts/make-handouts to regenerate skeleton/"
    handout = make_handout(lab, tmp_path)
    secrets = secret_lines(lab)
    assert len(secrets) > 25
    for path in handout.folder.rglob("*"):
        if path.is_file():
            lines = {line.strip() for line in path.read_text().splitlines()}
            assert not secrets & lines, f"{path.name} leaks {sorted(secrets & lines)[:3]}"
    checker = (handout.folder / "tests" / "check_xform.py").read_text()
    assert all(f"def {s.name}(" not in checker for s in lab.tests() if s.hidden)


def buggy_copy(dest: Path) -> Path:
    """The solution with the chapter's patch applied: one saved iterator for all reads."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(LAB_DIR / "solution" / "xform.c", dest / "xform.c")
    subprocess.run(["patch", "-s", "-p1", "-d", str(dest), "-i", str(PATCH)], check=True,
                   timeout=30)
    return dest


def test_the_chapters_patch_applies_to_the_solution(tmp_path):
    text = (buggy_copy(tmp_path) / "xform.c").read_text()
    assert "xf.iter = clone->bi_iter;" in text and "io->iter" not in text


def _check(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([LAB_VM, "check", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def _points(stdout: str) -> dict[str, int]:
    """{test title: points} from lab-vm check's report."""
    return {m.group(1).rstrip(" ."): int(m.group(2))
            for m in re.finditer(r"^(\S.*?)\s+(?:OK|FAIL|ERROR)\s+(\d+)/\d+", stdout, re.M)}


@pytest.mark.slow
def test_solution_gets_full_marks_hidden_tests_included(built):
    result = _check(str(LAB_DIR), "--dir", str(LAB_DIR / "solution"), "--hidden")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "Score: 120/120"


@pytest.mark.slow
def test_skeleton_scores_low(lab, built, tmp_path):
    handout = make_handout(lab, tmp_path)
    result = _check(".", cwd=handout.folder)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "Score: 10/100"
    assert "Input/output error" in result.stdout and "fix: " in result.stdout


@pytest.mark.slow
def test_shared_iterator_bug_loses_the_concurrency_tests(built, tmp_path):
    buggy = buggy_copy(tmp_path / "buggy")
    result = _check(str(LAB_DIR), "--dir", str(buggy))
    points = _points(result.stdout)
    assert result.returncode == 1, result.stdout + result.stderr
    assert points["data written to /dev/xform0 reads back the same"] == 15, result.stdout
    assert points["concurrent writers and readers: every sector checks out, many times over"] \
        == 0, result.stdout
    assert "bad_reads=" in result.stdout
