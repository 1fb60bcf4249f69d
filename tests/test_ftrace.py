"""lab_vm.vm.ftrace: the trace-file parsers on recorded text, then tracing in a real guest."""
from __future__ import annotations

import pytest

from lab_vm.errors import ConfigError
from lab_vm.vm.ftrace import Ftrace, parse_graph, parse_records

# The header and lines as Linux 6.1 writes them (trace file, default options).
TRACE = """\
# tracer: nop
#
# entries-in-buffer/entries-written: 3/3   #P:1
#
#                                _-----=> irqs-off/BH-disabled
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
              dd-74      [000] ..... 12.345678: rd: (ksys_read+0x0/0xd0) fd=0x0 count=0x1
     kworker/0:1-12      [001] d.h1.   12.400001: block_bio_queue: 254,0 W 0 + 8 [dd]
  sh -c thing-80      [000] .....    13.000000: rd: (ksys_read+0x0/0xd0) fd=0x3 count=0x200
"""

GRAPH = """\
# tracer: function_graph
#
# CPU  DURATION                  FUNCTION CALLS
# |     |   |                     |   |   |   |
 0)               |  submit_bio() {
 0)               |    submit_bio_noacct() {
 0)   0.456 us    |      should_fail_bio();
 0) + 12.345 us   |    }
 0) + 15.000 us   |  }
"""


def test_records_parse_task_pid_cpu_time_and_fields():
    recs = parse_records(TRACE)
    assert [r.event for r in recs] == ["rd", "block_bio_queue", "rd"]
    first = recs[0]
    assert (first.task, first.pid, first.cpu, first.time) == ("dd", 74, 0, 12.345678)
    assert first.fields == {"fd": 0, "count": 1}
    assert recs[1].task == "kworker/0:1" and recs[1].cpu == 1
    assert recs[2].task == "sh -c thing" and recs[2].fields["count"] == 0x200


def test_graph_parses_nesting_and_durations():
    lines = parse_graph(GRAPH)
    assert [(g.kind, g.function, g.depth) for g in lines] == [
        ("entry", "submit_bio", 0), ("entry", "submit_bio_noacct", 1),
        ("leaf", "should_fail_bio", 2), ("exit", "submit_bio_noacct", 1),
        ("exit", "submit_bio", 0)]
    assert lines[2].duration_us == 0.456 and lines[4].duration_us == 15.0


# A module's functions carry the module's name (set_ftrace_filter limited the graph to these).
MODULE_GRAPH = """\
 1)               |  __submit_bio() {
 1)               |    xform_submit_bio [xform]() {
 1)   9.000 us    |      bio_split_to_limits();
 1) + 30.125 us   |    }
 1)               |    null_queue_rq [null_blk]() {
 1)   2.5 us      |      __null_lookup_page.isra.0 [null_blk]();
 1) + 12.000 us   |    }
 1) + 50.000 us   |  }
"""


def test_graph_names_module_functions_without_their_module():
    lines = parse_graph(MODULE_GRAPH)
    assert [(g.kind, g.function, g.depth) for g in lines] == [
        ("entry", "__submit_bio", 0), ("entry", "xform_submit_bio", 1),
        ("leaf", "bio_split_to_limits", 2), ("exit", "xform_submit_bio", 1),
        ("entry", "null_queue_rq", 1), ("leaf", "__null_lookup_page.isra.0", 2),
        ("exit", "null_queue_rq", 1), ("exit", "__submit_bio", 0)]


def test_only_is_for_the_graph_tracer():
    with pytest.raises(ConfigError, match="only="):
        Ftrace(None, tracer="function", functions=["ksys_read"], only=["ksys_read"])


def test_function_graph_limited_to_only_in_a_guest(vm):
    with vm.ftrace(tracer="function_graph", functions=["ksys_read"],
                   only=["ksys_read", "vfs_read"]) as tr:
        vm.run("head -c 1 /dev/zero >/dev/null", timeout=30)
    assert {g.function for g in tr.graph} == {"ksys_read", "vfs_read"}, tr.text[-2000:]
    assert all(g.depth == 1 for g in tr.graph if g.function == "vfs_read")
    assert vm.run("cat /sys/kernel/debug/tracing/set_ftrace_filter").text.strip() in (
        "", "#### all functions enabled ####")


def test_kprobe_event_and_function_graph_in_a_guest(vm):
    with vm.ftrace(kprobes={"vmexit_rd": "ksys_read fd=%di:s32 count=%dx:u64"}) as tr:
        vm.run("dd if=/dev/zero of=/dev/null bs=1 count=50 2>/dev/null", timeout=30)
    reads = [r for r in tr.records if r.event == "vmexit_rd" and r.task == "dd"]
    assert len(reads) >= 50, tr.text[-2000:]
    assert {r.fields["count"] for r in reads} >= {1}
    # Unlimited (no only=), switching the tracer patches every function: ~20 s each way under
    # TCG on a busy machine, more than the default 30 s for set-up on a loaded one.
    with vm.ftrace(tracer="function_graph", functions=["ksys_read"], timeout=180) as tr:
        vm.run("head -c 1 /dev/zero >/dev/null", timeout=30)
    assert tr.calls("ksys_read"), tr.text[-2000:]
    assert any(g.depth > 0 for g in tr.graph)      # the callees of ksys_read are in the graph
    # tracefs is left clean: no kprobe, no tracer
    assert vm.run("cat /sys/kernel/debug/tracing/kprobe_events").text.strip() == ""
    assert vm.run("cat /sys/kernel/debug/tracing/current_tracer").text.strip() == "nop"
