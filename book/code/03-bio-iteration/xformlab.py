"""What chapter 3 and its notebook share: the two drivers, the workload, and reading its output.

The driver is lab 3's reference solution, ``labs/03-stacking-blockdev/solution/xform.c``,
built as it is ("fixed") and with ``shared-iterator.patch`` applied ("buggy"): one saved
iterator for all reads in flight instead of one per bio. The workload is the lab checker's
``blkstress`` (``labs/03-stacking-blockdev/tests/blkstress.c``). Nothing is copied: both are
built from those files.
"""
from __future__ import annotations

import re
from pathlib import Path

from lab_vm.build.initramfs import build_static
from lab_vm.channel import Result
from lab_vm.modules import build_variant

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
LAB = REPO / "labs" / "03-stacking-blockdev"
PATCH = HERE / "shared-iterator.patch"
VARIANTS = ("fixed", "buggy")
# One memory-backed null_blk disk of 1 GB (pages are allocated as they are written).
NULL_BLK = ("nr_devices=1", "memory_backed=1", "gb=1")


def build_drivers(workdir: Path, *, timeout: float = 300.0) -> dict[str, Path]:
    """{"fixed": dir, "buggy": dir}: each a module folder holding its xform.c and xform.ko."""
    sources = [LAB / "solution" / name for name in ("xform.c", "Kbuild")]
    return {variant: build_variant(sources, workdir / variant, timeout=timeout, jobs=1,
                                   patch=PATCH if variant == "buggy" else None).directory
            for variant in VARIANTS}


def build_blkstress(workdir: Path) -> Path:
    return build_static(LAB / "tests" / "blkstress.c", workdir / "blkstress")


def setup_guest(vm, blkstress: Path, drivers: dict[str, Path]) -> None:
    """Copy the workload and both modules in; load null_blk."""
    vm.write_file("/bin/blkstress", blkstress.read_bytes(), mode=0o755)
    for variant, folder in drivers.items():
        vm.write_file(f"/root/xform-{variant}.ko", (folder / "xform.ko").read_bytes())
    vm.modprobe("null_blk", *NULL_BLK)


def load(vm, variant: str, lower: str = "/dev/nullb0") -> None:
    """Make /dev/xform0 on ``lower`` with the fixed or the buggy driver (unloading the other)."""
    if vm.run("grep -q '^xform ' /proc/modules", timeout=10).ok:
        vm.rmmod("xform")
    vm.insmod(f"/root/xform-{variant}.ko", f"lower={lower}")


def parse(output: str) -> dict[str, float]:
    """blkstress's ``key=value`` summary as numbers."""
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", output)}


def stress(vm, *, writers: int = 2, readers: int = 2, iterations: int = 100,
           size: int = 4096, misalign: int = 0, seed: int = 1,
           timeout: float = 120.0) -> dict[str, float]:
    """One run of concurrent writers and readers on /dev/xform0; its summary.

    ``misalign``: bytes between a page boundary and each buffer (a multiple of 512).
    """
    result = vm.run(f"blkstress stress /dev/xform0 -w {writers} -r {readers} -n {iterations} "
                    f"-b {size} -m {misalign} -s {seed}", timeout=timeout)
    if result.status not in (0, 1):       # 1: wrong data, which is what we count
        raise RuntimeError(f"blkstress failed ({result.status}): {result.output.strip()}")
    return parse(result.text)


TRACING = "/sys/kernel/debug/tracing"
EVENTS = ("block_bio_queue", "block_split", "block_plug", "block_unplug", "block_rq_issue",
          "block_rq_complete", "block_bio_complete")
LINE_RE = re.compile(r"^\s*(?P<task>\S+)-(?P<pid>\d+)\s+\[(?P<cpu>\d+)\]\s+\S+\s+(?P<ts>[\d.]+): "
                     r"(?P<event>block_\w+): (?P<rest>.*)$")
# "259,0 R 8 + 2048 [blkstress]", "254,0 R 65536 () 8 + 128 [x]", "259,0 R 8 / 136 [x]"
REST_RE = re.compile(r"(?P<dev>\d+,\d+) (?P<rwbs>\S+) (?:\d+ )?(?:\(\S*\) )?(?P<sector>\d+) "
                     r"(?P<sep>[+/]) (?P<n>\d+)")


def block_trace(vm, command: str, *, timeout: float = 120.0) -> tuple[list[dict], Result]:
    """The kernel's block trace events while ``command`` runs (and the command's Result).

    The events are dicts, device numbers resolved to disk names.
    Each has ``event``, ``cpu``, ``t`` (seconds) and, for events about a bio or a request,
    ``disk``, ``rwbs``, ``sector`` and either ``sectors`` (``+ n``) or, for block_split,
    ``split_at`` (the sector the remainder starts at).
    """
    disks = dict(line.split() for line in vm.run(
        "for d in /sys/block/*; do echo $(cat $d/dev) ${d##*/}; done",
        timeout=30, check=True).text.replace(":", ",").splitlines())
    events = " ".join(f"{TRACING}/events/block/{e}/enable" for e in EVENTS)
    vm.run(f"echo 0 > {TRACING}/tracing_on; echo > {TRACING}/trace; "
           f"for f in {events}; do echo 1 > $f; done; echo 1 > {TRACING}/tracing_on",
           timeout=30, check=True)
    try:
        result = vm.run(command, timeout=timeout)
    finally:
        vm.run(f"echo 0 > {TRACING}/tracing_on", timeout=30)
    out = []
    for line in vm.run(f"cat {TRACING}/trace", timeout=60, check=True).text.splitlines():
        m = LINE_RE.match(line)
        if not m:
            continue
        record = {"event": m["event"], "cpu": int(m["cpu"]), "t": float(m["ts"]),
                  "task": m["task"]}
        r = REST_RE.match(m["rest"])
        if r:
            record.update(disk=disks.get(r["dev"], r["dev"]), rwbs=r["rwbs"],
                          sector=int(r["sector"]))
            record["split_at" if r["sep"] == "/" else "sectors"] = int(r["n"])
        out.append(record)
    return out, result
