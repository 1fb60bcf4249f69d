"""The Gradescope autograder: results.json in Gradescope's format, and run_autograder grading
a correct and a broken submission in a temporary /autograder tree made from the zip of
scripts/make-autograder (its lab_vm, its lab, its kernel: real module builds, real VMs)."""
from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from lab_vm.grading.gradescope import results_json
from lab_vm.grading.memory import PeakMemory
from lab_vm.grading.results import Report, TestResult

from conftest import REPO
from grading_fixtures import does_not_compile, solution

GRADESCOPE_LIMIT = 768 * 2**20      # bytes: the default container's memory
VISIBILITIES = {"visible", "hidden", "after_due_date", "after_published"}


def check_results(data: dict) -> None:
    """What Gradescope's autograder specification asks of results.json."""
    assert isinstance(data["score"], (int, float))
    assert isinstance(data["execution_time"], (int, float))
    assert data["visibility"] in VISIBILITIES and data["stdout_visibility"] in VISIBILITIES
    assert data["output_format"] in ("text", "html", "simple_format", "md", "ansi")
    assert isinstance(data["output"], str) and data["tests"]
    for test in data["tests"]:
        assert set(test) >= {"name", "score", "max_score", "output", "visibility", "status"}
        assert isinstance(test["name"], str) and test["name"]
        assert 0 <= test["score"] <= test["max_score"]
        assert test["visibility"] in VISIBILITIES
        assert test["status"] in ("passed", "failed")
    assert data["score"] == sum(t["score"] for t in data["tests"])
    json.dumps(data)


def test_results_json_follows_the_format_and_hides_hidden_tests():
    report = Report("02-edu-driver", "panic", [
        TestResult("a", "public one", 10, points=10, status="pass"),
        TestResult("b", "hidden one", 5, hidden=True, status="error",
                   message="the guest kernel panicked", fix="look at the oops"),
    ], detail="BUG: kernel NULL pointer dereference", warnings=["edu.c:3: warning: x"],
        duration=3.2)
    data = results_json(report)
    check_results(data)
    assert data["score"] == 10
    assert [(t["visibility"], t["status"]) for t in data["tests"]] == \
        [("visible", "passed"), ("after_published", "failed")]
    assert "fix: look at the oops" in data["tests"][1]["output"]
    # The panic happened in the hidden test: students see it, and the oops, once published.
    assert "NULL pointer" in data["tests"][1]["output"]
    assert "panic" not in data["output"] and "NULL pointer" not in data["output"]
    assert "edu.c:3: warning: x" in data["output"]


def test_results_json_shows_a_crash_in_a_visible_test_at_once():
    report = Report("02-edu-driver", "timeout", [
        TestResult("a", "public one", 10, status="error", message="timed out"),
        TestResult("b", "hidden one", 5, hidden=True,
                   message="not run: the run ended with timeout in an earlier test"),
    ], detail="in the test 'public one': cat /dev/edu did not finish")
    data = results_json(report)
    check_results(data)
    assert data["output"].startswith("verdict: timeout") and "cat /dev/edu" in data["output"]
    assert "cat /dev/edu" not in data["tests"][1]["output"]


