"""The interactive workbooks: every notebook in notebooks/ runs top to bottom, headless, and
then every control it offers is driven once.

Each is executed with nbclient in a fresh kernel (the venv's ``python3`` kernelspec), from
notebooks/ as its working directory, against the real lab VM. After the notebook's own cells,
the test adds cells of its own (never written back into notebooks/) that set each control and
press each button as a student would — the callbacks run in the kernel, against the VM — and
then checks what each one wrote into its Output widget. A cell that raises fails the test with
the cell and its traceback. Every cell that ran for more than a few seconds must have been
announced and shown progress (``lab_vm.tools.progress``) for nearly all of its time. The
notebooks are committed without outputs; the executed copy goes to the test's tmp_path. A VM a
notebook leaves running is caught by conftest's end-of-session check (the kernel inherits the
suite's TMPDIR).
"""
from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from queue import Empty

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT = 600          # seconds per cell: a cold boot or a gdb attach under TCG is slow
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
# Notebooks whose headless run must leave a figure: in a cell's output or in an Output widget.
MUST_PLOT = {"01-vcpu-loop.ipynb"}
LONG_CELL_S = 8.0           # a cell that runs longer than this must show progress ...
UNANNOUNCED_S = 4.0         # ... for all but this many seconds of its run
DROVE = "drove output widget"
SHELL_POLL_S = 0.5


@dataclass
class Drive:
    """One use of a notebook's controls: ``code`` sets them and presses buttons, then the text
    the callbacks wrote into the Output widget ``out`` must match every regex of ``expect``
    (an empty ``expect``: the widget must be empty). Images count as ``<image/png>``."""

    code: str
    out: str
    expect: tuple[str, ...]


