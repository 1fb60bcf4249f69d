"""Lab 4 (a periodic hrtimer that measures its own lateness): its handout, its checker's
arithmetic on made-up timelines, and — in the VM — full marks for the solution, few for the
skeleton."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab_vm.grading import TestFailure
from lab_vm.grading.handout import make_handout, secret_lines, skeleton_is_current
from lab_vm.grading.lab import load_lab

from conftest import REPO

LAB_DIR = REPO / "labs" / "04-hrtimer"
MS = 1_000_000          # ns


@pytest.fixture(scope="module")
def lab():
    return load_lab(LAB_DIR)


@pytest.fixture(scope="module")
def checker(lab):
    return lab.load_checker()


def test_skeleton_is_current_and_the_handout_keeps_its_secrets(lab, tmp_path):
    assert skeleton_is_current(lab) == [], "run scripts/make-handouts to regenerate skeleton/"
    handout = make_handout(lab, tmp_path)        # raises if a solution line would leak
    secrets = secret_lines(lab)
    assert len(secrets) > 25
    texts = {p.name: p.read_text() for p in handout.folder.rglob("*") if p.is_file()}
    assert not any(secrets & {line.strip() for line in text.splitlines()}
                   for text in texts.values())
    hidden = [s for s in lab.tests() if s.hidden]
    assert hidden and not any(f"def {s.name}(" in texts["check_hrlate.py"] for s in hidden)
    assert sum(s.points for s in lab.tests(hidden=False)) == 100


# -- the checker's parser, on lines recorded from the lab VM's trace ---------------------------
RECORDED = """\
# entries-in-buffer/entries-written: 9/9   #P:1
    vmexit-agent-1       [000] d.h..     2.288456: hrtimer_expire_entry: hrtimer=0000000013d0608e function=tick_sched_timer now=2288212010
    vmexit-agent-1       [000] d.h..     2.289309: hrtimer_expire_exit: hrtimer=0000000013d0608e
          window-38      [000] d....     2.333765: hrtimer_start: hrtimer=0000000052e421d9 function=hrlate_fire [hrlate] expires=2334633482 softexpires=2334633482 mode=REL|HARD was_armed=0
          <idle>-0       [000] d.h..     2.334839: hrtimer_expire_entry: hrtimer=0000000052e421d9 function=hrlate_fire [hrlate] now=2334811991
          <idle>-0       [000] d.h..     2.334901: hrtimer_expire_exit: hrtimer=0000000052e421d9
          <idle>-0       [000] d.h..     2.334990: hrtimer_start: hrtimer=0000000052e421d9 function=hrlate_fire [hrlate] expires=2335633482 softexpires=2335633482 mode=ABS was_armed=0
           rmmod-51      [000] .....     2.335001: tracing_mark_write: rmmod-returned
           rmmod-51      [000] d....     2.335120: hrtimer_cancel: hrtimer=0000000052e421d9
"""


def test_the_parser_reads_one_timers_events_and_the_markers(checker):
    pointer = checker.timer_pointer(RECORDED)
    assert pointer == "hrtimer=0000000052e421d9"
    line = checker.timeline(RECORDED, pointer)
    assert line.starts == [(2333765000, 2334633482), (2334990000, 2335633482)]
    assert [(c.expires, c.entry, c.exit) for c in line.callbacks] == \
        [(2334633482, 2334839000, 2334902000)]
    assert line.callbacks[0].low == 205518 and line.cancels == [2335120000]
    assert line.markers == [(2335001000, "rmmod-returned")]
    with pytest.raises(TestFailure, match="no hrtimer"):
        checker.timer_pointer(RECORDED.replace("[hrlate]", "[other]"))


# -- the checker's arithmetic, on timelines made up in the test ---------------------------------
def make_run(checker, *, period=1 * MS, step=None, first=None, late=50_000, gap=20_000,
             missed=0, count=None, length=100 * MS):
    """A run the way the checker sees it: start at 10 ms, stop ``length`` later."""
    step = step or period
    t0, t1 = 10 * MS, 10 * MS + 100_000
    t2 = t1 + length + 30_000
    t3 = t2 + 100_000
    expires = (first or t1 - 50_000 + period)
    line = checker.Timeline()
    while expires <= t2:
        line.starts.append((expires - period, expires))
        line.callbacks.append(checker.Callback(expires, expires + late, expires + late + gap))
        expires += step
    line.starts.append((expires - step, expires))          # the pending one, cancelled
    n = len(line.callbacks)
    stats = {"count": n if count is None else count, "missed": missed, "min_ns": late + 1,
             "max_ns": late + 1, "mean_ns": late + 1}
    return checker.Run(period, length, [t0, t1, t2, t3], stats, line)


def test_the_grid_check_passes_a_correct_run(checker):
    run = make_run(checker)
    checker.check_grid(run)
    assert checker.bounds(run)["mean_ns"][0] <= run.stats["mean_ns"] <= \
        checker.bounds(run)["mean_ns"][1]


@pytest.mark.parametrize("wrong, message", [
    ({"step": 4 * MS}, "after the stop|count \\+ missed"),  # a 4 ms timer for a 1 ms period
    ({"step": MS // 1000}, "not on the grid"),              # 1000 ns, not 1000 us
    ({"step": MS + 50_000}, "not on the grid"),             # restarted from now: drifts
    ({"first": 10 * MS + 100_000}, "first expiry"),        # fired at once
    ({"count": 999_999}, "count reads"),
    ({"missed": 1}, "count \\+ missed"),
])
def test_the_grid_check_catches_a_wrong_period(checker, wrong, message):
    with pytest.raises(TestFailure, match=message):
        checker.check_grid(make_run(checker, **wrong))


# -- in the VM ----------------------------------------------------------------------------------
def _check(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([REPO / ".venv/bin/lab-vm", "check", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_the_solution_gets_full_marks_hidden_tests_included(built):
    result = _check("labs/04-hrtimer", "--dir", "labs/04-hrtimer/solution", "--hidden")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "Score: 120/120", result.stdout


@pytest.mark.slow
def test_the_skeleton_in_a_handout_scores_low(lab, built, tmp_path):
    handout = make_handout(lab, tmp_path)
    result = _check(".", cwd=handout.folder)
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "Score: 10/100", result.stdout
    assert "fix: period_set (TODO 2)" in result.stdout
