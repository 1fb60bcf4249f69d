"""What chapter 3 and its notebook share: the two drivers, the workload, and reading its output.

The driver is lab 3's reference solution, ``labs/03-stacking-blockdev/solution/xform.c``,
built as it is ("fixed") and with ``shared-iterator.patch`` applied ("buggy"): one saved
iterator for all reads in flight instead of one per bio. The workload is the lab checker's
``blkstress`` (``labs/03-stacking-blockdev/tests/blkstress.c``). Nothing is copied: both are
built from those files.
"""
from __future__ import annotations

import re
import time
from itertools import zip_longest
from pathlib import Path

from lab_vm.build.initramfs import build_static
from lab_vm.build.modules import build_variant
from lab_vm.vm.channel import Result
from lab_vm.vm.modes import SHARE_MOUNT

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


def load(vm, variant: str, lower: str = "/dev/nullb0", *,
         module: str = "/root/xform-{variant}.ko") -> None:
    """Make /dev/xform0 on ``lower`` with the fixed or the buggy driver (unloading the other).

    ``module``: where the guest has the .ko (setup_guest() copies them to /root).
    """
    vm.rmmod("xform", missing_ok=True, timeout=10)
    vm.insmod(module.format(variant=variant), f"lower={lower}")


def stress_command(*, writers: int = 2, readers: int = 2, iterations: int = 100,
                   size: int = 4096, misalign: int = 0, slots: int = 4, seed: int = 1,
                   program: str = "blkstress") -> str:
    """The blkstress command line for one run of writers and readers on /dev/xform0.

    ``misalign``: bytes between a page boundary and each buffer (a multiple of 512);
    ``slots``: places on the disk each thread writes or reads in turn.
    """
    return (f"{program} stress /dev/xform0 -w {writers} -r {readers} -n {iterations} "
            f"-b {size} -m {misalign} -S {slots} -s {seed}")


def stress(vm, *, timeout: float = 120.0, **workload) -> dict[str, float]:
    """One run of concurrent writers and readers on /dev/xform0 (stress_command()); its summary."""
    result = vm.run(stress_command(**workload), timeout=timeout)
    if result.status not in (0, 1):       # 1: wrong data, which is what we count
        raise RuntimeError(f"blkstress failed ({result.status}): {result.output.strip()}")
    return result.key_values()


EVENTS = ("block_bio_queue", "block_split", "block_plug", "block_unplug", "block_rq_issue",
          "block_rq_complete", "block_bio_complete")
# "259,0 R 8 + 2048 [blkstress]", "254,0 R 65536 () 8 + 128 [x]", "259,0 R 8 / 136 [x]"
REST_RE = re.compile(r"(?P<dev>\d+,\d+) (?P<rwbs>\S+) (?:\d+ )?(?:\(\S*\) )?(?P<sector>\d+) "
                     r"(?P<sep>[+/]) (?P<n>\d+)")


def disk_names(vm) -> dict[str, str]:
    """{"259,0": "nullb0", ...}: device numbers as the block events print them, to disk names."""
    return dict(line.split() for line in vm.run(
        "for d in /sys/block/*; do echo $(cat $d/dev) ${d##*/}; done",
        timeout=30, check=True).text.replace(":", ",").splitlines())


def block_trace(vm, command: str, *, timeout: float = 120.0) -> tuple[list[dict], Result]:
    """The kernel's block trace events while ``command`` runs (and the command's Result).

    The events are dicts, device numbers resolved to disk names.
    Each has ``event``, ``cpu``, ``t`` (seconds), ``task`` and, for events about a bio or a
    request, ``disk``, ``rwbs``, ``sector`` and either ``sectors`` (``+ n``) or, for
    block_split, ``split_at`` (the sector the remainder starts at).
    """
    disks = disk_names(vm)
    with vm.ftrace(events=[f"block:{e}" for e in EVENTS]) as trace:
        result = vm.run(command, timeout=timeout)
    out = []
    for rec in trace.records:
        record = {"event": rec.event, "cpu": rec.cpu, "t": rec.time, "task": rec.task}
        r = REST_RE.match(rec.text)
        if r:
            record.update(disk=disks.get(r["dev"], r["dev"]), rwbs=r["rwbs"],
                          sector=int(r["sector"]))
            record["split_at" if r["sep"] == "/" else "sectors"] = int(r["n"])
        out.append(record)
    return out, result


