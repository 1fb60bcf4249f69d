"""lab_vm.vm.pci: BAR flags as the guest kernel reports them, and the oops of a read past a BAR.

The parser tests feed recorded console text; the others drive a real lab VM with QEMU's edu
device (and the virtio-serial device every lab VM has, whose modern BAR is 64-bit and
prefetchable).
"""
from __future__ import annotations

import pytest

from lab_vm import GuestPanic
from lab_vm.vm import pci
from lab_vm.vm.machine import LabVM
from lab_vm.build.modules import build_variant

from conftest import REPO

BARVIEW = REPO / "book" / "code" / "02-mmio-pci" / "barview"

# A real oops, recorded from the lab VM (chapter 2's barview: ioread32() one byte past a
# one-page pcim_iomap() of edu's BAR 0 at 0xffffc9000002d000), timestamps and all.
RECORDED_OOPS = """\
[    8.785701] BUG: unable to handle page fault for address: ffffc9000002e000
[    8.792258] #PF: supervisor read access in kernel mode
[    8.803107] #PF: error_code(0x0000) - not-present page
[    8.803493] PGD 100067 P4D 100067 PUD 17f067 PMD 1c0067 PTE 0
[    8.817133] Oops: 0000 [#1] SMP
[    8.817562] CPU: 0 PID: 61 Comm: cat Tainted: G           O       6.1.192 #1
[    8.818073] RIP: 0010:ioread32+0x9/0x2e
[    8.818791] Code: 76 08 89 fa 66 ed 0f b7 c0 c3 55 48 c7 c6 2b f4 96 81 48 89 e5 e8 70 ff ff ff b8 ff ff 00 00 5d c3 48 81 ff ff ff 03 00 76 03 <8b> 07 c3 48 81 ff 00 00 01 00 76 04 89 fa ed c3 55 48 c7 c6 3c f4
[    8.830478] RSP: 0018:ffffc900000f7c70 EFLAGS: 00000292
[    8.830699] RAX: ffffffffa0000052 RBX: ffff888000731000 RCX: 0000000000000000
[    8.830883] RDX: ffff888000731000 RSI: ffffffffa0002160 RDI: ffffc9000002e000
[    8.831063] RBP: ffffc900000f7c88 R08: ffff8880006f88f8 R09: 00000000ffffffff
[    8.835792] R10: 0000000000000000 R11: 000000000002b6c4 R12: ffff8880007114e8
[    8.836063] R13: 0000000000000001 R14: ffffc900000f7db8 R15: ffff88800075ad40
[    8.836330] FS:  000000000b6ff3c0(0000) GS:ffff88800f600000(0000) knlGS:0000000000000000
[    8.846113] CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033
[    8.846313] CR2: ffffc9000002e000 CR3: 0000000000785000 CR4: 00000000000006b0
[    8.846693] Call Trace:
[    8.847231]  <TASK>
[    8.856865]  ? peek_show+0x21/0x3e [barview]
[    8.857834]  dev_attr_show+0x21/0x45
[    8.858245]  sysfs_kf_seq_show+0x7f/0xb8
[    8.858399]  kernfs_seq_show+0x21/0x23
[    8.858500]  seq_read_iter+0x15e/0x313
[    8.858607]  kernfs_fop_read_iter+0x38/0x16b
[    8.858716]  ? free_unref_page_prepare+0x154/0x18e
[    8.858837]  generic_file_splice_read+0x90/0x107
[    8.858960]  do_splice_to+0x8d/0x97
[    8.859053]  splice_file_to_pipe+0x54/0x7b
[    8.859162]  do_sendfile+0x1b4/0x230
[    8.859264]  __x64_sys_sendfile64+0x88/0x97
[    8.859386]  x64_sys_call+0x1b3/0xd73
[    8.869654]  do_syscall_64+0x3d/0x4c
[    8.869944]  entry_SYSCALL_64_after_hwframe+0x4b/0xb5
[    8.870216] RIP: 0033:0x47cf2a
[    8.870517] Code: c3 0f 1f 80 00 00 00 00 4c 89 d2 4c 89 c6 e9 fd fd ff ff 0f 1f 44 00 00 31 c0 c3 0f 1f 44 00 00 49 89 ca b8 28 00 00 00 0f 05 <48> 3d 01 f0 ff ff 73 01 c3 48 c7 c1 e0 ff ff ff f7 d8 64 89 01 48
[    8.870938] RSP: 002b:00007ffdae0efb98 EFLAGS: 00000246 ORIG_RAX: 0000000000000028
[    8.871158] RAX: ffffffffffffffda RBX: 0000000000000000 RCX: 000000000047cf2a
[    8.871323] RDX: 0000000000000000 RSI: 0000000000000003 RDI: 0000000000000001
[    8.871500] RBP: 00007ffdae0efc10 R08: 0000000000000000 R09: 0000000001000000
[    8.879949] R10: 0000000001000000 R11: 0000000000000246 R12: 0000000000000001
[    8.880177] R13: 0000000001000000 R14: 0000000000000001 R15: 0000000000000000
[    8.880510]  </TASK>
[    8.880692] Modules linked in: barview(O)
[    8.881307] CR2: ffffc9000002e000
[    8.881614] ---[ end trace 0000000000000000 ]---
[    8.881785] RIP: 0010:ioread32+0x9/0x2e
[    8.881931] Code: 76 08 89 fa 66 ed 0f b7 c0 c3 55 48 c7 c6 2b f4 96 81 48 89 e5 e8 70 ff ff ff b8 ff ff 00 00 5d c3 48 81 ff ff ff 03 00 76 03 <8b> 07 c3 48 81 ff 00 00 01 00 76 04 89 fa ed c3 55 48 c7 c6 3c f4
[    8.882337] RSP: 0018:ffffc900000f7c70 EFLAGS: 00000292
[    8.882486] RAX: ffffffffa0000052 RBX: ffff888000731000 RCX: 0000000000000000
[    8.882647] RDX: ffff888000731000 RSI: ffffffffa0002160 RDI: ffffc9000002e000
[    8.882808] RBP: ffffc900000f7c88 R08: ffff8880006f88f8 R09: 00000000ffffffff
[    8.882969] R10: 0000000000000000 R11: 000000000002b6c4 R12: ffff8880007114e8
[    8.883128] R13: 0000000000000001 R14: ffffc900000f7db8 R15: ffff88800075ad40
[    8.883290] FS:  000000000b6ff3c0(0000) GS:ffff88800f600000(0000) knlGS:0000000000000000
[    8.883484] CS:  0010 DS: 0000 ES: 0000 CR0: 0000000080050033
[    8.901981] CR2: ffffc9000002e000 CR3: 0000000000785000 CR4: 00000000000006b0
[    8.902477] Kernel panic - not syncing: Fatal exception
[    8.903204] Kernel Offset: disabled
"""


