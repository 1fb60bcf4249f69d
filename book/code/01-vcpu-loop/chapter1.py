"""Helpers for chapter 1: figures (the source excerpts are lab_vm.tools.excerpts).

Nothing here talks to a VM: the chapter's cells capture the data (lab_vm) and hand it here
to be shown.
"""
from __future__ import annotations


from lab_vm.tools.diagram import dot, label

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
