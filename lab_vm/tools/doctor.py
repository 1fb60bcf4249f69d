"""``lab-vm doctor``: what is installed, what is missing, and the command that fixes it."""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import paths
from ..errors import LabVMError

PACKAGE_LIST = paths.PACKAGE_DIR / "debian-packages.txt"     # scripts/setup reads it too


def debian_packages(list_file: Path = PACKAGE_LIST) -> dict[str, tuple[str, str]]:
    """{package: (tag, what it is for)} from the shared list; tag "" = the lab VM needs it."""
    packages = {}
    for line in list_file.read_text().splitlines():
        text, _, why = line.partition("#")
        fields = text.split()
        if fields:
            tag = fields[1].strip("[]") if len(fields) > 1 else ""
            packages[fields[0]] = (tag, why.strip())
    return packages


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _dpkg_installed(package: str) -> bool:
    out = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True,
                         text=True)
    return out.returncode == 0 and "install ok installed" in out.stdout


def checks() -> list[Check]:
    results = []
    needed = [p for p, (tag, _) in debian_packages().items() if not tag]
    missing = [p for p in needed if not _dpkg_installed(p)]
    results.append(Check("debian packages", not missing,
                         "all installed" if not missing else "missing: " + " ".join(missing),
                         "" if not missing else "scripts/setup  (or: sudo apt-get install "
                         + " ".join(missing) + ")"))
    from ..build import initramfs, kernel
    for label, finder in (("lab kernel", kernel.find_kernel),
                          ("initramfs", initramfs.find_initramfs)):
        try:
            found = finder()
            results.append(Check(label, True, str(getattr(found, "tree", None)
                                                  or getattr(found, "path", ""))))
        except LabVMError as exc:
            results.append(Check(label, False, exc.message, "lab-vm build"))
    results.append(_qemu_debug_check())
    results.append(_gdb_check())
    results.append(_kvm_check(results))
    return results


def _qemu_debug_check() -> Check:
    """QEMU built with debug info: Chapter 1 puts gdb on QEMU itself (lab_vm.debug.qemu)."""
    from ..build import qemu

    try:
        found = qemu.find_qemu_debug()
    except LabVMError as exc:
        return Check("debug qemu", False, exc.message, "lab-vm build qemu-debug")
    return Check("debug qemu", True, f"{found.version}  {found.binary}")


def _gdb_check() -> Check:
    """gdb's embedded Python must import rpyc for pwntools' gdb API (see debug.py)."""
    if shutil.which("gdb") is None:
        return Check("gdb python rpyc", False, "gdb is not installed", "scripts/setup")
    from ..debug.gdbenv import gdb_environment

    proc = subprocess.run(["gdb", "-nx", "-batch", "-ex", "python import rpyc"],
                          capture_output=True, text=True, env=gdb_environment(), timeout=60)
    if proc.returncode == 0 and not proc.stderr.strip():
        return Check("gdb python rpyc", True, "gdb's Python imports rpyc from the venv")
    return Check("gdb python rpyc", False, (proc.stderr or proc.stdout).strip()[-300:],
                 "scripts/setup  (installs pwntools, which brings rpyc, into .venv)")


def _kvm_check(earlier: list[Check]) -> Check:
    from ..vm import accel

    problem = accel.kvm_device_problem()
    if problem:
        return Check("kvm", True, f"not usable ({problem}); TCG is used")
    if not all(c.ok for c in earlier if c.name in ("lab kernel", "initramfs")):
        return Check("kvm", True, "/dev/kvm opens; the probe boot needs the kernel built first")
    from ..build import initramfs, kernel
    from ..vm.machine import probe_kvm

    k, i = kernel.find_kernel(), initramfs.find_initramfs()
    chosen, reason = accel.choose(k, i, lambda: probe_kvm(k, i))
    return Check("kvm", True, f"{chosen}: {reason}")


def run_doctor(json_output: bool = False) -> int:
    results = checks()
    if json_output:
        print(json.dumps([asdict(c) for c in results], indent=1))
    else:
        for c in results:
            print(f"{'ok ' if c.ok else 'BAD'}  {c.name:18} {c.detail}")
            if c.fix:
                print(f"     {'':18} fix: {c.fix}")
    return 0 if all(c.ok for c in results) else 1
