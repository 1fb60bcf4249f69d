"""Out-of-tree modules built against the lab kernel and loaded in the VM."""
import shutil

import pytest

from lab_vm.errors import CommandFailed, ModuleBuildError
from lab_vm.build.modules import build_module

from conftest import TESTS


@pytest.fixture
def module_copy(tmp_path):
    def copy(name):
        dst = tmp_path / name
        shutil.copytree(TESTS / "modules" / name, dst)
        return dst
    return copy


def test_module_builds_loads_and_unloads(vm, module_copy):
    result = build_module(module_copy("hello"))
    (ko,) = result.modules
    vm.insmod(ko, "answer=5")
    assert "vmexit hello: loaded, answer=5" in vm.dmesg()
    assert "hello" in vm.run("lsmod", timeout=30).text
    vm.rmmod("hello")
    assert "vmexit hello: unloaded" in vm.dmesg()


def test_compile_error_is_reported_with_file_and_line(built, module_copy):   # the kernel tree
    with pytest.raises(ModuleBuildError) as info:
        build_module(module_copy("broken"))
    errors = info.value.errors
    assert errors and "broken.c:7" in errors[0] and "undeclared_variable" in errors[0]
    assert "broken.c:7" in str(info.value)


def test_kernel_own_module_loads_by_name(vm):
    vm.modprobe("brd", "rd_nr=1", "rd_size=1024")
    assert vm.run("cat /sys/block/ram0/size", timeout=30).text.strip() == "2048"
    assert vm.module_loaded("brd")
    vm.rmmod("brd")
    assert not vm.module_loaded("brd")
    assert vm.rmmod("brd", missing_ok=True) is None          # gone already: left alone
    with pytest.raises(CommandFailed):
        vm.rmmod("brd")


def test_a_built_in_driver_is_not_a_loaded_module(vm):
    # rtc_cmos is built in (=y): /sys/module lists it (it has parameters), /proc/modules does not
    assert vm.run("test -d /sys/module/rtc_cmos", timeout=30).ok
    assert not vm.module_loaded("rtc_cmos")


def test_modprobe_loads_dependencies_first(vm, built):
    kernel, _ = built
    assert kernel.module_depends("null_blk") == ["configfs"]
    vm.modprobe("null_blk", "nr_devices=1")
    assert vm.run("test -d /sys/module/configfs && test -b /dev/nullb0", timeout=30).ok
    assert vm.modprobe("null_blk") is None          # loaded already: left alone
    vm.rmmod("null_blk")
