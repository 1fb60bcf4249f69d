"""The lab VM, booted for real: commands, output, shares, failures, cleanup."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lab_vm.errors import ConfigError, GuestPanic, GuestTimeout, MissingArtifact, CommandFailed
from lab_vm.vm.machine import LabVM

from conftest import REPO, qemu_processes, sigint_as_at_a_terminal


@pytest.mark.smoke
def test_boot_and_uname(vm, built):
    kernel, _ = built
    assert vm.run("uname -r", timeout=30).text.strip() == kernel.release
    assert vm.accel in ("tcg", "kvm") and vm.accel_reason


@pytest.mark.parametrize("status", [0, 1, 42])
def test_exit_status_comes_back_exactly(vm, status):
    assert vm.run(f"exit {status}", timeout=30).status == status


def test_signal_death_is_128_plus_signal(vm):
    assert vm.run("kill -9 $$", timeout=30).status == 128 + 9


def test_stdout_and_stderr_are_separate(vm):
    result = vm.run("echo out; echo err >&2", timeout=30)
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")


def test_check_raises_with_command_status_and_output(vm):
    with pytest.raises(CommandFailed) as info:
        vm.run("echo why; exit 3", timeout=30, check=True)
    assert info.value.status == 3 and info.value.command == "echo why; exit 3"
    assert "why" in str(info.value)


def test_megabyte_of_binary_output_arrives_intact_while_kernel_prints(vm):
    data = bytes(range(256)) * 4096          # 1 MiB, every byte value, not UTF-8
    noise = vm.start("i=0; while [ $i -lt 400 ]; do echo \"<2>vmexit-noise-$i\" > /dev/kmsg; "
                     "i=$((i+1)); done")
    result = vm.run("cat", input=data, timeout=60)
    noise.wait(timeout=60)
    assert result.status == 0
    assert result.stdout == data
    assert "vmexit-noise-399" in vm.console_log        # the kernel did print meanwhile
    assert b"vmexit-noise" not in result.stdout


def test_write_and_read_guest_file(vm):
    vm.write_file("/tmp/hello.bin", b"\x00\xffabc", mode=0o600)
    assert vm.read_file("/tmp/hello.bin") == b"\x00\xffabc"
    assert vm.run("stat -c %a /tmp/hello.bin", timeout=30).text.strip() == "600"


def test_command_timeout_kills_and_channel_survives(vm):
    start = time.monotonic()
    with pytest.raises(GuestTimeout) as info:
        vm.run("echo started; sleep 30", timeout=1.0)
    assert time.monotonic() - start < 5
    assert "started" in info.value.output
    assert vm.run("echo still here", timeout=30).text == "still here\n"
    # the killed command is really gone in the guest
    assert "sleep 30" not in vm.run("ps", timeout=30).text


@pytest.mark.smoke
def test_share_is_seen_from_both_sides(built, tmp_path):
    (tmp_path / "from-host.txt").write_text("host says hi\n")
    with LabVM(share=tmp_path, name="share") as vm:
        assert vm.run("cat /mnt/share/from-host.txt", timeout=30).text == "host says hi\n"
        vm.run("echo guest says hi > /mnt/share/from-guest.txt", timeout=30, check=True)
    assert (tmp_path / "from-guest.txt").read_text() == "guest says hi\n"


@pytest.mark.smoke
def test_panic_raises_guest_panic_within_5s(fresh_vm):
    start = time.monotonic()
    with pytest.raises(GuestPanic) as info:
        fresh_vm.run("echo c > /proc/sysrq-trigger", timeout=60)
    assert time.monotonic() - start < 5
    assert "Kernel panic" in str(info.value)
    assert "sysrq" in info.value.output.lower()
    fresh_vm.shutdown()
    fresh_vm.shutdown()     # twice is fine
    assert "Kernel panic" in fresh_vm.console_log   # the log outlives the VM


def test_two_vms_at_once(built):
    with LabVM(name="one") as a, LabVM(name="two") as b:
        a.write_file("/tmp/who", "a")
        b.write_file("/tmp/who", "b")
        assert (a.read_file("/tmp/who"), b.read_file("/tmp/who")) == (b"a", b"b")


@pytest.mark.smoke
def test_sigint_leaves_no_qemu(built, tmp_path):
    marker = f"vmexit-sigint{os.getpid()}-"
    script = textwrap.dedent(f"""
        import sys, time
        from lab_vm.vm.machine import LabVM
        with LabVM(name={marker[7:-1]!r}) as vm:
            vm.run("true", timeout=60)
            print("ready", flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=REPO, preexec_fn=sigint_as_at_a_terminal)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert qemu_processes(marker), "the child's QEMU should be running"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    assert qemu_processes(marker) == []