def test_page_fault_parses_a_recorded_oops():
    fault = pci.page_fault(RECORDED_OOPS)
    assert fault is not None
    assert fault.address == 0xFFFFC9000002D000 + 0x1000
    assert fault.access == "supervisor read access in kernel mode"
    assert fault.reason == "not-present page"
    assert fault.function == "ioread32" and fault.rip == "ioread32+0x9/0x2e"
    assert fault.call_trace[:3] == ["peek_show", "dev_attr_show", "sysfs_kf_seq_show"]
    assert fault.guessed == {"peek_show", "free_unref_page_prepare"}
    assert fault.lines[0].startswith("BUG: unable to handle page fault")
    assert fault.lines[-1].startswith("Kernel panic - not syncing")
    assert [line.split(":")[0] for line in fault.summary] == [
        "BUG", "#PF", "#PF", "Oops", "RIP", "Kernel panic - not syncing"]


def test_page_fault_is_none_for_other_panics():
    sysrq = ("[    2.1] sysrq: Trigger a crash\n"
             "[    2.1] Kernel panic - not syncing: sysrq triggered crash\n")
    assert pci.page_fault(sysrq) is None
    assert pci.page_fault("") is None


def test_flag_constants_are_the_kernels(built):
    kernel, _ = built
    values = pci.ioresource_values(kernel.tree)
    assert values == {name: getattr(pci, name) for name in pci.IORESOURCE_NAMES}


