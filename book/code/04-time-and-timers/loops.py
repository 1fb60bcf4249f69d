"""Read a busy-wait loop out of a compiled function: where it jumps back, and what it loads.

Chapter 4 says of each disassembly whether the loop reads memory on every turn. These
helpers find that in ``objdump -d`` output, so the prose can be checked by an assert
instead of by eye.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

INSN_RE = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)\s*(.*?)\s*$")
JUMP_RE = re.compile(r"^([0-9a-f]+) <")
NO_LOAD = ("lea", "nop", "jmp", "call", "prefetch", "push", "pop")
READS_ALL = ("cmp", "test", "and", "or", "xor", "add", "sub")      # the destination is read too


@dataclass
class Insn:
    address: int
    mnemonic: str
    operands: str

    def __str__(self) -> str:
        return f"{self.mnemonic} {self.operands}".strip()

    @property
    def target(self) -> int | None:
        """Where a jump goes, if this is a direct jump."""
        m = JUMP_RE.match(self.operands)
        return int(m.group(1), 16) if self.mnemonic.startswith("j") and m else None

    @property
    def loads(self) -> bool:
        """Whether the instruction reads memory (AT&T order: the source comes first)."""
        if self.mnemonic.startswith(NO_LOAD) or self.mnemonic.startswith("j"):
            return False
        ops = re.split(r",(?![^(]*\))", self.operands)
        if len(ops) == 1 or self.mnemonic.startswith(READS_ALL):
            return any("(" in op for op in ops)
        return any("(" in op for op in ops[:-1])


def disassemble(binary: Path, function: str) -> list[Insn]:
    """The instructions of ``function`` in ``binary`` (a program with symbols, or a .ko)."""
    out = subprocess.run(["objdump", "-d", "--no-show-raw-insn", f"--disassemble={function}",
                          str(binary)], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    if f"<{function}>:\n" not in out:
        raise ValueError(f"no function {function} in {binary} (stripped? build with strip=False)")
    body = out.split(f"<{function}>:\n", 1)[1].split("\n\n", 1)[0]
    insns = []
    for line in body.splitlines():
        m = INSN_RE.match(re.sub(r"\s+#.*", "", line))
        if m:
            insns.append(Insn(int(m.group(1), 16), m.group(2), m.group(3)))
    return insns


def listing(insns: list[Insn]) -> str:
    return "\n".join(f"  {i.address:6x}:  {i}" for i in insns)


def loop_of(insns: list[Insn]) -> list[Insn]:
    """The innermost loop: from the target of the last backward jump to that jump."""
    back = [i for i in insns if i.target is not None and i.target <= i.address]
    if not back:
        raise ValueError("no backward jump: this function has no loop")
    jump = min(back, key=lambda i: i.address - i.target)
    return [i for i in insns if jump.target <= i.address <= jump.address]
