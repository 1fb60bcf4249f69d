"""Grading: TODO markers and handouts, safe unpacking, the build sandbox, `lab-vm check` and
batch grading of a fixture set of submissions with known verdicts and points (real VMs, real
module builds in a real bubblewrap sandbox)."""
from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

import pytest

from lab_vm.grading import TestFailure, assert_lines_match
from lab_vm.grading.archive import ArchiveError, Limits, unpack
from lab_vm.grading.handout import (make_handout, secret_lines, skeleton_files,
                                    skeleton_is_current)
from lab_vm.grading.lab import load_lab
from lab_vm.grading.markers import (C, HASH, MarkerError, hidden_tests, render,
                                    solution_lines, strip_hidden)
from lab_vm.grading.sandbox import INSIDE, Sandbox

from conftest import REPO, qemu_processes, sigint_as_at_a_terminal
from grading_fixtures import (LAB, PWNED, PWNED_BESIDE, as_tar, make_fixtures,
                              make_submissions, symlink)

LAB_DIR = LAB
VENV_BIN = REPO / ".venv" / "bin"


@pytest.fixture(scope="module")
def lab():
    return load_lab(LAB_DIR)


# -- markers -------------------------------------------------------------------------------
C_SOURCE = """\
int f(void)
{
	/* TODO 1: return the answer | stub: return 0; */
	int x = 6 * 7;

	return x;
	/* END TODO 1 */
}

void g(void)
{
	/* TODO 2: say hello */
	pr_info("hello\\n");
	/* END TODO 2 */
}
"""


def test_c_markers_give_a_skeleton_with_stubs_and_reveal_in_steps():
    skeleton = render(C_SOURCE, C)
    assert "/* TODO 1: return the answer */\n\treturn 0;\n}" in skeleton
    assert "/* TODO 2: say hello */\n}" in skeleton
    assert "6 * 7" not in skeleton and "hello" not in skeleton.replace("say hello", "")
    step1 = render(C_SOURCE, C, reveal=1)
    assert "int x = 6 * 7;" in step1 and "TODO 1" not in step1
    assert "/* TODO 2: say hello */" in step1
    assert "END TODO" not in render(C_SOURCE, C, reveal=2)
    # `return x;`-style lines that only the solution has are secrets; `}` is not.
    assert solution_lines(C_SOURCE, C) == {"int x = 6 * 7;", "return x;", 'pr_info("hello\\n");'}
    assert solution_lines(C_SOURCE, C, reveal=1) == {'pr_info("hello\\n");'}


def test_kbuild_markers():
    kbuild = "# TODO 1: build edu.o as a module | stub: obj-m :=\nobj-m += edu.o\n# END TODO 1\n"
    assert render(kbuild, HASH) == "# TODO 1: build edu.o as a module\nobj-m :=\n"
    assert render(kbuild, HASH, reveal=1) == "obj-m += edu.o\n"


@pytest.mark.parametrize("text, error", [
    ("/* TODO 1: a */\nx;\n", "never closed"),
    ("/* TODO 1: a */\n/* TODO 2: b */\nx;\n/* END TODO 2 */\n/* END TODO 1 */\n", "cannot nest"),
    ("/* TODO 1: a */\nx;\n/* END TODO 2 */\n", "closes TODO 1"),
    ("x;\n/* END TODO 1 */\n", "without a TODO"),
    ("/* TODO 1: a */\n/* END TODO 1 */\n", "no solution lines"),
    ("/* TODO 3 map the BAR */\nx;\n", "looks like a marker"),
])
def test_malformed_markers_are_errors_naming_the_line(text, error):
    with pytest.raises(MarkerError, match=error):
        render(text, C, filename="f.c")


def test_todo_numbers_are_unique_across_a_lab(tmp_path):
    lab_dir = tmp_path / "99-dup"
    (lab_dir / "solution").mkdir(parents=True)
    (lab_dir / "tests").mkdir()
    (lab_dir / "tests" / "check.py").write_text("")
    (lab_dir / "lab.toml").write_text('title = "t"\nmodule = "m"\nsources = ["a.c", "b.c"]\n'
                                      'checker = "tests/check.py"\n')
    for name in ("a.c", "b.c"):
        (lab_dir / "solution" / name).write_text("/* TODO 1: x */\ny;\n/* END TODO 1 */\n")
    with pytest.raises(MarkerError, match="numbers are lab-wide"):
        skeleton_files(load_lab(lab_dir))


