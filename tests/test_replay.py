"""Record/replay: a real recorded QEMU run, replayed under a real gdb, forwards and backwards."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from lab_vm.errors import ConfigError, DebuggerError
from lab_vm.vm.machine import LabVM
from lab_vm.vm.replay import Recording, RecordingError, Replay, ReplayDiverged

from conftest import REPO, qemu_processes, suite_processes

# Random bytes and the guest's own clock: output that differs on every ordinary run.
WORKLOAD = "head -c 16 /dev/urandom | od -An -tx1; cat /proc/uptime; ls /mnt/share"


@pytest.fixture(scope="module")
def recording(built, tmp_path_factory):
    share = tmp_path_factory.mktemp("share")
    (share / "hello.txt").write_text("hello from the host\n")
    folder = tmp_path_factory.mktemp("rec") / "run"
    with LabVM(record=folder, share=share, name="record") as vm:
        vm.modprobe("brd", "rd_nr=1", "rd_size=1024")      # a kernel module, from the initramfs
        result = vm.run(WORKLOAD, timeout=60, check=True)
        vm.run("dd if=/dev/urandom of=/dev/ram0 bs=4k count=16 2>/dev/null", timeout=60,
               check=True)
    return folder, result.text


def test_recorded_guest_has_the_share_and_the_kernel_modules(recording):
    folder, text = recording
    assert "hello.txt" in text
    rec = Recording(folder)
    assert rec.meta["complete"] and rec.meta["memory"] == 256
    assert any(c.startswith("insmod /lib/modules/vmexit/brd.ko") for c in rec.commands)
    assert (folder / "replay.bin").stat().st_size > 0
    assert (folder / "console.log").exists()


def test_replay_reproduces_the_run_exactly_twice(recording):
    folder, text = recording
    outputs = []
    for _ in range(2):
        with Replay(folder) as rp:
            outputs.append(rp.run_to_end(timeout=300))
    assert outputs[0] == outputs[1]
    # the same random bytes and the same uptime as when recorded
    assert text.encode() in outputs[0].values()


def test_two_replays_sample_identical_values(recording):
    folder, _ = recording
    samples = []
    for _ in range(2):
        with Replay(folder) as rp, rp.debugger() as dbg:
            records = dbg.sample("ksys_write", ["count", "jiffies_64", "$lx_current().pid"],
                                 count=20, timeout=120)
            # a skipped entry NOP would change the instruction count and the replay
            assert dbg.nop_skipped == 0
            samples.append([{k: v for k, v in r.items() if k != "t"} for r in records])
    assert len(samples[0]) == 20
    assert samples[0] == samples[1]


def test_last_write_runs_backwards_to_the_writer(recording):
    folder, _ = recording
    with Replay(folder) as rp, rp.debugger() as dbg:
        dbg.break_at("do_group_exit", temporary=True)
        dbg.cont(timeout=120)
        now = dbg.evaluate("jiffies_64")
        stop = dbg.last_write("jiffies_64", timeout=120)
        frames = [f["function"] for f in dbg.backtrace()]
    # the periodic tick advances jiffies: the writer is the timekeeping code
    assert stop["function"] in ("tick_do_update_jiffies64", "do_timer"), frames
    assert stop["new"] == stop["old"] + 1 and stop["new"] <= now


def test_cli_replay_batch_gdb_finds_the_last_writer_of_jiffies(recording):
    folder, _ = recording
    proc = subprocess.run(
        [sys.executable, "-m", "lab_vm.tools.cli", "replay", "--timeout", "240", str(folder), "--",
         "-batch", "-ex", "tbreak ksys_write", "-ex", "continue", "-ex", "watch jiffies_64",
         "-ex", "reverse-continue", "-ex", "bt"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    bt = proc.stdout[proc.stdout.index("#0"):]
    assert "tick_do_update_jiffies64" in bt.splitlines()[0] or "do_timer" in bt.splitlines()[0]
    assert "hrtimer_interrupt" in bt or "timer_interrupt" in bt


def test_replay_on_another_kernel_is_refused(recording, tmp_path):
    folder, _ = recording
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    meta = json.loads((copy / "recording.json").read_text())
    meta["identity"]["kernel"] = "0" * 16          # as if recorded before a kernel rebuild
    (copy / "recording.json").write_text(json.dumps(meta))
    with pytest.raises(RecordingError, match="kernel"):
        Replay(copy)
    assert qemu_processes(str(copy)) == []


def test_a_diverging_replay_is_reported(recording, tmp_path):
    folder, _ = recording
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    data = bytearray((copy / "channel.bin").read_bytes())
    data[-3] ^= 0xFF                     # the recording "said" something else
    (copy / "channel.bin").write_bytes(bytes(data))
    with Replay(copy) as rp, pytest.raises(ReplayDiverged, match="diverged"):
        rp.run_to_end(timeout=300)


def test_a_replay_takes_no_new_commands(recording):
    folder, _ = recording
    with Replay(folder) as rp, pytest.raises(RecordingError, match="no new commands"):
        rp.run("true")


def test_incomplete_recording_is_refused(tmp_path, built):
    folder = tmp_path / "rec"
    vm = LabVM(record=folder, name="record-killed")
    vm.launch()
    os.kill(vm.qemu_pid, signal.SIGKILL)     # QEMU dies before it could finish the log
    while vm.running:
        time.sleep(0.01)
    vm.shutdown()
    with pytest.raises(RecordingError, match="did not finish"):
        Recording(folder)


@pytest.mark.parametrize("kwargs", [{"cpus": 2}, {"devices": ["edu"]}, {"accel": "kvm"}])
def test_unsupported_configurations_are_refused_before_start(tmp_path, built, kwargs):
    with pytest.raises(ConfigError, match="record"):
        LabVM(record=tmp_path / "rec", **kwargs)
    assert not (tmp_path / "rec").exists()


def test_last_write_of_an_unwritten_value_says_so(recording):
    folder, _ = recording
    with Replay(folder) as rp, rp.debugger() as dbg:
        # the kernel's version string is written once, at build time
        with pytest.raises(DebuggerError, match="nothing wrote"):
            dbg.last_write("linux_banner[0]", timeout=200)
    assert suite_processes("gdb") == []


def test_cli_record_prints_the_output_and_leaves_a_replayable_folder(tmp_path, built):
    folder = tmp_path / "rec"
    proc = subprocess.run([sys.executable, "-m", "lab_vm.tools.cli", "record", "-o", str(folder), "--",
                           "echo recorded; exit 3"], capture_output=True, text=True,
                          timeout=300, cwd=REPO)
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert proc.stdout == "recorded\n"
    assert "lab-vm replay" in proc.stderr
    with Replay(folder) as rp:
        assert b"recorded\n" in rp.run_to_end(timeout=300).values()
