"""Grading on Dask: a worker process killed in the middle of a batch costs nothing.

A two-worker LocalCluster (on 127.0.0.1, no dashboard) grades four submissions of
lab 2, correct and broken; one worker process is killed with SIGKILL while it grades.
The batch must still complete with every submission present once, graded exactly as a
serial run grades it, and nothing the dead worker started (its QEMU) may outlive it.
Then a rerun into the same folder grades only what is missing or changed. Real VMs.
"""
from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import distributed
import psutil
import pytest

from lab_vm.errors import ConfigError
from lab_vm.grading import dask_pool
from lab_vm.grading.batch import grade_batch
from lab_vm.grading.lab import load_lab
from lab_vm.grading.reaper import tagged as _tagged

from conftest import qemu_processes
from grading_fixtures import LAB, make_submissions, solution

KINDS = ["solution", "compile-error", "skeleton", "panic-at-insmod"]


def _outcome(graded) -> dict[str, tuple]:
    """What must not depend on where or how a submission was graded."""
    return {sub.student: (report.verdict, report.score,
                          tuple((r.name, r.status, r.points) for r in report.results))
            for sub, report in graded}


def tagged(tag: str) -> list[int]:
    """The QEMUs a worker process started (they carry its VMEXIT_WORKER tag)."""
    found = []
    for pid in _tagged(tag):
        try:
            if Path(f"/proc/{pid}/comm").read_text().startswith("qemu"):
                found.append(pid)
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"


@pytest.mark.slow
@pytest.mark.timeout(900)      # about 3 min on a quiet 2-core machine
def test_a_killed_worker_loses_nothing_and_a_rerun_grades_only_what_changed(built, tmp_path):
    lab = load_lab(LAB)
    subs = tmp_path / "submissions"
    expected = make_submissions(subs, len(KINDS), KINDS)
    serial = grade_batch(lab, subs, tmp_path / "serial", parallel=1, progress=None)
    assert {s: (r.verdict, r.score) for s, r in
            ((sub.student, rep) for sub, rep in serial)} == \
        {s: (e.verdict, e.total) for s, e in expected.items()}

    out = tmp_path / "dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, resources={"VM": 1},
                                  processes=True, host="127.0.0.1", dashboard_address=None,
                                  silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        pids = client.run(os.getpid)                     # {worker address: pid}
        result: dict = {}

        def run() -> None:
            try:
                result["graded"] = grade_batch(lab, subs, out,
                                               scheduler=cluster.scheduler_address,
                                               progress=None)
            except BaseException as exc:     # noqa: BLE001 — reported by the assert below
                result["error"] = exc

        batch = threading.Thread(target=run)
        batch.start()
        # Mid-batch: once a VM of a worker's task runs (a tagged QEMU), kill that worker.
        victim = None
        deadline = time.monotonic() + 300
        while victim is None and batch.is_alive() and time.monotonic() < deadline:
            for addr, keys in client.processing().items():
                tags = client.run(lambda: os.environ.get("VMEXIT_WORKER"), workers=[addr])
                tag = tags.get(addr)
                if keys and tag and tagged(tag) and addr in pids:
                    victim, victim_tag = addr, tag
                    break
            time.sleep(0.2)
        assert victim is not None, "no worker ever ran a VM"
        assert len(list((out / "rows").glob("*.json"))) < len(KINDS), "the kill came too late"
        os.kill(pids[victim], signal.SIGKILL)
        batch.join(timeout=700)
        assert not batch.is_alive(), "the batch did not finish"
        assert "error" not in result, result.get("error")
        assert not _alive(pids[victim])

    # Every submission has exactly one row, graded as the serial run graded it.
    with open(out / "grades.csv") as f:
        students = [row["student"] for row in csv.DictReader(f)]
    assert sorted(students) == sorted(expected)
    assert sorted(p.stem for p in (out / "rows").glob("*.json")) == sorted(expected)
    assert _outcome(result["graded"]) == _outcome(serial)
    data = json.loads((out / "grades.json").read_text())
    assert sorted(s["student"] for s in data["submissions"]) == sorted(expected)
    # The dead worker's QEMU did not outlive it (its reaper ended it).
    for _ in range(40):
        if not tagged(victim_tag):
            break
        time.sleep(0.25)
    assert not tagged(victim_tag), "the killed worker's QEMU is still running"

    # A rerun grades only what is missing or changed: one row removed, one submission edited.
    missing = "skeleton-02"
    (out / "rows" / f"{missing}.json").unlink()
    changed = subs / "compile-error-01"
    (changed / "edu.c").write_text(solution())
    lines: list[str] = []

    class Lines:
        def write(self, text: str) -> None:
            lines.extend(text.splitlines())

        def flush(self) -> None:
            pass

    again = grade_batch(lab, subs, out, parallel=2, progress=Lines())
    assert lines[0].startswith(f"grading 2 of {len(KINDS)} submissions"), lines
    regraded = sorted(line.split()[1] for line in lines if line.startswith("["))
    assert regraded == sorted([missing, changed.name]), lines
    outcome = _outcome(again)
    assert outcome[missing] == _outcome(serial)[missing]
    assert outcome[changed.name][:2] == ("ok", 120)
    assert not qemu_processes(), "grading left QEMU running"


