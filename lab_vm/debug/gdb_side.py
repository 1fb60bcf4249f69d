"""Code that runs *inside* gdb's embedded Python (sourced when a Debugger attaches).

Every host request that would otherwise cost one pwntools/rpyc round trip per
value (or per breakpoint hit) is done here and answered in one JSON string:
converting values, walking a backtrace, recording samples at breakpoint hits.
"""
import functools
import json
import time

import gdb  # noqa: F401  (only importable inside gdb)

MAX_DEPTH = 3
MAX_ELEMENTS = 64


@functools.cache
def _unsigned_long():
    # looked up once: a lookup searches every compilation unit of vmlinux, milliseconds a
    # time, and a sampler converts pointers at every hit
    return gdb.lookup_type("unsigned long")


def to_python(value, depth=0):
    """A gdb.Value as plain JSON-able Python: ints, floats, strings, lists, dicts."""
    t = value.type.strip_typedefs()
    code = t.code
    try:
        if code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_ENUM, gdb.TYPE_CODE_BOOL,
                    gdb.TYPE_CODE_CHAR):
            return int(value)
        if code == gdb.TYPE_CODE_PTR:
            return int(value.cast(_unsigned_long()))
        if code == gdb.TYPE_CODE_FLT:
            return float(value)
        if code == gdb.TYPE_CODE_ARRAY:
            target = t.target().strip_typedefs()
            if target.code == gdb.TYPE_CODE_INT and target.sizeof == 1:
                return value.string(errors="replace", length=t.sizeof).split("\0", 1)[0]
            low, high = t.range()
            if depth >= MAX_DEPTH:
                return str(value)
            return [to_python(value[i], depth + 1)
                    for i in range(low, min(high, low + MAX_ELEMENTS - 1) + 1)]
        if code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION):
            if depth >= MAX_DEPTH:
                return str(value)
            out = {}
            for field in t.fields():
                if field.name is None or field.artificial:
                    continue
                try:
                    out[field.name] = to_python(value[field], depth + 1)
                except gdb.error as exc:
                    out[field.name] = "<%s>" % exc
            return out
    except gdb.MemoryError as exc:
        return "<%s>" % exc
    return str(value)


def evaluate(expression):
    return json.dumps(to_python(gdb.parse_and_eval(expression)))


# Where a kernel stack begins: below these frames gdb would unwind into user
# space or the interrupted context and report data symbols as "functions".
STACK_BOTTOM = ("entry_SYSCALL_64", "ret_from_fork", "asm_", "entry_", "start_kernel",
                "secondary_startup_64")


def backtrace(limit=64):
    frames = []
    frame = gdb.newest_frame()
    while frame is not None and len(frames) < limit and frame.name() is not None:
        sal = frame.find_sal()
        args = {}
        try:
            block = frame.block()
            for sym in block:
                if sym.is_argument:
                    try:
                        args[sym.name] = str(sym.value(frame))
                    except gdb.error:
                        args[sym.name] = "<optimized out>"
        except RuntimeError:
            pass
        frames.append({
            "function": frame.name(),
            "pc": frame.pc(),
            "file": sal.symtab.filename if sal.symtab else None,
            "line": sal.line or None,
            "args": args,
        })
        if frame.name().startswith(STACK_BOTTOM):
            break
        frame = frame.older()
    return json.dumps(frames)


# The 5-byte NOP at the entry of every function ftrace can trace (``call __fentry__`` in
# vmlinux, patched to x86_nops[5] at boot; a call again while the function is traced).
FENTRY_NOP = b"\x0f\x1f\x44\x00\x00"


