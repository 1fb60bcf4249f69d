"""Benchmarks: scripts that print figures, never timed tests.

``lab-vm bench --json`` prints boot time (and where it goes: the slowest initcalls, and the
guest's program counter sampled through the gdbstub), command round trip and the cached
kernel build time (``bench gdb``: breakpoint sampling beside the gdbstub's own ceiling and a
kprobe event counted by ftrace; ``bench replay``: record/replay); where a peer exists
(virtme-ng booting Debian's kernel) it is measured in the same run and printed as a ratio.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
import statistics
import subprocess
import tempfile
import time

from ..build import initramfs, kernel
from ..debug.guest import DETACH, detach_gdbstub, rsp_packet
from ..errors import DebuggerError, GuestTimeout, VMError
from ..vm.machine import LabVM

LOG = logging.getLogger(__name__)


def _median_boot(boots: int) -> tuple[float, str]:
    """Cold boots: QEMU start to the agent's first answer."""
    times = []
    accel = "?"
    for _ in range(boots):
        start = time.monotonic()
        with LabVM(cold_boot=True) as vm:
            vm.ping()
            times.append(time.monotonic() - start)
            accel = vm.accel
    return statistics.median(times), accel


def boot_profile(top: int = 8) -> dict:
    """Where a cold boot's time goes, from the kernel's own clock: the slowest initcalls
    (``initcall_debug``) and the guest time before ``smpboot`` (timer and delay calibration).

    One extra cold boot with the initcalls printed (printing slows it; the figures are each
    initcall's own time, as the kernel measured it).
    """
    import re

    initcall = re.compile(r"initcall (\S+?)\+\S+ returned -?\d+ after (\d+) usecs")
    stamp = re.compile(r"^\[\s*(\d+\.\d+)\]")
    with LabVM(cold_boot=True, append="initcall_debug ignore_loglevel", name="bench-profile") \
            as vm:
        vm.ping()
        console = vm.console_log
    calls = sorted(((int(us), fn) for fn, us in initcall.findall(console)), reverse=True)
    smpboot = userspace = None
    for line in console.splitlines():
        m = stamp.match(line)
        if m and smpboot is None and "smpboot: CPU0" in line:
            smpboot = float(m.group(1))
        if m and "Run /init" in line:
            userspace = float(m.group(1))
    return {"guest_s_before_smpboot": smpboot, "guest_s_to_init": userspace,
            "initcalls_ms_total": round(sum(us for us, _ in calls) / 1000, 1),
            "slowest_initcalls_ms": {fn: round(us / 1000, 1) for us, fn in calls[:top]}}


def sampled_boot(period: float = 0.004, top: int = 10, timeout: float = 60.0) -> dict:
    """Where a cold boot's guest CPU time goes, by sampling its program counter from outside.

    The initcall figures miss what runs outside initcalls: timer calibration before them,
    work queued by one and done on another's time, freeing init memory after them. Here
    the guest is stopped through the gdbstub every ``period`` seconds, its RIP read and
    named from System.map, and resumed, from reset until the agent greets the host. Each
    function's share of the samples times the boot's wall time is its estimated cost. A
    sample (stop, register read, resume) took about 1 ms on a loaded 2-core host under TCG,
    which slows the boot; the shares stay fair. Raises GuestTimeout after ``timeout`` seconds.
    """
    import bisect
    import collections

    counts: collections.Counter = collections.Counter()
    with LabVM(cold_boot=True, gdb=True, gdb_wait=True, name="bench-sampled",
               boot_timeout=timeout) as vm:
        names, starts = _text_symbols(vm.kernel.tree / "System.map")
        rsp = _connect_when_listening(vm.gdb_port, timeout=min(30.0, timeout))
        try:
            start = time.monotonic()
            samples = 0
            while True:
                rsp.send(b"c")
                time.sleep(period)
                rsp.interrupt()
                registers = rsp.request(b"g")        # RIP: the 17th 64-bit register
                rip = int.from_bytes(bytes.fromhex(registers[256:272].decode()), "little")
                i = bisect.bisect_right(starts, rip) - 1
                counts[names[i] if i >= 0 and rip >= starts[0] else
                       "(firmware, real mode)" if rip < 0x100000 else "(not the kernel)"] += 1
                samples += 1
                if vm.channel.greeted:
                    break
                if time.monotonic() - start > timeout:
                    raise GuestTimeout(f"the sampled boot got no greeting from the agent in "
                                       f"{timeout:g} s",
                                       output=vm.console_log)
            wall = time.monotonic() - start
        finally:
            rsp.close()                               # detach: the guest runs on
    per_sample_ms = wall * 1000 / samples
    return {"samples": samples, "boot_s": round(wall, 3),
            "functions_ms": {name: round(n * per_sample_ms) for name, n in
                             counts.most_common(top)}}


