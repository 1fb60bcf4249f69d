#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image.
# Base image: Ubuntu 24.04 (noble) — choose it in the assignment's autograder settings.
# The package names are noble's: libelf1t64 is libelf1 after the 64-bit time_t rename;
# gcc-12 is the GCC major version Debian bookworm built the shipped lab kernel with
# (noble's default gcc is 13; a module should be built by the kernel's own compiler).
# Checked against published noble package records (the Debian machine that makes this zip
# cannot install them): gcc-12 12.3.0-17ubuntu1, libelf1t64 0.190-1.1build4, qemu-system-x86
# 1:8.2.2+ds-0ubuntu1. Of the kernel tree's build tools in the zip, only objtool links more
# than libc: libelf.so.1 (libelf1t64) and libz.so.1 (zlib1g, in every Ubuntu image).
set -euo pipefail
SRC=${AUTOGRADER_ROOT:-/autograder}/source/vmexit
export DEBIAN_FRONTEND=noninteractive

apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  python3 python3-venv \
  qemu-system-x86 \
  busybox-static \
  gcc-12 libc6-dev make libelf1t64 binutils \
  bubblewrap
# Kbuild calls `gcc`: make it the kernel's GCC 12 in this image.
update-alternatives --install /usr/bin/gcc gcc /usr/bin/gcc-12 100

python3 -m venv "$SRC/.venv"
"$SRC/.venv/bin/pip" install -q --disable-pip-version-check -r "$SRC/requirements.txt"
# The guest's initramfs (from noble's busybox-static), and one boot saved so that each
# submission's VM restores in a fraction of a second instead of booting.
PYTHONPATH="$SRC" "$SRC/.venv/bin/python" -m lab_vm.grading.gradescope prepare --source "$SRC"
