"""PCI devices of the lab VM as the guest's sysfs and QEMU's memory map show them.

Guest side: find a device by vendor:device id, read the resources (BARs) the
kernel assigned it. Machine side: QEMU's flat view of the physical address
space (``info mtree -f``), to see which region, if any, answers at an address —
what lies just past a BAR, for instance. Every function that reads the VM takes
a running LabVM. And for a driver that reads past its BAR mapping: the page
fault oops it causes, parsed from the console text a GuestPanic carries.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import VMError

LOG = logging.getLogger(__name__)

SYSFS = "/sys/bus/pci/devices"
EDU = (0x1234, 0x11E8)             # QEMU's educational device (hw/misc/edu.c)
# struct resource's flags (include/linux/ioport.h), as sysfs `resource` shows them
IORESOURCE_IO, IORESOURCE_MEM, IORESOURCE_PREFETCH = 0x100, 0x200, 0x2000
IORESOURCE_MEM_64 = 0x00100000
IORESOURCE_NAMES = ("IORESOURCE_IO", "IORESOURCE_MEM", "IORESOURCE_PREFETCH",
                    "IORESOURCE_MEM_64")


@dataclass(frozen=True)
class Resource:
    """One line of ``/sys/bus/pci/devices/<BDF>/resource``: a BAR as the kernel assigned it."""

    index: int
    start: int
    end: int
    flags: int

    @property
    def size(self) -> int:
        return self.end - self.start + 1 if self.end else 0

    @property
    def kind(self) -> str:
        if self.flags & IORESOURCE_MEM:
            return "mem"
        return "io" if self.flags & IORESOURCE_IO else "none"

    @property
    def prefetchable(self) -> bool:
        return bool(self.flags & IORESOURCE_PREFETCH)

    @property
    def is_64bit(self) -> bool:
        """A 64-bit memory BAR: it takes two BAR registers and may be placed above 4 GiB."""
        return bool(self.flags & IORESOURCE_MEM_64)


def ioresource_values(kernel_tree: str | Path) -> dict[str, int]:
    """The IORESOURCE_* flag values as ``include/linux/ioport.h`` of a kernel tree defines them.

    ``{"IORESOURCE_MEM_64": 0x100000, ...}`` for the names in IORESOURCE_NAMES; a
    check that the constants above match the kernel the guest runs.
    """
    header = Path(kernel_tree) / "include/linux/ioport.h"
    try:
        text = header.read_text()
    except OSError as exc:
        raise VMError(f"cannot read the kernel's {header}: {exc}") from exc
    values = {}
    for name in IORESOURCE_NAMES:
        m = re.search(rf"^#define\s+{name}\s+(0x[0-9a-fA-F]+)", text, re.M)
        if m is None:
            raise VMError(f"{header} does not define {name}")
        values[name] = int(m[1], 16)
    return values


def devices(vm, *, timeout: float = 10.0) -> dict[str, tuple[int, int]]:
    """Every guest PCI device: ``{bdf: (vendor, device)}``."""
    # One guest command for all devices: each sysfs read would otherwise be a round trip.
    out = vm.run(f"cd {SYSFS} && for d in *; do echo $d $(cat $d/vendor) $(cat $d/device); "
                 "done", timeout=timeout, check=True).text
    found = {}
    for line in out.splitlines():
        bdf, ven, dev = line.split()
        found[bdf] = (int(ven, 16), int(dev, 16))
    return found


def find_device(vm, vendor: int, device: int, *, timeout: float = 10.0) -> str:
    """The BDF (``0000:00:03.0``) of the first guest PCI device with this vendor:device id."""
    found = devices(vm, timeout=timeout)
    for bdf, ids in sorted(found.items()):
        if ids == (vendor, device):
            LOG.debug("PCI %04x:%04x is %s", vendor, device, bdf)
            return bdf
    have = ", ".join(f"{b} {v:04x}:{d:04x}" for b, (v, d) in sorted(found.items()))
    raise VMError(f"no PCI device {vendor:04x}:{device:04x} in the guest (was it given "
                  f"`devices=[...]`?); the guest has: {have}")


def device_path(bdf: str, name: str = "") -> str:
    """A guest sysfs path of the device: ``device_path(bdf, "resource0")``."""
    return f"{SYSFS}/{bdf}/{name}" if name else f"{SYSFS}/{bdf}"


def resources(vm, bdf: str, *, timeout: float = 10.0) -> list[Resource]:
    """The six BARs (then ROM and bridge windows) as the guest kernel assigned them."""
    text = vm.read_file(device_path(bdf, "resource"), timeout=timeout).decode()
    return parse_resources(text)


def all_resources(vm, *, timeout: float = 10.0) -> dict[str, list[Resource]]:
    """Every guest PCI device's resources, by BDF (one guest command for all of them)."""
    out = vm.run(f"cd {SYSFS} && for d in *; do echo \"@ $d\"; cat $d/resource; done",
                 timeout=timeout, check=True).text
    devices: dict[str, list[str]] = {}
    for line in out.splitlines():
        if line.startswith("@ "):
            current = devices.setdefault(line[2:].strip(), [])
        elif line.strip():
            current.append(line)
    return {bdf: parse_resources("\n".join(lines)) for bdf, lines in devices.items()}


