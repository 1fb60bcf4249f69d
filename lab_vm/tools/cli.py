"""``lab-vm``: the command line of the lab VM. One ``make_parser()``, one function per command."""
from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys

from ..errors import LabVMError
from ..vm.modes import SHARE_MOUNT


def guest_command(words: list[str]) -> str:
    """The shell command line for the guest from ``lab-vm run -- WORDS``, exactly as typed.

    One word is a shell command line of its own (``lab-vm run -- 'ls | wc -l'``); several are
    an argument vector, quoted so the guest's shell sees the same words
    (``lab-vm run -- sh -c 'exit 42'`` exits 42).
    """
    if not words:
        return "true"
    if len(words) == 1:
        return words[0]
    return shlex.join(words)


def cmd_build(args) -> int:
    from ..build import initramfs, kernel

    if args.what == "qemu-debug":
        import subprocess

        from .. import paths
        from ..build import qemu

        # deb-src entry + build deps (root, apt): a script, so that it can be read first
        setup = paths.PACKAGE_DIR.parent / "scripts" / "setup-qemu-debug"
        if setup.exists() and subprocess.run([str(setup)], timeout=1800).returncode != 0:
            return 1
        q = qemu.build_qemu_debug(jobs=args.jobs, force=args.force)
        print(f"qemu-debug {q.version}  {q.binary}")
        print(f"run with   LabVM(qemu={str(q.binary)!r}, qemu_args={q.qemu_args!r})")
        return 0
    k = kernel.build_kernel(jobs=args.jobs, force=args.force,
                            variant="checking" if args.checking else None)
    i = initramfs.build_initramfs(force=args.force)
    print(f"kernel    {k.release}  {k.tree}")
    print(f"vmlinux   {k.vmlinux}")
    print(f"initramfs {i.path}")
    return 0


def cmd_run(args) -> int:
    from ..vm.machine import LabVM

    command = guest_command(args.command)
    with LabVM(accel=args.accel, memory=args.memory, cpus=args.cpus, share=args.share,
               devices=args.device, cold_boot=args.cold) as vm:
        result = vm.run(command, timeout=args.timeout)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    return result.status


def cmd_shell(args) -> int:
    from ..vm.machine import LabVM

    vm = LabVM(accel=args.accel, memory=args.memory, cpus=args.cpus, share=args.share,
               devices=args.device)
    return vm.interactive()


def cmd_gdb(args) -> int:
    """Boot, then hand the terminal to gdb attached to the guest (same set-up as Debugger)."""
    import signal
    import subprocess

    from ..debug.guest import gdb_init_args
    from ..debug.gdbenv import gdb_environment
    from ..vm.machine import LabVM

    with LabVM(accel=args.accel, memory=args.memory, cpus=args.cpus, share=args.share,
               devices=args.device, cold_boot=args.cold) as vm:
        cmd = ["gdb", *gdb_init_args(vm.kernel), "-ex",
               f"target remote 127.0.0.1:{vm.enable_gdbstub()}"]
        if args.share:
            cmd += ["-ex", f"lx-symbols {vm.share}"]
        job = None
        if args.command:
            # The guest is paused first, so the command runs at gdb's first `continue`: a
            # breakpoint set before it in a module not loaded yet (pending; lx-symbols loads
            # the module's symbols when it loads) catches its init and probe.
            vm.qmp("stop")
            job = vm.start(guest_command(args.command))
            cmd += ["-ex", "set breakpoint pending on"]
        cmd.append(str(vm.kernel.vmlinux))
        print("lab-vm: the guest's commands: `lab-vm run` in another terminal is a separate VM; "
              "leave gdb with `quit` (the VM stops with it)."
              + (f" `{job.command}` runs in the guest when you `continue`."
                 if job else ""), file=sys.stderr)
        # Ctrl-C belongs to gdb (it interrupts the guest), not to us: ignore it while gdb runs.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            status = subprocess.run(cmd, env=gdb_environment()).returncode
        finally:
            signal.signal(signal.SIGINT, old)
        if job is not None and job.done:
            result = job.wait(1)
            print(f"lab-vm: `{job.command}` exited with status {result.status}", file=sys.stderr)
            sys.stderr.write(result.output)
        return status


def cmd_record(args) -> int:
    """Boot a recorded VM, run the command in it, keep the recording in the output folder."""
    from ..vm.machine import LabVM

    command = guest_command(args.command)
    with LabVM(memory=args.memory, cpus=args.cpus, share=args.share, record=args.output) as vm:
        result = vm.run(command, timeout=args.timeout)
    sys.stdout.buffer.write(result.stdout)
    sys.stdout.flush()
    sys.stderr.buffer.write(result.stderr)
    print(f"lab-vm: recorded in {args.output}: replay it with `lab-vm replay {args.output}`",
          file=sys.stderr)
    return result.status


