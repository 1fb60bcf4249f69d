"""Saved states: boot a VM configuration once, save the running guest, restore it after.

A state is keyed by everything that must match between the QEMU that saved it
and the one that loads it: kernel, initramfs, QEMU binary and version,
accelerator, memory, CPUs, firmware, devices, kernel command line, and the
file layout below (``RECIPE``). Host-side details that are not guest state
(socket paths, the shared directory's path) are not part of the key. A state
whose key does not match is never used; a state that fails to load is deleted
and the VM boots cold.

The guest's RAM is not streamed. Streaming it (``-incoming "exec:cat FILE"``,
the first design) pushed ~22 MB through a pipe into fresh memory on every
restore: ~100 ms of a ~0.3 s restore. Instead one file holds both parts::

    [0, RAM)          the guest's RAM, byte for byte; pages that were never written are holes
    [RAM, RAM + n)    QEMU's migration stream without that RAM: devices, small ROMs (~240 kB)
    last 16 bytes     TRAILER: magic and n, so that a truncated file is refused up front

*Saving*: a VM that will save runs with its RAM in a memfd mapped shared
(``memory-backend-file,share=on``), and the migration capability
``x-ignore-shared`` makes ``migrate`` leave shared RAM out of the stream.
While the guest sits paused after the migration, the memfd's non-zero pages
are copied into the file (before ``cont``: once the guest runs on, it writes
there).

*Restoring*: QEMU maps the file as the guest's RAM privately (``share=off``:
MAP_PRIVATE). Pages come from the page cache on first touch and are copied on
first write, so VMs restored from one file at once share its clean pages, never
see each other's writes, and never modify the file. QEMU reads the device state
from a descriptor of the same open file, positioned at RAM (``migrate-incoming
fd:N``), and maps that same descriptor (``mem-path=/proc/self/fd/N``): a state
replaced by a concurrent save while a restore starts cannot mix two saves. The
destination must also have ``x-ignore-shared`` to parse the stream (it then
carries each block's address), and a capability can only be set over QMP before
the load: hence ``-incoming defer``. QEMU 7.2 accepts a stream with no pages
for a RAM block it does not ignore and leaves that memory as mapped
(migration/ram.c), and does not write ROM blobs (kernel, initrd) into RAM while
``inmigrate`` (hw/core/loader.c, ``rom_reset``): the restored RAM is exactly
the saved one. Devices that discard guest RAM (virtio-balloon, virtio-mem)
would punch holes into the file through QEMU's own descriptor; the lab VM has
none.

Where a restore's time goes (TCG, 2 host cores; ``lab-vm bench``): QEMU starts
(~30 ms to its sockets, ~25 ms more to a working QMP), the device state loads
(~3 ms), then the guest runs code this QEMU has never translated: taking the
clock and seed (~5 k translation blocks), the first fork and exec (~11 k), 9p
(~3 k). At ~10 µs a block, that translation, not I/O, is most of what is left.
"""
from __future__ import annotations

import logging
import os
import shlex
import struct
import subprocess
import time
import uuid
from pathlib import Path

from .. import paths
from ..errors import VMError
from .qemu_binary import qemu_identity
from ..build import cache

LOG = logging.getLogger(__name__)
RECIPE = "state-2"          # state-2: RAM as a file mapped at restore, device state after it
RAM_ID = "vmexit-ram"       # the memory backend's id, which names the RAM block in the stream
TRAILER = struct.Struct("<8sQ")
MAGIC = b"VMXSTAT2"
PAGE = 4096
IGNORE_SHARED = [{"capability": "x-ignore-shared", "state": True}]


class StateError(VMError):
    """A saved state that cannot be made or used: truncated, not a state file, a migration
    that failed or did not finish. LabVM then boots cold (a LabVMError like every other)."""


def key(vm) -> str:
    """The identity of a VM configuration, as far as a saved state is concerned."""
    q = qemu_identity(vm.qemu)
    return cache.digest(RECIPE, vm.kernel.key, vm.initramfs.key, q["qemu_version"], q["qemu"],
                        q["qemu_size"], q["qemu_mtime_ns"], vm.accel, vm.memory, vm.cpus,
                        vm.firmware, vm.share is not None, *vm.boot_devices,
                        *(["-icount", vm.icount] if vm.icount else []), *vm.qemu_args,
                        vm.kernel_cmdline())


def path_for(state_key: str) -> Path:
    return paths.cache_dir() / "states" / f"{state_key}.state"


def boot_kernel_path(kernel) -> Path:
    """The kernel without its symbols (``objcopy --strip-all``), for QEMUs that restore.

    Named after the vmlinux file itself (path, size, mtime), not the kernel's key:
    kernels with other keys may share one tree (the tests make such kernels).
    """
    st = os.stat(kernel.vmlinux)
    ident = cache.digest(str(kernel.vmlinux), st.st_size, st.st_mtime_ns)
    return paths.cache_dir() / "states" / f"vmlinux-{ident}"