def owner(vm, address: int, *, timeout: float = 10.0) -> tuple[str, Resource] | None:
    """The guest device (BDF) and resource whose assigned range holds ``address``, if any."""
    for bdf, res in all_resources(vm, timeout=timeout).items():
        for r in res:
            if r.size and r.start <= address <= r.end:
                return bdf, r
    return None


def parse_resources(text: str) -> list[Resource]:
    return [Resource(i, *(int(x, 16) for x in line.split()[:3]))
            for i, line in enumerate(text.splitlines()) if line.strip()]


def config_space(vm, bdf: str, *, timeout: float = 10.0) -> bytes:
    """The device's config space as the guest reads it (256 bytes; 4 KiB with PCIe)."""
    return vm.read_file(device_path(bdf, "config"), timeout=timeout)


def command_register(vm, bdf: str, *, timeout: float = 10.0) -> int:
    """The PCI command register (bit 0: I/O decoding, bit 1: memory decoding, bit 2: DMA)."""
    return int.from_bytes(config_space(vm, bdf, timeout=timeout)[4:6], "little")


def enable(vm, bdf: str, *, timeout: float = 10.0) -> None:
    """Switch the device's decoding on, as a driver's pci_enable_device() would.

    With no driver bound, nothing does it: the BARs are assigned but the device
    answers at none of them (a load there reads what the bus gives for nobody).
    """
    vm.run(f"echo 1 > {device_path(bdf, 'enable')}", timeout=timeout, check=True)
    LOG.info("enabled PCI device %s", bdf)


@dataclass(frozen=True)
class Region:
    """One range of QEMU's flat memory view: ``start``..``end`` (inclusive) and its owner."""

    start: int
    end: int
    kind: str       # "ram", "i/o", "romd", ...
    name: str

    def __contains__(self, address: int) -> bool:
        return self.start <= address <= self.end


# "  00000000febf0000-00000000febfffff (prio 1, i/o): edu-mmio"
MTREE_RE = re.compile(r"^\s*([0-9a-f]+)-([0-9a-f]+) \(prio -?\d+, ([\w/-]+)\): (\S+)")


def memory_map(vm, *, address_space: str = "memory", timeout: float = 10.0) -> list[Region]:
    """QEMU's flat view of one address space (``memory``: the CPU's physical memory).

    Ranges that no region covers are not listed: an access there is
    "unassigned" (QEMU answers a load with 0 and drops a store).
    """
    return parse_mtree(monitor(vm, "info mtree -f", timeout=timeout), address_space)


def monitor(vm, command_line: str, *, timeout: float = 10.0) -> str:
    """Run one QEMU monitor (HMP) command through QMP; return its text."""
    return vm.qmp("human-monitor-command", timeout=timeout, **{"command-line": command_line})


def parse_mtree(text: str, address_space: str = "memory") -> list[Region]:
    """The ranges of the flat view that ``address_space`` (listed in its header) uses."""
    regions: list[Region] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("FlatView #"):
            inside = False
        elif line.lstrip().startswith("AS \""):
            names = re.findall(r'AS "([^"]+)"', line)
            inside = inside or address_space in names
        elif inside:
            m = MTREE_RE.match(line)
            if m:
                regions.append(Region(int(m[1], 16), int(m[2], 16), m[3], m[4]))
    if not regions:
        raise VMError(f"QEMU's memory tree has no flat view for address space {address_space!r}")
    return regions