def cmd_replay(args) -> int:
    """Start a replay stopped at its first instruction and run gdb on it (GDB_ARGS appended)."""
    import signal
    import subprocess

    from ..debug.guest import gdb_init_args
    from ..debug.gdbenv import gdb_environment
    from ..vm.replay import Replay

    with Replay(args.recording) as rp:
        cmd = ["gdb", *gdb_init_args(rp.kernel), "-ex",
               f"target remote 127.0.0.1:{rp.gdb_port}", *args.gdb_args,
               str(rp.kernel.vmlinux)]
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)     # Ctrl-C belongs to gdb
        try:
            return subprocess.run(cmd, env=gdb_environment(),
                                  timeout=args.timeout).returncode
        finally:
            signal.signal(signal.SIGINT, old)


def cmd_module(args) -> int:
    from ..build.modules import build_module

    result = build_module(args.directory)
    for warning in result.warnings:
        print(warning, file=sys.stderr)
    for ko in result.modules:
        print(ko)
    return 0


def cmd_check(args) -> int:
    """Build the working copy, run the lab's tests in a fresh VM; exit 0 only with full marks."""
    from pathlib import Path

    from ..grading.lab import load_lab
    from ..grading.results import format_report
    from ..grading.runner import check

    lab = load_lab(args.lab)
    tree = Path(args.dir) if args.dir else lab.default_workdir()
    print(f"lab-vm check: {lab.name}: "
          f"{'importing' if lab.kind == 'python' else 'building'} {tree} and running the "
          f"{'public and hidden' if args.hidden else 'public'} tests"
          + (f" matching {', '.join(args.k)}" if args.k else "")
          + (" on the fast kernel" if args.fast else ""), file=sys.stderr)
    report = check(lab, tree, hidden=args.hidden, only=args.k,
                   kernel="fast" if args.fast else None)
    print(format_report(report))
    return 0 if report.full_marks else 1


def cmd_notebooks(args) -> int:
    """Make (or refresh) the working copies of the notebooks that `make lab` opens."""
    from .workbench import Workbench

    bench = Workbench()
    changes = [bench.reset(args.reset)] if args.reset else bench.sync()
    for change in changes:
        if change.action != "kept" or args.verbose:
            print(f"{change.action:8} {change.path}")
    if not args.reset:
        print(f"lab-vm: your notebooks are in {bench.work} (never overwritten; "
              "`lab-vm notebooks --reset NAME` starts one afresh, keeping the old copy)",
              file=sys.stderr)
    return 0


def cmd_pack(args) -> int:
    """Check the working copy builds and is not the skeleton; write the archive to hand in."""
    from pathlib import Path

    from ..grading.lab import load_lab
    from ..grading.pack import pack

    lab = load_lab(args.lab)
    tree = Path(args.dir) if args.dir else lab.default_workdir()
    output = Path(args.output or f"{lab.name}-submission.tar.gz")
    print(f"lab-vm pack: {lab.name}: checking {tree}", file=sys.stderr)
    packed = pack(lab, tree, output)
    print(packed.listing())
    print(f"hand in {packed.archive}: it is exactly what the grader takes")
    return 0


def cmd_doctor(args) -> int:
    from .doctor import run_doctor

    return run_doctor(json_output=args.json)


def cmd_bench(args) -> int:
    from . import bench

    figures = bench.run(args.what, boots=args.boots, roundtrips=args.roundtrips)
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        for key, value in figures.items():
            print(f"{key:28} {value}")
    return 0


