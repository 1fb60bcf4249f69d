"""lab_vm: build, boot, drive and debug the vmexit lab VM.

The folders are the layers, each importing only those listed before it:

- ``errors``, ``paths``: the error classes and where things live;
- ``build/``: the kernel, initramfs, debug QEMU, kernel modules and the ROM guest, cached by
  their inputs;
- ``vm/``: the lab VM — ``machine`` (:class:`LabVM`), its modes (``modes``, ``recording``,
  ``replay``), ``channel`` (guest commands), ``state`` (saved states), ``qmp``, ``accel``,
  ``trace`` (QEMU trace events), ``ftrace`` (tracing inside the guest), ``pci``;
- ``debug/``: gdb on the guest kernel through pwntools (``guest``), gdb on QEMU itself
  (``qemu``), and what runs inside gdb (``gdb_side``, ``terminal``, ``gdbenv``); the one
  reference upwards: ``LabVM.gdb()`` imports ``debug.guest`` when it is called (``guest``
  needs nothing from ``vm/``);
- ``baremetal/``: the small guests — ``tinyvmm`` (a KVM_RUN loop in Python), ``romguest``
  (a ROM under QEMU);
- ``grading/``: labs, checkers and batch grading;
- ``tools/``: what sits on top — ``cli`` (the ``lab-vm`` command), ``bench``, ``doctor``,
  ``diagram``, ``workbench``.
"""
from .vm.channel import Job, Result
from .errors import (CommandFailed, ConfigError, DebuggerError, GuestPanic, GuestTimeout,
                     LabVMError, MissingArtifact, ModuleBuildError, QEMUExited, RecordingError,
                     ReplayDiverged, VMError)
from .vm.machine import LabVM
from .vm.replay import Replay

__all__ = ["CommandFailed", "ConfigError", "DebuggerError", "GuestPanic", "GuestTimeout", "Job",
           "LabVM", "LabVMError", "MissingArtifact", "ModuleBuildError", "QEMUExited",
           "RecordingError", "Replay", "ReplayDiverged", "Result", "VMError"]