CHECKER = '''\
from lab_vm.grading import test


@test(10, "public")
def public(t):
    pass


# a hint about the hidden one
@test(5, "secret", hidden=True)
def secret_one(t):
    t.sh("the hidden check")


@test(5, "another public", hidden=False)
def public_two(t):
    pass
'''


def test_hidden_tests_are_stripped_with_their_comments():
    assert hidden_tests(CHECKER) == ["secret_one"]
    stripped = strip_hidden(CHECKER)
    assert "secret" not in stripped and "hint" not in stripped
    assert "def public(t)" in stripped and "def public_two(t)" in stripped
    compile(stripped, "stripped", "exec")
    with pytest.raises(MarkerError, match="literal"):
        hidden_tests(CHECKER.replace("hidden=True", "hidden=HIDE"))


# -- the lab's skeleton and handout --------------------------------------------------------
def test_skeleton_is_generated_from_the_solution(lab):
    assert skeleton_is_current(lab) == [], "run scripts/make-handouts to regenerate skeleton/"
    assert subprocess.run([REPO / "scripts" / "make-handouts", "--check"]).returncode == 0


def test_handout_holds_no_solution_line_and_no_hidden_test(lab, tmp_path):
    handout = make_handout(lab, tmp_path)
    secrets = secret_lines(lab)
    assert len(secrets) > 30          # the lab has real work in it
    with tarfile.open(handout.tarball) as tar:
        names = tar.getnames()
        texts = {m.name: tar.extractfile(m).read().decode() for m in tar if m.isfile()}
    assert all(n == "02-edu-driver" or n.startswith("02-edu-driver/") for n in names)
    folder_texts = {p.relative_to(tmp_path).as_posix(): p.read_text()
                    for p in handout.folder.rglob("*") if p.is_file()}
    assert sorted(folder_texts) == sorted(texts)
    assert not any(p.name == "solution" for p in handout.folder.rglob("*"))
    for name, text in texts.items():
        lines = {line.strip() for line in text.splitlines()}
        assert not secrets & lines, f"{name} leaks {sorted(secrets & lines)[:3]}"
    checker = texts["02-edu-driver/tests/check_edu.py"]
    hidden = [s for s in lab.tests() if s.hidden]
    assert hidden and all(f"def {s.name}(" not in checker and s.title not in checker
                          for s in hidden)
    assert all(f"def {s.name}(" in checker for s in lab.tests(hidden=False))
    readme = texts["02-edu-driver/README.md"]
    assert "lab-vm check ." in readme and "Score: X/Y" in readme
    assert texts["02-edu-driver/edu.c"] == (LAB_DIR / "skeleton" / "edu.c").read_text()
    # Revealed in steps: TODOs 1-5 solved, the rest still secret.
    stepped = make_handout(lab, tmp_path / "step", reveal=5)
    text = (stepped.folder / "edu.c").read_text()
    assert "PCI_DEVICE(EDU_VENDOR, EDU_DEVICE)" in text and "TODO 6" in text
    assert not secret_lines(lab, reveal=5) & {line.strip() for line in text.splitlines()}


# -- unpacking submissions -----------------------------------------------------------------
def _tar(path: Path, members: list) -> Path:
    return as_tar(path.parent, path.name, members, suffix="")


def test_unpack_takes_regular_files_from_folders_and_archives(tmp_path):
    src = tmp_path / "alice"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "edu.c").write_text("int x;\n")
    (src / "inside-link").symlink_to("sub/edu.c")          # inside: allowed, not copied
    assert unpack(src, tmp_path / "a") == [Path("sub/edu.c")]
    zpath = tmp_path / "bob.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("lab/edu.c", "int y;\n")
    assert unpack(zpath, tmp_path / "b") == [Path("lab/edu.c")]
    assert (tmp_path / "b" / "lab" / "edu.c").read_text() == "int y;\n"
    assert unpack(_tar(tmp_path / "c.tar.gz", []), tmp_path / "c") == []