KVM_OR_NOT = r"|/dev/kvm is not usable"
DRIVES = {
    "01-vcpu-loop.ipynb": [
        Drive('program_box.value = "count down 5..1 on port 0xe9"\nrun_button.click()', "log",
              (r"(?s)0x35 '5'.*0x31 '1'.*KVM_EXIT_HLT" + KVM_OR_NOT,)),
        Drive('bytes_box.value = "b0 zz"\nstep_button.click()', "log",
              (r"those bytes are not hex" + KVM_OR_NOT,)),
        Drive("clear_button.click()", "log", ()),
        Drive('command_box.value = "cat /sys/bus/pci/devices/0000:00:00.0/config > /dev/null"\n'
              "count_button.click()", "chart", (r"exit status 0; \d+ device accesses",
                                                 r"<image/png>")),
        Drive('accel_pick.value = "tcg"\ncatch_button.click()', "stack_out",
              (r"tcg: thread .*, \d+ frames", r"edu_mmio_read")),
        # and under KVM wherever /dev/kvm lets the ROM run: the stack goes through KVM_RUN's
        # caller instead of the translated code
        Drive('if "kvm" in accel_pick.options:\n    accel_pick.value = "kvm"\n'
              "    catch_button.click()\nelse:\n    with stack_out:\n"
              '        print("kvm: not offered here:", accel_problem("kvm"))', "stack_out",
              (r"(?s)kvm: thread .*, \d+ frames(?=.*\bkvm_cpu_exec\b)(?=.*\bedu_mmio_read\b)"
               r"|kvm: not offered here: \S",)),
        Drive('register_pick.value = "year (0x09)"\nstep_in_button.click()', "in_out",
              (r"stopped in rtc_cmos_read\(addr=9\b", r"\d+ instruction\(s\) to the in",
               # the out selects the register: al holds 9 (QEMU's trace line of a single
               # step is not always in the log yet when the step's tracing ends: not checked)
               r"<code>out +%al,\$0x70</code></td><td>[^<]*</td><td>0x09</td>",
               # al after the in is the year's register: the BCD of the year cat printed
               r"(?s)cat printed '20(\d\d)-.*<code>in +\$0x71,%al</code></td><td>[^<]*</td>"
               r"<td>0x\1</td>")),
    ],
    "02-mmio-pci.ipynb": [
        Drive('offset_box.value = "0x4"\nvalue_box.value = "0x1"\n'
              "write_button.click()\nread_button.click()", "register_out",
              (r"write 0x004 0x00000001\nread 0x004 0xfffffffe",)),
        Drive('action_box.value = "w 8 5 p 0x20 1 r 8"\ncount_button.click()', "count_out",
              (r"read 0x008 0x00000078", r"<image/png>")),        # 5! = 120
        Drive("bar_box.value = bar_box.options[-1][1]\nsize_button.click()", "size_out",
              (r"the handshake and the kernel agree",)),
        Drive('driver_box.value = "notify"\nmode_box.value = "select"\nplan_box.value = "si"\n'
              "wait_button.click()", "wait_out", (r"round s woke .*\nround i timeout",)),
        Drive('mode_box.value = "poll"\nwait_button.click()', "wait_out",
              (r"round s woke .*\nround i timeout",)),
        Drive('driver_box.value = "blocking"\nwait_button.click()', "wait_out",
              (r"after 2 s: done\? False",)),
        Drive("catch_offset.value = 0x20\ncatch_mmio.click()", "qemu_out",
              (r"<code>edu_mmio_read</code>", r"\baddr=32, size=4\b",    # 0x20, as edu got it
               r"read 0x020 0x[0-9a-f]{8}")),
    ],
    "03-bio-iteration.ipynb": [
        Drive("size_w.value, writers_w.value, readers_w.value = 3 * xform_limit_kib, 1, 1\n"
              'misalign_w.value, variant_w.value, runs_w.value = 512, "fixed", 1\n'
              "run_button.click()", "out",
              (r"'bad_sectors': 0\b", r"<image/png>")),    # the fixed driver: never wrong
        Drive("writers_w.value = readers_w.value = 0\nrun_button.click()", "out",
              (r"choose at least one writer or reader",)),
        Drive("anatomy_button.click()", "anatomy_out",
              (r"bi_size=\d+ .*bi_vcnt=\d+", r"bi_io_vec\[ 0\]")),
    ],
    "04-time-and-timers.ipynb": [
        Drive('count.value = 50\nmethod.value = "udelay"\nlength.value = 200\n'
              'slack.value = "1 ns"\nmethod.value = "usleep"\non_host.value = False',
              "plot_out", (r"50 delays of 200 µs by usleep", r"<image/png>")),
        Drive("offset.value = -2.0\nuse_gdb.value = True\nset_button.click()", "clock_out",
              # date -s moves the wall clock by the offset, not the monotonic clock. The
              # target is a whole second (the guest's seconds then, minus 2 h), so the move
              # is 2 h plus the fraction of a second dropped plus the command's latency:
              # up to -7,201.x s (CI saw -7,201.013)
              (r"<td>CLOCK_REALTIME</td><td>-7,(19\d|20[01])\.\d{3} s</td><td>moved</td>",
               r"<td>CLOCK_MONOTONIC</td><td>[-+]0\.\d{3} s</td><td>ran on</td>",
               r"<td>xtime_sec</td><td>\d+</td><td>\d+</td><td>-7(19\d|20[01])</td>")),
        Drive("reset_button.click()", "clock_out", (r"guest date: ",)),
        # the chapter's hoisted busy-wait: at -O2 the plain counter is read once, before the
        # loop, and the program hangs; volatile makes the loop read it and the wait ends
        Drive('program.value = "spin.c (SIGALRM counter)"\nbuild.value = "plain"\n'
              'opt.value = "-O2"\ngo.click()', "spin_out",
              (r"the loop reads memory: never\n", r"run: killed by timeout after 3 s: it hung")),
        Drive('build.value = "volatile"\ngo.click()', "spin_out",
              (r"the loop reads memory: (?!never)\S", r"run: exit status 0: ")),
        Drive('program.value = "hpetspin.c (HPET register)"\nbuild.value = "volatile"\n'
              'opt.value = "-O1"\ngo.click()', "spin_out",
              (r"the loop reads memory: (?!never)\S", r"waits of 100 µs: median")),
        Drive('program.value = "spin.c (SIGALRM counter)"\nbuild.value = "nanosleep"\ngo.click()',
              "spin_out", (r"the nanosleep build exists for hpetspin.c only",)),
        Drive("boot_acpi.click()", "cs_out", (r"current clocksource: tsc",)),
        Drive('clocksource.value = "hpet"', "cs_out",
              (r"current clocksource: hpet", r"device register reads per call: hpet")),
        Drive("samples.value = 20\nsample_button.click()", "tk_out",
              (r"tk_core\.seq moved by", r"<image/png>")),
    ],
}
# Notebooks that end with a Stop button: pressed last, the VM must be down.
STOP = "stop_button.click()\nprint('the VM runs after Stop:', vm.running)"
STOPPED = "the VM runs after Stop: False"
HISTORY = ("from lab_vm.tools import progress as _progress\n"
           "print(json.dumps([[r.title, r.start, r.end] for r in _progress.HISTORY]))")


