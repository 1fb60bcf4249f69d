"""How a LabVM runs: normally, recording its run, or replaying a recording.

LabVM asks its mode for everything that differs between the three — the initrd, extra QEMU
and kernel arguments, the agent's channel, what happens once the guest is ready, the order of
shutdown, what is kept after QEMU quit — instead of testing a flag in each place. A normal
run is :class:`Mode`; ``lab_vm.vm.recording`` has :class:`~lab_vm.vm.recording.RecordMode` and
:class:`~lab_vm.vm.recording.ReplayMode`.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable

from .channel import Channel
from ..errors import GuestTimeout

# The host's share in the guest (LabVM(share=DIR)): a 9p export mounted here.
SHARE_TAG = "vmexit"
SHARE_MOUNT = "/mnt/share"
SHARE_OPTIONS = "trans=virtio,version=9p2000.L,msize=512000"


class Mode:
    """A normal run: the agent on a virtio-serial port, a live 9p share, saved states."""

    name = "normal"
    live_share = True           # the share is mounted live (a recording carries its files)
    restorable = True           # the VM may start from a saved state
    icount = False              # the mode runs QEMU under -icount (virtual time)
    # Close the host end of the agent's channel before QEMU quits (a recording must not:
    # its UART would see the host go away mid-run; see RecordMode).
    close_channel_first = True

    def initrd(self, vm) -> Path:
        return vm.initramfs.path

    def kernel_args(self) -> list[str]:
        return []

    def qemu_args(self, tmp: Path) -> list[str]:
        return []

    def channel_args(self, tmp: Path) -> list[str]:
        return ["-device", "virtio-serial-pci,id=vser",
                "-chardev", f"socket,id=agent,path={tmp / 'agent.sock'},server=on,wait=off",
                "-device", "virtserialport,bus=vser.0,nr=1,chardev=agent,name=vmexit.agent"]

    def open_channel(self, tmp: Path, deadline: float, health: Callable[[], None],
                     qemu_log: Callable[[], str]) -> Channel:
        return Channel(connect_unix(tmp / "agent.sock", deadline, health, qemu_log), health)

    def before_start(self, vm) -> None:
        """Before QEMU starts (a recording makes its folder here)."""

    def ready(self, vm) -> None:
        """The guest's agent answered for the first time."""

    def note_command(self, command: str) -> None:
        """A command was sent to the guest (a recording keeps the list)."""

    def guest_path(self, vm, host_path: Path) -> str | None:
        """Where the guest already has a host file without copying it in, or None."""
        return None

    def finished(self, vm) -> None:
        """QEMU has quit and its logs are kept (``vm.console_log``, ``vm.exitcode``)."""


def connect_unix(path: Path, deadline: float, health: Callable[[], None],
                 qemu_log: Callable[[], str]) -> socket.socket:
    """Connect to a unix socket QEMU creates while it starts; ``health()`` raises if QEMU died."""
    while True:
        health()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise GuestTimeout(f"QEMU did not open {path.name} in time",
                                   output=qemu_log()) from None
            time.sleep(0.005)