def region_at(regions: list[Region], address: int) -> Region | None:
    """The region that answers at ``address``, or None if the address is unassigned."""
    return next((r for r in regions if address in r), None)


def bus_read(vm, address: int, *, timeout: float = 10.0) -> int | None:
    """Read 4 bytes of guest-physical memory the way the machine's bus does (HMP ``xp``).

    Returns None where no region decodes the address: QEMU's own read reports a
    decode error there (a guest CPU's load would silently get 0 under QEMU).
    """
    text = monitor(vm, f"xp /1wx {address:#x}", timeout=timeout)
    if "Cannot access memory" in text:
        return None
    m = re.search(r":\s*(0x[0-9a-f]+)", text)
    if m is None:
        raise VMError(f"unexpected answer from QEMU's xp at {address:#x}: {text!r}")
    return int(m[1], 16)


# -- the oops of a kernel read past a mapping ----------------------------------------------

TIMESTAMP_RE = re.compile(r"^\[\s*\d+\.\d+\] ", re.M)
FAULT_RE = re.compile(r"BUG: unable to handle page fault for address: ([0-9a-f]+)")


@dataclass(frozen=True)
class PageFault:
    """A kernel page-fault oops, as the console printed it."""

    address: int          # the faulting address (what CR2 held)
    access: str           # "supervisor read access in kernel mode"
    reason: str           # "not-present page"
    rip: str              # "ioread32+0x9/0x2e"
    call_trace: list[str]  # the callers, innermost first: ["peek_show", "dev_attr_show", ...]
    guessed: set[str]     # names the unwinder marked "?" (found on the stack, not chained)
    lines: list[str]      # the oops from its BUG: line to the panic line

    @property
    def function(self) -> str:
        """The function the faulting instruction is in: ``ioread32``."""
        return self.rip.split("+")[0]

    @property
    def summary(self) -> list[str]:
        """The lines a reader needs: BUG, #PF, Oops, the first RIP, and the panic."""
        end = next((i for i, line in enumerate(self.lines) if line.startswith("---[ end")),
                   len(self.lines))
        keep = [line for line in self.lines[:end]
                if line.startswith(("BUG:", "#PF:", "Oops:"))]
        keep += [line for line in self.lines if line.startswith("RIP:")][:1]
        return keep + [line for line in self.lines[end:] if line.startswith("Kernel panic")]


def page_fault(console: str) -> PageFault | None:
    """The first page-fault oops in kernel console text (a GuestPanic's ``output``), or None."""
    text = TIMESTAMP_RE.sub("", console)
    m = FAULT_RE.search(text)
    if m is None:
        return None
    lines = text[m.start():].splitlines()
    end = next((i for i, line in enumerate(lines) if "Kernel panic" in line), len(lines) - 1)
    lines = [line.rstrip() for line in lines[:end + 1]]
    access = reason = rip = ""
    trace: list[str] = []
    guessed: set[str] = set()
    in_trace = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("#PF: error_code"):
            reason = stripped.split(" - ", 1)[-1]
        elif stripped.startswith("#PF: "):
            access = stripped[5:]
        elif stripped.startswith("RIP: ") and not rip:
            rip = stripped.split(":", 2)[-1].strip()
        elif stripped == "Call Trace:":
            in_trace = True
        elif in_trace:
            if stripped in ("<TASK>", "</TASK>") or stripped.startswith("<"):
                if stripped == "</TASK>":
                    in_trace = False
                continue
            if not stripped or stripped.startswith(("Modules linked", "---[", "RIP:")):
                in_trace = False
                continue
            # "? f": a return address found on the stack but not reached through the frame
            # chain. Often stale; but a leaf like ioread32 builds no frame, so its caller
            # shows this way too. Kept, and marked.
            name = stripped.lstrip("? ").split("+")[0]
            trace.append(name)
            if stripped.startswith("?"):
                guessed.add(name)
    return PageFault(int(m[1], 16), access, reason, rip, trace, guessed, lines)