@pytest.fixture(scope="module")
def autograder(built, tmp_path_factory):
    """The zip, unpacked the way Gradescope unpacks it: /autograder/source/..."""
    tmp = tmp_path_factory.mktemp("gradescope")
    zpath = tmp / "autograder.zip"
    proc = subprocess.run([REPO / "scripts" / "make-autograder", "02-edu-driver", "--out", zpath],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(zpath) as zf:
        names = zf.namelist()
        source = tmp / "autograder" / "source"
        zf.extractall(source)
        for info in zf.infolist():      # zipfile drops the modes: run_autograder is executable
            mode = info.external_attr >> 16 & 0o777
            if mode:
                os.chmod(source / info.filename, mode)
    root = tmp / "autograder"
    shutil.copy2(source / "run_autograder", root / "run_autograder")
    return root, names, zpath.stat().st_size


@pytest.fixture(scope="module")
def autograder_python(autograder, tmp_path_factory):
    """A Python with only what the zip's requirements.txt lists (setup.sh's venv): the
    packages are linked from this venv at the pinned versions, so no network is needed, and
    anything else grading imported would fail here as it would on Gradescope."""
    root, _, _ = autograder
    venv = tmp_path_factory.mktemp("gradescope-venv")
    subprocess.run([sys.executable, "-m", "venv", "--clear", "--without-pip", venv], check=True)
    purelib = subprocess.run([venv / "bin" / "python", "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    wanted = [line for line in (root / "source" / "vmexit" / "requirements.txt").read_text()
              .splitlines() if line and not line.startswith("#")]
    assert wanted == [f"qemu.qmp=={importlib.metadata.version('qemu.qmp')}"], wanted
    import qemu.qmp
    os.symlink(Path(qemu.qmp.__file__).parent.parent, Path(purelib) / "qemu")
    return venv / "bin" / "python"


def test_autograder_zip_holds_no_solution(autograder):
    root, names, size = autograder
    assert "setup.sh" in names and "run_autograder" in names
    assert not any("/solution/" in n or n.startswith("solution/") for n in names)
    assert "vmexit/kernel/linux/vmlinux" in names and "vmexit/kernel/linux/Module.symvers" in names
    setup = (root / "source" / "setup.sh").read_text()
    assert "Ubuntu 24.04" in setup and "libelf1t64" in setup and "gcc-12" in setup
    for script in ("setup.sh", "run_autograder"):
        assert os.access(root / "source" / script, os.X_OK)
        syntax = subprocess.run(["bash", "-n", root / "source" / script], capture_output=True,
                                text=True)
        assert syntax.returncode == 0, syntax.stderr
    print(f"autograder.zip: {len(names)} files, {size / 1e6:.1f} MB")


def _run(root: Path, python: Path, files: dict[str, str]) -> tuple[dict, PeakMemory, str]:
    sub = root / "submission"
    shutil.rmtree(sub, ignore_errors=True)
    shutil.rmtree(root / "results", ignore_errors=True)
    sub.mkdir()
    for name, text in files.items():
        (sub / name).write_text(text)
    # Gradescope's containers have no /dev/kvm: TCG, whatever this machine offers.
    env = {**os.environ, "AUTOGRADER_ROOT": str(root), "VMEXIT_PYTHON": str(python),
           "VMEXIT_ACCEL": "tcg"}
    env.pop("PYTHONPATH", None)         # run_autograder sets its own: the zip's lab_vm
    proc = subprocess.Popen([root / "run_autograder"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    with PeakMemory(proc.pid) as mem:
        out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return json.loads((root / "results" / "results.json").read_text()), mem, out


@pytest.mark.slow
def test_run_autograder_grades_a_correct_and_a_broken_submission(autograder, autograder_python):
    root, _, _ = autograder
    good, mem, out = _run(root, autograder_python, {"edu.c": solution()})
    check_results(good)
    assert good["score"] == 120 and all(t["status"] == "passed" for t in good["tests"]), out
    hidden = [t["name"] for t in good["tests"] if t["visibility"] == "after_published"]
    assert hidden and len(hidden) < len(good["tests"])
    assert out.rstrip().splitlines()[-1] == "Score: 120/120"
    print(f"one grading: peak {mem.peak_total / 2**20:.0f} MiB for the whole tree, "
          f"{mem.peak_qemu / 2**20:.0f} MiB for its VM ({len(mem.qemus)} QEMU), "
          f"{good['execution_time']} s")
    assert mem.qemus, "no QEMU was seen: the measure measured nothing"
    assert mem.peak_total < GRADESCOPE_LIMIT, "grading does not fit Gradescope's 768 MB"

    bad, _, out = _run(root, autograder_python, {"edu.c": does_not_compile()})
    check_results(bad)
    assert bad["score"] == 0 and bad["output"].startswith("verdict: compile-error"), out
    assert "error: expected ';'" in bad["output"]
