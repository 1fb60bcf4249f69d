"""Record the checking kernel's reports for the parser tests (run from the repository's root).

    PYTHONPATH=. .venv/bin/python tests/checking_reports/record.py

Lab 4's solution with the bugs of tests/test_checking_kernel.py edited in, built against the
checking kernel, loaded in its VM and driven by hand: the kernel log and kmemleak's list go
to recorded-{memory,locking}-dmesg.log and recorded-memory-kmemleak.log.
"""
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import test_checking_kernel as cases  # noqa: E402

from lab_vm.build.kernel import find_kernel  # noqa: E402
from lab_vm.grading import reports, runner  # noqa: E402
from lab_vm.grading.lab import load_lab  # noqa: E402
from lab_vm.vm.machine import LabVM  # noqa: E402

DIR = "/sys/kernel/debug/hrlate"
STEPS = ["insmod /tmp/hrlate.ko", f"echo 1 > {DIR}/running", "sleep 0.2", f"cat {DIR}/count",
         f"cat {DIR}/histogram", f"cat {DIR}/histogram", "rmmod hrlate", "sleep 1",
         "for f in /sys/kernel/slab/*/validate; do echo 1 > $f; done 2>/dev/null"]


def main() -> None:
    kernel = find_kernel("checking")
    lab = load_lab(cases.HRLATE)
    for name, source in (("memory", cases.memory_bugs()), ("locking", cases.mutex_in_handler())):
        with tempfile.TemporaryDirectory(prefix="ckr-", dir="/tmp") as tmp:
            tree, work = Path(tmp) / "tree", Path(tmp) / "work"
            tree.mkdir()
            (tree / "hrlate.c").write_text(source)
            runner.prepare(lab, tree, work)
            built = runner.build(lab, work, kernel=kernel, timeout=300)
            with LabVM(kernel=kernel, name="record", boot_timeout=180) as vm:
                vm.write_file("/tmp/hrlate.ko", built.ko.read_bytes())
                vm.run("dmesg -c > /dev/null", timeout=30)
                for step in STEPS:
                    vm.run(step, timeout=60)
                (HERE / f"recorded-{name}-dmesg.log").write_text(
                    vm.run("dmesg", timeout=60).text)
                if name == "memory":     # kmemleak reports objects older than 5 s
                    vm.run("sleep 5", timeout=30)
                    listing = vm.run(f"echo scan > {reports.KMEMLEAK}; "
                                     f"echo scan > {reports.KMEMLEAK}; cat {reports.KMEMLEAK}",
                                     timeout=120).text
                    (HERE / "recorded-memory-kmemleak.log").write_text(listing)
        print(f"recorded {name}")


if __name__ == "__main__":
    main()