@pytest.mark.parametrize("members, error", [
    ([symlink("edu.c", "/etc/passwd")], "points outside"),
    ([symlink("a/edu.c", "../../x")], "points outside"),
    ([("../edu.c", "x")], "climbs out"),
    ([("a/../../edu.c", "x")], "climbs out"),
    ([("/etc/cron.d/x", "x")], "absolute"),
    ([("edu.c", "x"), ("edu.c", "y")], "twice"),
])
def test_unsafe_archives_are_refused(tmp_path, members, error):
    with pytest.raises(ArchiveError, match=error):
        unpack(_tar(tmp_path / "s.tar.gz", members), tmp_path / "out")
    assert not (tmp_path / "edu.c").exists()


def test_unsafe_folders_and_limits(tmp_path):
    src = tmp_path / "mallory"
    src.mkdir()
    (src / "edu.c").symlink_to("/etc/passwd")
    with pytest.raises(ArchiveError, match="points outside"):
        unpack(src, tmp_path / "a")
    many = _tar(tmp_path / "many.tar.gz", [(f"f{i}", "x") for i in range(20)])
    with pytest.raises(ArchiveError, match="more than 10 files"):
        unpack(many, tmp_path / "b", Limits(max_files=10))
    big = _tar(tmp_path / "big.tar.gz", [("edu.c", "x" * 5000)])
    with pytest.raises(ArchiveError, match="over the limit"):
        unpack(big, tmp_path / "c", Limits(max_file_bytes=4096))
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(ArchiveError, match="not a readable zip"):
        unpack(tmp_path / "junk.zip", tmp_path / "d")


