"""The checker of lab 4 (a periodic hrtimer that measures its own lateness), gradelib style.

Each test loads the student's hrlate.ko in the lab VM, drives it through its
debugfs files, unloads it, and on failure says what to fix.

The numbers are checked against the kernel's own account of the timer, not
against fixed tolerances. While a test runs the timer, the checker records the
tracepoints ``timer:hrtimer_start`` (each expiry the timer is programmed for),
``timer:hrtimer_expire_entry`` and ``timer:hrtimer_expire_exit`` (just before
and just after each callback) in a trace instance whose clock is ``mono``,
the clock ``ktime_get()`` reads. So for every callback the checker knows the
expiry E it served and an interval [entry, exit] that contains the moment the
callback read the clock: its lateness lies in [entry - E, exit - E]. The
statistics must lie within the same intervals computed over all callbacks, and
the period must hold exactly: every expiry is E0 + k * period. The only
slack is the trace's timestamp resolution (1 us), and the windows that the
helper ``window`` measures around the writes that start and stop the timer.
However loaded the machine is (a descheduled vCPU only widens an interval),
a correct module passes; a wrong period, a drifting grid, a lateness measured
from the wrong point or in the wrong unit does not.

Run it with ``lab-vm check labs/04-hrtimer`` (or ``lab-vm check .`` in a handout).
"""
import gzip
import re
import shlex
from dataclasses import dataclass, field

from lab_vm.grading import expect, fail, test

DIR = "/sys/kernel/debug/hrlate"
FILES = ["period_us", "running", "count", "missed", "min_ns", "max_ns", "mean_ns", "histogram"]
STATS = ["count", "missed", "min_ns", "max_ns", "mean_ns"]
BUCKETS = 16
# Our own trace instance: its buffer, events and clock do not touch the global ones.
TRACE = "/sys/kernel/debug/tracing/instances/hrlate-check"
EVENTS = ["timer:hrtimer_start", "timer:hrtimer_expire_entry", "timer:hrtimer_expire_exit",
          "timer:hrtimer_cancel"]
RESOLUTION_NS = 1000          # the trace prints timestamps in microseconds


# -- reading the module's files ---------------------------------------------------------------
def number(t, name: str) -> int:
    text = t.read(f"{DIR}/{name}")
    if not re.fullmatch(r"\d+", text):
        fail(f"{DIR}/{name} reads {text!r}, not a number",
             "the files give one unsigned decimal number and a newline")
    return int(text)


def stats(t) -> dict[str, int]:
    return {name: number(t, name) for name in STATS}


def histogram(t) -> list[int]:
    """The bucket counts, after checking the file's format."""
    lines = t.read(f"{DIR}/histogram").splitlines()
    want = [0] + [1 << i for i in range(BUCKETS - 1)]
    expect(len(lines) == BUCKETS, f"the histogram has {len(lines)} lines, not {BUCKETS}",
           "print one line per bucket, bucket 0 first (TODO 8)")
    counts = []
    for line, low in zip(lines, want):
        m = re.fullmatch(r"(\d+) (\d+)", line.strip())
        expect(m and int(m[1]) == low, f"histogram line {line!r}: want '{low} <count>'",
               'each line is "<from_us> <count>": 0, 1, 2, 4, ... 16384 (TODO 8)')
        counts.append(int(m[2]))
    return counts


def write_ok(t, name: str, value: str, fix: str) -> None:
    result = t.write(f"{DIR}/{name}", value)
    expect(result.ok, f"echo {value} > {name} failed: {result.output.strip()}", fix)


def write_fails(t, name: str, value: str, error: str, fix: str) -> None:
    result = t.write(f"{DIR}/{name}", value)
    expect(not result.ok, f"echo {value} > {name} was accepted", fix)
    expect(error in result.output, f"echo {value} > {name} failed, but not with "
           f"{error!r}: {result.output.strip()}", fix)


def load(t) -> None:
    t.insmod()
    missing = [f for f in FILES if not t.sh(f"test -e {DIR}/{f}").ok]
    expect(not missing, f"after insmod, {DIR} lacks {', '.join(missing)}",
           "keep hrlate_files() in hrlate_init(): it creates the files")


