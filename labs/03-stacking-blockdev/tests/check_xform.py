"""The checker of lab 3 (a stacking block driver that transforms data), in the gradelib style.

Each test loads the student's xform.ko on a RAM disk in the lab VM (null_blk with
memory backing, which completes bios the blk-mq way: it advances their iterators),
moves data through /dev/xform0 with the ``blkstress`` helper and unloads the
module. blkstress writes and reads with O_DIRECT, so every write and read reaches
the driver as a bio of its own, and checks every 512-byte sector it reads: each
holds a pattern that depends on the sector's number, so data from the wrong place
never passes. ``-k KEY`` makes it write or expect the data as xform stores it on
the lower device.

Run it with ``lab-vm check labs/03-stacking-blockdev`` (or ``lab-vm check .`` in a handout).
"""
from __future__ import annotations

from lab_vm.grading import expect, fail, test

KEY = 0x5EED                     # xform's default key
# One memory-backed null_blk device of 1 GB (its pages are allocated as they are written),
# completing bios from a softirq (irqmode=1, its default).
NULL_BLK = {"nr_devices": "1", "memory_backed": "1", "gb": "1", "irqmode": "1"}
LOWER = "/dev/nullb0"


def null_blk(t, **params: str) -> str:
    """/dev/nullb0, a memory-backed null_blk device loaded with ``params`` (reloaded if needed)."""
    want = {**NULL_BLK, **params}
    loaded = t.loaded("null_blk")
    if loaded and all(t.read(f"/sys/module/null_blk/parameters/{k}") in (v, "Y" if v == "1"
                                                                         else v)
                      for k, v in want.items() if k != "nr_devices"):
        return LOWER         # already there, as wanted
    if loaded:
        t.sh("rmmod null_blk", check=True)
    t.vm.modprobe("null_blk", *(f"{k}={v}" for k, v in want.items()))
    expect(t.sh(f"test -b {LOWER}").ok, f"null_blk made no {LOWER}",
           "this is a problem of the lab set-up, not of your driver: tell the instructor")
    return LOWER


def load(t, lower: str = LOWER, *params: str) -> None:
    """insmod on ``lower``; /dev/xform0 must appear."""
    t.insmod(f"lower={lower}", *params)
    expect(t.sh("test -b /dev/xform0").ok, "after insmod there is no block device /dev/xform0",
           "keep the given xform_init(): it adds the disk xform0")


def blkstress(t, mode: str, device: str, args: str, *, timeout: float | None = None,
              fix: str = "") -> dict[str, float]:
    """Run the helper; an I/O error or wrong data fails the test with its report."""
    command = f"{t.helper('blkstress')} {mode} {device} {args}"
    result = t.sh(command, timeout=timeout)
    if result.status == 2:
        fail(f"`blkstress {mode} {device} {args}` could not do its I/O "
             f"(status {result.status}):\n{result.output.strip()[:1500]}",
             "a bio the driver is given must end with BLK_STS_OK once its data moved; the "
             "skeleton's stubs end every bio with an error (TODOs 2 and 4)")
    if result.status != 0:
        fail(f"`blkstress {mode} {device} {args}` found wrong data "
             f"(status {result.status}):\n{result.output.strip()[:1500]}", fix)
    return result.key_values()          # blkstress's summary: writes=… reads=… bad_reads=…


def no_trouble(t) -> None:
    t.expect_quiet_kernel()


@test(10, "the module loads on the RAM disk, makes /dev/xform0 of its size, unloads")
def loads(t):
    lower = null_blk(t)
    load(t, lower)
    size, lower_size = t.read("/sys/block/xform0/size"), t.read("/sys/block/nullb0/size")
    expect(size == lower_size, f"xform0 has {size} sectors, {lower} {lower_size}",
           "keep set_capacity() in xform_init()")
    t.rmmod()
    expect(not t.sh("test -e /dev/xform0").ok, "after rmmod /dev/xform0 is still there")
    no_trouble(t)


@test(15, "data written to /dev/xform0 reads back the same")
def round_trip(t):
    load(t, null_blk(t))
    for size, sector in ((4096, 8), (512, 100), (65536, 256)):
        blkstress(t, "fill", "/dev/xform0", f"-b {size} -o {sector}")
        blkstress(t, "check", "/dev/xform0", f"-b {size} -o {sector}",
                  fix="a read must give back what was written: the read path must undo the "
                  "transform over exactly the bio's data (TODOs 4 and 5)")
    t.rmmod()
    no_trouble(t)


@test(15, "the lower device holds the data transformed; the writer's buffer is left alone")
def writes_transform(t):
    lower = null_blk(t)
    load(t, lower)
    for size, sector in ((4096, 40), (8192, 1001)):
        out = blkstress(t, "fill", "/dev/xform0", f"-b {size} -o {sector}",
                        fix="the write path must transform copies of the data in pages of its "
                        "own: the caller's pages must not change (TODO 2)")
        expect(out.get("changed_buffers") == 0, "the writer's buffer changed")
        blkstress(t, "check", lower, f"-b {size} -o {sector} -k {KEY:#x}",
                  fix="the lower device must hold xform_buf() of the data, at its position on "
                  "the disk (TODO 2)")
    t.rmmod()
    no_trouble(t)


