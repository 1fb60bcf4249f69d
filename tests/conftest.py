"""Fixtures for the vmexit test-suite: a real lab VM, and a check that none outlives the suite."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from lab_vm.build import initramfs, kernel
from lab_vm.vm.machine import LabVM

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


# Every VM the suite starts (also from subprocesses, which inherit TMPDIR) keeps its sockets
# and logs under this directory, so its QEMU command line names it: that is how the suite
# tells its own QEMUs from anybody else's on the machine.
SUITE_TMP = tempfile.mkdtemp(prefix="vmexit-suite-")
os.environ["TMPDIR"] = SUITE_TMP
tempfile.tempdir = None


def qemu_processes(marker: str = SUITE_TMP) -> list[str]:
    """Command lines of running QEMUs whose files live under ``marker``."""
    out = subprocess.run(["pgrep", "-a", "-f", "qemu-system"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if marker in line]


def sigint_as_at_a_terminal() -> None:
    """A Popen ``preexec_fn``: SIGINT back to its default, as Ctrl-C at a terminal finds it.
    A job a non-interactive shell starts in the background (``cmd &``, as some CI runners
    do) inherits SIGINT ignored, and Python keeps an ignored SIGINT ignored, so a test that
    interrupts a child would otherwise depend on how the suite was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def suite_processes(name: str) -> list[str]:
    """Processes called ``name`` started by this suite (they inherited its TMPDIR)."""
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
    found = []
    for pid in out.stdout.split():
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"TMPDIR={SUITE_TMP}".encode() in environ:
            found.append(pid)
    return found


# Fixtures that hand a test something scripts/setup builds: the lab kernel and initramfs
# (``built``, also behind ``vm`` and the others), the checking kernel, the debug QEMU.
BUILT_FIXTURES = {"built", "checking", "qemu_debug"}


def pytest_collection_modifyitems(config, items):
    """Mark every test that needs what scripts/setup builds (BUILT_FIXTURES) or is marked
    ``slow`` as ``vm``; the rest are ``unit`` (they run with an empty build cache), but for
    the small-book builds (``book``). `make check` runs the units and the few VM tests marked
    ``smoke``."""
    for item in items:
        needs_vm = (BUILT_FIXTURES & set(getattr(item, "fixturenames", ()))
                    or item.get_closest_marker("slow") is not None)
        if needs_vm:
            item.add_marker(pytest.mark.vm)
        elif item.get_closest_marker("book") is None:
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session", autouse=True)
def no_stray_qemu_or_gdb():
    yield
    left = qemu_processes() + suite_processes("gdb")
    shutil.rmtree(SUITE_TMP, ignore_errors=True)
    assert not left, f"the suite left QEMU or gdb running: {left}"


@pytest.fixture(scope="session")
def built():
    """The lab kernel and initramfs (make test runs scripts/setup, which builds them)."""
    return kernel.find_kernel(), initramfs.find_initramfs()


@pytest.fixture(scope="module")
def vm(built):
    with LabVM(name="test") as machine:
        yield machine


@pytest.fixture
def fresh_vm(built):
    """A VM of its own, for tests that break it."""
    with LabVM(name="fresh") as machine:
        yield machine