def test_ioresource_values_names_a_missing_header(tmp_path):
    with pytest.raises(pci.VMError, match="ioport.h"):
        pci.ioresource_values(tmp_path)


def test_resource_flags_decode():
    text = ("0x00000000fea00000 0x00000000feafffff 0x0000000000040200\n"
            "0x000000000000c000 0x000000000000c01f 0x0000000000040101\n"
            "0x00000000fe000000 0x00000000fe003fff 0x000000000014220c\n")
    edu, io, wide = pci.parse_resources(text)
    assert (edu.kind, edu.size, edu.is_64bit, edu.prefetchable) == ("mem", 1 << 20, False, False)
    assert (io.kind, io.size, io.is_64bit) == ("io", 32, False)
    assert (wide.kind, wide.is_64bit, wide.prefetchable) == ("mem", True, True)


@pytest.fixture(scope="module")
def edu_vm(built):
    with LabVM(name="test-pci", devices=["edu"]) as machine:
        yield machine


def test_bar_flags_live(edu_vm):
    """edu's BAR 0 is 32-bit and not prefetchable; virtio-serial has a 64-bit prefetchable BAR,
    and sysfs's flags agree with the BAR registers in config space."""
    edu = pci.find_device(edu_vm, *pci.EDU)
    bar0 = pci.resources(edu_vm, edu)[0]
    assert bar0.kind == "mem" and not bar0.is_64bit and not bar0.prefetchable
    serial = pci.find_device(edu_vm, 0x1AF4, 0x1003)
    wide = [r for r in pci.resources(edu_vm, serial)[:6] if r.is_64bit]
    assert wide and all(r.prefetchable for r in wide)
    config = pci.config_space(edu_vm, serial)
    for r in wide:
        reg = int.from_bytes(config[0x10 + 4 * r.index:0x14 + 4 * r.index], "little")
        high = int.from_bytes(config[0x14 + 4 * r.index:0x18 + 4 * r.index], "little")
        assert reg >> 1 & 3 == 2 and reg & 8                  # type 64-bit, prefetchable
        assert (high << 32) | (reg & ~0xF) == r.start


@pytest.mark.slow
def test_read_past_the_mapping_oopses_at_its_end(built, tmp_path):
    """A driver's ioread32() one byte past its pci_iomap()ping: page fault at mapping + length."""
    ko = build_variant([BARVIEW / "barview.c", BARVIEW / "Kbuild"], tmp_path / "barview",
                       jobs=1).modules[0]
    with LabVM(name="test-pci-oops", devices=["edu"]) as vm:
        edu = pci.find_device(vm, *pci.EDU)
        vm.insmod(ko, "maplen=0x2000")
        view = dict(item.split("=") for item in
                    vm.read_file(pci.device_path(edu, "bar")).decode().split())
        peek = pci.device_path(edu, "peek")
        assert vm.run(f"echo 0x1ffc > {peek} && cat {peek}", check=True).text.split()[1] == \
            "0xffffffff"
        with pytest.raises(GuestPanic) as info:
            vm.run(f"echo 0x2000 > {peek} && cat {peek}", timeout=60)
    fault = pci.page_fault(info.value.output)
    assert fault is not None, info.value.output
    assert fault.address == int(view["mapping"], 16) + 0x2000
    assert fault.function == "ioread32" and fault.call_trace[0] == "peek_show"
