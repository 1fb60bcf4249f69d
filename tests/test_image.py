"""The container image (`make image`): built with podman, then used the way the README says.

Builds the image with scripts/build-image (podman's layer cache makes a rebuild fast), then
inside it: `lab-vm doctor` finds everything, `lab-vm run -- uname -r` boots the lab kernel
(also given /dev/kvm: on KVM or, failing the probe, on TCG), `lab-vm check` gives lab 4's
solution full marks and `scripts/grade` grades it ok, one notebook runs headless, `make book`
builds a small book, and the default command answers on port 8888 with the reader's notebook
copies in the mounted folder.
Every container is named ``vmexit-test-…`` and removed; the last test checks none is left.

The tests never install anything: without podman they skip, naming the command that installs
it. On these Debian hosts podman needs scripts/image/containers.conf (see that file).
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TAG = "vmexit"
PREFIX = "vmexit-test-"
# Measured: 3.68 GB — the base 0.17 GB, Debian's packages 1.19 GB (QEMU, gcc, gdb,
# linux-source-6.1), the venv 0.83 GB (dask included), the trimmed lab and checking kernels,
# initramfs and debug QEMU 0.64 GB, three saved states 0.81 GB (each holds its guest's 256 MB
# of RAM in full: a layer keeps no holes; scripts/image/warm-states). The bound catches a trim
# that stopped working (one untrimmed kernel tree alone is 2.1 GB).
SIZE_BOUND = 4_000_000_000
ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get(
    "CONTAINERS_CONF", str(REPO / "scripts/image/containers.conf"))}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(3600),      # the first build of the image takes a while on 2 cores
    pytest.mark.skipif(shutil.which("podman") is None,
                       reason="podman is missing: run scripts/setup as root (it installs "
                              "podman, runc and mmdebstrap)"),
]


def podman(*args, timeout: float, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["podman", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)
    if check and proc.returncode != 0:
        pytest.fail(f"podman {' '.join(args)} exited {proc.returncode}:\n"
                    f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", pytrace=False)
    return proc


# What bubblewrap (lab-vm check's build sandbox) needs inside a container; README: $SANDBOX.
SANDBOX = ("--security-opt", "seccomp=unconfined", "--security-opt", "unmask=ALL")


def run_in_image(*command, mounts=(), workdir=None, options=(), timeout: float = 900,
                 check: bool = True) -> subprocess.CompletedProcess:
    """``podman run --rm`` one command in the image, under a name the last test looks for."""
    args = ["run", "--rm", "--name", PREFIX + uuid.uuid4().hex[:8], *options]
    for host, guest in mounts:
        args += ["-v", f"{host}:{guest}"]
    if workdir:
        args += ["-w", workdir]
    return podman(*args, TAG, *command, timeout=timeout, check=check)


def writable_by_image_user(path: Path) -> Path:
    """The image runs as uid 1000; a folder it writes to must be its (the tests run as root)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for p in [path, *path.rglob("*")]:
            os.chown(p, 1000, 1000, follow_symlinks=False)
    return path


