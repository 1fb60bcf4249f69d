"""ftrace in the guest: events, kprobe events and the function (graph) tracer, parsed.

gdb stops the whole guest at every breakpoint hit (about a hundred hits/s through QEMU's
gdbstub, ``lab-vm bench gdb``; a kprobe event counts about a thousand times as fast); ftrace
records inside the guest at full speed. Chapters and checkers that need volume use this
instead of setting up tracefs by hand:

    with vm.ftrace(events=["block:block_bio_queue"],
                   kprobes={"edu_rd": "edu_mmio_read addr=%si:u64"}) as tr:
        vm.run("...")
    tr.records          # [Record(task="sh", pid=1, cpu=0, time=1.234, event="edu_rd", ...)]
    tr.count()          # Counter({"block_bio_queue": 12, "edu_rd": 3})

    with vm.ftrace(tracer="function_graph", functions=["submit_bio"]) as tr:
        vm.run("...")
    tr.graph            # [GraphLine(cpu=0, depth=0, function="submit_bio", kind="entry"), ...]

Switching to a function tracer patches the call site of every function it may trace, and
under TCG that takes many seconds for the ~19000 of the lab kernel, each way: ``only=[...]``
limits the tracer to the functions named (``set_ftrace_filter``), so the graph holds just
those, nested as they called each other, and switching is quick.

Set-up and read-out each cost one command round trip; the buffer is read over the command
channel when the ``with`` block ends. One ftrace session per guest at a time (the tracer and
its filters are global to the guest).
"""
from __future__ import annotations

import logging
import re
import shlex
from collections import Counter
from dataclasses import dataclass, field

from ..errors import CommandFailed, ConfigError

LOG = logging.getLogger(__name__)

TRACEFS = "/sys/kernel/debug/tracing"     # debugfs is mounted by the guest's /init
TRACERS = ("nop", "function", "function_graph")
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class Record:
    """One line of the ``trace`` file: an event, a kprobe hit or a function-tracer call."""

    task: str
    pid: int
    cpu: int
    time: float                 # seconds, on the trace clock (``mono`` unless asked otherwise)
    event: str                  # the event's name, without its subsystem (kprobe: its name)
    text: str                   # what follows "event: " on the line
    fields: dict = field(default_factory=dict)   # key=value pairs of ``text``, numbers as int


@dataclass
class GraphLine:
    """One line of the function_graph tracer: a call's entry, its exit, or a leaf call."""

    cpu: int
    depth: int                  # nesting level below the traced function (0 = itself)
    function: str               # for an exit ("}"), the function it closes
    kind: str                   # "entry" ("f() {"), "exit" ("}") or "leaf" ("f();")
    duration_us: float | None   # the call's duration (exit and leaf lines only)


# "  <task>-<pid>  [cpu] flags  123.456789: event: text"; task names may hold spaces and '-'.
RECORD_RE = re.compile(
    r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s\[\]]{4,6})\s+)?(?P<time>\d+\.\d+):\s+(?P<event>[^\s:]+):\s?(?P<text>.*)$")
FIELD_RE = re.compile(r"(\w+)=(\"[^\"]*\"|\S+)")
# " 0)   0.123 us    |      name();"  /  " 0)               |  name() {"  /  " 0) + 1.2 us | }"
# A module's function carries its module: "xform_submit_bio [xform]() {".
GRAPH_RE = re.compile(
    r"^\s*(?P<cpu>\d+)\)\s+(?:[+!#*@$]\s*)?(?:(?P<dur>\d+(?:\.\d+)?)\s+us\s+)?\|(?P<body>.*)$")
MODULE_RE = re.compile(r"\s*\[[\w-]+\]$")


def _function(call: str) -> str:
    """The function's name in ``name()``, ``name [module]()`` (the module dropped)."""
    return MODULE_RE.sub("", call.strip().removesuffix("()"))


def _number(text: str):
    text = text.strip('"').rstrip(",")
    try:
        return int(text, 0)
    except ValueError:
        return text


def parse_records(text: str) -> list[Record]:
    """The records of a ``trace`` file (``#`` header lines and unparsable lines skipped)."""
    records = []
    for line in text.splitlines():
        if not line or line.lstrip().startswith("#"):
            continue
        m = RECORD_RE.match(line)
        if not m:
            continue
        body = m.group("text")
        fields = {k: _number(v) for k, v in FIELD_RE.findall(body)}
        records.append(Record(m.group("task").strip(), int(m.group("pid")), int(m.group("cpu")),
                              float(m.group("time")), m.group("event"), body, fields))
    return records


def parse_graph(text: str) -> list[GraphLine]:
    """The lines of a function_graph trace; depth comes from the indentation after ``|``."""
    out = []
    stack: dict[int, list[str]] = {}
    for line in text.splitlines():
        m = GRAPH_RE.match(line)
        if not m:
            continue
        cpu, body = int(m.group("cpu")), m.group("body")
        dur = float(m.group("dur")) if m.group("dur") else None
        stripped = body.strip()
        if not stripped or stripped.startswith("/*"):       # comments (trace_printk, markers)
            continue
        depth = (len(body) - len(body.lstrip(" ")) - 2) // 2
        frames = stack.setdefault(cpu, [])
        if stripped.endswith("{"):
            name = _function(stripped[:-1])
            out.append(GraphLine(cpu, max(depth, 0), name, "entry", None))
            frames.append(name)
        elif stripped.startswith("}"):
            # "} /* name */" when funcgraph-tail is on; otherwise the open frame's name
            m_tail = re.search(r"/\*\s*(\S+?)\s*\*/", stripped)
            name = frames.pop() if frames else (m_tail.group(1) if m_tail else "?")
            out.append(GraphLine(cpu, max(depth, 0), name, "exit", dur))
        elif stripped.endswith(";"):
            name = _function(stripped[:-1])
            out.append(GraphLine(cpu, max(depth, 0), name, "leaf", dur))
    return out


