"""Helpers for chapter 1: source excerpts read from the trees, figures.

Nothing here talks to a VM: the chapter's cells capture the data (lab_vm) and hand it here
to be shown.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path

from lab_vm.tools.diagram import dot, label

# --- source excerpts --------------------------------------------------------------------------


def c_function(path: Path, name: str) -> str:
    """The definition of C function ``name`` in ``path``: from its signature to the closing brace.

    QEMU and the kernel put the return type and name at column 0 and the opening brace of a
    function on a line of its own; the body ends at the first ``}`` at column 0.
    """
    lines = Path(path).read_text().splitlines()
    head = re.compile(rf"^[A-Za-z_].*\b{re.escape(name)}\(")
    for i, line in enumerate(lines):
        if head.match(line) and not line.rstrip().endswith(";"):
            j = i
            while not lines[j].startswith("{"):
                j += 1
                if lines[j].rstrip().endswith(";"):      # a prototype after all
                    break
            else:
                end = next(k for k in range(j, len(lines)) if lines[k].startswith("}"))
                start = i - 1 if i and re.match(r"^(static\s+)?[\w\s\*]+$", lines[i - 1]) \
                    and lines[i - 1].strip() else i
                return "\n".join(lines[start:end + 1])
    raise LookupError(f"no definition of {name}() in {path}")


def excerpt(text: str, start: str, end: str, *, after: str | None = None,
            dedent: bool = True) -> str:
    """The lines from the first one containing ``start`` (after one containing ``after``, if
    given) to the first one from there containing ``end``, inclusive; ``dedent=False`` keeps the
    indentation (for pieces of one function shown together)."""
    lines = text.splitlines()
    i = 0
    if after is not None:
        i = next(n for n, line in enumerate(lines) if after in line)
    first = next(n for n in range(i, len(lines)) if start in lines[n])
    last = next(n for n in range(first, len(lines)) if end in lines[n])
    piece = "\n".join(lines[first:last + 1])
    return textwrap.dedent(piece) if dedent else piece


def rst_note(path: Path, containing: str) -> str:
    """The ``.. note::`` block of an .rst file whose text contains ``containing``, as text."""
    lines = Path(path).read_text().splitlines()
    for i, line in enumerate(lines):
        if line.strip() == ".. note::":
            body = []
            for nxt in lines[i + 1:]:
                if nxt.strip() and not nxt.startswith((" ", "\t")):
                    break
                body.append(nxt)
            text = textwrap.dedent("\n".join(body)).strip()
            if containing in " ".join(text.split()):
                return text
    raise LookupError(f"no note containing {containing!r} in {path}")


# --- figures ------------------------------------------------------------------------------------


def functions(frames: list[dict]) -> list[str]:
    return [f["function"] or "??" for f in frames]


def exit_path_figure(tcg: list[dict], kvm: list[dict] | None, device: str = "edu_mmio_read"):
    """The two call paths from the vCPU thread to the device callback, from the backtraces:
    shared frames once, each accelerator's own frames in its colour (``kvm=None``: TCG's
    path alone, where KVM could not run)."""
    tcg_f = functions(tcg)[::-1]                                     # outermost first
    kvm_f = functions(kvm)[::-1] if kvm else []
    shared = set(tcg_f) & set(kvm_f) if kvm_f else set()
    body = ['rankdir=TB;',
            'guest [label="guest instruction\\nmov 0xe0000000, %eax" shape=ellipse];']
    colours = {"TCG": "#1f77b4", "KVM": "#d62728"}
    for name in sorted(shared):
        body.append(f'{label(name)} [style="rounded,bold"];')
    for accel, path in (("TCG", tcg_f), ("KVM", kvm_f)):
        for name in path:
            if name not in shared:
                body.append(f'{label(name)} [color="{colours[accel]}" '
                            f'fontcolor="{colours[accel]}"];')
        for a, b in zip(path, path[1:]):
            body.append(f'{label(a)} -> {label(b)} [color="{colours[accel]}"];')
    if "kvm_cpu_exec" in kvm_f:
        body.append(f'guest -> {label("kvm_cpu_exec")} [style=dashed '
                    f'color="{colours["KVM"]}" label="KVM_RUN returns\\nKVM_EXIT_MMIO" '
                    f'fontcolor="{colours["KVM"]}"];')
    generated = next((n for n in tcg_f if n == "code_gen_buffer" or n == "??"), None)
    if generated:
        body.append(f'guest -> {label(generated)} [style=dashed color="{colours["TCG"]}" '
                    f'label="translated into\\nhost code" fontcolor="{colours["TCG"]}"];')
    body.append(f'{label(device)} [style="rounded,filled" fillcolor="#eeeeee"];')
    body.append('legend [shape=plaintext label=<<font color="#1f77b4">TCG only</font>  '
                '<font color="#d62728">KVM only</font>  <b>both</b>>];')
    return dot("\n".join(body))


def kvm_loop_figure(counts: dict[str, int], halt_exits: int):
    """QEMU's KVM vCPU loop as a state diagram, edges labelled with the exits one run made."""
    io, mmio = counts.get("KVM_EXIT_IO", 0), counts.get("KVM_EXIT_MMIO", 0)
    exits = label(f"KVM_EXIT_IO ×{io}\nKVM_EXIT_MMIO ×{mmio}")
    leaves = label(f"returns: stop, kick, debug;\nKVM_EXIT_HLT ×{halt_exits}"
                   "\nwith kernel-irqchip=off")
    body = f'''
rankdir=LR;
subgraph cluster_thread {{ label="vCPU thread (kvm_vcpu_thread_fn)"; style="rounded,dashed";
  wait [label="qemu_wait_io_event()\\nsleeps on halt_cond while\\nthe vCPU is stopped or halted"];
  exec [label="kvm_cpu_exec()\\nswitch (run->exit_reason)"];
  dev  [label="address_space_rw()\\n→ device callback\\n(BQL taken for it)"];
}}
subgraph cluster_kernel {{ label="host kernel (KVM)"; style="rounded,dashed";
  run [label="ioctl(KVM_RUN)\\nguest runs; in-kernel\\nirqchip handles HLT"];
}}
wait -> exec [label="cpu_can_run()"];
exec -> run [label="enter guest"];
run -> exec [label={exits}];
exec -> dev [label="IO / MMIO"];
dev -> exec [label="ret = 0: loop"];
exec -> wait [label={leaves}];
'''
    return dot(body)