@pytest.fixture(scope="module")
def image():
    start = time.monotonic()
    proc = subprocess.run([str(REPO / "scripts/build-image"), "--tag", TAG], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, f"build-image failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    print(f"image built in {time.monotonic() - start:.0f} s")
    return TAG


def test_doctor_finds_everything_in_the_image(image):
    proc = run_in_image("lab-vm", "doctor", "--json", timeout=300, check=False)
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    bad = {name: c["detail"] for name, c in checks.items() if not c["ok"]}
    assert not bad and proc.returncode == 0, f"doctor in the image: {bad}"
    assert checks["lab kernel"]["detail"].startswith("/opt/vmexit-cache/kernel-")
    assert "/opt/vmexit-cache/qemu-debug-" in checks["debug qemu"]["detail"]


def test_lab_vm_run_boots_the_lab_kernel(image):
    from lab_vm.build.kernel import find_kernel

    proc = run_in_image("lab-vm", "run", "--", "uname", "-r", timeout=600)
    assert proc.stdout.strip() == find_kernel().release


def test_lab_check_gives_the_solution_full_marks(image, tmp_path):
    lab = writable_by_image_user(tmp_path / "lab")
    shutil.copytree(REPO / "labs/04-hrtimer", lab, dirs_exist_ok=True)
    writable_by_image_user(lab)
    proc = run_in_image("lab-vm", "check", ".", "--dir", "solution", mounts=[(lab, "/lab")],
                        workdir="/lab", options=SANDBOX, timeout=900, check=False)
    assert proc.returncode == 0, f"lab-vm check in the image:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    score = [line for line in proc.stdout.splitlines() if line.startswith("Score:")]
    got, total = score[-1].split()[1].split("/")
    assert got == total and int(total) > 0, proc.stdout


def test_grade_grades_a_folder_of_submissions_in_the_image(image, tmp_path):
    """README's instructor command, run where the submissions are: the image's scripts/grade."""
    course = tmp_path / "course"
    shutil.copytree(REPO / "labs/04-hrtimer/solution", course / "submissions/alice")
    writable_by_image_user(course)
    proc = run_in_image("/opt/vmexit/scripts/grade", "04-hrtimer", "submissions/", "--out",
                        "results/", mounts=[(course, "/lab")], workdir="/lab", options=SANDBOX,
                        timeout=900, check=False)
    assert proc.returncode == 0, f"grade in the image:\n{proc.stdout}\n{proc.stderr[-3000:]}"
    with open(course / "results/grades.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["student"], r["verdict"]) for r in rows] == [("alice", "ok")], rows
    assert rows[0]["total"] == rows[0]["max"] and int(rows[0]["max"]) > 0, rows


def test_a_notebook_runs_headless_in_the_image(image, tmp_path):
    """Chapter 2's workbook: the edu device under the lab VM, a widget, a figure (about 10 s)."""
    out = writable_by_image_user(tmp_path / "out")
    proc = run_in_image("jupyter", "nbconvert", "--to", "notebook", "--execute",
                        "--ExecutePreprocessor.timeout=600", "--output-dir", "/out",
                        "02-mmio-pci.ipynb", mounts=[(out, "/out")],
                        workdir="/opt/vmexit/notebooks", timeout=1800, check=False)
    assert proc.returncode == 0, f"nbconvert in the image:\n{proc.stderr[-4000:]}"
    nb = json.loads((out / "02-mmio-pci.ipynb").read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert [o for o in outputs if "image/png" in o.get("data", {})], "the notebook drew no figure"


@pytest.mark.skipif(not Path("/dev/kvm").exists(), reason="this host has no /dev/kvm")
def test_dev_kvm_passed_through_or_tcg(image):
    """README: `--device /dev/kvm` where the host has it. The VM runs either way: on KVM when
    the probe boot succeeds, else on TCG with the reason (here /dev/kvm may be root's only, or
    nested KVM may fail the probe), as `lab-vm doctor` reports."""
    from lab_vm.build.kernel import find_kernel

    kvm = ("--device", "/dev/kvm")
    doctor = run_in_image("lab-vm", "doctor", "--json", options=kvm, timeout=300, check=False)
    check = {c["name"]: c for c in json.loads(doctor.stdout)}["kvm"]
    print(f"doctor in the image with --device /dev/kvm: {check['detail']}")
    assert check["ok"], check
    assert check["detail"].startswith(("kvm:", "tcg:", "not usable (/dev/kvm")), check
    proc = run_in_image("lab-vm", "run", "--", "uname", "-r", options=kvm, timeout=600)
    assert proc.stdout.strip() == find_kernel().release


def test_make_book_builds_a_book_in_the_image(image, tmp_path):
    """README's `make -C /opt/vmexit book`, on test_book's small book (the whole book's build
    is test_book's): the image's build-book finds its widget scripts and MathJax."""
    from test_book import write_small_book

    env = write_small_book(writable_by_image_user(tmp_path / "small"))
    writable_by_image_user(tmp_path / "small")
    inside = {k: v.replace(str(tmp_path / "small"), "/small") for k, v in env.items()}
    options = [a for k, v in inside.items() for a in ("-e", f"{k}={v}")]
    proc = run_in_image("make", "-C", "/opt/vmexit", "book", options=options, timeout=900,
                        mounts=[(tmp_path / "small", "/small")], check=False)
    assert proc.returncode == 0, \
        f"make book in the image:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    html = tmp_path / "small/book/_build/html"
    assert (html / "chapters/01-small.html").is_file()
    assert (html / "_static/mathjax/tex-mml-chtml.js").is_file(), "MathJax was not served"


def test_jupyterlab_answers_with_the_notebooks_in_the_mounted_folder(image, tmp_path):
    mine = writable_by_image_user(tmp_path / "mine")
    name = PREFIX + uuid.uuid4().hex[:8]
    port = free_port()
    start = time.monotonic()
    podman("run", "-d", "--rm", "--name", name, "-p", f"127.0.0.1:{port}:8888",
           "-v", f"{mine}:/opt/vmexit/notebooks/mine", TAG, timeout=120)
    try:
        version = None
        while time.monotonic() - start < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api", timeout=2) as r:
                    version = json.load(r)["version"]
                break
            except OSError:
                time.sleep(0.2)
        answered = time.monotonic() - start
        logs = podman("logs", name, timeout=30, check=False)
        assert version, f"JupyterLab never answered on {port}:\n{logs.stdout}\n{logs.stderr}"
        print(f"podman run to JupyterLab answering: {answered:.1f} s (jupyter_server {version})")
        copies = sorted(p.name for p in mine.glob("*.ipynb"))
        tracked = sorted(p.name for p in (REPO / "notebooks").glob("*.ipynb"))
        assert copies == tracked, "the working copies are not in the mounted folder"
    finally:
        podman("rm", "-f", "-t", "5", name, timeout=120, check=False)


def test_it_serves_as_a_jupyterhub_image_and_a_dask_worker(image):
    """The README's JupyterHub and grading-worker commands exist, and the user is not root."""
    proc = run_in_image("sh", "-c", "jupyterhub-singleuser --version && dask worker --help "
                        "| grep -- --resources && id -u", timeout=300)
    lines = proc.stdout.split()
    assert lines[0].count(".") == 2, f"jupyterhub-singleuser --version said {proc.stdout!r}"
    assert lines[-1] == "1000", "the image must not run as root (JupyterHub)"


def test_image_size_is_under_its_bound(image):
    size = int(podman("image", "inspect", "--format", "{{.Size}}", image, timeout=60).stdout)
    print(f"image size {size / 1e9:.2f} GB")
    assert size < SIZE_BOUND, f"the image grew to {size / 1e9:.2f} GB (bound {SIZE_BOUND / 1e9} GB)"


def test_zz_no_container_is_left(image):
    """Runs last in this module (pytest keeps file order): every container above is gone."""
    left = podman("ps", "-a", "--format", "{{.Names}}", timeout=60).stdout.split()
    assert not [n for n in left if n.startswith(PREFIX)], f"containers left: {left}"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
