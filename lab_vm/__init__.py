"""lab_vm: build, boot, drive and debug the vmexit lab VM.

The pieces, one job each: ``build`` (kernel, initramfs; cached), ``machine``
(:class:`LabVM`), ``channel`` (guest commands), ``debug`` (gdb via pwntools),
``modules`` (out-of-tree builds), ``errors`` (the exception tree), ``cli``.
"""
from .channel import Job, Result
from .errors import (CommandFailed, ConfigError, DebuggerError, GuestPanic, GuestTimeout,
                     LabVMError, MissingArtifact, ModuleBuildError, QEMUExited, VMError)
from .machine import LabVM

__all__ = ["LabVM", "Result", "Job", "LabVMError", "ConfigError", "MissingArtifact", "VMError",
           "QEMUExited", "GuestPanic", "GuestTimeout", "CommandFailed", "DebuggerError",
           "ModuleBuildError"]