def _lab_arguments(p: argparse.ArgumentParser) -> None:
    """A lab and its working copy, as `check` and `pack` take them."""
    p.add_argument("lab", help="the lab folder (labs/02-edu-driver, or . in a handout)")
    p.add_argument("--dir", help="the working copy (default: the lab folder if it holds the "
                   "sources, else its skeleton/)")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lab-vm", description="Build, boot and drive the vmexit lab VM (QEMU + a "
        "Linux kernel built for the book).")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-v: what happens, -vv: QEMU command lines)")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def vm_options(p):
        p.add_argument("--accel", choices=["auto", "tcg", "kvm"], default="auto",
                       help="accelerator (auto probes KVM and falls back to TCG)")
        p.add_argument("--memory", type=int, default=256, help="guest memory in MiB")
        p.add_argument("--cpus", type=int, default=1, help="guest CPUs")
        p.add_argument("--share", metavar="DIR", help="host directory mounted in the guest "
                       f"at {SHARE_MOUNT}")
        p.add_argument("--device", action="append", default=[], metavar="DEV",
                       help="extra QEMU -device (repeatable), e.g. edu")
        p.add_argument("--cold", action="store_true",
                       help="boot for real instead of restoring the saved booted guest")

    p = sub.add_parser("doctor", help="what is installed, what is missing and how to fix it")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("build", help="build (or reuse) the lab kernel and initramfs, or the "
                       "debug QEMU")
    p.add_argument("what", nargs="?", default="kernel", choices=["kernel", "qemu-debug"],
                   help="kernel: the lab kernel and initramfs (default); qemu-debug: "
                   "Debian's QEMU built with debug info, for gdb on QEMU itself")
    p.add_argument("--jobs", "-j", type=int, help="parallel make jobs (default: cores + 1)")
    p.add_argument("--force", action="store_true", help="rebuild even if cached")
    p.add_argument("--checking", action="store_true", help="the checking kernel instead: the "
                   "lab kernel plus lockdep, SLUB debugging, kmemleak..., which grading boots")
    p.set_defaults(func=cmd_build)

    p = sub.add_parser("run", help="boot, run one command in the guest, print its output; "
                       "exits with the command's status")
    vm_options(p)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds the command may take")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- CMD [ARG...]: one word is a shell command line, several are "
                   "quoted as typed")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("shell", help="boot and open the guest console (leave with reboot -f)")
    vm_options(p)
    p.set_defaults(func=cmd_shell)

    p = sub.add_parser("gdb", help="boot and open an interactive gdb on the guest kernel "
                       "(lx-* scripts loaded)")
    vm_options(p)
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="-- CMD...: a guest command run at gdb's first `continue` (e.g. "
                   f"insmod {SHARE_MOUNT}/edu.ko with --share .)")
    p.set_defaults(func=cmd_gdb)

    p = sub.add_parser("record", help="boot under QEMU's record/replay, run one command, keep "
                       "the recording (replay it with `lab-vm replay`)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="the recording folder (created; an older recording there is replaced)")
    p.add_argument("--memory", type=int, default=256, help="guest memory in MiB")
    p.add_argument("--cpus", type=int, default=1, help="guest CPUs")
    p.add_argument("--share", metavar="DIR", help="host directory whose files the guest sees "
                   f"at {SHARE_MOUNT} (copied in: a recording cannot use a live share)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds the command may take")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD...")
    p.set_defaults(func=cmd_record)

    p = sub.add_parser("replay", help="replay a recording under gdb, stopped before its first "
                       "instruction; reverse-stepi, reverse-continue and watchpoints work")
    p.add_argument("recording", help="a folder made by `lab-vm record`")
    p.add_argument("--timeout", type=float, default=None,
                   help="end gdb after this many seconds (for scripted -batch runs)")
    p.add_argument("gdb_args", nargs=argparse.REMAINDER,
                   help="-- GDB_ARGS... (e.g. -batch -ex 'watch jiffies_64' -ex reverse-continue)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("module", help="build an out-of-tree module directory against the "
                       "lab kernel")
    p.add_argument("directory")
    p.set_defaults(func=cmd_module)

    p = sub.add_parser("check", help="build a lab's working copy, run its tests in the VM, "
                       "print the points; exits 0 only with full marks")
    _lab_arguments(p)
    p.add_argument("--hidden", action="store_true", help="run the hidden tests too (instructors)")
    p.add_argument("-k", action="append", default=[], metavar="TEST",
                   help="run only the tests whose name or title contains TEST (repeatable)")
    p.add_argument("--fast", action="store_true", help="boot the book's fast kernel instead of "
                   "the checking kernel (no lockdep, SLUB debugging, kmemleak: those bugs go "
                   "unseen)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("notebooks", help="make your working copies of the notebooks "
                       "(notebooks/mine/, never overwritten; a new upstream version goes beside)")
    p.add_argument("--reset", metavar="NAME", help="start NAME's copy afresh (the old one is "
                   "kept as a .backup-… file)")
    p.set_defaults(func=cmd_notebooks)

    p = sub.add_parser("pack", help="make the archive to hand in: the lab's source files only, "
                       "checked to build and to differ from the skeleton")
    _lab_arguments(p)
    p.add_argument("-o", "--output", metavar="FILE",
                   help="the archive to write (default: ./<lab>-submission.tar.gz)")
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("bench", help="measure boot, command round trip and cached build")
    p.add_argument("what", nargs="?", default="vm", choices=["vm", "gdb", "replay"],
                   help="vm: boot, round trip, cached build (default); gdb: sampling rates; "
                   "replay: record overhead, replay time, one reverse watch query")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--boots", type=int, default=5)
    p.add_argument("--roundtrips", type=int, default=200)
    p.set_defaults(func=cmd_bench)
    # -v after the command too: the handouts say `lab-vm check . -k TEST`, and `-v shows more`,
    # which a student types at the end. Not given there, the one before the command stands.
    for p in sub.choices.values():
        p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                       help="log more (as before the command)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    if getattr(args, "command", None) and args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if getattr(args, "gdb_args", None) and args.gdb_args[:1] == ["--"]:
        args.gdb_args = args.gdb_args[1:]
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(name)s: %(message)s")
    # pwntools' loggers let everything through and filter in a handler of their own (by its
    # context.log_level); passed on to ours, every gdb start printed its whole script.
    logging.getLogger("pwnlib").propagate = False
    # SIGTERM (timeout(1), a job scheduler, kill) ends Python without running clean-up code:
    # make it an exit, so that every `with LabVM` block shuts its QEMU down on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        return args.func(args)
    except LabVMError as exc:
        print(f"lab-vm: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lab-vm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
