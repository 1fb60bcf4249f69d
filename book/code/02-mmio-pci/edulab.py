"""What the last section of chapter 2 builds: two edu drivers and two guest helpers.

The driver is lab 2's reference solution, ``labs/02-edu-driver/solution/edu.c``, built as it
is ("notify": sysfs_notify from the threaded interrupt handler, poll() in user space) and
with ``blocking-show.patch`` applied ("blocking": reading the attribute waits for the next
completion). The helpers are the lab checker's ``pollwait`` (``labs/02-edu-driver/tests``)
and ``notify_latency.c`` next to this file. Nothing is copied into the book: all are built
from those files.
"""
from __future__ import annotations

from pathlib import Path

from lab_vm.build.initramfs import build_static
from lab_vm.build.modules import build_variant

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
LAB = REPO / "labs" / "02-edu-driver"
PATCH = HERE / "blocking-show.patch"
VARIANTS = ("notify", "blocking")


def build_drivers(workdir: Path, *, timeout: float = 300.0) -> dict[str, Path]:
    """{"notify": edu.ko, "blocking": edu.ko}, built in folders under ``workdir``."""
    sources = [LAB / "solution" / name for name in ("edu.c", "Kbuild")]
    return {variant: build_variant(sources, workdir / variant, timeout=timeout, jobs=1,
                                   patch=PATCH if variant == "blocking" else None).modules[0]
            for variant in VARIANTS}


def build_helpers(workdir: Path) -> dict[str, Path]:
    return {"pollwait": build_static(LAB / "tests" / "pollwait.c", workdir / "pollwait"),
            "notify_latency": build_static(HERE / "notify_latency.c",
                                           workdir / "notify_latency")}


def setup_guest(vm, drivers: dict[str, Path], helpers: dict[str, Path]) -> None:
    for name, exe in helpers.items():
        vm.write_file(f"/bin/{name}", exe.read_bytes(), mode=0o755)
    for variant, ko in drivers.items():
        vm.write_file(f"/root/edu-{variant}.ko", ko.read_bytes())


def load(vm, variant: str) -> None:
    """Bind edu to the reference driver or the blocking variant (unloading the other)."""
    vm.rmmod("edu", missing_ok=True, timeout=10)
    vm.insmod(f"/root/edu-{variant}.ko")


def task(vm, pid: int) -> tuple[str, list[str]]:
    """A guest task's state and its kernel stack (/proc/PID/stack), innermost first.

    (/proc/PID/wchan reads empty in this kernel, so the stack says where it sleeps.)
    """
    out = vm.run(f"grep State /proc/{pid}/status; cat /proc/{pid}/stack", timeout=10).text
    lines = out.splitlines()
    stack = []
    for line in lines[1:]:
        name = line.split("] ", 1)[-1].split("+")[0]
        if name and (not stack or stack[-1] != name):      # inlined frames appear twice
            stack.append(name)
    return lines[0].split(":", 1)[-1].strip() if lines else "gone", stack