# -- the kernel's account: trace events ------------------------------------------------------
@dataclass
class Callback:
    expires: int                  # the expiry it served (ns, CLOCK_MONOTONIC)
    entry: int                    # ns: the callback read the clock at or after this ...
    exit: int = -1                # ... and before this

    @property
    def low(self) -> int:
        return self.entry - self.expires

    @property
    def high(self) -> int:
        return self.exit - self.expires


@dataclass
class Timeline:
    starts: list[tuple[int, int]] = field(default_factory=list)   # (time, expires)
    callbacks: list[Callback] = field(default_factory=list)
    cancels: list[int] = field(default_factory=list)
    markers: list[tuple[int, str]] = field(default_factory=list)


def trace_start(t, buffer_kb: int = 4096) -> None:
    events = " ".join(EVENTS)
    t.sh(f"mkdir -p {TRACE} && cd {TRACE} && echo 0 > tracing_on && echo mono > trace_clock "
         f"&& echo {buffer_kb} > buffer_size_kb && echo > trace && echo '{events}' > set_event "
         "&& echo 1 > tracing_on", check=True)


def trace_stop(t) -> None:
    t.sh(f"echo 0 > {TRACE}/tracing_on", check=True)


def trace_mark(t, text: str) -> None:
    t.sh(f"echo {shlex.quote(text)} > {TRACE}/trace_marker", check=True)


def trace_text(t) -> str:
    """The trace instance's text (read once, compressed: it is large and parsed here)."""
    flood = ("if your timer fired far more often than every period_us, check the unit of the "
             "period (TODO 2); otherwise tell the instructor")
    result = t.sh(f"gzip -1 -c {TRACE}/trace", timeout=60)
    expect(result.ok and not result.truncated,
           "the checker could not read its trace (it is too large, or unreadable)", flood)
    text = gzip.decompress(result.stdout).decode(errors="replace")
    m = re.search(r"entries-in-buffer/entries-written: (\d+)/(\d+)", text)
    if m and m[1] != m[2]:
        fail(f"the checker's trace overflowed: {m[1]} of {m[2]} events kept", flood)
    return text


# "<task>-<pid> [cpu] flags 12.345678: event: fields": the time is in microseconds.
EVENT_RE = re.compile(r" (\d+)\.(\d{6}): (\w+): (.*)$", re.M)


def events(text: str):
    """(time in ns, event, fields) for each event of the trace."""
    for m in EVENT_RE.finditer(text):
        yield (int(m[1]) * 1_000_000 + int(m[2])) * 1000, m[3], m[4]


def timer_pointer(text: str) -> str:
    """The (hashed) address of the student's hrtimer, found by its callback's module."""
    pointers = {fields.split()[0] for _, event, fields in events(text)
                if event == "hrtimer_start" and "[hrlate]" in fields}
    if not pointers:
        fail("the kernel's trace shows no hrtimer with a callback in hrlate.ko",
             "TODO 1: hrtimer_init() and timer.function; TODO 3: hrtimer_start()")
    expect(len(pointers) == 1, f"the trace shows {len(pointers)} hrtimers of hrlate.ko",
           "use one hrtimer")
    return pointers.pop()


def timeline(text: str, pointer: str) -> Timeline:
    """The events of one hrtimer (and the markers), in order."""
    line = Timeline()
    expires = None
    for ns, event, fields in events(text):
        if event == "tracing_mark_write":
            line.markers.append((ns, fields.strip()))
        elif fields.split(" ", 1)[0] != pointer:
            continue
        elif event == "hrtimer_start":
            expires = int(re.search(r"expires=(\d+)", fields)[1])
            line.starts.append((ns, expires))
        elif event == "hrtimer_expire_entry" and expires is not None:
            line.callbacks.append(Callback(expires, ns))
        elif event == "hrtimer_expire_exit" and line.callbacks:
            line.callbacks[-1].exit = ns + RESOLUTION_NS     # happened before ns + 1 us
        elif event == "hrtimer_cancel":
            line.cancels.append(ns)
    line.callbacks = [c for c in line.callbacks if c.exit >= 0]
    return line


