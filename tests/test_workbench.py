"""Working copies of the notebooks: a student's edits survive set-up runs, pulls and resets,
and the git tree stays clean."""
from __future__ import annotations

import json
import subprocess

import pytest

from lab_vm.errors import ConfigError
from lab_vm.tools.workbench import Workbench

from conftest import REPO


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True,
                          text=True).stdout


def notebook(text: str) -> str:
    return json.dumps({"cells": [{"cell_type": "markdown", "metadata": {}, "source": text}],
                       "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture
def clone(tmp_path):
    """An upstream repository with one notebook, and a student's clone of it."""
    upstream = tmp_path / "upstream"
    (upstream / "notebooks").mkdir(parents=True)
    (upstream / "notebooks" / "01-loop.ipynb").write_text(notebook("version 1"))
    (upstream / ".gitignore").write_text(
        (REPO / ".gitignore").read_text())                 # the project's own ignore rules
    git(upstream, "init", "-q", "-b", "main")
    git(upstream, "-c", "user.name=t", "-c", "user.email=t@t", "add", ".")
    git(upstream, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "v1")
    student = tmp_path / "student"
    git(tmp_path, "clone", "-q", str(upstream), str(student))
    return upstream, student


def test_edits_survive_setup_pull_and_reset(clone):
    upstream, student = clone
    bench = Workbench(student / "notebooks")
    assert [c.action for c in bench.sync()] == ["created"]
    mine = bench.work / "01-loop.ipynb"
    mine.write_text(notebook("my answer"))                 # the student works and saves
    assert [c.action for c in bench.sync()] == ["kept"]    # `make lab` again
    assert "my answer" in mine.read_text()
    assert git(student, "status", "--porcelain") == ""     # the tree is clean

    (upstream / "notebooks" / "01-loop.ipynb").write_text(notebook("version 2"))
    git(upstream, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "v2")
    git(student, "pull", "-q")                              # no conflict: the copy is ignored
    changes = bench.sync()
    assert [c.action for c in changes] == ["offered"]
    assert "my answer" in mine.read_text()
    assert "version 2" in changes[0].path.read_text()
    assert [c.action for c in bench.sync()] == ["kept"]    # offered once, not at every start
    assert git(student, "status", "--porcelain") == ""

    bench.reset("01-loop")
    assert "version 2" in mine.read_text()
    backups = list(bench.work.glob("01-loop.backup-*.ipynb"))
    assert len(backups) == 1 and "my answer" in backups[0].read_text()
    assert git(student, "status", "--porcelain") == ""


def test_reset_of_an_unknown_notebook_names_the_known_ones(clone):
    _, student = clone
    with pytest.raises(ConfigError, match="01-loop"):
        Workbench(student / "notebooks").reset("nope")