class Sampler(gdb.Breakpoint):
    """Records expressions at every hit without stopping; stops once ``count`` are in.

    With ``skip_nop``, a hit on a NOP is stepped over by moving the PC past it, as Linux's
    uprobes emulate a NOP instead of single-stepping it: gdb would take the breakpoint out,
    single-step (a stop and a resume of the whole VM in QEMU) and put it back. Measured
    beside each other (``lab-vm bench gdb``): 95.6 hits/s at ksys_read's entry against 75.4
    at the instruction after it, where gdb must step. Never in a
    recording or replay: there the skipped instruction would change the instruction count.
    """

    active = {}

    def __init__(self, spec, expressions, count, skip_nop=False):
        super().__init__(spec, internal=False)
        self.expressions = expressions
        self.count = count
        self.skip_nop = skip_nop
        self.skipped = 0
        self.records = []
        self.errors = 0
        Sampler.active[self.number] = self

    def stop(self):
        record = {"t": time.monotonic()}
        for expr in self.expressions:
            try:
                record[expr] = to_python(gdb.parse_and_eval(expr))
            except gdb.error as exc:
                record[expr] = None
                self.errors += 1
                if self.errors == 1:
                    record["error"] = str(exc)
        self.records.append(record)
        if len(self.records) >= self.count:
            return True
        if self.skip_nop:
            self._skip_fentry_nop()
        return False

    def _skip_fentry_nop(self):
        # Read at each hit, not once: the guest may start tracing the function (a call then).
        # gdb checks whether the thread still sits on a breakpoint from the PC it reads back
        # after stop(), so moving the PC here means no step-over at all.
        pc = gdb.selected_frame().pc()
        if bytes(gdb.selected_inferior().read_memory(pc, len(FENTRY_NOP))) == FENTRY_NOP:
            gdb.execute("set var $pc = %d" % (pc + len(FENTRY_NOP)))
            self.skipped += 1


# By default gdb takes every breakpoint out of the guest at each stop and puts it back before
# resuming: two more gdbstub round trips per hit (QEMU 7.2 checks breakpoints when it looks up
# a translation block: inserting one flushes nothing). Kept inserted while a sampler runs: once
# measured 118 -> 165 hits/s, the rate of a raw remote-protocol client (lab-vm bench gdb).
ALWAYS_INSERTED = "breakpoint always-inserted"
_saved_always_inserted = []


def sampler_start(spec, expressions, count, skip_nop=False):
    sampler = Sampler(spec, expressions, count, skip_nop)
    if sampler.pending:     # the Python API makes pending breakpoints regardless of settings
        Sampler.active.pop(sampler.number).delete()
        raise gdb.GdbError("no such function or line: %s" % spec)
    if not _saved_always_inserted:
        _saved_always_inserted.append(gdb.parameter(ALWAYS_INSERTED))
        gdb.execute("set %s on" % ALWAYS_INSERTED)
    return sampler.number


def sampler_take(number):
    s = Sampler.active.pop(number)
    taken = {"records": s.records, "nop_skipped": s.skipped}
    s.delete()
    if not Sampler.active and _saved_always_inserted:
        gdb.execute("set %s %s" % (ALWAYS_INSERTED,
                                    "on" if _saved_always_inserted.pop() else "off"))
    return json.dumps(taken)


def bridge_on_demand(serve_s):
    """Let pwntools' bridge take gdb's main thread only when the host has sent something.

    The bridge (gdb_api_bridge.py, sourced after this file) serves the host on gdb's main
    thread, in windows of SERVE_TIME seconds, one every IDLE_TIME seconds, whether or not a
    request is waiting; gdb handles no breakpoint hit during a window. Here the pause between
    windows instead waits on the bridge's own thread for the host's next request: no idle
    windows while a sampler runs, and a request is served as soon as it arrives.
    """
    import __main__

    def wait_for_request(conn):
        try:
            conn._channel.poll(0.5)      # at most 0.5 s: serve_all then sees a closed socket
        except Exception:   # closed: serve_all's next window raises and ends
            pass
        return 0

    __main__.GdbConnection.IDLE_TIME = property(wait_for_request)
    __main__.GdbConnection.SERVE_TIME = serve_s