@test(15, "reads give back the plain data the lower device holds transformed")
def reads_transform(t):
    lower = null_blk(t)
    for size, sector in ((4096, 2048), (12288, 3001)):
        blkstress(t, "fill", lower, f"-b {size} -o {sector} -k {KEY:#x} -s 5")
    load(t, lower)
    for size, sector in ((4096, 2048), (12288, 3001)):
        blkstress(t, "check", "/dev/xform0", f"-b {size} -o {sector} -s 5",
                  fix="when the lower device has read the data, transform it in the caller's "
                  "pages, segment by segment, at each segment's position on the disk "
                  "(TODOs 4 and 5)")
    t.rmmod()
    no_trouble(t)


@test(15, "odd sizes, odd sectors, misaligned buffers, bios that must be split")
def odd_sizes_and_splits(t):
    lower = null_blk(t)
    load(t, lower)
    # (bytes, first sector, buffer offset in its page): 1 MiB + 512 is more than xform takes
    # in one bio, and from a buffer at 512 bytes into a page it has more pages than a bio of
    # 64 KiB can: it must be split.
    for size, sector, offset in ((512, 1, 512), (3584, 13, 1536), (45056, 77, 3584),
                                 ((1 << 20) + 512, 7, 512)):
        args = f"-b {size} -o {sector} -s 11"
        blkstress(t, "fill", "/dev/xform0", f"{args} -m {offset}",
                  fix="split bios bigger than the queue's limits (TODO 1), and walk the data "
                  "one single-page segment at a time (bio_for_each_segment)")
        blkstress(t, "check", "/dev/xform0", f"{args} -m {(offset + 1024) % 4096}",
                  fix="a read of odd size or alignment must give back what was written "
                  "(TODOs 1, 4, 5)")
        blkstress(t, "check", lower, f"{args} -k {KEY:#x}",
                  fix="each segment must be transformed at its own position on the disk: "
                  "advance the position by each segment's length (TODO 2)")
    t.rmmod()
    no_trouble(t)


@test(20, "concurrent writers and readers: every sector checks out, many times over")
def concurrent(t):
    load(t, null_blk(t))
    for args in ("-w 3 -r 3 -n 150 -b 4096", "-w 2 -r 2 -n 40 -b 65536 -o 4096",
                 "-w 4 -r 2 -n 60 -b 8192 -m 512 -o 9000"):
        blkstress(t, "stress", "/dev/xform0", args, timeout=50,
                  fix="with several bios in flight, each completion must use what belongs to "
                  "its own bio: keep per-bio state in its struct xform_io, never in the "
                  "device or in a global (TODOs 4 and 5)")
    t.rmmod()
    no_trouble(t)


@test(10, "removal while idle is clean: the lower device is let go, the module loads again")
def clean_removal(t):
    lower = null_blk(t)
    load(t, lower)
    blkstress(t, "stress", "/dev/xform0", "-w 2 -r 1 -n 20 -b 16384")
    t.rmmod()
    expect(not t.sh("test -e /dev/xform0").ok, "after rmmod /dev/xform0 is still there")
    refs = t.read("/sys/module/null_blk/refcnt")
    expect(refs == "0", f"after rmmod xform, null_blk is still in use ({refs} references)",
           "xform_exit() must blkdev_put() the lower device it opened")
    load(t, lower)
    blkstress(t, "fill", "/dev/xform0", "-b 4096 -o 64")
    blkstress(t, "check", "/dev/xform0", "-b 4096 -o 64")
    t.rmmod()
    no_trouble(t)


# Hidden: another key, brd (which does not advance the bio's iterator) as the lower device,
# sizes and patterns the public tests do not use.
@test(10, "another key, over brd, with unusual sizes", hidden=True)
def other_key_over_brd(t):
    if not t.sh("test -b /dev/ram0").ok:
        t.vm.modprobe("brd", "rd_nr=1", "rd_size=16384")
    key = 0xC0FFEE
    load(t, "/dev/ram0", f"key={key:#x}")
    for size, sector, offset in ((1536, 3, 2560), (200704, 333, 1024), (70144, 9001, 3072)):
        args = f"-b {size} -o {sector} -s 0xfeed"
        blkstress(t, "fill", "/dev/xform0", f"{args} -m {offset}")
        blkstress(t, "check", "/dev/xform0", f"{args} -m 0",
                  fix="round trips must work over any lower device and key")
        blkstress(t, "check", "/dev/ram0", f"{args} -k {key:#x}",
                  fix="the stored data must use the key of the module parameter")
    blkstress(t, "stress", "/dev/xform0", "-w 3 -r 3 -n 60 -b 6144 -m 1536 -o 5 -s 99",
              timeout=50)
    t.rmmod()
    no_trouble(t)


@test(10, "many threads, mixed alignment, slow completions", hidden=True)
def slow_completions(t):
    # Completions 100 us after submission, from a timer: many bios in flight at once.
    lower = null_blk(t, irqmode="2", completion_nsec="100000")
    load(t, lower)
    for args in ("-w 6 -r 6 -n 40 -b 12288 -m 512 -o 3 -s 77",
                 "-w 3 -r 2 -n 12 -b 135680 -m 2048 -o 1 -s 78"):
        blkstress(t, "stress", "/dev/xform0", args, timeout=50)
    t.rmmod()
    no_trouble(t)