# -- Every bio, at full speed: a kprobe event with the bio's fields ------------------------------
# kprobe_events knows registers and offsets, not C: gdb reads the offsets from the kernel's DWARF.
BIO_FIELDS = {"size": ("bi_iter.bi_size", "u32"), "vcnt": ("bi_vcnt", "u16"),
              "idx": ("bi_iter.bi_idx", "u32"), "done": ("bi_iter.bi_bvec_done", "u32"),
              "opf": ("bi_opf", "u32")}


def bio_kprobe(dbg, function: str = "submit_bio_noacct") -> str:
    """A kprobe_events spec for ``function(struct bio *bio)``: the bio's disk and BIO_FIELDS.

    x86-64 passes the first argument in %di; ``+N(X)`` reads memory at X + N; ``:string``
    takes the (embedded) disk_name array at the address the last offset gives.
    """
    def offset(member: str, struct: str = "bio") -> int:
        return dbg.evaluate(f"(unsigned long)&((struct {struct} *)0)->{member}")

    disk = (f"+{offset('disk_name', 'gendisk')}(+{offset('bd_disk', 'block_device')}"
            f"(+{offset('bi_bdev')}(%di))):string")
    args = [f"disk={disk}"] + [f"{name}=+{offset(member)}(%di):{kind}"
                               for name, (member, kind) in BIO_FIELDS.items()]
    return " ".join([function, *args])


# -- One CPU, recorded: the corruption run backwards ---------------------------------------------
# A recorded VM (lab_vm.vm.replay) has one CPU and gets its files from a share copied in at start:
# the share is the folder build_drivers() and build_blkstress() built into, so the guest finds
# blkstress and both modules under /mnt/share.
SHARED_MODULE = SHARE_MOUNT + "/{variant}/xform.ko"
SHARED_BLKSTRESS = SHARE_MOUNT + "/blkstress"
# null_blk ending each request from a timer (irqmode=2) a while after issuing it, as a disk ends
# it from an interrupt; the default ends it at once, in the task that issued it (on one CPU, and
# on two with null_blk's default poll_queues=1: COMPLETION_MODES).
COMPLETION_NSEC = 1_000_000
TIMER_COMPLETIONS = ("irqmode=2", f"completion_nsec={COMPLETION_NSEC}")
# Two writers and one reader, each slot written and read once: every read is of other sectors,
# so a sector that reads back wrong names one read.
ONE_CPU = dict(writers=2, readers=1, iterations=16, slots=16, size=4096)
REPORT_RE = re.compile(r"sector (\d+): want ([0-9a-f]+), got ([0-9a-f]+)")


def reload(vm, completions=(), variant: str = "fixed", *,
           module: str = "/root/xform-{variant}.ko") -> None:
    """null_blk loaded again with ``completions`` (its module parameters), xform on it.

    The disk's data goes with the old null_blk: write before reading.
    """
    for name in ("xform", "null_blk"):
        vm.rmmod(name, missing_ok=True, timeout=10)
    vm.modprobe("null_blk", *NULL_BLK, *completions)
    load(vm, variant, module=module)


def setup_one_cpu(vm, completions=TIMER_COMPLETIONS, variant: str = "buggy") -> None:
    """null_blk (its completions as asked) and xform on it, in a VM whose share is ``work``."""
    reload(vm, completions, variant, module=SHARED_MODULE)