@dataclass
class Capture:
    """The result of one ``with vm.ftrace(...)`` block (filled in when the block ends)."""

    text: str = ""                              # the raw ``trace`` file
    records: list[Record] = field(default_factory=list)
    graph: list[GraphLine] = field(default_factory=list)
    overrun: bool = False                       # the ring buffer lost events (make it bigger)

    def count(self, key: str = "event") -> Counter:
        """How many records per value of ``key`` (an attribute of Record, or a field name)."""
        return Counter(getattr(r, key) if hasattr(r, key) else r.fields.get(key)
                       for r in self.records)

    def calls(self, function: str) -> list[GraphLine]:
        """The entry and leaf lines of ``function`` in the graph (one per call)."""
        return [g for g in self.graph if g.function == function and g.kind != "exit"]


class Ftrace:
    """Set up tracefs in a guest, run the caller's block, read and parse the buffer."""

    def __init__(self, vm, *, events=(), kprobes: dict[str, str] | None = None,
                 tracer: str = "nop", functions=(), only=(), buffer_kb: int = 4096,
                 clock: str = "mono", timeout: float = 30.0):
        if tracer not in TRACERS:
            raise ConfigError(f"tracer must be one of {', '.join(TRACERS)}, not {tracer!r}")
        if functions and tracer == "nop":
            raise ConfigError("functions= filters the function tracers: "
                              "pass tracer='function' or 'function_graph'")
        if only and tracer != "function_graph":
            raise ConfigError("only= limits the function_graph tracer; for the function tracer, "
                              "functions= is already the list of functions traced")
        kprobes = dict(kprobes or {})
        for name in kprobes:
            if not NAME_RE.match(name):
                raise ConfigError(f"kprobe event name {name!r}: letters, digits and _ only")
        self.vm = vm
        self.events = list(events)
        self.kprobes = kprobes
        self.tracer = tracer
        self.functions = list(functions)
        self.only = list(only)
        self.buffer_kb = buffer_kb
        self.clock = clock
        self.timeout = timeout
        self.capture = Capture()

    def _event_dirs(self) -> list[str]:
        dirs = []
        for ev in self.events:
            subsystem, _, name = ev.partition(":")
            dirs.append(f"events/{subsystem}/{name}" if name else f"events/{subsystem}")
        dirs += [f"events/kprobes/{name}" for name in self.kprobes]
        return dirs

    def _sh(self, script: str, what: str) -> str:
        result = self.vm.run(script, timeout=self.timeout)
        if not result.ok:
            raise CommandFailed(f"ftrace {what} failed in the guest: {result.output.strip()}",
                                command=script, status=result.status, output=result.output,
                                stdout=result.stdout, stderr=result.stderr)
        return result.text

    def start(self) -> None:
        q = shlex.quote
        lines = ["set -e", f"cd {TRACEFS}", "echo 0 > tracing_on", "echo nop > current_tracer",
                 "echo > set_ftrace_filter", "echo > set_graph_function",
                 f"echo {int(self.buffer_kb)} > buffer_size_kb",
                 f"echo {q(self.clock)} > trace_clock"]
        for name, spec in self.kprobes.items():
            lines.append(f"echo {q(f'p:kprobes/{name} {spec}')} >> kprobe_events")
        lines += [f"echo 1 > {d}/enable" for d in self._event_dirs()]
        if self.tracer != "nop":
            target = ("set_graph_function" if self.tracer == "function_graph"
                      else "set_ftrace_filter")
            for fn in self.functions:
                lines.append(f"echo {q(fn)} >> {target}")
            for fn in self.only:                # before the tracer: only these get patched
                lines.append(f"echo {q(fn)} >> set_ftrace_filter")
            lines.append(f"echo {self.tracer} > current_tracer")
        lines += ["echo > trace", "echo 1 > tracing_on"]
        self._sh("\n".join(lines), "set-up")

    def stop(self) -> Capture:
        lines = [f"cd {TRACEFS}", "echo 0 > tracing_on", "cat trace"]
        text = self._sh("\n".join(lines), "read-out")
        self.capture.text = text
        self.capture.overrun = "# entries-in-buffer" in text and _lost(text)
        self.capture.records = parse_records(text) if self.tracer != "function_graph" else []
        self.capture.graph = parse_graph(text) if self.tracer == "function_graph" else []
        return self.capture

    def cleanup(self) -> None:
        """Leave tracefs as the guest booted it (best effort: the guest may be gone)."""
        lines = [f"cd {TRACEFS}", "echo 0 > tracing_on", "echo nop > current_tracer",
                 "echo > set_ftrace_filter", "echo > set_graph_function"]
        lines += [f"echo 0 > {d}/enable" for d in self._event_dirs()]
        lines += [f"echo '-:kprobes/{name}' >> kprobe_events" for name in self.kprobes]
        lines += ["echo > trace", "true"]
        try:
            self.vm.run("\n".join(lines), timeout=self.timeout)
        except Exception as exc:            # noqa: BLE001 - never mask the caller's error
            LOG.debug("ftrace clean-up skipped: %s", exc)


def _lost(text: str) -> bool:
    """True if the header says entries were written that the buffer no longer holds."""
    m = re.search(r"# entries-in-buffer/entries-written: (\d+)/(\d+)", text)
    return bool(m) and int(m.group(1)) < int(m.group(2))
