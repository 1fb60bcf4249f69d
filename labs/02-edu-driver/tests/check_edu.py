"""The checker of lab 2 (a driver for QEMU's edu device), in the gradelib style.

Each test loads the student's edu.ko in the lab VM, exercises it through
sysfs, unloads it, and on failure says what to fix. Everything happens in the
guest: ``t.sh()`` runs a command there. A small helper is copied in,
``pollwait`` (poll() on a sysfs attribute), and the lab VM's own ``mmio`` reads
a register of the device directly, to see what the device itself did.

Run it with ``lab-vm check labs/02-edu-driver`` (or ``lab-vm check .`` in a handout).
"""
from __future__ import annotations

import math

from lab_vm.errors import VMError
from lab_vm.grading import assert_lines_match, expect, fail, test
from lab_vm.vm import pci


def edu_device(t) -> str:
    """The sysfs folder of the VM's edu device, bound to a driver or not."""
    try:
        return pci.device_path(pci.find_device(t.vm, *pci.EDU))
    except VMError as exc:
        fail(f"the VM has no edu device (1234:11e8): {exc}",
             "this is a problem of the lab set-up, not of your driver: tell the instructor")


def load_and_find(t, attribute: str) -> str:
    """insmod, check that probe bound the device, return the path of one of its attributes."""
    device = edu_device(t)
    t.insmod()
    driver = t.sh(f"readlink {device}/driver").text.strip()
    expect(driver.endswith("/edu"),
           f"after insmod no driver called edu is bound to the edu device ({device})",
           "probe must be called (TODO 1: the id table) and return 0 (TODOs 2, 3, 6)")
    path = f"{device}/{attribute}"
    expect(t.sh(f"test -e {path}").ok, f"{path} does not exist",
           "keep .dev_groups = edu_groups in edu_driver: it creates liveness and factorial")
    return path


def read_attribute(t, path: str, fix: str) -> str:
    result = t.sh(f"cat {path}")
    expect(result.ok, f"cat {path} failed: {result.output.strip()}", fix)
    return result.text.strip()


def write_attribute(t, path: str, value: str, fix: str) -> None:
    result = t.write(path, value)
    expect(result.ok, f"echo {value} > {path} failed: {result.output.strip()}", fix)


def register(t, device: str, offset: int) -> int:
    """A register of the device read directly through its BAR (not through the driver)."""
    result = t.sh(f"mmio {device}/resource0 r {offset:#x}")     # the lab VM's /bin/mmio
    expect(result.ok, f"reading register {offset:#x} of the device failed: "
           f"{result.output.strip()}")
    return int(result.text.split()[-1], 16)                      # "read 0x004 0x0000002a"


def edu_interrupts(t) -> tuple[int, str] | None:
    """(count, line) of the edu interrupt in /proc/interrupts, or None if there is none."""
    lines = t.sh("cat /proc/interrupts").text.splitlines()
    cpus = len(lines[0].split()) if lines else 1      # the header: CPU0 CPU1 ...
    for line in lines[1:]:
        fields = line.split()
        if fields[-1:] == ["edu"]:
            return sum(int(f) for f in fields[1:1 + cpus] if f.isdigit()), line.strip()
    return None


@test(10, "the module loads and unloads")
def loads_and_unloads(t):
    t.insmod()
    expect(t.loaded(), "after insmod, /proc/modules does not list edu")
    t.rmmod()
    expect(not t.loaded(), "after rmmod, /proc/modules still lists edu")
    t.expect_quiet_kernel()


@test(10, "probe binds the driver to the edu device (1234:11e8)")
def binds(t):
    load_and_find(t, "liveness")
    t.rmmod()


@test(10, "probe maps BAR0 and checks the identification register")
def identification(t):
    t.insmod()
    assert_lines_match(t.dmesg(), r"edu [0-9a-f:.]+: identification 0x010000ed",
                       what="kernel log",
                       fix='map BAR0 (TODO 2), read EDU_ID and log it with dev_info(&pdev->dev, '
                       '"identification 0x%08x ...", id) (TODO 3)')
    t.rmmod()


@test(15, "liveness: the device answers the complement")
def liveness(t):
    path = load_and_find(t, "liveness")
    for value in (0x12345678, 0, 0xFFFFFFFF, 0xDEADBEEF):
        write_attribute(t, path, f"{value:#x}",
                        "liveness_store (TODO 5): kstrtou32(buf, 0, &value), iowrite32 it to "
                        "EDU_LIVENESS, return count")
        want = f"0x{~value & 0xFFFFFFFF:08x}"
        got = read_attribute(t, path, "liveness_show (TODO 4): sysfs_emit the register")
        expect(got == want, f"after writing {value:#010x}, liveness reads {got!r}; the device "
               f"answers {want}",
               'liveness_show (TODO 4) must print ioread32(regs + EDU_LIVENESS) as "0x%08x\\n"')
    t.rmmod()


