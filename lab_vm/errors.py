"""The exception tree of lab_vm.

Every error raised on purpose by this package is a :class:`LabVMError`. The
subclasses carry what a person needs to act on the failure: the command that
failed, its exit status and an excerpt of the output or guest console.

One module stands apart: ``baremetal.tinyvmm`` imports nothing of lab_vm (the grading
sandbox of lab 1 gets a copy of that file alone), so its errors are TinyVMErrors.
"""
from __future__ import annotations


class LabVMError(Exception):
    """Base class: ``str(err)`` is a complete, human-readable message."""

    def __init__(self, message: str, *, command=None, status=None, output: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.command = command
        self.status = status
        self.output = output

    def __str__(self) -> str:
        text = self.message
        if self.command is not None:
            text += "\n--- command ---\n" + _command_text(self.command)
        if self.status is not None:
            text += f"\n--- exit status: {self.status} ---"
        if self.output:
            text += "\n--- output (last lines) ---\n" + tail(self.output)
        return text


class ConfigError(LabVMError):
    """Bad arguments or a broken installation, found before anything runs."""


class MissingArtifact(ConfigError):
    """A kernel, initramfs or tool is not built/installed; the message names the command to run."""


class BuildError(LabVMError):
    """A build step (kernel, initramfs, module, QEMU) failed."""


class KconfigError(BuildError):
    """The final .config lacks symbols that the fragments asked for."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = missing


class ModuleBuildError(BuildError):
    """An out-of-tree module did not compile; ``errors`` holds the compiler's error lines."""

    def __init__(self, message: str, *, command=None, status=None, output: str = "",
                 errors: list[str] | None = None) -> None:
        super().__init__(message, command=command, status=status, output=output)
        self.errors = errors or []


class VMError(LabVMError):
    """The VM failed: QEMU would not start, exited, or the guest misbehaved."""


class QEMUExited(VMError):
    """QEMU ended while it was still needed."""


class GuestPanic(VMError):
    """The guest kernel panicked (or oopsed: the lab kernel runs with oops=panic)."""


class GuestTimeout(VMError):
    """The guest did not answer in time (boot, a command, a breakpoint)."""


class CommandFailed(VMError):
    """A guest command exited non-zero and the caller asked for ``check=True``."""

    def __init__(self, message: str, *, command, status, output: str = "",
                 stdout: bytes = b"", stderr: bytes = b"") -> None:
        super().__init__(message, command=command, status=status, output=output)
        self.stdout = stdout
        self.stderr = stderr


class RecordingError(VMError):
    """A recording cannot be made, did not finish, or does not match what would replay it."""


class ReplayDiverged(RecordingError):
    """A replay's guest said something other than the recorded run did."""


class DebuggerError(LabVMError):
    """gdb failed: it exited, a symbol does not exist, an expression does not evaluate."""


def tail(text: str, lines: int = 25) -> str:
    """The last ``lines`` lines of ``text`` — what fits in an error message."""
    return "\n".join(text.rstrip("\n").splitlines()[-lines:])


def _command_text(command) -> str:
    """A command for a message: a list shell-quoted on one line (as QEMU's VMLaunchFailure
    shows its command line), a string as it is."""
    if isinstance(command, (list, tuple)):
        import shlex

        return shlex.join(str(part) for part in command)
    return str(command)
