"""Debugging: gdb on the guest kernel through pwntools (guest), gdb on QEMU itself
(qemu), and the pieces that run inside gdb (gdb_side, terminal, gdbenv)."""
