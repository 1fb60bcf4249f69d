"""lab_vm.tools.progress outside a kernel: every line in order, the failure said, the history kept."""
import time

import pytest

from lab_vm.tools import progress as progress_module
from lab_vm.tools.progress import progress


def test_a_step_is_announced_before_it_runs_and_each_part_is_a_line(capsys):
    said = []
    with progress("Booting", ["compiling", "booting"], about="a few seconds") as p:
        said.append(capsys.readouterr().out)      # what the reader saw before any work
        p.step("booting the VM")
    lines = (said[0] + capsys.readouterr().out).splitlines()
    assert lines[0] == "Booting (usually a few seconds) ..."
    assert lines[1].startswith("  [1/2] compiling (")
    assert lines[2].startswith("  [2/2] booting the VM (")      # step() renamed the next part
    assert lines[3].startswith("Booting: done in ")
    run = progress_module.HISTORY[-1]
    assert (run.title, run.ok) == ("Booting", True) and run.start <= run.end <= time.time()


def test_a_failure_is_said_and_raised(capsys):
    with pytest.raises(KeyError), progress("Sampling", 2):
        raise KeyError("x")
    assert "Sampling: failed after 0 s (KeyError)" in capsys.readouterr().out
    assert progress_module.HISTORY[-1].ok is False


def test_no_parts_is_an_error():
    with pytest.raises(ValueError):
        progress("Nothing", [])