class HeadlessClient(NotebookClient):
    """nbclient, plus a look at each Output widget after each cell, and one workaround.

    The workaround: nbclient mirrors Output widgets by sending ``comm_msg`` updates on the
    shell channel while it awaits the cell's ``execute_reply`` on that same socket with
    ``poll(timeout)``. The send consumes the socket's edge-triggered readiness, so a reply
    that arrived meanwhile is seen only when the poll times out — after the whole cell timeout
    (jupyter/nbclient#312). Both sat idle for 600 s, which looked like a hang (three times in
    notebook 04, once in notebook 01 while measuring this). Polling in short slices bounds the
    delay to ``SHELL_POLL_S``: at each slice's end the poll looks at the socket again.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.seen: dict[int, dict[str, list]] = {}     # cell index -> model id -> outputs
        self.on_cell_executed = self._look

    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        channel = kc.shell_channel
        get_msg = channel.get_msg

        async def sliced_get_msg(timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                left = SHELL_POLL_S if deadline is None else deadline - time.monotonic()
                try:
                    return await get_msg(timeout=max(0.0, min(SHELL_POLL_S, left)))
                except Empty:
                    if deadline is not None and time.monotonic() >= deadline:
                        raise

        channel.get_msg = sliced_get_msg
        return kc

    def _look(self, cell, cell_index, **_):
        self.seen[cell_index] = {comm_id: copy.deepcopy(obj.outputs)
                                 for comm_id, obj in self.comm_objects.items()
                                 if hasattr(obj, "outputs")}


def notebooks() -> list[Path]:
    return sorted(p for p in NOTEBOOKS.glob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def outputs(nb) -> list[dict]:
    """Every output of an executed notebook: the cells' and those captured by Output widgets."""
    found = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    state = nb.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    for model in state.values():
        if model.get("model_name") == "OutputModel":
            found += model.get("state", {}).get("outputs", [])
    return found


def text_of(outs: list[dict]) -> str:
    """The text a reader sees in some outputs; an image is ``<image/png>``."""
    parts = []
    for o in outs:
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        elif o.get("output_type") == "error":
            parts.append(f"{o.get('ename')}: {o.get('evalue')}")
        else:
            data = o.get("data", {})
            parts += [data.get("text/html", ""), data.get("text/plain", "")]
            if "image/png" in data:
                parts.append("<image/png>")
    return "\n".join(p if isinstance(p, str) else "".join(p) for p in parts)


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def unannounced(cell, runs: list[list]) -> tuple[float, float]:
    """(how long the cell ran, how much of that no progress display was up)."""
    timing = cell.metadata.get("execution", {})
    start, end = epoch(timing["iopub.status.busy"]), epoch(timing["iopub.status.idle"])
    covered, reached = 0.0, start
    for _, a, b in sorted((r for r in runs if r[2] is not None), key=lambda r: r[1]):
        a, b = max(a, reached), min(b, end)
        if b > a:
            covered += b - a
            reached = b
    return end - start, (end - start) - covered


def test_notebooks_are_committed_without_outputs():
    for path in notebooks():
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
                 and (cell.get("outputs") or cell.get("execution_count") is not None)]
        assert not dirty, f"{path.name}: cells {dirty} carry outputs (clear them before committing)"
        assert WIDGET_STATE not in json.dumps(nb.metadata), f"{path.name}: saved widget state"


def test_there_is_something_to_run():
    assert notebooks(), f"no notebooks under {NOTEBOOKS}"


def test_every_notebook_has_its_controls_driven():
    assert {p.name for p in notebooks()} == set(DRIVES), "a notebook without DRIVES, or the reverse"


