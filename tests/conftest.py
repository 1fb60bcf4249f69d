"""Fixtures for the vmexit test-suite: a real lab VM, and a check that none outlives the suite."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab_vm.build import initramfs, kernel
from lab_vm.machine import LabVM

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent


def qemu_processes(marker: str = "vmexit-") -> list[str]:
    """Command lines of running QEMUs whose files live in a lab_vm temporary directory."""
    out = subprocess.run(["pgrep", "-a", "-f", "qemu-system"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if marker in line]


@pytest.fixture(scope="session", autouse=True)
def no_stray_qemu():
    before = set(qemu_processes())
    yield
    left = [p for p in qemu_processes() if p not in before]
    assert not left, f"the suite left QEMU running: {left}"


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
