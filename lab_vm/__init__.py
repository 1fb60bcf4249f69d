"""lab_vm: build, boot, drive and debug the vmexit lab VM.

The pieces, one job each: ``build`` (kernel, initramfs; cached), ``machine``
(:class:`LabVM`), ``channel`` (guest commands), ``debug`` (gdb via pwntools),
``replay`` (record a run, replay it forwards and backwards), ``modules``
(out-of-tree builds), ``errors`` (the exception tree), ``cli``.
"""
from .channel import Job, Result
from .errors import (CommandFailed, ConfigError, DebuggerError, GuestPanic, GuestTimeout,
                     LabVMError, MissingArtifact, ModuleBuildError, QEMUExited, RecordingError,
                     ReplayDiverged, VMError)
from .machine import LabVM
from .replay import Replay

__all__ = ["LabVM", "Replay", "Result", "Job", "LabVMError", "ConfigError", "MissingArtifact", "VMError",
           "QEMUExited", "GuestPanic", "GuestTimeout", "CommandFailed", "DebuggerError",
           "ModuleBuildError", "RecordingError", "ReplayDiverged"]
