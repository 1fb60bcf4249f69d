"""The "terminal" pwntools runs gdb in when there is no terminal (notebooks, CI).

pwntools calls ``context.terminal + [script]``, where the script execs gdb.
gdb in the background needs a standard input that stays open (at end of file
it quits), and its embedded Python must import rpyc from our venv. This
wrapper gives it both, and ends gdb when it is ended itself or when the
process that started it goes away.
"""
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main() -> int:
    # Run as a script, Python puts this file's folder first on sys.path, where debug/qemu.py
    # would hide the qemu.qmp package: the folder that holds lab_vm takes its place.
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from lab_vm.debug.gdbenv import gdb_environment

    parent = os.getppid()
    read_end, _write_end = os.pipe()   # the write end stays open for gdb's whole life
    gdb = subprocess.Popen(sys.argv[1:], stdin=read_end, env=gdb_environment(),
                           preexec_fn=_die_with_parent)
    os.close(read_end)

    def stop(*_):
        gdb.kill()
        # Reap it here: no <defunct> gdb left for init to find. Not with gdb.wait(): the
        # main thread's gdb.wait() below holds Popen's wait lock, so a second wait() only
        # spins until its timeout (every debugger's close took 2 s).
        try:
            os.waitpid(gdb.pid, 0)
        except ChildProcessError:    # the other wait reaped it first
            pass
        os._exit(1)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is for the notebook, not gdb

    def watch_parent():
        while True:
            if os.getppid() != parent:
                stop()
            time.sleep(0.5)

    threading.Thread(target=watch_parent, daemon=True).start()
    return gdb.wait()


if __name__ == "__main__":
    sys.exit(main())