def _text_symbols(system_map) -> tuple[list[str], list[int]]:
    """(names, start addresses) of the kernel's functions, sorted by address."""
    symbols = sorted((int(address, 16), name) for address, kind, name in
                     (line.split()[:3] for line in system_map.read_text().splitlines())
                     if kind in "tTwW")
    return [name for _, name in symbols], [address for address, _ in symbols]


def _connect_when_listening(port: int, timeout: float) -> "_RemoteProtocol":
    """A raw client of a gdbstub QEMU may not have opened yet (it was just started)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _RemoteProtocol(port, timeout=timeout)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# The steps of a restore, as LabVM.restore_steps names their ends (see _median_restore).
RESTORE_STEPS = (("qemu_start", "started"),   # QEMU runs, the agent's socket is connected
                 ("load", "loaded"),          # QMP up, device state loaded, guest running
                 ("resume", "resumed"),       # the agent took the host's clock and seed and
                                              # mounted the share (9p), in one round trip
                 ("ready", "ready"))          # devices without saved state are plugged in


def _median_restore(restores: int) -> tuple[float, dict]:
    """Restores from the saved state, share mounted: QEMU start to the first answered command.

    Also the median of each step (ms): where the time goes.
    """
    with tempfile.TemporaryDirectory() as share:
        with LabVM(share=share):          # makes sure the state for this configuration exists
            pass
        times = []
        steps: dict[str, list[float]] = {name: [] for name, _ in RESTORE_STEPS}
        steps["first_command"] = []
        for _ in range(restores):
            start = time.monotonic()
            with LabVM(share=share) as vm:
                vm.run("true", timeout=30)
                end = time.monotonic()
                times.append(end - start)
                if not vm.restored:
                    raise VMError(f"expected a restore: {vm.restore_failure}")
                last = start
                for name, mark in RESTORE_STEPS:
                    steps[name].append(vm.restore_steps[mark] - last)
                    last = vm.restore_steps[mark]
                steps["first_command"].append(end - last)
    return statistics.median(times), {name: round(statistics.median(values) * 1000, 1)
                                      for name, values in steps.items()}


def _median_roundtrip(count: int) -> tuple[float, float]:
    with LabVM() as vm:
        vm.run("true", timeout=30)           # warm up: first exec pages busybox in
        runs = [vm.run("true", timeout=30).duration for _ in range(count)]
        pings = [vm.ping(timeout=30) for _ in range(count)]
    return statistics.median(runs), statistics.median(pings)


def _cached_build_s() -> float:
    start = time.monotonic()
    kernel.build_kernel()
    initramfs.build_initramfs()
    return time.monotonic() - start


def virtme_ng(runs: int = 1) -> tuple[float | None, str]:
    """virtme-ng booting Debian's installed kernel under TCG: (seconds per command, note)."""
    vng = shutil.which("vng")
    if vng is None:
        return None, "virtme-ng is not installed (make bench installs it)"
    images = sorted(glob.glob("/boot/vmlinuz-*"))
    if not images:
        return None, "no Debian kernel in /boot (apt-get install linux-image-amd64)"
    release = images[-1].removeprefix("/boot/vmlinuz-")
    times = []
    for _ in range(runs):
        start = time.monotonic()
        proc = subprocess.run([vng, "-r", images[-1], "--disable-kvm", "--", "true"],
                              capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            return None, f"vng failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-300:]}"
        times.append(time.monotonic() - start)
    return statistics.median(times), f"vng -r {release} --disable-kvm -- true"


# Where the benchmark samples: ksys_read's entry (ftrace's NOP: sample() moves the PC past it,
# one stop of the VM per hit) and the instruction after it (push %rbp: gdb takes the
# breakpoint out, single-steps, puts it back, two stops per hit).
SAMPLED = "ksys_read"
SAMPLED_STEPPED = "*ksys_read+5"
# ftrace's entry NOP as the gdbstub reads it out (gdb_side.FENTRY_NOP: that module runs
# inside gdb and is not importable here; tests/test_bench.py checks they agree)
FENTRY_NOP_HEX = b"0f1f440000"
NOP_LENGTH = len(FENTRY_NOP_HEX) // 2


def gdb_figures(samples: int = 2000, naive_hits: int = 40, rounds: int = 8,
                timeout: float = 120.0) -> dict:
    """Bulk sampling inside gdb beside the gdbstub's ceiling, a plain batch gdb and a naive
    pwntools loop, on the same VM and function (``ksys_read`` under a ``dd bs=1`` load).

    The ceiling is a raw remote-protocol client doing per hit what gdb must: at the entry
    NOP it moves the PC past it (one stop and resume), elsewhere it takes the breakpoint
    out, single-steps and puts it back (two). ``sample()`` is measured at both places,
    each beside the client doing the same thing.

    The measurements take turns, ``rounds`` times, ``samples / rounds`` hits each: on a host
    shared with other work the speed changes within seconds, and both sides of a ratio must
    see the same host. (QEMU's gdbstub serves one client: gdb disconnects while the raw
    client runs, then reconnects.) Each step raises within ``timeout`` seconds instead of
    waiting on: the benchmark never hangs.
    """
    figures: dict = {}
    per_round = max(1, samples // rounds)
    rates: dict[str, list[float]] = {k: [] for k in ("raw_step", "raw_skip", "plain",
                                                      "sample", "sample_step")}
    with LabVM(name="bench-gdb", boot_timeout=timeout) as vm:
        # One read syscall per byte keeps ksys_read hot for every measurement.
        load = vm.start("dd if=/dev/zero of=/dev/null bs=1 count=1000000000")
        port = vm.enable_gdbstub()
        with vm.debugger(timeout=timeout) as dbg:
            figures["attach_s"] = round(dbg.attach_time, 3)

            def measure_without_us():          # the raw clients, then a plain gdb
                dbg.execute("disconnect")
                vm.resume_if_paused()           # disconnecting leaves the guest stopped
                for key, skip in (("raw_step", False), ("raw_skip", True)):
                    rates[key].append(_step(f"raw gdbstub client ({key})", lambda skip=skip:
                                            _raw_gdbstub_rate(vm, per_round, timeout,
                                                              skip_nop=skip)))
                rates["plain"].append(_step("plain gdb",
                                            lambda: _plain_gdb_rate(vm, per_round, timeout)))
                dbg.execute(f"target remote 127.0.0.1:{port}")

            def measure_sample():
                for key, where in (("sample", SAMPLED), ("sample_step", SAMPLED_STEPPED)):
                    start = time.monotonic()
                    records = _step(f"sample() at {where}", lambda where=where: dbg.sample(
                        where, ["count"], count=per_round, timeout=timeout))
                    rates[key].append(len(records) / (time.monotonic() - start))
                    skipped = dbg.nop_skipped
                    if (skipped > 0) != (where == SAMPLED):    # the figures would lie
                        raise DebuggerError(f"sample() at {where} skipped {skipped} NOPs")

            for i in range(rounds):
                # Which goes first alternates: a load that rises (or falls) during the run
                # would otherwise always favour the same side.
                for measure in ((measure_without_us, measure_sample) if i % 2 == 0
                                else (measure_sample, measure_without_us)):
                    measure()
            bp = dbg.break_at(SAMPLED)
            start = time.monotonic()
            for _ in range(naive_hits):
                dbg.cont(timeout=timeout)
                dbg.evaluate("count")
            naive = naive_hits / (time.monotonic() - start)
            dbg.delete(bp)
        load.kill()
        # ftrace beside it: the same function, counted inside the guest by a kprobe event
        kprobe = _step("kprobe event", lambda: _kprobe_rate(vm, timeout=timeout))
    med = statistics.median

    def ratios(a: str, b: str) -> list[float]:
        return [x / y for x, y in zip(rates[a], rates[b])]

    def ratio(a: str, b: str) -> float:
        # the median of each round's ratio: both sides of a round saw the same host
        return round(med(ratios(a, b)), 2)

    bulk = med(rates["sample"])
    figures["accel"] = vm.accel
    figures["raw_gdbstub_hits_per_s"] = round(med(rates["raw_step"]), 1)
    figures["raw_gdbstub_nop_skip_hits_per_s"] = round(med(rates["raw_skip"]), 1)
    figures["sample_hits_per_s"] = round(bulk, 1)
    figures["sample_stepping_hits_per_s"] = round(med(rates["sample_step"]), 1)
    # the ceiling: what gdb does at best per hit when it single-steps
    figures["sample_vs_ceiling"] = ratio("sample", "raw_step")
    figures["sample_vs_ceiling_rounds"] = [round(x, 2) for x in ratios("sample", "raw_step")]
    # each path of sample() beside the raw client doing the same per hit
    figures["sample_vs_nop_skip_ceiling"] = ratio("sample", "raw_skip")
    figures["sample_stepping_vs_ceiling"] = ratio("sample_step", "raw_step")
    figures["plain_gdb_hits_per_s"] = round(med(rates["plain"]), 1)
    # what the pwntools path costs over gdb alone (the same sampler, in a batch gdb)
    figures["sample_vs_plain_gdb"] = ratio("sample", "plain")
    figures["kprobe_events_per_s"] = round(kprobe, 0)
    figures["kprobe_vs_sample_ratio"] = round(kprobe / bulk, 0)
    figures["naive_hits_per_s"] = round(naive, 2)
    figures["sample_vs_naive_ratio"] = round(bulk / naive, 1)
    figures["samples"] = per_round * rounds
    figures["rounds"] = rounds
    figures["naive_hits"] = naive_hits
    return figures


def _step(what: str, fn):
    """Run one measurement, logging how long it took (a slow step shows in the log)."""
    start = time.monotonic()
    try:
        return fn()
    finally:
        LOG.info("bench gdb: %s took %.2f s", what, time.monotonic() - start)


def _plain_gdb_rate(vm, samples: int, timeout: float = 120.0) -> float:
    """The same bulk sampling in a plain batch gdb (no pwntools bridge)."""
    from ..debug.guest import gdb_init_args

    script = (f"import time; n = sampler_start({SAMPLED!r}, ['count'], {samples}, True); "
              "t = time.monotonic(); gdb.execute('continue'); "
              "print('RATE', len(Sampler.active[n].records) / (time.monotonic() - t))")
    cmd = ["gdb", "-batch", *gdb_init_args(vm.kernel), "-ex",
           f"target remote 127.0.0.1:{vm.enable_gdbstub()}", "-ex", f"python {script}",
           "-ex", "detach", str(vm.kernel.vmlinux)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        # QEMU keeps a dead gdb's breakpoints, and the guest would stop at each hit: a
        # detach from a connection of our own takes them all out.
        detach_gdbstub(vm.enable_gdbstub(), timeout=10)
        raise GuestTimeout(f"plain gdb: {samples} hits of ksys_read not done in {timeout:g} s",
                           command=cmd, output=vm.console_log) from None
    finally:
        vm.resume_if_paused()       # detaching leaves QEMU 7.2's guest stopped
    if "RATE" not in out:
        raise DebuggerError(f"plain gdb printed no rate (status {proc.returncode}): "
                            f"{(err or out)[-500:]}", command=cmd)
    return float(out.split("RATE", 1)[1].split()[0])


class _RemoteProtocol:
    """Just enough of gdb's remote serial protocol to set a breakpoint and run to it.

    The benchmark's ceiling: what QEMU's gdbstub allows with no debugger in between.
    Every answer is waited for at most ``timeout`` seconds, then GuestTimeout.
    """

    def __init__(self, port: int, timeout: float = 30.0):
        import socket

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        # Packets are a few bytes: without NODELAY, Nagle holds each one back until the
        # previous one is acknowledged — up to 40 ms (delayed ACK) per packet, 5 hits/s.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.acks = True
        self._ack = b""                      # the "+" owed for the last packet read
        # QEMU stops a running guest when a debugger connects and says so at once (T02):
        # read that before asking anything, or every answer after it is off by one.
        self.sock.settimeout(1.0)
        try:
            self._read_packet()
        except TimeoutError:
            pass                             # the guest was stopped already: nothing sent
        self.sock.settimeout(timeout)
        try:
            self.request(b"qSupported:swbreak+")
            if self.request(b"QStartNoAckMode") == b"OK":   # QEMU 7.2 does not: acks stay on
                self.acks = False
                self._ack = b""
        except BaseException:
            self.sock.close()
            raise

    def _read_packet(self) -> bytes:
        while True:
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start + 1) if start >= 0 else -1
            if start >= 0 and end >= 0 and len(self.buf) >= end + 3:
                payload = self.buf[start + 1:end]
                self.buf = self.buf[end + 3:]
                if self.acks:
                    self._ack = b"+"         # sent with the next request: one write, not two
                return payload
            chunk = self.sock.recv(65536)
            if not chunk:
                raise DebuggerError("the gdbstub closed the connection")
            self.buf += chunk

    def send(self, payload: bytes) -> None:
        """Send without waiting: a continue's answer is the stop reply, whenever it stops."""
        self.sock.sendall(self._ack + rsp_packet(payload))
        self._ack = b""

    def interrupt(self) -> bytes:
        """Stop the running guest (Ctrl-C on the wire) and read its stop reply."""
        self.sock.sendall(b"\x03")
        return self._read_packet()

    def request(self, payload: bytes) -> bytes:
        self.send(payload)
        try:
            return self._read_packet()
        except TimeoutError:
            raise GuestTimeout(f"the gdbstub did not answer {payload.decode()!r} within "
                               f"{self.sock.gettimeout():g} s (a debugger still attached? "
                               "QEMU's gdbstub serves one at a time)") from None

    def close(self) -> None:
        try:
            self.request(DETACH)            # detach: the guest runs on
        finally:
            self.sock.close()


def _raw_gdbstub_rate(vm, hits: int, timeout: float = 120.0, *, skip_nop: bool = False) -> float:
    """Hits/s of a breakpoint on ksys_read driven by a raw remote-protocol client (no gdb):
    Z0, continue; at each stop z0, single step, Z0 — what gdb does at best per hit. With
    ``skip_nop``, at each stop the PC is written past the entry NOP instead (one packet, no
    step), as ``sample()`` does there.

    Raises GuestTimeout if the ``hits`` take longer than ``timeout`` seconds.
    """
    symbols = (vm.kernel.tree / "System.map").read_text()
    address = next(int(line.split()[0], 16) for line in symbols.splitlines()
                   if line.endswith(" " + SAMPLED))
    insert, remove = (f"Z0,{address:x},1".encode(), f"z0,{address:x},1".encode())
    # x86-64's rip is register 16 in gdb's numbering; P takes its value in target byte order
    past_nop = f"P10={(address + NOP_LENGTH).to_bytes(8, 'little').hex()}".encode()
    rsp = _RemoteProtocol(vm.enable_gdbstub(), timeout=min(30.0, timeout))
    try:
        if rsp.request(insert) != b"OK":
            raise DebuggerError("the gdbstub refused the breakpoint")
        if skip_nop:
            if rsp.request(f"m{address:x},{NOP_LENGTH}".encode()) != FENTRY_NOP_HEX:
                raise DebuggerError(f"{SAMPLED} does not start with ftrace's NOP here")
            # QEMU 7.2 answers P (write one register) with "" (not supported) until the client
            # has read the target description, as gdb does; the PC would stay on the
            # breakpoint and every "hit" would be the same one, the guest not running at all.
            rsp.request(b"qXfer:features:read:target.xml:0,ffb")
        start = time.monotonic()
        for done in range(hits):
            if time.monotonic() - start > timeout:
                raise GuestTimeout(f"raw gdbstub client: only {done} of {hits} hits of "
                                   f"{SAMPLED} in {timeout:g} s", output=vm.console_log)
            rsp.request(b"c")                # answers with the stop reply at the next hit
            if skip_nop:
                if rsp.request(past_nop) != b"OK":
                    raise DebuggerError("the gdbstub did not move the PC past the NOP")
            else:
                rsp.request(remove)
                rsp.request(b"s")
                rsp.request(insert)
        rate = hits / (time.monotonic() - start)
        rsp.request(remove)
    finally:
        rsp.close()
        vm.resume_if_paused()       # detaching leaves QEMU 7.2's guest stopped
    return rate


def _kprobe_rate(vm, seconds: float = 0.25, timeout: float = 120.0) -> float:
    """Events/s of a kprobe event on ksys_read under a ``dd bs=1`` load, counted by ftrace.

    A quarter of a second is tens of thousands of events: enough for a rate, and the
    buffer (read and parsed through the command channel) stays quick to fetch.
    """
    with vm.ftrace(kprobes={"bench_rd": "ksys_read count=%dx:u64"}, buffer_kb=32768,
                   timeout=timeout) as tr:
        vm.run(f"dd if=/dev/zero of=/dev/null bs=1 count=100000000 & sleep {seconds}; "
               "kill $!", timeout=timeout)
    if tr.overrun:
        raise VMError("the trace buffer overflowed: make it bigger")
    times = [r.time for r in tr.records if r.event == "bench_rd"]
    return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0


# The recorded workload: some reads and writes, a little CPU work, a few processes.
REPLAY_WORKLOAD = ("dd if=/dev/urandom bs=4k count=256 2>/dev/null | md5sum; "
                   "ls -R /sys/block | wc -l")


def replay_figures(runs: int = 3) -> dict:
    """Record/replay: the cost of recording, of replaying, of one "who last wrote it?" query.

    The normal run and the recorded run are the same thing — a cold boot, then
    the workload — measured side by side, medians of ``runs``.
    """
    from ..vm.replay import Replay

    normal, recorded, replayed, reverse = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(runs):
            start = time.monotonic()
            with LabVM(cold_boot=True, name="bench-normal") as vm:
                vm.run(REPLAY_WORKLOAD, timeout=120, check=True)
            normal.append(time.monotonic() - start)
            start = time.monotonic()
            with LabVM(record=f"{tmp}/rec{i}", name="bench-record") as vm:
                vm.run(REPLAY_WORKLOAD, timeout=120, check=True)
            recorded.append(time.monotonic() - start)
            start = time.monotonic()
            with Replay(f"{tmp}/rec{i}") as rp:
                rp.run_to_end(timeout=300)
            replayed.append(time.monotonic() - start)
            with Replay(f"{tmp}/rec{i}") as rp, rp.debugger() as dbg:
                # late in the run: md5sum's exit; then who last advanced the clock
                dbg.break_at("do_group_exit")
                dbg.cont(timeout=300)
                start = time.monotonic()
                dbg.last_write("jiffies_64", timeout=300)
                reverse.append(time.monotonic() - start)
    med = statistics.median
    return {"workload": REPLAY_WORKLOAD, "runs": runs,
            "normal_run_s": round(med(normal), 2), "recorded_run_s": round(med(recorded), 2),
            "record_overhead": round(med(recorded) / med(normal), 2),
            "replay_s": round(med(replayed), 2), "reverse_watch_s": round(med(reverse), 2)}


def run(what: str = "vm", *, boots: int = 5, roundtrips: int = 200) -> dict:
    """The figures of one benchmark, with the host's load average before and after it:
    on a shared host, a figure means little without the load it was measured under."""
    before = os.getloadavg()[0]
    if what == "gdb":
        figures = gdb_figures()
    elif what == "replay":
        figures = replay_figures()
    else:
        figures = _vm_figures(boots=boots, roundtrips=roundtrips)
    figures["host_load_1min"] = [round(before, 2), round(os.getloadavg()[0], 2)]
    return figures


def _vm_figures(*, boots: int, roundtrips: int) -> dict:
    figures: dict = {}
    figures["kernel_build_cached_s"] = round(_cached_build_s(), 3)
    boot, accel = _median_boot(boots)
    figures["accel"] = accel
    figures["boot_to_ready_s"] = round(boot, 3)
    figures["boots"] = boots
    figures["boot_profile"] = boot_profile()
    figures["boot_sampled"] = sampled_boot()
    restore, steps = _median_restore(max(10, boots))
    figures["restore_to_ready_s"] = round(restore, 3)
    figures["restore_steps_ms"] = steps
    figures["boot_vs_restore_ratio"] = round(boot / restore, 1)
    run_s, ping_s = _median_roundtrip(roundtrips)
    figures["run_roundtrip_ms"] = round(run_s * 1000, 2)
    figures["ping_roundtrip_ms"] = round(ping_s * 1000, 2)
    figures["roundtrips"] = roundtrips
    peer, note = virtme_ng()
    figures["virtme_ng_s"] = round(peer, 2) if peer else None
    figures["virtme_ng_note"] = note
    # vng's figure is a boot plus one command, so ours is too.
    figures["virtme_ng_ratio"] = round(peer / (boot + run_s), 1) if peer else None
    figures["virtme_ng_vs_restore_ratio"] = round(peer / restore, 1) if peer else None
    return figures