@dataclass
class Run:
    period: int                   # ns
    length: int                   # ns: how long window slept between start and stop
    window: list[int]             # t0 t1 t2 t3, see tests/window.c
    stats: dict[str, int]
    line: Timeline


def run_traced(t, period_us: int, ms: int) -> Run:
    """Set the period, run the timer ``ms`` milliseconds under the trace; what it did."""
    write_ok(t, "period_us", str(period_us), "period_us takes 50..1000000 while stopped (TODO 2)")
    trace_start(t)
    result = t.sh(f"{t.helper('window')} {DIR} {ms}", timeout=ms / 1000 + 20)
    trace_stop(t)
    expect(result.ok, f"starting or stopping the timer failed: {result.output.strip()}",
           "writing 1, then 0, to running must start and stop the timer (TODOs 3, 6)")
    window = [int(x) for x in result.text.split()]
    text = trace_text(t)
    run = Run(period_us * 1000, ms * 1000000, window, stats(t),
              timeline(text, timer_pointer(text)))
    expect(run.line.callbacks, "the trace shows no callback of your timer",
           "TODO 4: the callback returns HRTIMER_RESTART")
    return run


def check_grid(run: Run) -> None:
    """The timer fired on start + k * period, from start to stop; count and missed add up."""
    t0, t1, t2, t3 = run.window
    p = run.period
    expiries = [e for _, e in run.line.starts]
    first, last = expiries[0], expiries[-1]
    expect(t0 + p - RESOLUTION_NS <= first <= t1 + p + RESOLUTION_NS,
           f"the first expiry came {(first - t1) / 1e3:.0f}..{(first - t0) / 1e3:.0f} us after "
           f"the start, not one period ({p / 1e3:.0f} us)",
           "start the timer one period from now: hrtimer_start(&timer, period, "
           "HRTIMER_MODE_REL_HARD) (TODO 3)")
    off = [e for e in expiries if (e - first) % p]
    expect(not off, f"{len(off)} of {len(expiries)} expiries are not on the grid first expiry "
           f"+ k * {p / 1e3:.0f} us (e.g. {(off or [0])[0] - first} ns after the first)",
           "forward the timer from the expiry it was due at, not from now: "
           "hrtimer_forward_now(timer, period) (TODO 4)")
    back = [(a, b) for a, b in zip(expiries, expiries[1:]) if b <= a]
    expect(not back, "the timer was programmed for an expiry that is not after the last one",
           "hrtimer_forward_now() moves the expiry forward: call it once per callback")
    # window's sleep ended in a timer interrupt that also ran every expired timer, ours
    # included, and ours then moved past that moment: its last expiry lies beyond it.
    expect(last > t1 + run.length - RESOLUTION_NS,
           f"the timer stopped by itself {(t2 - last) / 1e6:.1f} ms before it was stopped",
           "return HRTIMER_RESTART from the callback while running (TODO 4)")
    expect(last <= t3 + p + RESOLUTION_NS,
           "the timer was programmed for an expiry more than one period after the stop",
           "stop the timer with hrtimer_cancel() when 0 is written to running (TODO 6)")
    late = [c for c in run.line.callbacks if c.entry > t3]
    expect(not late, f"{len(late)} callbacks ran after writing 0 to running had returned",
           "hrtimer_cancel() stops the timer and waits for a running callback (TODO 6)")
    n = len(run.line.callbacks)
    expect(run.stats["count"] == n, f"count reads {run.stats['count']}; the kernel ran your "
           f"callback {n} times", "count every callback, once (TODO 5)")
    periods = (last - first) // p
    expect(run.stats["count"] + run.stats["missed"] == periods,
           f"count + missed = {run.stats['count']} + {run.stats['missed']}, but the timer "
           f"moved {periods} periods along its grid",
           "missed is what hrtimer_forward_now() returns, minus one, summed (TODO 4)")


