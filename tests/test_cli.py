"""The lab-vm command line: doctor and help (the VM commands are tested in test_vm.py)."""
import json
import re
import subprocess
import sys

import pytest

from conftest import REPO


def lab_vm(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "lab_vm.tools.cli", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def test_doctor_reports_every_check_as_ok_here(built):
    proc = lab_vm("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(proc.stdout)}
    assert {"debian packages", "lab kernel", "initramfs", "debug qemu", "gdb python rpyc",
            "kvm"} <= set(checks)
    bad = {name: c["detail"] for name, c in checks.items() if not c["ok"]}
    assert not bad and proc.returncode == 0, bad
    # the KVM verdict always says which accelerator and why
    assert checks["kvm"]["detail"].split(":")[0] in ("kvm", "tcg") or "not usable" in \
        checks["kvm"]["detail"]


def test_doctor_names_the_fix_when_the_kernel_is_missing(tmp_path):
    env_cache = {"VMEXIT_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "lab_vm.tools.cli", "doctor"], capture_output=True,
                          text=True, timeout=300, cwd=REPO,
                          env={**__import__("os").environ, **env_cache})
    assert proc.returncode == 1
    assert "BAD  lab kernel" in proc.stdout and "fix: lab-vm build" in proc.stdout
    assert "BAD  debug qemu" in proc.stdout and "fix: lab-vm build qemu-debug" in proc.stdout


def test_one_package_list_for_setup_doctor_and_the_image():
    from lab_vm.tools.doctor import PACKAGE_LIST, debian_packages

    packages = debian_packages()
    lab_vm_needs = {p for p, (tag, _) in packages.items() if not tag}
    assert {"qemu-system-x86", "linux-source-6.1", "busybox-static", "gdb"} <= lab_vm_needs
    assert all(why for _, why in packages.values()), "each package says what it is for"
    # scripts/setup reads the list: no package of it is written out there again
    setup = (REPO / "scripts/setup").read_text()
    assert PACKAGE_LIST.name in setup and "APT_PACKAGES=(" not in setup
    # the image installs what the lab VM and grading need (the Containerfile pins versions)
    containerfile = (REPO / "scripts/image/Containerfile").read_text()
    missing = [p for p, (tag, _) in packages.items() if tag in ("", "grading")
               and not re.search(rf"(?<![\w-]){re.escape(p)}(?![\w-])", containerfile)]
    assert not missing, f"the Containerfile does not install {missing}"


def test_every_command_has_help():
    from lab_vm.tools.cli import make_parser

    parser = make_parser()
    sub = next(a for a in parser._actions if a.dest == "cmd")
    for name, p in sub.choices.items():
        assert p.format_help().startswith("usage: lab-vm " + name), name


def test_verbose_goes_before_or_after_the_command():
    # The handouts say "`lab-vm check . -k TEST` ...; -v shows more": typed at the end.
    from lab_vm.tools.cli import make_parser

    parser = make_parser()
    assert parser.parse_args(["check", ".", "-k", "poll", "-v"]).verbose == 1
    assert parser.parse_args(["-vv", "check", "."]).verbose == 2
    assert parser.parse_args(["check", "."]).verbose == 0
    assert parser.parse_args(["run", "--", "ls", "-v"]).command == ["--", "ls", "-v"]


def test_guest_command_keeps_the_words_as_typed():
    from lab_vm.tools.cli import guest_command

    assert guest_command([]) == "true"
    assert guest_command(["ls | wc -l"]) == "ls | wc -l"          # one word: a command line
    assert guest_command(["sh", "-c", "exit 42"]) == "sh -c 'exit 42'"
    assert guest_command(["echo", "a b", "$HOME"]) == "echo 'a b' '$HOME'"


@pytest.mark.smoke
def test_run_passes_quoting_exit_status_and_signals_through(built):
    proc = lab_vm("run", "--", "sh", "-c", "exit 42")
    assert proc.returncode == 42, proc.stderr
    proc = lab_vm("run", "--", "sh", "-c", 'echo "a b"; false')
    assert (proc.returncode, proc.stdout) == (1, "a b\n"), proc.stderr
    proc = lab_vm("run", "--", "sh", "-c", "kill -TERM $$")
    assert proc.returncode == 128 + 15, (proc.returncode, proc.stderr)


def test_a_lab_vm_error_is_one_line_of_advice_not_a_traceback(tmp_path):
    proc = lab_vm("replay", str(tmp_path / "no-such-recording"))
    assert proc.returncode == 2
    assert proc.stderr.startswith("lab-vm: RecordingError:") and "Traceback" not in proc.stderr


def test_error_messages_show_the_command_and_status():
    from lab_vm.errors import CommandFailed

    err = CommandFailed("insmod failed", command=["insmod", "/mnt/share/my mod.ko"], status=1,
                        output="insmod: ERROR: could not insert module")
    text = str(err)
    assert "insmod '/mnt/share/my mod.ko'" in text and "exit status: 1" in text
    assert "could not insert module" in text


def test_shell_mounts_the_share_as_lab_vm_mounts_it(built, tmp_path):
    """`lab-vm shell --share DIR`: the guest's /init mounts the share (no agent runs) with
    LabVM's tag, mount point and options, handed over on the kernel command line."""
    from lab_vm.vm.modes import SHARE_MOUNT, SHARE_OPTIONS, SHARE_TAG

    (tmp_path / "f.txt").write_text("hi from the host\n")
    proc = subprocess.Popen([sys.executable, "-m", "lab_vm.tools.cli", "shell", "--share",
                             str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, cwd=REPO)
    seen = b""
    try:
        while b"to leave" not in seen:          # the shell is there
            chunk = proc.stdout.read1(4096)
            assert chunk, seen.decode(errors="replace")
            seen += chunk
        proc.stdin.write(b"cat /mnt/share/f.txt; grep ' 9p ' /proc/mounts; reboot -f\n")
        proc.stdin.flush()
        seen += proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.terminate()                    # lab-vm ends its QEMU on SIGTERM
            proc.wait(30)
    text = seen.decode(errors="replace")
    assert proc.returncode == 0 and "hi from the host" in text, text
    mount = next(line.split() for line in text.splitlines()
                 if line.startswith(SHARE_TAG + " ") and " 9p " in line)     # /proc/mounts
    assert mount[1:3] == [SHARE_MOUNT, "9p"], mount
    assert "msize=" + SHARE_OPTIONS.split("msize=")[1] in mount[3], mount
