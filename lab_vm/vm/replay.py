"""Replay a recording under gdb, forwards and backwards (see lab_vm.vm.recording for how
QEMU's record/replay is set up and what it forced on us)."""
from __future__ import annotations

import os
import re

from ..errors import GuestTimeout, RecordingError, ReplayDiverged
from .machine import LabVM
from .recording import Recording, ReplayMode, outputs



class Replay(LabVM):
    """A recorded run, re-executed instruction for instruction, stopped before the first one.

    ``with Replay(path) as rp, rp.debugger() as dbg:`` gives the usual Debugger
    (breakpoints, sample()) plus its reverse operations. ``rp.run_to_end()``
    replays without a debugger and checks that the agent said exactly what it
    said when recorded. A replay takes no new commands.
    """

    def __init__(self, path: str | os.PathLike, *, boot_timeout: float = 60.0,
                 name: str = "replay") -> None:
        recording = Recording(path)
        meta = recording.meta
        super().__init__(accel="tcg", memory=meta["memory"], cpus=meta["cpus"],
                         firmware=meta["firmware"], append=meta["append"],
                         qemu_args=meta["qemu_args"], gdb_wait=True, cold_boot=True,
                         boot_timeout=boot_timeout, qemu=meta["identity"]["qemu"], name=name,
                         mode=ReplayMode(recording.path))
        recording.check(self)
        self.recording = recording

    def run(self, command: str, **kwargs):
        raise RecordingError(f"a replay re-executes the recorded run and takes no new commands "
                             f"(asked to run {command!r}); record a new run instead")

    start = run

    def replay_icount(self) -> int:
        """How many guest instructions the replay has executed (0: at its very beginning)."""
        text = self.qmp("human-monitor-command", **{"command-line": "info replay"})
        match = re.search(r"instruction count = (\d+)", text)
        if match is None:
            raise RecordingError(f"QEMU did not say where the replay is: {text.strip()!r}")
        return int(match.group(1))

    def run_to_end(self, timeout: float = 300.0) -> dict[int, bytes]:
        """Let the replay run out (no debugger); return each recorded command's stdout.

        Raises ReplayDiverged if the agent's bytes differ from the recording's.
        """
        if self.qmp("query-status")["status"] in ("prelaunch", "paused", "debug"):
            self.qmp("cont")
        try:
            status = self.wait(timeout)
        except GuestTimeout:
            raise RecordingError(f"the replay did not finish within {timeout:g} s",
                                 output=self.console_log) from None
        self.shutdown()
        if status != 0:
            # QEMU checks the log as it goes ("Missing character write event ...")
            raise ReplayDiverged(f"QEMU stopped the replay of {self.recording.path} with status "
                                 f"{status}", output=self.qemu_log)
        return self.check_output()

    def check_output(self) -> dict[int, bytes]:
        """Compare what the agent sent during the replay with the recording (after shutdown)."""
        replayed = self.mode.replayed or b""
        # the replay starts at the "ready" snapshot: compare from there
        recorded = self.recording.channel_output()[self.recording.meta["ready_offset"]:]
        if replayed != recorded:
            at = next((i for i, (a, b) in enumerate(zip(replayed, recorded)) if a != b),
                      min(len(replayed), len(recorded)))
            raise ReplayDiverged(
                f"the replay of {self.recording.path} diverged: the agent's output differs "
                f"from the recording at byte {at} ({len(replayed)} bytes replayed, "
                f"{len(recorded)} recorded)", output=self.console_log)
        return outputs(replayed)