def bounds(run: Run) -> dict[str, tuple[int, int]]:
    """For each statistic, the interval the module's value must lie in."""
    cbs = run.line.callbacks
    low, high = [c.low for c in cbs], [c.high for c in cbs]
    return {"min_ns": (min(low), min(high)), "max_ns": (max(low), max(high)),
            "mean_ns": (sum(low) // len(cbs) - 1, sum(high) // len(cbs) + 1)}


# -- the tests --------------------------------------------------------------------------------
@test(10, "the module loads, creates its files and unloads")
def loads_and_unloads(t):
    load(t)
    t.rmmod()
    expect(not t.sh(f"test -e {DIR}").ok, f"after rmmod, {DIR} is still there",
           "debugfs_remove_recursive(dir) in hrlate_exit()")
    t.expect_quiet_kernel()


@test(10, "period_us: 1000 by default, 50..1000000 accepted, the rest refused")
def period(t):
    load(t)
    expect(number(t, "period_us") == 1000, "period_us does not read 1000 after insmod")
    for value in ("250", "50", "1000000", "1000"):
        write_ok(t, "period_us", value, "period_set (TODO 2): accept 50..1000000")
        got = number(t, "period_us")
        expect(got == int(value), f"after writing {value}, period_us reads {got}",
               "period_set (TODO 2) keeps the new period")
    for value in ("0", "49", "1000001", "ten", "-5"):
        write_fails(t, "period_us", value, "Invalid argument",
                    "period_set (TODO 2): -EINVAL outside 50..1000000")
    expect(number(t, "period_us") == 1000, "a refused write changed period_us")
    t.rmmod()


@test(15, "running starts and stops the timer; a start clears the statistics")
def start_and_stop(t):
    load(t)
    expect(number(t, "running") == 0, "running does not read 0 after insmod")
    write_ok(t, "running", "1", "running_set -> hrlate_start() (TODO 3)")
    expect(number(t, "running") == 1, "after writing 1, running does not read 1")
    t.sh("sleep 0.3")
    first = number(t, "count")
    t.sh("sleep 0.2")
    second = number(t, "count")
    expect(0 < first < second, f"while running, count went {first}, then {second}",
           "the callback must run every period and count itself (TODOs 1, 3, 4, 5)")
    write_ok(t, "running", "0", "running_set -> hrlate_stop() (TODO 6)")
    expect(number(t, "running") == 0, "after writing 0, running does not read 0")
    stopped = number(t, "count")
    t.sh("sleep 0.2")
    expect(number(t, "count") == stopped, "count still grows after writing 0 to running",
           "hrlate_stop() cancels the timer (TODO 6)")
    write_ok(t, "running", "1", "a stopped timer must start again (TODO 3)")
    again = number(t, "count")
    write_ok(t, "running", "0", "hrlate_stop() (TODO 6)")
    expect(again < stopped, f"count read {again} right after a restart (it was {stopped})",
           "a start clears the statistics (TODO 3)")
    t.rmmod()


@test(20, "the timer fires on a fixed 1 ms grid; count and missed add up")
def fixed_grid(t):
    load(t)
    check_grid(run_traced(t, 1000, 2000))
    t.rmmod()


@test(20, "min_ns, max_ns and mean_ns agree with the kernel's trace")
def statistics(t):
    load(t)
    run = run_traced(t, 1000, 1500)
    hint = {"min_ns": "start min at the first callback's lateness, not 0 (TODO 5)",
            "max_ns": "keep the largest lateness (TODO 5)",
            "mean_ns": "the sum of the latenesses over count (TODO 7)"}
    for name, (low, high) in bounds(run).items():
        got = run.stats[name]
        expect(low <= got <= high,
               f"{name} reads {got}; from the trace, it lies in [{low}, {high}] ns",
               "lateness = hrtimer_cb_get_time(t) - hrtimer_get_expires(t), in ns, taken "
               f"before hrtimer_forward_now() (TODO 4); {hint[name]}")
    t.rmmod()


@test(15, "the histogram counts every callback in its bucket")
def histogram_buckets(t):
    load(t)
    run = run_traced(t, 1000, 1500)
    counts = histogram(t)
    expect(sum(counts) == run.stats["count"],
           f"the histogram holds {sum(counts)} callbacks, count is {run.stats['count']}",
           "add every callback to one bucket (TODO 5)")
    cbs = run.line.callbacks
    below = 0
    for i in range(1, BUCKETS):
        below += counts[i - 1]
        edge = (1 << (i - 1)) * 1000          # ns: buckets 0..i-1 hold lateness below this
        surely = sum(c.high <= edge for c in cbs)
        maybe = sum(c.low < edge for c in cbs)
        expect(surely <= below <= maybe,
               f"{below} callbacks are in buckets below {edge // 1000} us; the trace says "
               f"{surely}..{maybe}",
               "bucket = fls64(lateness in whole us), at most 15 (TODO 5); print bucket i "
               "on line i (TODO 8)")
    t.rmmod()


@test(10, "rmmod while the timer runs cancels it: no callback after, and it loads again")
def clean_removal(t):
    load(t)
    trace_start(t)
    write_ok(t, "running", "1", "hrlate_start() (TODO 3)")
    t.sh("sleep 0.2")
    # While the module is loaded the trace names the module of the callback; not after.
    pointer = timer_pointer(trace_text(t))
    t.rmmod()
    trace_mark(t, "rmmod-returned")
    t.sh("sleep 0.2")
    trace_stop(t)
    line = timeline(trace_text(t), pointer)
    removed = next(us for us, text in line.markers if text == "rmmod-returned")
    after = [c for c in line.callbacks if c.entry > removed]
    expect(not after, f"{len(after)} callbacks ran after rmmod returned",
           "hrtimer_cancel() in hrlate_exit() (TODO 9)")
    expect(any(c <= removed for c in line.cancels),
           "the kernel did not see your timer cancelled before rmmod returned",
           "hrtimer_cancel() in hrlate_exit(), after debugfs_remove_recursive() (TODO 9)")
    expect(not t.sh(f"test -e {DIR}").ok, f"after rmmod, {DIR} is still there")
    load(t)
    write_ok(t, "running", "1", "after a reload the timer must start like the first time")
    t.sh("sleep 0.1")
    write_ok(t, "running", "0", "after a reload the timer must stop like the first time")
    expect(number(t, "count") > 0, "after a reload, the timer does not run")
    t.rmmod()
    t.expect_quiet_kernel()


@test(10, "the grid holds for a 200 us and a 20 ms period", hidden=True)
def other_periods(t):
    load(t)
    for period_us, ms in ((200, 600), (20000, 1000)):
        check_grid(run_traced(t, period_us, ms))
    t.rmmod()


@test(10, "zeroes before the first run; EBUSY while running; readable while running",
      hidden=True)
def control_rules(t):
    load(t)
    expect(all(v == 0 for v in stats(t).values()) and not any(histogram(t)),
           f"before the first start the statistics read {stats(t)}",
           "everything reads 0 until the timer has run (mean_ns too: no division by zero)")
    write_ok(t, "running", "1", "hrlate_start() (TODO 3)")
    write_fails(t, "running", "1", "Device or resource busy",
                "hrlate_start() returns -EBUSY while the timer runs (TODO 3)")
    write_fails(t, "period_us", "500", "Device or resource busy",
                "period_set() returns -EBUSY while the timer runs (TODO 2)")
    write_fails(t, "running", "2", "Invalid argument", "running takes 0 or 1")
    t.sh("sleep 0.2")
    # The timer runs on while the files are read one by one: the mean first, as the minimum
    # can then only have gone down and the maximum up since.
    live = {name: number(t, name) for name in ("mean_ns", "min_ns", "max_ns", "count")}
    expect(0 < live["count"] and 0 < live["min_ns"] <= live["mean_ns"] <= live["max_ns"],
           f"while running the statistics read {live}",
           "the statistics can be read at any time, consistent with each other (TODOs 5, 7)")
    write_ok(t, "running", "0", "hrlate_stop() (TODO 6)")
    write_ok(t, "running", "0", "writing 0 to a stopped timer is not an error (TODO 6)")
    expect(number(t, "period_us") == 1000, "a refused write changed period_us")
    t.rmmod()