# -- the sandbox ---------------------------------------------------------------------------
def test_sandbox_confines_writes_hides_the_host_and_has_no_network(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    outside = tmp_path / "outside"
    script = (f"echo ok > {INSIDE}/mine; touch {outside} /usr/x 2>&1; ls {REPO} /root 2>&1; "
              "cat /proc/net/dev")
    result = Sandbox(work).run(["sh", "-c", script], timeout=30)
    assert result.status == 0, result.output
    assert (work / "mine").read_text() == "ok\n"
    assert not outside.exists() and not Path("/usr/x").exists()
    assert "No such file" in result.output and "Read-only" in result.output
    interfaces = [line.split(":")[0].strip() for line in result.output.splitlines()
                  if ":" in line and "|" not in line and "/" not in line]
    assert interfaces == ["lo"], result.output


def test_sandbox_timeout_kills_everything_inside(tmp_path):
    result = Sandbox(tmp_path).run(["sh", "-c", "sleep 1000 & sleep 1000"], timeout=1)
    assert result.timed_out
    assert not [p for p in subprocess.run(["pgrep", "-a", "sleep"], capture_output=True,
                                          text=True).stdout.splitlines() if "1000" in p]


# -- the checker API -----------------------------------------------------------------------
def test_assert_lines_match_shows_good_bad_and_missing():
    text = "one\nedu 0000:00:04.0: identification 0x010000ed\nWARNING: at edu.c:12\nfour"
    assert_lines_match(text, r"edu \S+: identification")
    with pytest.raises(TestFailure) as info:
        assert_lines_match(text, r"edu \S+: identification", r"edu: removed", no=[r"WARNING"],
                           fix="do it")
    msg = info.value.message
    assert "GOOD edu 0000:00:04.0" in msg and "BAD  WARNING: at edu.c:12" in msg
    assert "MISSING 'edu: removed'" in msg and info.value.fix == "do it"


# -- in the VM: lab-vm check and batch grading ---------------------------------------------
def _check(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([VENV_BIN / "lab-vm", "check", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_check_gives_full_marks_to_the_solution(built):
    result = _check("labs/02-edu-driver", "--dir", "labs/02-edu-driver/solution")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == "Score: 100/100"
    assert "(hidden)" not in result.stdout


@pytest.mark.slow
def test_check_in_a_handout_scores_the_skeleton_low(lab, built, tmp_path):
    handout = make_handout(lab, tmp_path)
    result = _check(".", cwd=handout.folder)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "Score: 10/100"
    assert any(line.startswith("the module loads and unloads") and "OK" in line
               for line in lines)
    assert "fix: probe must be called (TODO 1" in result.stdout


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        h.update(f"{path.relative_to(folder)} {st.st_mode} {st.st_mtime_ns}".encode())
        if path.is_file() and not path.is_symlink():
            h.update(path.read_bytes())
    return h.hexdigest()


@pytest.mark.slow
def test_grade_gives_each_fixture_its_verdict_and_points(lab, built, tmp_path, request):
    subs = tmp_path / "submissions"
    expected = make_fixtures(subs)
    before = _digest(subs)
    # Short: QEMU's unix sockets live in TMPDIR, and a socket path has at most 107 bytes.
    tmp = Path(tempfile.mkdtemp(prefix="vg-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    out = tmp_path / "results"
    for path in PWNED:
        path.unlink(missing_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.run([REPO / "scripts" / "grade", "02-edu-driver", subs, "--out", out],
                          capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"[{len(expected)}/{len(expected)}]" in proc.stderr      # progress was shown

    with open(out / "grades.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    tests = [s.name for s in lab.tests()]
    assert list(next(iter(rows.values()))) == ["student", *tests, "total", "max", "verdict"]
    assert sorted(rows) == sorted(expected)
    for student, want in expected.items():
        row = rows[student]
        got = {t: int(row[t]) for t in tests}
        assert (row["verdict"], got) == (want.verdict, {t: want.points.get(t, 0) for t in tests}), \
            f"{student}: {(out / 'feedback' / f'{student}.txt').read_text()}"
        assert int(row["total"]) == want.total and int(row["max"]) == 120

    data = json.loads((out / "grades.json").read_text())
    assert data["max"] == 120 and len(data["submissions"]) == len(expected)
    feedback = {p.stem: p.read_text() for p in (out / "feedback").iterdir()}
    assert sorted(feedback) == sorted(expected)
    assert all(text.rstrip().splitlines()[-1].startswith("Score: ") for text in feedback.values())
    assert "edu.c:64" in feedback["compile-error"] and "error: expected ';'" in \
        feedback["compile-error"]
    assert "NULL pointer dereference" in feedback["panic-at-insmod"]
    assert "timed out" in feedback["loops-in-read"]
    assert "points outside" in feedback["symlink-to-host"]
    assert "climbs out" in feedback["dotdot-paths"]
    assert len(feedback["megabytes"]) < 20000          # the console flood is not copied

    assert _digest(subs) == before, "the grader changed the submissions folder"
    assert sorted(p.name for p in out.iterdir()) == ["feedback", "feedback-zips", "grades.csv",
                                                     "grades.json", "lms-grades.csv", "rows"]
    assert sorted(p.stem for p in (out / "rows").iterdir()) == sorted(expected)
    assert sorted(p.stem for p in (out / "feedback-zips").iterdir()) == sorted(expected)
    with open(out / "lms-grades.csv") as f:
        lms = {row["SIS User ID"]: row for row in csv.DictReader(f)}
    assert {s: int(r[f"{lab.title} ({lab.name})"]) for s, r in lms.items()} == \
        {s: want.total for s, want in expected.items()}
    assert list(tmp.iterdir()) == [], "the grader left temporary files"
    assert not any(p.exists() for p in PWNED) and not (tmp_path / PWNED_BESIDE).exists()
    assert not (subs.parent / PWNED_BESIDE).exists()
    assert not qemu_processes(str(tmp)), "the grader left QEMU running"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_an_interrupted_batch_keeps_its_rows_and_a_rerun_grades_the_rest(built, tmp_path,
                                                                          request):
    """Ctrl-C in the middle of scripts/grade: every submission graded so far keeps its row and
    feedback (the one running finishes and is kept), nothing is half-written, no QEMU stays;
    the same command again grades only the rest."""
    subs = tmp_path / "submissions"
    expected = make_submissions(subs, 3, ["solution", "compile-error", "skeleton"])
    tmp = Path(tempfile.mkdtemp(prefix="vg-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    out = tmp_path / "results"
    cmd = [REPO / "scripts" / "grade", "02-edu-driver", subs, "--out", out, "--parallel", "1"]
    env = {**os.environ, "TMPDIR": str(tmp)}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_at_a_terminal)
    deadline = time.monotonic() + 600
    while not list((out / "rows").glob("*.json")) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.2)
    # compile-error-01 (no VM) is done; interrupt once skeleton-02's VM runs, not in between
    while not qemu_processes(str(tmp)) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    rows = sorted(p.stem for p in (out / "rows").glob("*.json"))
    # One at a time, in name order: compile-error-01's row came first, skeleton-02 was
    # running then and is kept, solution-00 never started.
    assert rows == ["compile-error-01", "skeleton-02"], (rows, err)
    assert sorted(p.stem for p in (out / "feedback").glob("*.txt")) == rows
    assert not list(out.rglob("*.tmp")) and not (out / "grades.csv").exists()
    for name in rows:
        row = json.loads((out / "rows" / f"{name}.json").read_text())
        assert (row["report"]["verdict"], row["report"]["score"]) == \
            (expected[name].verdict, expected[name].total)
    assert not qemu_processes(str(tmp)), "an interrupted batch left QEMU running"

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"grading {len(expected) - len(rows)} of {len(expected)} submissions" in \
        again.stderr, again.stderr
    with open(out / "grades.csv") as f:
        got = {row["student"]: (row["verdict"], int(row["total"])) for row in csv.DictReader(f)}
    assert got == {s: (e.verdict, e.total) for s, e in expected.items()}


# -- streamed results, LMS sheets, private tests (no VM) -----------------------------------
from lab_vm.errors import ConfigError  # noqa: E402
from lab_vm.grading.private import with_private_tests  # noqa: E402
from lab_vm.grading.results import Report, TestResult  # noqa: E402
from lab_vm.grading.sheets import read_roster, write_sheets  # noqa: E402
from lab_vm.grading.store import ResultStore, content_hash, lab_hash  # noqa: E402

PRIVATE_CHECKER = '''\
from lab_vm.grading import expect, test

FIND = ("for d in /sys/bus/pci/devices/*; do "
        '[ "$(cat $d/vendor)" = 0x1234 ] && [ "$(cat $d/device)" = 0x11e8 ] && echo $d; done')


@test(7, "7! through the driver")
def private_read(t):
    device = t.sh(FIND).text.split()[0]
    t.insmod()
    wrote = t.write(f"{device}/factorial", "7")
    expect(wrote.ok, f"writing 7 to factorial failed: {wrote.output.strip()}",
           fix="factorial_store (TODO 9)")
    got = t.read(f"{device}/factorial")
    expect(got == "5040", f"7! reads {got!r}, not 5040", fix="factorial_show (TODO 10)")
    t.rmmod()


@test(3, "visible in the decorator, hidden all the same")
def private_visible(t):
    pass
'''


def _report(score: int, verdict: str = "ok") -> Report:
    return Report("02-edu-driver", verdict,
                  [TestResult("a", "A", 10, points=score, status="pass" if score else "fail",
                              message="" if score else "no", fix="do it")],
                  detail="d", warnings=["w"], duration=1.5)


def test_content_hash_follows_content_not_time_and_never_follows_links(tmp_path):
    sub = tmp_path / "alice"
    sub.mkdir()
    (sub / "edu.c").write_text("int x;\n")
    first = content_hash(sub)
    os.utime(sub / "edu.c", (1, 1))
    assert content_hash(sub) == first                 # a touch is not a change
    (sub / "edu.c").write_text("int y;\n")
    assert content_hash(sub) != first
    (sub / "link").symlink_to("/etc/passwd")
    with_link = content_hash(sub)
    (sub / "link").unlink()
    (sub / "link").symlink_to("/etc/hostname")
    assert content_hash(sub) != with_link             # the target is part of it, not read
    archive = tmp_path / "bob.zip"
    archive.write_bytes(b"PK...")
    assert content_hash(archive) != content_hash(tmp_path / "carol.zip")


def test_store_keeps_a_row_only_for_the_same_inputs(tmp_path):
    store = ResultStore(tmp_path, "lab1")
    report = _report(10)
    store.save("alice", "alice", "alice.zip", "h1", report, "feedback\n")
    assert Report.from_dict(report.to_dict()) == report
    assert store.load("alice", "alice", "h1") == report
    assert store.load("alice", "alice", "h2") is None                   # submission changed
    assert ResultStore(tmp_path, "lab2").load("alice", "alice", "h1") is None  # lab changed
    assert store.load("alice", "bob", "h1") is None
    (tmp_path / "feedback" / "alice.txt").unlink()
    assert store.load("alice", "alice", "h1") is None                   # a row needs feedback
    (tmp_path / "rows" / "alice.json").write_text("{half a row")
    assert store.load("alice", "alice", "h1") is None
    assert [p.name for p in (tmp_path / "rows").iterdir()] == ["alice.json"]  # no tmp files
    (tmp_path / "rows" / ".alice.json.x1y2.tmp").write_text("{half")   # a killed writer's
    store.prune({"bob"})
    assert list((tmp_path / "rows").iterdir()) == []


def test_lab_hash_changes_with_the_checker_and_the_private_tests(lab, tmp_path):
    private = tmp_path / "private"
    private.mkdir()
    (private / "check_more.py").write_text(PRIVATE_CHECKER)
    base = lab_hash(lab, "k1")
    assert lab_hash(lab, "k2") != base
    with_private = with_private_tests(lab, private)
    assert lab_hash(with_private, "k1") != base
    before = lab_hash(with_private, "k1")
    (private / "check_more.py").write_text(PRIVATE_CHECKER.replace("7,", "8,"))
    assert lab_hash(with_private, "k1") != before


def test_lab_hash_covers_the_files_beside_the_checker(tmp_path):
    """Lab 1's checker assembles tests/guests/*.S: editing one must regrade."""
    copy = tmp_path / "01-uart"
    shutil.copytree(REPO / "labs" / "01-uart", copy,
                    ignore=shutil.ignore_patterns("skeleton", "__pycache__"))
    uart = load_lab(copy)
    before = lab_hash(uart, "none")
    guest = next((copy / "tests" / "guests").glob("*.S"))
    guest.write_text(guest.read_text() + "\n")
    assert lab_hash(uart, "none") != before


def test_private_tests_add_hidden_tests_after_the_labs_own(lab, tmp_path):
    private = tmp_path / "private"
    private.mkdir()
    (private / "check_more.py").write_text(PRIVATE_CHECKER)
    graded = with_private_tests(lab, private)
    own = [s.name for s in lab.tests()]
    names = [s.name for s in graded.tests()]
    assert names == own + ["private_read", "private_visible"]
    assert all(s.hidden for s in graded.tests()[len(own):])
    assert sum(s.points for s in graded.tests()) == sum(s.points for s in lab.tests()) + 10
    assert [s.name for s in graded.tests(hidden=False)] == [s.name for s in lab.tests(hidden=False)]
    # Handouts come from the repository's lab alone: nothing private goes in.
    handout = make_handout(graded, tmp_path / "handout")
    text = "\n".join(p.read_text() for p in handout.folder.rglob("*") if p.is_file())
    assert "private_read" not in text and "7! through the driver" not in text
    (private / "check_clash.py").write_text(PRIVATE_CHECKER.replace("def private_read",
                                                                    "def binds"))
    with pytest.raises(ConfigError, match="'binds' has the name of another test"):
        with_private_tests(lab, private)
    (private / "check_clash.py").write_text("import no_such_module\n")
    with pytest.raises(ConfigError, match="does not import"):
        with_private_tests(lab, private)
    with pytest.raises(ConfigError, match="no check_"):
        with_private_tests(lab, tmp_path / "handout")


def test_lms_sheet_and_feedback_zips_with_and_without_a_roster(lab, tmp_path):
    (tmp_path / "feedback").mkdir()
    for name in ("alice", "alice-2", "bob", "zed"):
        (tmp_path / "feedback" / f"{name}.txt").write_text(f"feedback of {name}\n")
    graded = [("alice", "alice.zip", "alice", _report(10)),
              ("alice-late", "alice-late.tgz", "alice-2", _report(0, "compile-error")),
              ("bob", "bob", "bob", _report(0)),
              ("zed", "zed.zip", "zed", _report(10))]
    assert write_sheets(lab, graded, tmp_path) == []
    with open(tmp_path / "lms-grades.csv") as f:
        rows = list(csv.reader(f))
    column = f"{lab.title} ({lab.name})"
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", column]
    assert [(r[2], r[5]) for r in rows[1:]] == [("alice", "10"), ("alice-late", "0"),
                                                ("bob", "0"), ("zed", "10")]

    roster_csv = tmp_path / "roster.csv"
    roster_csv.write_text("\ufeffSubmission,ID,Name,Login,Section\n"
                          "alice,s001,Alice A,alice@uni.example,L1\n"
                          "alice-late.tgz,s001,Alice A,alice@uni.example,L1\n"
                          "bob,s002,Bob B,bob@uni.example,L2\n"
                          "carol,s003,Carol C,carol@uni.example,L1\n")
    roster = read_roster(roster_csv)
    warnings = write_sheets(lab, graded, tmp_path, roster=roster)
    assert any("zed" in w and "not in the roster" in w for w in warnings)
    assert any("Carol C has no submission" in w for w in warnings)
    with open(tmp_path / "lms-grades.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["Student"], r["SIS User ID"], r["SIS Login ID"], r["Section"], r[column])
            for r in rows] == [("Alice A", "s001", "alice@uni.example", "L1", "10"),
                               ("Bob B", "s002", "bob@uni.example", "L2", "0"),
                               ("Carol C", "s003", "carol@uni.example", "L1", "")]
    zips = tmp_path / "feedback-zips"
    assert sorted(p.name for p in zips.iterdir()) == ["s001.zip", "s002.zip"]
    with zipfile.ZipFile(zips / "s001.zip") as zf:
        assert sorted(zf.namelist()) == ["02-edu-driver-alice-2.txt", "02-edu-driver-alice.txt"]
        assert zf.read("02-edu-driver-alice.txt") == b"feedback of alice\n"
    first = (zips / "s002.zip").read_bytes()
    write_sheets(lab, graded, tmp_path, roster=roster)
    assert (zips / "s002.zip").read_bytes() == first        # same feedback, same bytes
    roster_csv.write_text("name,id\nx,y\n")
    with pytest.raises(ConfigError, match="'submission' and 'id'"):
        read_roster(roster_csv)


@pytest.mark.slow
def test_grade_with_private_tests_adds_their_points(lab, built, tmp_path, request):
    private = tmp_path / "course-private"
    private.mkdir()
    (private / "check_more.py").write_text(PRIVATE_CHECKER)
    subs = tmp_path / "submissions"
    make_fixtures_of = {"solution": 130, "skeleton": 13}     # 120 + 7 + 3; 10 + 3
    from grading_fixtures import KINDS
    subs.mkdir()
    for kind in make_fixtures_of:
        KINDS[kind][0](subs, kind)
    tmp = Path(tempfile.mkdtemp(prefix="vg-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    out = tmp_path / "results"
    proc = subprocess.run([REPO / "scripts" / "grade", "02-edu-driver", subs, "--out", out,
                           "--private-tests", private], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stderr
    with open(out / "grades.csv") as f:
        rows = {row["student"]: row for row in csv.DictReader(f)}
    assert list(rows["solution"])[-5:] == ["private_read", "private_visible", "total", "max",
                                           "verdict"]
    assert {s: (int(r["total"]), int(r["max"])) for s, r in rows.items()} == \
        {s: (total, 130) for s, total in make_fixtures_of.items()}
    assert (int(rows["solution"]["private_read"]), int(rows["skeleton"]["private_read"])) == (7, 0)
    feedback = (out / "feedback" / "skeleton.txt").read_text()
    assert "7! through the driver (hidden)" in feedback and "Score: 13/130" in feedback
    # The same run without them: the private points are gone, and every row is regraded.
    proc = subprocess.run([REPO / "scripts" / "grade", "02-edu-driver", subs, "--out", out],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TMPDIR": str(tmp)})
    assert proc.returncode == 0 and "grading 2 of 2" in proc.stderr, proc.stderr
    with open(out / "grades.csv") as f:
        assert {row["student"]: int(row["total"]) for row in csv.DictReader(f)} == \
            {"solution": 120, "skeleton": 10}