def test_a_cluster_without_vm_workers_is_refused_before_grading(built, tmp_path, monkeypatch):
    """Tasks asking for a resource no worker has would wait forever: an error instead."""
    monkeypatch.setattr(dask_pool, "WORKER_WAIT", 2.0)   # no worker will come: don't wait 60 s
    make_submissions(tmp_path / "submissions", 1, ["solution"])
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1", dashboard_address=None,
                                  silence_logs=50) as cluster:
        with pytest.raises(ConfigError, match="offers the resource VM.*--resources VM=2"):
            grade_batch(load_lab(LAB), tmp_path / "submissions", tmp_path / "out",
                        scheduler=cluster.scheduler_address, progress=None)
    assert list((tmp_path / "out" / "rows").glob("*")) == []


def test_workers_n_is_a_local_cluster_on_127_0_0_1_with_one_vm_per_worker():
    """``scripts/grade --workers N``: N worker processes, each offering one VM, and every
    socket the cluster listens on (scheduler, workers, their HTTP /health servers) bound to
    127.0.0.1. (No VM is started here.)"""
    with dask_pool.dask_client(workers=2) as client:
        info = client.scheduler_info(n_workers=-1)
        assert info["address"].startswith("tcp://127.0.0.1:")
        workers = info["workers"]
        assert len(workers) == 2
        for addr, w in workers.items():
            assert addr.startswith("tcp://127.0.0.1:"), addr
            assert w["resources"] == {"VM": 1} and w["nthreads"] == 1
        pids = set(client.run(os.getpid).values())
        assert len(pids) == 2 and os.getpid() not in pids      # processes, not threads
        listening = [(pid, c.laddr) for pid in pids | {os.getpid()}
                     for c in psutil.Process(pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]
        assert len(listening) >= 3, listening          # the scheduler and both workers
        assert all(laddr.ip == "127.0.0.1" for _, laddr in listening), listening


def test_a_worker_that_joins_late_is_waited_for():
    """Lab machines and Slurm jobs join a scheduler when they can: the check waits for the
    first worker that offers VM instead of refusing a cluster that is still starting."""
    with distributed.LocalCluster(n_workers=0, threads_per_worker=1, resources={"VM": 1},
                                  processes=False, protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None, silence_logs=50) as cluster, \
            distributed.Client(cluster) as client:
        assert not client.scheduler_info(n_workers=-1)["workers"]
        timer = threading.Timer(2.0, cluster.scale, args=(1,))
        timer.start()
        start = time.monotonic()
        try:
            dask_pool._check_resources(client, cluster.scheduler_address)
        finally:
            timer.join()
        assert 1.5 < time.monotonic() - start < dask_pool.WORKER_WAIT
