"""Working copies of the notebooks: a student's edits survive `make lab`'s set-up, pulls and
resets, and the git tree stays clean.

The student's checkout is a real clone of an upstream repository that holds this checkout's
lab_vm, pyproject.toml and .gitignore beside a notebook of its own, so `lab-vm notebooks` (the
set-up step of `make lab`) runs from the clone exactly as it does from a student's checkout.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lab_vm.errors import ConfigError
from lab_vm.tools.workbench import Workbench

from conftest import REPO


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                           *args], check=True, capture_output=True, text=True).stdout


def notebook(text: str, code: str = "") -> str:
    cells = [{"cell_type": "markdown", "metadata": {}, "source": text}]
    if code:                                 # as Jupyter saves a cell that ran: with outputs
        cells.append({"cell_type": "code", "metadata": {}, "source": code, "execution_count": 1,
                      "outputs": [{"output_type": "stream", "name": "stdout", "text": "ran\n"}]})
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


def lab_vm_notebooks(checkout, *args):
    """`lab-vm notebooks` as `make lab` runs it, from the student's checkout."""
    proc = subprocess.run([sys.executable, "-m", "lab_vm.tools.cli", "notebooks", *args],
                          cwd=checkout, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(checkout)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return dict(reversed(line.split(None, 1)) for line in proc.stdout.splitlines())


@pytest.fixture
def clone(tmp_path):
    """An upstream repository with one notebook, and a student's clone of it."""
    upstream = tmp_path / "upstream"
    (upstream / "notebooks").mkdir(parents=True)
    (upstream / "notebooks" / "01-loop.ipynb").write_text(notebook("version 1"))
    shutil.copytree(REPO / "lab_vm", upstream / "lab_vm",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in (".gitignore", "pyproject.toml"):     # the project's ignore and lint rules
        shutil.copy(REPO / name, upstream / name)
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "add", ".")
    git(upstream, "commit", "-qm", "v1")
    student = tmp_path / "student"
    git(tmp_path, "clone", "-q", str(upstream), str(student))
    return upstream, student


def test_make_lab_runs_the_set_up_and_opens_the_working_copies():
    recipe = re.search(r"(?m)^lab:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text())[1]
    assert "lab-vm notebooks" in recipe and "--ServerApp.root_dir=notebooks/mine" in recipe


def test_edits_survive_setup_pull_and_reset(clone):
    upstream, student = clone
    mine = student / "notebooks/mine/01-loop.ipynb"
    assert lab_vm_notebooks(student) == {str(mine): "created"}
    # the student works and saves, as Jupyter does: outputs, and code the linter would flag
    mine.write_text(notebook("my answer", "import os\nprint('ran')"))
    assert lab_vm_notebooks(student) == {}                  # `make lab` again: nothing to say
    assert "my answer" in mine.read_text()
    assert git(student, "status", "--porcelain", "--untracked-files=all") == ""
    # make test's lint passes over the copy (and its outputs)
    lint = subprocess.run([Path(sys.executable).with_name("ruff"), "check", "."],
                          cwd=student, capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr

    (upstream / "notebooks" / "01-loop.ipynb").write_text(notebook("version 2"))
    git(upstream, "commit", "-qam", "v2")
    git(student, "pull", "-q")                              # no conflict: the copy is ignored
    offered = lab_vm_notebooks(student)
    assert list(offered.values()) == ["offered"], offered
    new = next(iter(offered))
    assert re.fullmatch(r".*/notebooks/mine/01-loop\.new-\d{8}-\d{6}\.ipynb", new), new
    assert "my answer" in mine.read_text()
    assert "version 2" in open(new).read()
    assert lab_vm_notebooks(student) == {}                  # offered once, not at every start
    assert git(student, "status", "--porcelain", "--untracked-files=all") == ""

    assert lab_vm_notebooks(student, "--reset", "01-loop") == {str(mine): "reset"}
    assert "version 2" in mine.read_text()
    backups = list(mine.parent.glob("01-loop.backup-*.ipynb"))
    assert len(backups) == 1 and "my answer" in backups[0].read_text()
    assert git(student, "status", "--porcelain", "--untracked-files=all") == ""


def test_reset_of_an_unknown_notebook_names_the_known_ones(clone):
    _, student = clone
    with pytest.raises(ConfigError, match="01-loop"):
        Workbench(student / "notebooks").reset("nope")