def test_bad_arguments_give_clear_errors(built, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="unknown accelerator"):
        LabVM(accel="hvf")
    with pytest.raises(ConfigError, match="not a directory"):
        LabVM(share=tmp_path / "nope")
    monkeypatch.setenv("VMEXIT_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingArtifact, match="lab-vm build"):
        LabVM()


def test_a_boot_that_times_out_shows_the_qemu_command_line_and_the_console(built):
    with pytest.raises(GuestTimeout) as info:
        LabVM(cold_boot=True, boot_timeout=1.0, name="too-short").launch()
    text = str(info.value)       # (on a loaded host QEMU may not even open its socket in 1 s)
    assert "--- command ---\nqemu-system-x86_64 -nodefaults" in text and " -kernel " in text
    # the excerpt: QEMU's log (its SIGTERM from shutdown) and whatever the guest printed
    assert "--- output (last lines) ---" in text and "terminating on signal 15" in text, text


def test_icount_is_a_parameter_not_a_string_in_qemu_args(tmp_path):
    """-icount changes the guest's TSC rate and the saved state's key: LabVM must know of it,
    so it is LabVM(icount=...) and never sniffed out of qemu_args. (No VM: the build records
    below name files that are never opened.)"""
    from lab_vm.build.initramfs import Initramfs
    from lab_vm.build.kernel import Kernel
    from lab_vm.vm import state

    with pytest.raises(ConfigError, match="icount="):
        LabVM(qemu_args=["-icount", "shift=0"])
    parts = {"kernel": Kernel(tmp_path / "linux", "k"),
             "initramfs": Initramfs(tmp_path / "initramfs.cpio", "i")}
    plain, counted = LabVM(**parts), LabVM(**parts, icount="shift=0,sleep=off")
    assert "tsc_early_khz=1000000" in counted.kernel_cmdline()
    assert "tsc_early_khz" not in plain.kernel_cmdline()     # no accelerator chosen yet
    assert state.key(plain) != state.key(counted)


def test_cli_run_prints_output_and_returns_status(built):
    proc = subprocess.run([sys.executable, "-m", "lab_vm.tools.cli", "run", "--",
                           "echo from guest; exit 7"], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert proc.stdout == "from guest\n"
    assert proc.returncode == 7


def test_cli_run_bad_share_is_an_error_not_a_traceback(built, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lab_vm.tools.cli", "run", "--share",
                           str(tmp_path / "missing"), "--", "true"], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2
    assert "ConfigError" in proc.stderr and "Traceback" not in proc.stderr


def test_a_process_killed_outright_leaves_no_qemu(built, tmp_path):
    """SIGKILL runs no clean-up of ours: the kernel ends QEMU (PR_SET_PDEATHSIG)."""
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent("""\
        import os
        from lab_vm import LabVM
        vm = LabVM(name="killed")
        vm.launch()
        print(vm.qemu_pid, flush=True)
        os.kill(os.getpid(), 9)
        """))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
        time.sleep(0.1)
    assert not os.path.exists(f"/proc/{pid}"), "QEMU outlived the process that started it"
