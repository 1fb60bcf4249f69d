"""The small guests: a KVM_RUN loop in Python (tinyvmm) and a ROM under QEMU (romguest)."""