# -- Where a completion runs ----------------------------------------------------------------------
# null_blk's ways to end a request (module parameters). irqmode=1, the default, hands the request
# to blk_mq_complete_request(), which ends it at once unless the queue has a single hardware
# queue and the request's queue is shared by several CPUs: then it raises BLOCK_SOFTIRQ.
# null_blk's default poll_queues=1 adds a second hardware queue; poll_queues=0 leaves one.
COMPLETION_MODES = {
    "irqmode=1 (default)": (),
    "irqmode=1 poll_queues=0": ("irqmode=1", "poll_queues=0"),
    "irqmode=2 (timer)": TIMER_COMPLETIONS,
}
# The frame of a completion's backtrace that says how it got there, innermost first.
COMPLETION_PATHS = {"null_cmd_timer_expired": "timer interrupt (hrtimer)",
                    "blk_done_softirq": "BLOCK_SOFTIRQ",
                    "null_queue_rq": "inline, inside null_queue_rq"}


def completion_path(frames: list[dict]) -> str:
    """How a backtrace taken in a completion got there (COMPLETION_PATHS), innermost first."""
    functions = [f["function"] for f in frames]
    return next((path for fn, path in COMPLETION_PATHS.items() if fn in functions), "other")


def completion_context(vm, drivers: dict[str, Path], command: str, *, backtrace: bool = True,
                       timeout: float = 120.0) -> tuple[list[dict], list[dict], Result]:
    """Where xform's read completions run while ``command`` runs, two ways at once.

    If ``backtrace``, gdb stops at the first xform_read_end_io for its backtrace (else the
    frames are []); ftrace records every nullb0 request's issue and completion: pairs of
    records, matched by sector, each with the task, pid and CPU. Returns (frames, requests,
    the command's Result).
    """
    nullb = next(dev for dev, name in disk_names(vm).items() if name == "nullb0")
    frames = []
    with vm.ftrace(events=["block:block_rq_issue", "block:block_rq_complete"]) as trace:
        if backtrace:
            with vm.debugger() as dbg:
                dbg.load_module_symbols(drivers["fixed"], null_blk_dir())
                stop = dbg.break_at("xform_read_end_io")
                job = vm.start(command)
                dbg.cont(timeout=timeout)
                frames = dbg.backtrace()
                dbg.delete(stop)
        else:
            job = vm.start(command)
        result = job.wait(timeout=timeout)
    issued, requests = {}, []
    for rec in trace.records:
        r = REST_RE.match(rec.text)
        if not r or r["dev"] != nullb:
            continue
        key = (r["rwbs"], int(r["sector"]))
        if rec.event == "block_rq_issue":
            issued[key] = rec
        elif key in issued:
            first = issued.pop(key)
            requests.append({"op": r["rwbs"], "sector": key[1],
                             "issued": (first.task, first.pid, first.cpu),
                             "completed": (rec.task, rec.pid, rec.cpu)})
    return frames, requests, result


def first_report(result: Result) -> dict[str, int]:
    """The first wrong sector blkstress reported on stderr: sector, want, got."""
    m = REPORT_RE.search(result.stderr.decode(errors="replace"))
    if m is None:
        raise ValueError(f"blkstress reported no wrong sector: {result.output.strip()}")
    return {"sector": int(m[1]), "want": int(m[2], 16), "got": int(m[3], 16)}


