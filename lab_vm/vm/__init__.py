"""The lab VM: QEMU started, driven and stopped (machine), its modes (normal, recorded,
replayed), the guest channel, saved states, QMP, the accelerator, trace events, ftrace, PCI."""
