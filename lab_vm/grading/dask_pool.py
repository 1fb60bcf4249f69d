"""Grading on a Dask cluster: one task per submission, one VM per task.

``scripts/grade --workers N`` starts a :class:`distributed.LocalCluster` of N
worker processes on this machine; ``--scheduler tcp://HOST:8786`` sends the
work to a cluster that runs already (``dask scheduler`` on one machine and
``dask worker tcp://HOST:8786 --nthreads 2 --resources VM=2`` on each lab
machine, or dask-jobqueue's SLURMCluster on a Slurm site: labs/README.md).
Each submission is one task that asks for the abstract resource ``VM`` (the
scheduler never runs more of them on a worker than the VMs it was given),
``pure=False`` (grading the same file twice is two gradings) and ``retries=1``
(one more try if the task itself raises, which grade_task avoids: its failures
are rows). A lost worker is not an exception in the task: the scheduler hands
the tasks that were running on it to another worker, up to the scheduler's
``distributed.scheduler.allowed-failures`` (3 by default) lost workers per task,
then gives up with KilledWorker, which becomes the row's verdict ``error`` (and
a rerun tries it again). The results stream back to the machine that submitted
them, which writes them (store.py) as they come.

Inside a task, grading is what it is everywhere: :func:`submission.grade_submission`
(safe unpack, sandboxed build, the module only in a fresh VM). Workers read the
submissions, the lab and the kernel at the paths the submitting machine gave:
on a cluster they need the same shared file system (home or /scratch over NFS,
as lab machines and Slurm clusters have).
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from ..build.kernel import Kernel
from ..errors import ConfigError
from ..paths import cache_dir
from . import results as R
from .lab import Lab
from .reaper import ENV
from .results import Report, TestResult
from .submission import grade_submission, warm_up

if TYPE_CHECKING:
    import distributed

LOG = logging.getLogger(__name__)
VM = "VM"                       # the abstract resource: VMs a worker may run at once
CONNECT_TIMEOUT = 30.0          # s to reach an existing scheduler
WORKER_WAIT = 60.0              # s to wait for a worker that offers VM (workers still joining)


@contextlib.contextmanager
def dask_client(*, workers: int | None = None, scheduler: str | None = None,
                timeout: float = CONNECT_TIMEOUT) -> Iterator["distributed.Client"]:
    """A client of a new LocalCluster (``workers`` processes) or of ``scheduler``."""
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError("grading on Dask needs the package `distributed` (requirements.txt):"
                          f" {exc}") from exc
    if not LOG.isEnabledFor(logging.DEBUG):
        # Importing distributed sets its loggers to INFO: each worker's start and stop, and
        # a lost worker's warnings, which the batch's own lines already account for.
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler:
        try:
            client = distributed.Client(scheduler, timeout=timeout)
        except OSError as exc:
            raise ConfigError(f"cannot reach the Dask scheduler {scheduler}: {exc}") from exc
        with client:
            _check_resources(client, scheduler)
            yield client
        return
    if not workers or workers < 1:
        raise ConfigError(f"--workers must be at least 1, not {workers}")
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                  resources={VM: 1}, processes=True, host="127.0.0.1",
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def _check_resources(client, scheduler: str) -> None:
    """Tasks that ask for a resource no worker has would wait forever: say so instead.

    Workers may still be joining (lab machines starting up, Slurm jobs leaving the queue):
    wait up to WORKER_WAIT seconds for one that offers the resource."""
    timeout = WORKER_WAIT
    deadline = time.monotonic() + timeout
    while True:
        workers = client.scheduler_info(n_workers=-1).get("workers", {})
        if any(w.get("resources", {}).get(VM) for w in workers.values()):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if not workers:
        raise ConfigError(f"the Dask scheduler {scheduler} has no workers after {timeout:.0f} "
                          f"s: start some with `dask worker {scheduler} --resources {VM}=2`")
    raise ConfigError(f"no worker of {scheduler} offers the resource {VM}: start them "
                      f"with `dask worker {scheduler} --resources {VM}=2` (VMs per machine)")


def grade_on_dask(client, lab: Lab, kernel: Kernel | None, subs: list, finished: Callable,
                  *, lab_key: str) -> None:
    """Grade ``subs`` on the cluster; call ``finished(sub, report)`` as each one ends."""
    import distributed

    futures = {client.submit(grade_task, lab, kernel, lab_key, sub, resources={VM: 1},
                             pure=False, retries=1, key=f"grade-{i}-{os.urandom(4).hex()}"): sub
               for i, sub in enumerate(subs)}
    try:
        for future in distributed.as_completed(futures):
            sub = futures[future]
            try:
                report = Report.from_dict(future.result())
            except Exception as exc:     # noqa: BLE001 — KilledWorker: lost too many workers
                LOG.warning("grading %s on the cluster failed: %s", sub.student, exc)
                report = Report(lab.name, R.ERROR,
                                [TestResult(s.name, s.title, s.points, s.hidden)
                                 for s in lab.tests()],
                                f"the cluster could not grade it: {type(exc).__name__}: {exc}")
            finished(sub, report)
    except BaseException:
        client.cancel(list(futures))
        raise


# -- on the worker -------------------------------------------------------------------------
class _WorkerState:
    """What one worker process sets up at its first task and keeps: a scratch folder, the
    reaper that cleans up if the process dies, compiled helpers per lab."""

    def __init__(self) -> None:
        self.tag = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        # Short: QEMU's unix sockets go under it, and a socket path has at most 107 bytes.
        self.folder = Path(tempfile.mkdtemp(prefix="vw-"))
        self.reaper = subprocess.Popen(
            [sys.executable, "-m", "lab_vm.grading.reaper", str(os.getpid()), self.tag,
             str(self.folder)], stdin=subprocess.DEVNULL, start_new_session=True,
            env={k: v for k, v in os.environ.items() if k != ENV})
        os.environ[ENV] = self.tag          # every QEMU this process starts inherits it
        tempfile.tempdir = str(self.folder)  # ... and keeps its sockets and logs in it
        self.helpers: dict[str, dict[str, Path]] = {}
        self.warm = False
        self.lock = threading.Lock()


_STATE: _WorkerState | None = None
_STATE_LOCK = threading.Lock()


def _state() -> _WorkerState:
    global _STATE
    with _STATE_LOCK:
        if _STATE is None:
            _STATE = _WorkerState()
        return _STATE


def grade_task(lab: Lab, kernel: Kernel | None, lab_key: str, sub) -> dict:
    """The task: grade one submission on this worker; a plain dict of its Report."""
    from .runner import compile_helpers

    state = _state()
    start = time.monotonic()
    try:
        _check_paths(lab, kernel, sub)
        with state.lock:
            helpers = state.helpers.get(lab_key)
            if helpers is None:
                helpers = state.helpers[lab_key] = compile_helpers(
                    lab, state.folder / f"helpers-{lab_key[:12]}")
            if not state.warm and lab.kind == "module":
                _warm_up_once(lab, lambda lab: warm_up(lab, kernel=kernel))
                state.warm = True
    except Exception as exc:            # noqa: BLE001 — the worker, not the student: say so
        LOG.exception("worker %s cannot grade", state.tag)
        blank = [TestResult(s.name, s.title, s.points, s.hidden) for s in lab.tests()]
        return Report(lab.name, R.ERROR, blank,
                      f"the worker {socket.gethostname()} cannot grade: "
                      f"{type(exc).__name__}: {exc}",
                      duration=time.monotonic() - start).to_dict()
    scratch = state.folder / "scratch"
    scratch.mkdir(exist_ok=True)
    return grade_submission(lab, sub, scratch, kernel=kernel, helpers=helpers).to_dict()


def _check_paths(lab: Lab, kernel: Kernel | None, sub) -> None:
    paths = [sub.entry, lab.root] + ([kernel.tree] if kernel is not None else [])
    missing = [str(p) for p in paths if not os.path.lexists(p)]
    if missing:
        raise ConfigError(f"this worker does not see {', '.join(missing)}: Dask workers need "
                          "the submissions, the repository and the build cache at the same "
                          "paths as the machine that submits (a shared file system)")


def _warm_up_once(lab: Lab, warm_up: Callable[[Lab], None]) -> None:
    """Boot once before the first grading, one worker of a machine at a time: two first boots
    at once would both save the booted state (submission.warm_up)."""
    lock_path = cache_dir() / "grade-warm-up.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            warm_up(lab)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