def record_corruption(folder: Path, work: Path, *, attempts: int = 4,
                      timeout: float = 300.0) -> dict:
    """Record one run of the one-CPU workload that reads back wrong data, and replay it once.

    Each attempt is a new recording in ``folder`` (boot, then the workload with seed 1, 2, …),
    kept if its run read back wrong data and a replay of it, to the end, gives back exactly
    what the run said (Replay.run_to_end). Returns the run's Result and seed, the replayed
    output, how many recordings were made and how many of them diverged when replayed, and
    the seconds the kept recording and its replay took.
    """
    from lab_vm import LabVM
    from lab_vm.vm.replay import Replay, ReplayDiverged

    diverged = 0
    for attempt in range(1, attempts + 1):
        start = time.monotonic()
        with LabVM(record=folder, share=work, name="ch03-record") as vm:
            vm.modprobe("null_blk", *NULL_BLK, *TIMER_COMPLETIONS)
            # xform and the workload in one command: every command a recorded guest waits for
            # costs its replays time (about a second each here), and a backwards query replays
            # from the snapshot taken at boot up to where it was asked, three times over.
            result = vm.run(f"insmod {SHARED_MODULE.format(variant='buggy')} "
                            f"lower=/dev/nullb0 && "
                            f"{stress_command(**ONE_CPU, seed=attempt, program=SHARED_BLKSTRESS)}",
                            timeout=timeout)
        record_seconds = time.monotonic() - start
        if result.status not in (0, 1):
            raise RuntimeError(f"blkstress failed ({result.status}): {result.output.strip()}")
        if result.status == 0:
            continue
        start = time.monotonic()
        try:
            with Replay(folder) as rp:
                replayed = b"".join(rp.run_to_end(timeout=timeout).values()).decode()
        except ReplayDiverged:
            diverged += 1
            continue
        return {"result": result, "seed": attempt, "replayed": replayed, "recordings": attempt,
                "diverged": diverged, "record_seconds": record_seconds,
                "replay_seconds": time.monotonic() - start}
    raise RuntimeError(f"{attempts} recordings: none read back wrong data and replayed "
                       f"({diverged} diverged when replayed)")


def keystream(pos: int, source: str) -> int:
    """xform's keystream word for byte ``pos`` of the disk (xform_keystream() in ``source``,
    with the default key that source sets): to check a value gdb found by hand."""
    key = int(re.search(r"static unsigned int key = (\w+);", source)[1], 0)
    return ((((pos >> 2) ^ key) * 0x9E3779B97F4A7C15) % (1 << 64)) >> 32


def null_blk_dir() -> Path:
    """Where the lab kernel's null_blk.ko is: for lx-symbols, so backtraces name its functions."""
    from lab_vm.build.kernel import find_kernel

    return find_kernel().module_path("null_blk").parent


def reads(sector: int) -> str:
    """gdb condition, in xform_submit_bio: the bio is a read that covers ``sector``."""
    return (f"(bio->bi_opf & 0xff) == 0 && bio->bi_iter.bi_sector <= {sector} && "
            f"{sector} < bio->bi_iter.bi_sector + (bio->bi_iter.bi_size >> 9)")


def data_address(sector: int) -> str:
    """gdb expression, in xform_submit_bio: the kernel address where ``sector``'s data goes.

    The bio's current bio_vec gives the page and the offset in it; the kernel reaches every
    page through its direct map (page_offset_base + frame number * 4096). Right for a sector
    inside the bio's first segment, as in blkstress's page-aligned 4 KiB reads.
    """
    bv = "bio->bi_io_vec[bio->bi_iter.bi_idx]"
    return (f"page_offset_base + ((unsigned long){bv}.bv_page - vmemmap_base) / "
            f"sizeof(struct page) * 4096 + {bv}.bv_offset + bio->bi_iter.bi_bvec_done + "
            f"({sector} - bio->bi_iter.bi_sector) * 512")