@test(15, "factorials computed by the device through MMIO")
def factorial(t):
    device = edu_device(t)
    path = load_and_find(t, "factorial")
    for n in (0, 1, 5, 10, 12):
        write_attribute(t, path, str(n),
                        "factorial_store (TODO 9): parse n, write it to EDU_FACTORIAL, return "
                        "count")
        got = read_attribute(t, path, "factorial_show (TODO 10): wait for the result, print it")
        expect(got == str(math.factorial(n)),
               f"after writing {n}, factorial reads {got!r}; {n}! = {math.factorial(n)}",
               "factorial_show must wait until the interrupt handler stored the result "
               "(TODOs 6, 7, 10)")
    held = register(t, device, 0x08)
    expect(held == math.factorial(12),
           f"the device's own factorial register holds {held}, not 12! = {math.factorial(12)}",
           "write n to EDU_FACTORIAL and let the device compute: do not compute n! yourself")
    t.rmmod()


@test(15, "completion is interrupt-driven (MSI)")
def interrupts(t):
    path = load_and_find(t, "factorial")
    before = edu_interrupts(t)
    if before is None:
        fail("/proc/interrupts has no interrupt called edu",
             "TODO 6: pci_alloc_irq_vectors(pdev, 1, 1, PCI_IRQ_MSI), then "
             'devm_request_threaded_irq(..., pci_irq_vector(pdev, 0), ..., "edu", edu)')
    expect("MSI" in before[1], f"the edu interrupt is not an MSI: {before[1]}",
           "qboot gives this VM no way to route legacy INTx: use PCI_IRQ_MSI")
    for n in range(1, 6):
        write_attribute(t, path, str(n), "factorial_store (TODO 9)")
        read_attribute(t, path, "factorial_show (TODO 10)")
    after = edu_interrupts(t)
    raised = after[0] - before[0] if after else 0
    expect(raised == 5, f"5 factorials raised {raised} edu interrupts (want 5)",
           "set EDU_STATUS_IRQ_FACT in EDU_STATUS (TODO 6) and pci_set_master(); acknowledge "
           "in edu_irq by writing EDU_IRQ_STATUS back to EDU_IRQ_ACK (TODO 7)")
    t.rmmod()


@test(15, "user space can poll() the factorial attribute")
def poll(t):
    path = load_and_find(t, "factorial")
    result = t.sh(f"{t.helper('pollwait')} {path} 2000 10")
    assert_lines_match(result.output, r"woke after \d+ ms: 3628800$", what="output of pollwait",
                       fix="call sysfs_notify(&pdev->dev.kobj, NULL, \"factorial\") from the "
                       "threaded handler (TODO 8) once the result is stored")
    t.rmmod()


@test(10, "remove leaves the device quiet; the module loads again")
def clean_remove(t):
    device = edu_device(t)
    path = load_and_find(t, "factorial")
    write_attribute(t, path, "3", "factorial_store (TODO 9)")
    read_attribute(t, path, "factorial_show (TODO 10)")
    t.rmmod()
    expect(not t.sh(f"test -e {device}/driver").ok, "after rmmod the device still has a driver")
    expect(edu_interrupts(t) is None, "after rmmod /proc/interrupts still lists edu",
           "request the interrupt with devm_request_threaded_irq() so that unbinding frees it")
    status = register(t, device, 0x20)
    expect(not status & 0x80, f"after rmmod the status register is {status:#x}: the device "
           "would still interrupt when a factorial ends",
           "TODO 11: in edu_remove write 0 to EDU_STATUS")
    path = load_and_find(t, "factorial")
    write_attribute(t, path, "4", "a second insmod must work like the first")
    got = read_attribute(t, path, "a second insmod must work like the first")
    expect(got == "24", f"after a reload, factorial of 4 reads {got!r}",
           "release everything on remove (pcim_*/devm_* do it) so that probe can run again")
    t.rmmod()
    t.expect_quiet_kernel()


@test(10, "bad input is refused with EINVAL", hidden=True)
def bad_input(t):
    path = load_and_find(t, "factorial")
    write_attribute(t, path, "7", "factorial_store (TODO 9)")
    expect(read_attribute(t, path, "factorial_show") == "5040", "7! did not read 5040")
    for bad in ("13", "-1", "seven", ""):
        result = t.write(path, bad)
        expect(not result.ok, f"writing {bad!r} to factorial was accepted",
               "factorial_store must return -EINVAL unless n is a number from 0 to 12")
        expect("Invalid argument" in result.output,
               f"writing {bad!r} failed, but not with EINVAL: {result.output.strip()}",
               "return the error of kstrtouint(), and -EINVAL for n > 12")
    liveness = path.rsplit("/", 1)[0] + "/liveness"
    expect(not t.write(liveness, "nope").ok, "writing 'nope' to liveness was accepted",
           "liveness_store must return the error of kstrtou32()")
    t.rmmod()


@test(10, "50 factorials in a row, each right", hidden=True)
def many(t):
    path = load_and_find(t, "factorial")
    script = (f"for i in $(seq 0 49); do echo $((i % 13)) > {path} || exit 1; "
              f"cat {path} || exit 1; done")
    result = t.sh(script, timeout=30)
    got = result.text.split()
    want = [str(math.factorial(i % 13)) for i in range(50)]
    expect(result.ok and got == want,
           f"50 factorials in a row: {sum(a == b for a, b in zip(got, want))} right of 50 "
           f"(status {result.status})",
           "wait until the previous computation ended before writing n (the device ignores a "
           "write while it computes)")
    t.rmmod()