def _make_boot_kernel(kernel) -> None:
    target = boot_kernel_path(kernel)
    if target.exists():
        return
    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
    try:
        subprocess.run(["objcopy", "--strip-all", str(kernel.vmlinux), str(partial)],
                       check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
        os.replace(partial, target)
    except (OSError, subprocess.SubprocessError) as exc:
        LOG.info("no stripped kernel for restores (%s): they load the full vmlinux", exc)
    finally:
        partial.unlink(missing_ok=True)


def _backend(fd: int, memory: int, share: bool) -> list[str]:
    return ["-object", f"memory-backend-file,id={RAM_ID},size={memory}M,"
                       f"mem-path=/proc/self/fd/{fd},share={'on' if share else 'off'}",
            "-machine", f"memory-backend={RAM_ID}"]


class SharedRAM:
    """The RAM of a VM that will save its state: a memfd, mapped shared by QEMU.

    QEMU reopens it through /proc/self/fd (a memfd has no other name); we keep
    our own descriptor to copy the pages out when saving.
    """

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self.size = memory << 20
        self.fd = os.memfd_create("vmexit-ram", os.MFD_CLOEXEC)
        os.ftruncate(self.fd, self.size)

    @property
    def fds(self) -> tuple[int, ...]:
        return (self.fd,)

    def qemu_args(self, kernel) -> list[str]:
        return _backend(self.fd, self.memory, share=True)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SavedState:
    """A state file opened for a restore: checked, and positioned at its device state."""

    def __init__(self, path: Path, memory: int) -> None:
        self.path = path
        self.memory = memory
        self.boot_kernel: Path | None = None
        ram = memory << 20
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(self.fd).st_size
            if size < ram + TRAILER.size:
                raise StateError(f"{path.name} is truncated: {size} bytes, "
                                 f"less than the {memory} MiB of RAM it must hold")
            magic, stream = TRAILER.unpack(os.pread(self.fd, TRAILER.size, size - TRAILER.size))
            if magic != MAGIC:
                raise StateError(f"{path.name} is not a saved state (no trailer)")
            if ram + stream + TRAILER.size != size:
                raise StateError(f"{path.name} is truncated or padded: {size} bytes, "
                                 f"expected {ram + stream + TRAILER.size}")
            _prefetch(self.fd, size)
            os.lseek(self.fd, ram, os.SEEK_SET)
            mark_used(path)
        except BaseException:
            os.close(self.fd)
            raise

    @property
    def fds(self) -> tuple[int, ...]:
        return (self.fd,)

    def qemu_args(self, kernel) -> list[str]:
        args = _backend(self.fd, self.memory, share=False) + ["-incoming", "defer"]
        boot = boot_kernel_path(kernel)
        if boot.exists():
            # Given twice, the last -kernel counts. The restored RAM already holds the
            # kernel; QEMU still parses the ELF for its PVH entry note, and without the
            # symbol table (57k symbols QEMU reads and sorts) it starts ~10 ms sooner.
            args += ["-kernel", str(boot)]
            self.boot_kernel = boot
            mark_used(boot)
        return args

    def load(self, vm) -> None:
        """Start loading the device state (QEMU is waiting in ``inmigrate``)."""
        vm.qmp("migrate-set-capabilities", capabilities=IGNORE_SHARED)
        vm.qmp("migrate-incoming", uri=f"fd:{self.fd}")

    def discard(self) -> None:
        """Delete the state file, unless it was replaced meanwhile (by a newer save).

        The stripped kernel goes too: the next save makes it again, and a bad one
        must not fail every restore to come.
        """
        try:
            if os.stat(self.path).st_ino == os.fstat(self.fd).st_ino:
                self.path.unlink()
        except OSError:
            pass
        if self.boot_kernel is not None:
            self.boot_kernel.unlink(missing_ok=True)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> "SavedState":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _prefetch(fd: int, size: int) -> None:
    """Start reading the file's data into the page cache while QEMU starts (~50 ms).

    The guest faults its pages in one by one; if the page cache lost them (a
    state unused for a while), each would be a small synchronous disk read.
    Only the data extents are asked for: the holes would be cached as zeros.
    """
    offset = 0
    try:
        while offset < size:
            data = os.lseek(fd, offset, os.SEEK_DATA)     # ENXIO: no data after offset
            offset = os.lseek(fd, data, os.SEEK_HOLE)
            os.posix_fadvise(fd, data, offset - data, os.POSIX_FADV_WILLNEED)
    except OSError:
        pass                     # only a hint: the restore works without it


def save(vm, target: Path, ram: SharedRAM, timeout: float = 60.0) -> float:
    """Save the running guest into ``target`` (atomically); returns the seconds it took.

    The guest is left paused by the migration and is resumed here, so the VM
    that saved the state goes on as if nothing happened.
    """
    start = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    # unique per writer: two threads or processes may first-boot the same configuration
    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
    try:
        with open(partial, "wb") as f:
            f.truncate(ram.size)          # a hole where the RAM goes; the stream goes after
        vm.qmp("migrate-set-capabilities", capabilities=IGNORE_SHARED)
        vm.qmp("migrate", uri=f"exec:cat >> {shlex.quote(str(partial))}")
        deadline = start + timeout
        while True:
            info = vm.qmp("query-migrate")
            status = info.get("status")
            if status == "completed":
                break
            if status in ("failed", "cancelled"):
                raise StateError(f"saving the state failed: {info.get('error-desc', status)}")
            if time.monotonic() > deadline:
                vm.qmp("migrate_cancel")
                raise StateError(f"saving the state took over {timeout:g} s")
            time.sleep(0.005)
        # The guest is paused now: its RAM is the state's until `cont`.
        with open(partial, "r+b") as f:
            stream = os.fstat(f.fileno()).st_size - ram.size
            if stream <= 0:
                raise StateError("saving the state wrote no device state")
            copied = _copy_pages(ram.fd, f.fileno(), ram.size)
            f.seek(0, os.SEEK_END)
            f.write(TRAILER.pack(MAGIC, stream))
        os.replace(partial, target)
        LOG.info("saved the guest state to %s in %.2f s (%d MiB of RAM pages, %d kB of "
                 "device state)", target, time.monotonic() - start, copied >> 20, stream >> 10)
    finally:
        partial.unlink(missing_ok=True)
        if vm.qmp("query-status")["status"] != "running":
            vm.qmp("cont")
    _make_boot_kernel(vm.kernel)
    prune()
    return time.monotonic() - start


# Each configuration (memory, CPUs, devices, kernel, ...) has its own state of 10-30 MB on disk
# (sparse): without a bound, every kernel rebuild and every lab's device set adds more.
MAX_STATES = 24
MAX_AGE_DAYS = 21.0


def mark_used(path: Path) -> None:
    """Record that a state (or stripped kernel) was just used: pruning keeps recent ones.

    The access time says it (set explicitly: file systems mounted relatime would not); the
    modification time stays that of the save.
    """
    try:
        os.utime(path, ns=(time.time_ns(), os.stat(path).st_mtime_ns))
    except OSError:
        pass


def _last_used(st: os.stat_result) -> float:
    return max(st.st_atime, st.st_mtime)


def prune(*, keep: int = MAX_STATES, max_age_days: float = MAX_AGE_DAYS,
          now: float | None = None) -> list[Path]:
    """Delete saved states unused for ``max_age_days`` and all but the ``keep`` most recently
    used; stripped kernels go by age only (states of several kernels share none). A state
    being restored right now is safe: its QEMU holds the file open.
    """
    folder = paths.cache_dir() / "states"
    now = time.time() if now is None else now
    removed = []
    try:
        entries = [(p, _last_used(p.stat())) for p in folder.iterdir()
                   if p.suffix == ".state" or (p.name.startswith("vmlinux-")
                                               and not p.name.endswith(".partial"))]
    except OSError:
        return removed
    states = sorted((e for e in entries if e[0].suffix == ".state"), key=lambda e: -e[1])
    for rank, (p, used) in enumerate(states):
        if rank >= keep or now - used > max_age_days * 86400:
            removed.append(p)
    removed += [p for p, used in entries
                if p.suffix != ".state" and now - used > max_age_days * 86400]
    for p in removed:
        p.unlink(missing_ok=True)
        LOG.info("pruned %s from the saved states", p.name)
    return removed


def _copy_pages(src: int, dst: int, size: int) -> int:
    """Copy the non-zero pages of ``src`` into ``dst`` at the same offsets; returns bytes copied.

    Only the memfd's allocated extents are read (SEEK_DATA), and all-zero pages
    in them are left as holes, so the file holds no more than the guest wrote.
    """
    zero = bytes(PAGE)
    copied = 0
    offset = 0
    while offset < size:
        try:
            data = os.lseek(src, offset, os.SEEK_DATA)
        except OSError:          # ENXIO: no data after offset
            break
        end = min(os.lseek(src, data, os.SEEK_HOLE), size)
        while data < end:
            chunk = os.pread(src, min(end - data, 1 << 20), data)
            view = memoryview(chunk)
            run = None            # start of the current run of non-zero pages
            for at in range(0, len(chunk) + PAGE, PAGE):
                nonzero = at < len(chunk) and view[at:at + PAGE] != zero
                if nonzero and run is None:
                    run = at
                elif not nonzero and run is not None:
                    os.pwrite(dst, view[run:at], data + run)
                    copied += at - run
                    run = None
            data += len(chunk)
        offset = end
    return copied


def wait_running(vm, timeout: float) -> None:
    """After the load started: wait until QEMU loaded the state and the guest runs."""
    deadline = time.monotonic() + timeout
    while True:
        vm.check_health()
        status = vm.qmp("query-status")["status"]
        if status == "running":
            return
        if status in ("inmigrate", "prelaunch", "restore-vm"):
            if time.monotonic() > deadline:
                raise StateError(f"the state did not load within {timeout:g} s")
            time.sleep(0.0005)     # the load itself takes ~3 ms
            continue
        raise StateError(f"loading the state left the guest {status!r}")
