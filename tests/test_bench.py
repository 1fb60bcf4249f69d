"""The benchmark's own constants (its figures come from `lab-vm bench`, never from tests)."""
from __future__ import annotations

import ast
from pathlib import Path

import lab_vm.debug
from lab_vm.tools import bench


def _gdb_side_constant(name: str):
    # gdb_side.py runs inside gdb (it imports gdb) and cannot be imported here
    tree = ast.parse((Path(lab_vm.debug.__file__).parent / "gdb_side.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [t.id for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"gdb_side.py has no {name}")


def test_the_raw_client_skips_the_nop_sample_skips():
    nop = _gdb_side_constant("FENTRY_NOP")
    assert bytes.fromhex(bench.FENTRY_NOP_HEX.decode()) == nop
    assert bench.NOP_LENGTH == len(nop) == 5


def test_the_stepped_location_is_past_the_entry_nop():
    assert bench.SAMPLED_STEPPED == f"*{bench.SAMPLED}+{bench.NOP_LENGTH}"
