"""QEMU trace events from the lab VM: what the device models saw, parsed into records.

QEMU (Debian's build uses the "log" trace backend) writes one line per event to
its log file (``-D``). Events are switched on and off at run time over QMP, so
a chapter can count exactly the accesses one guest command causes.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from ..errors import ConfigError

# "[PID@SEC.USEC:]event key value key value ... name 'text'"
LINE_RE = re.compile(r"^(?:(?P<pid>\d+)@(?P<ts>\d+\.\d+):)?(?P<event>[a-z0-9_]+) (?P<rest>.*)$")
FIELD_RE = re.compile(r"(\w+)[ =]('(?:[^']*)'|\S+)")


def parse_line(line: str) -> dict | None:
    """One trace line as a dict: ``event``, optional ``time``, and its key/value fields.

    Numbers (decimal or 0x hex) become ints; quoted strings lose their quotes.
    """
    m = LINE_RE.match(line.strip())
    if not m:
        return None
    record: dict = {"event": m.group("event")}
    if m.group("ts"):
        record["time"] = float(m.group("ts"))
    for key, value in FIELD_RE.findall(m.group("rest")):
        record[key] = _value(value)
    return record


def _value(text: str):
    if text.startswith("'"):
        return text.strip("'")
    text = text.rstrip(",")
    try:
        return int(text, 0)
    except ValueError:
        return text


def parse(text: str, events: set[str] | None = None) -> list[dict]:
    records = []
    for line in text.splitlines():
        rec = parse_line(line)
        if rec is not None and (events is None or rec["event"] in events):
            records.append(rec)
    return records


@dataclass
class Trace:
    """The events recorded while a ``with vm.tracing(...)`` block ran."""

    patterns: tuple[str, ...]
    records: list[dict] = field(default_factory=list)

    def count(self, *keys: str) -> Counter:
        """How many records per value of ``keys`` (e.g. ``count("event", "name")``)."""
        return Counter(tuple(r.get(k) for k in keys) if len(keys) > 1 else r.get(keys[0])
                       for r in self.records)

    def by_region(self, thread: str = "any") -> Counter:
        """Device accesses per region and direction, e.g. ``{("rtc", "read"): 11, ...}``.

        Counts the ``memory_region_ops_read``/``_write`` records (others are left out).
        Each carries ``cpu``: the index of the vCPU whose thread made the access (a guest
        instruction touched the device), or -1 when QEMU made it from another thread (say
        a device model raising an MSI from the main loop). ``thread`` picks: ``"any"``,
        ``"vcpu"`` (cpu >= 0) or ``"other"`` (cpu -1).
        """
        if thread not in ("any", "vcpu", "other"):
            raise ConfigError(f"thread must be 'any', 'vcpu' or 'other', not {thread!r}")
        counts: Counter = Counter()
        for record in self.records:
            event = record.get("event", "")
            if not event.startswith("memory_region_ops_"):
                continue
            on_vcpu = record.get("cpu", 0) >= 0
            if thread == "any" or on_vcpu == (thread == "vcpu"):
                counts[(record.get("name"), event.rsplit("_", 1)[1])] += 1
        return counts