def rewind(folder: Path, drivers: dict[str, Path], sector: int, *,
           timeout: float = 120.0) -> dict:
    """Replay ``folder``; find the bytes of ``sector`` the reader saw; run back to their writer.

    Returns what was found: the address, the reader, the value seen, the Stop at the writing
    instruction (``old``/``new``), its backtrace, what the completion it belongs to was
    completing, and how long the backwards query took.
    """
    from lab_vm.vm.replay import Replay

    found = {}
    with Replay(folder) as rp, rp.debugger() as dbg:
        # 1. Forwards to blkstress's first write (its modules are loaded by then): their symbols.
        first = dbg.break_at("ksys_pwrite64")
        dbg.cont(timeout=timeout)
        dbg.delete(first)
        dbg.load_module_symbols(drivers["buggy"], null_blk_dir())
        # 2. On to where xform is handed the read of that sector: where will its data go?
        read = dbg.break_at("xform_submit_bio", condition=reads(sector))
        dbg.cont(timeout=timeout)
        dbg.delete(read)
        found["address"] = dbg.evaluate(data_address(sector))
        found["reader"] = dbg.evaluate("$lx_current().pid")
        # 3. On to blkstress writing its report to stderr: the bytes are what it checked.
        report = dbg.break_at("ksys_write", condition="fd == 2")
        dbg.cont(timeout=timeout)
        dbg.delete(report)
        found["reporter"] = dbg.evaluate("$lx_current().pid")
        word = f"*(unsigned int *){found['address']:#x}"
        found["seen"] = dbg.evaluate(word)
        # 4. Backwards, to the last instruction that wrote them.
        start = time.monotonic()
        found["stop"] = dbg.last_write(word, timeout=timeout)
        found["seconds"] = time.monotonic() - start
        found["backtrace"] = dbg.backtrace()
        found["task"] = (dbg.evaluate("$lx_current().pid"), dbg.evaluate("$lx_current().comm"))
        # The completion's own view: which read it completes, which position it used.
        dbg.select_frame("xform_read_end_io")
        found["completing"] = dbg.evaluate("orig->bi_iter.bi_sector")
        found["saved_iter"] = dbg.evaluate("xf.iter")
    return found


def completion_fields(offset: int) -> dict[str, str]:
    """gdb expressions at the entry of xform_read_end_io (``offset``: of clone in xform_io)."""
    return {"read of sector": f"((struct xform_io *)((char *)clone - {offset}))"
                              "->orig->bi_iter.bi_sector",
            "transformed at sector": "xf.iter.bi_sector",
            "task interrupted": "$lx_current().pid"}


def completions(vm, dbg, drivers: dict[str, Path], command: str | None = None, *,
                timeout: float = 120.0):
    """Every read completion of one blkstress run, in order; and the guest job, if one started.

    Each completion is a tuple of the completion_fields(). ``vm`` is a replay (already on its
    way: ``command`` None) or a running VM (``command`` is started; wait for the job once the
    debugger is closed). Either way gdb stops at blkstress's first write, loads the modules'
    symbols, then samples every xform_read_end_io until blkstress exits.
    """
    first = dbg.break_at("ksys_pwrite64")
    job = vm.start(command) if command is not None else None
    dbg.cont(timeout=timeout)
    dbg.delete(first)
    dbg.load_module_symbols(drivers["buggy"])
    fields = completion_fields(dbg.evaluate("(unsigned long)&((struct xform_io *)0)->clone"))
    dbg.break_at("do_group_exit")
    records = dbg.sample("xform_read_end_io", list(fields.values()), count=100_000,
                         timeout=timeout)
    return [tuple(r[e] for e in fields.values()) for r in records], job


def replayed_completions(folder: Path, drivers: dict[str, Path]) -> list[tuple]:
    """completions() of a replay of the recording in ``folder``."""
    from lab_vm.vm.replay import Replay

    with Replay(folder) as rp, rp.debugger() as dbg:
        samples, _ = completions(rp, dbg, drivers)
    return samples


def ordinary_completions(work: Path, drivers: dict[str, Path], *, seed: int = 1,
                         timeout: float = 120.0) -> tuple[list[tuple], Result]:
    """completions() of the same workload in an ordinary, unrecorded one-CPU VM; its Result."""
    from lab_vm import LabVM

    with LabVM(cpus=1, share=work, gdb=True, name="ch03-ordinary") as vm:
        setup_one_cpu(vm)
        with vm.debugger() as dbg:
            command = stress_command(**ONE_CPU, seed=seed, program=SHARED_BLKSTRESS)
            samples, job = completions(vm, dbg, drivers, command, timeout=timeout)
        return samples, job.wait(timeout=timeout)


def differing(a: list, b: list) -> int:
    """How many samples of two runs differ, position by position (a missing one differs)."""
    return sum(x != y for x, y in zip_longest(a, b))


def misplaced(samples: list[tuple]) -> int:
    """Completions that transformed their data at another read's position."""
    return sum(read != at for read, at, _ in samples)