def test_the_shell_poll_slices_find_a_reply_sent_during_a_widget_update():
    """The workaround above, on a kernel without a VM: 40 cells each of which writes into an
    Output widget finish in seconds (without it, some cells waited for the whole timeout)."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(
        "import ipywidgets as widgets\nout = widgets.Output()\n"
        "def write(_=None):\n    with out:\n        print('written')\nout"))
    nb.cells += [nbformat.v4.new_code_cell("write()") for _ in range(40)]
    start = time.monotonic()
    HeadlessClient(nb, timeout=60, kernel_name="python3").execute()
    assert time.monotonic() - start < 50, "a cell waited for its timeout: a reply was missed"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("path", notebooks(), ids=lambda p: p.name)
def test_notebook_runs_headless_and_its_controls_work(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    drives = DRIVES[path.name]
    stop = any("stop_button" in cell.source for cell in nb.cells)
    # The drives go before the last cell when it stops the VM at once, else after it.
    at = len(nb.cells) - (0 if stop else 1)
    first = at
    for n, drive in enumerate(drives):
        nb.cells.insert(at + n, nbformat.v4.new_code_cell(
            f"{drive.out}.clear_output()\n{drive.code}\nprint({DROVE!r}, {drive.out}.model_id)"))
    end = [STOP] if stop else []
    nb.cells += [nbformat.v4.new_code_cell(code) for code in [*end, "import json\n" + HISTORY]]
    client = HeadlessClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    try:
        client.execute()
    except CellExecutionError as exc:
        pytest.fail(f"{path.name} failed:\n{exc}", pytrace=False)
    finally:
        nbformat.write(nb, tmp_path / path.name)     # for a look at what it did
    errors = [o for o in outputs(nb) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: error outputs {[(e['ename'], e['evalue']) for e in errors]}"
    if path.name in MUST_PLOT:
        images = [o for o in outputs(nb) if "image/png" in o.get("data", {})]
        assert images, f"{path.name} drew no figure"

    for n, drive in enumerate(drives):
        index = first + n
        said = text_of(nb.cells[index].outputs)
        model = re.search(rf"{DROVE} (\w+)", said)
        assert model, f"{path.name}: drive {drive.code!r} printed no model id: {said!r}"
        shown = text_of(client.seen[index].get(model[1], []))
        if not drive.expect:
            assert not shown.strip(), f"{drive.code!r}: {drive.out} should be empty: {shown!r}"
        for pattern in drive.expect:
            assert re.search(pattern, shown), \
                f"{path.name}: after {drive.code!r}, {drive.out} lacks /{pattern}/:\n{shown}"
    if stop:
        assert STOPPED in text_of(nb.cells[-2].outputs), text_of(nb.cells[-2].outputs)

    runs = json.loads(text_of(nb.cells[-1].outputs).strip().splitlines()[-1])
    for index, cell in enumerate(nb.cells[:-1]):
        if cell.cell_type != "code":
            continue
        ran, quiet = unannounced(cell, runs)
        assert ran < LONG_CELL_S or quiet <= UNANNOUNCED_S, (
            f"{path.name} cell {index} ran {ran:.1f} s, {quiet:.1f} s of it without a progress "
            f"display (lab_vm.tools.progress):\n{cell.source[:300]}")


def test_the_progress_check_tells_a_silent_cell_from_an_announced_one():
    """unannounced() on a kernel without a VM: a cell that sleeps 3 s silently, and one that
    sleeps 3 s under a progress display."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code) for code in [
        "import json, time\nfrom lab_vm.tools.progress import progress",
        "time.sleep(3)",
        "with progress('sleeping', ['a second', 'two more']) as p:\n"
        "    time.sleep(1)\n    p.step()\n    time.sleep(2)",
        HISTORY]]
    HeadlessClient(nb, timeout=60, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO)}}).execute()
    runs = json.loads(text_of(nb.cells[-1].outputs).strip().splitlines()[-1])
    assert [r[0] for r in runs] == ["sleeping"]
    ran, quiet = unannounced(nb.cells[1], runs)
    assert ran >= 3 and quiet >= 2.9, (ran, quiet)
    ran, quiet = unannounced(nb.cells[2], runs)
    assert ran >= 3 and quiet < 0.5, (ran, quiet)
    assert "sleeping ..." in text_of(nb.cells[2].outputs)      # said before it slept
