"""The notebook renderers: HTML tables, backtraces, guest programs' key=value summaries, the
checkout folder. Pure functions; no VM."""
from __future__ import annotations

import pytest

from conftest import REPO
from lab_vm import paths
from lab_vm.errors import ConfigError
from lab_vm.tools.backtrace import (backtrace_table, backtrace_text, compare_backtraces,
                                    where)
from lab_vm.tools.tables import Raw, code, html_table, span
from lab_vm.vm.channel import Result, key_values

# Two frames as lab_vm.debug's gdb_side.backtrace() returns them (from chapter 1's RTC read),
# and one of TCG's generated code, which has no source.
FRAMES = [
    {"function": "rtc_cmos_read", "pc": 0xffffffff81039a10,
     "file": "arch/x86/kernel/rtc.c", "line": 121, "args": {"addr": "0"}},
    {"function": "mc146818_avoid_UIP", "pc": 0xffffffff8175b2c4,
     "file": "drivers/rtc/rtc-mc146818-lib.c", "line": 27,
     "args": {"callback": "0xffffffff8175b0f0 <x>", "param": "0xffffc90000167d68"}},
]
GENERATED = {"function": "code_gen_buffer", "pc": 0x7f0, "file": None, "line": None, "args": {}}


def test_cells_are_escaped_unless_raw():
    html = str(html_table(["a<b", "n"], [("<script>", 3), (Raw("<i>x</i>"), code("a&b"))]))
    assert "<th>a&lt;b</th>" in html and "<td>&lt;script&gt;</td><td>3</td>" in html
    assert "<td><i>x</i></td><td><code>a&amp;b</code></td>" in html
    assert "<script>" not in html


def test_jupyter_shows_the_table_as_html():
    table = html_table(["x"], [(1,), (2,)], caption="two <rows>")
    assert table._repr_html_() == str(table) == table.html
    assert table.html.startswith("<table><caption>two &lt;rows&gt;</caption><tr><th>x</th>")
    assert repr(table) == "<Table of 2 rows>"


def test_header_rows_spans_and_marks():
    html = str(html_table([[span("method", rows=2), span("guest µs", cols=2)], ["min", "max"]],
                          [("a", 1, 2), ("b", span("not permitted", cols=2))], marked=[1]))
    assert html.startswith('<table><tr><th rowspan="2">method</th><th colspan="2">guest µs</th>'
                           "</tr><tr><th>min</th><th>max</th></tr><tr><td>a</td>")
    assert '<tr style="background: #fff3cd"><td>b</td><td colspan="2">not permitted</td></tr>' \
        in html
    assert html.count("#fff3cd") == 1


def test_a_standalone_table_styles_its_cells_and_wraps_only_the_last_column():
    html = str(html_table(["a", "b"], [("x", "long text")], standalone=True))
    nowrap = 'style="padding: 1px 10px; text-align: left; vertical-align: top; white-space: nowrap"'
    wraps = 'style="padding: 1px 10px; text-align: left; vertical-align: top"'
    assert f"<tr><td {nowrap}>x</td><td {wraps}>long text</td></tr>" in html
    assert f"<th {nowrap}>a</th>" in html


def test_backtrace_table():
    html = str(backtrace_table(FRAMES + [GENERATED], args=["addr"], value=lambda v: f"[{v}]",
                               marked=[0], no_source="(generated)"))
    assert "<tr><th></th><th>function</th><th>source</th><th>arguments</th></tr>" in html
    assert ('<tr style="background: #fff3cd"><td>#0</td><td><code>rtc_cmos_read</code></td>'
            "<td>arch/x86/kernel/rtc.c:121</td><td><code>addr=[0]</code></td></tr>") in html
    assert "<td>#1</td><td><code>mc146818_avoid_UIP</code></td>" \
        "<td>drivers/rtc/rtc-mc146818-lib.c:27</td><td></td>" in html
    assert "<td>(generated)</td>" in html
    assert "arguments" not in str(backtrace_table(FRAMES))
    everything = str(backtrace_table(FRAMES, args=True))
    assert "callback=0xffffffff8175b0f0 &lt;x&gt;, param=0xffffc90000167d68" in everything


def test_where():
    assert where(FRAMES[1], short=True) == "rtc-mc146818-lib.c:27"
    assert where(GENERATED) == "?"


def test_compare_backtraces_lines_up_shared_frames_and_marks_the_rest():
    tcg = [{"function": n, "file": f"{n}.c", "line": 1, "args": {}}
           for n in ("edu_mmio_read", "memory_region_read_accessor", "helper_ld", "cpu_exec")]
    kvm = [{"function": n, "file": None, "line": None, "args": {}}
           for n in ("edu_mmio_read", "memory_region_read_accessor", "kvm_cpu_exec")]
    html = str(compare_backtraces(tcg, kvm, ("TCG", "KVM")))
    rows = html.split("<tr")[2:]
    assert len(rows) == 5 and html.count("#fff3cd") == 3
    assert "<code>edu_mmio_read</code> <small>edu_mmio_read.c:1</small>" in rows[0]
    assert "same" in rows[0] and "same" in rows[1] and "differs" in rows[2]
    assert "<th>TCG</th><th></th><th>KVM</th>" in html


def test_backtrace_text_reads_like_gdb():
    assert backtrace_text(FRAMES).splitlines() == [
        "#0  rtc_cmos_read(addr=0) at rtc.c:121",
        "#1  mc146818_avoid_UIP(callback=0xffffffff8175b0f0 <x>, param=0xffffc90000167d68) "
        "at rtc-mc146818-lib.c:27"]


def test_key_values_of_a_blkstress_summary():
    # blkstress stress's summary line and a fill's, as the guest printed them
    out = ("writes=40 reads=40 bad_reads=3 bad_sectors=24 changed_buffers=0 io_errors=0 "
           "seconds=0.521\nwrote=4096 changed_buffers=1\n")
    values = key_values(out)
    assert values == {"writes": 40.0, "reads": 40.0, "bad_reads": 3.0, "bad_sectors": 24.0,
                      "changed_buffers": 1.0, "io_errors": 0.0, "seconds": 0.521,
                      "wrote": 4096.0}
    result = Result("blkstress fill", 0, out.encode(), b"x=9\n", 0.1)
    assert result.key_values() == values          # stdout only
    assert key_values("no summary here, sector 5: want 1") == {}


def test_checkout_dir_is_where_lab_vm_runs_from(monkeypatch, tmp_path):
    assert paths.checkout_dir() == REPO
    assert (paths.checkout_dir() / "book" / "code").is_dir()
    monkeypatch.setattr(paths, "PACKAGE_DIR", tmp_path / "site-packages" / "lab_vm")
    with pytest.raises(ConfigError, match="not from a vmexit checkout"):
        paths.checkout_dir()
