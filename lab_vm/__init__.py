"""lab_vm: build, boot, drive and debug the vmexit lab VM.

The layers, from the bottom: ``errors`` and ``paths``; ``build`` (kernel, initramfs, debug
QEMU, the ROM guest; cached by their inputs); the VM — ``machine`` (:class:`LabVM`),
``modes`` and ``recording`` (normal, recorded and replayed runs), ``channel`` (guest
commands), ``state`` (saved states), ``qmp``, ``accel``, ``trace`` (QEMU trace events),
``ftrace`` (tracing inside the guest), ``pci``; debugging — ``debug`` (gdb on the guest
through pwntools), ``qemudebug`` (gdb on QEMU itself), ``replay``; the small guests —
``tinyvmm`` (a KVM_RUN loop in Python), ``romguest`` (a ROM under QEMU); ``grading``; and
the tools on top — ``cli``, ``bench``, ``doctor``, ``diagram``, ``workbench``.
"""
from .channel import Job, Result
from .errors import (CommandFailed, ConfigError, DebuggerError, GuestPanic, GuestTimeout,
                     LabVMError, MissingArtifact, ModuleBuildError, QEMUExited, RecordingError,
                     ReplayDiverged, VMError)
from .machine import LabVM
from .replay import Replay

__all__ = ["CommandFailed", "ConfigError", "DebuggerError", "GuestPanic", "GuestTimeout", "Job",
           "LabVM", "LabVMError", "MissingArtifact", "ModuleBuildError", "QEMUExited",
           "RecordingError", "Replay", "ReplayDiverged", "Result", "VMError"]
