"""Handouts: a lab's skeleton generated from its solution, and the folder + tarball students get.

A handout holds the README (with how to check your work appended), the
skeleton as the student's working copy at its top, ``lab.toml`` and the
public tests. It never holds a solution line or a hidden test, and
:func:`make_handout` proves it before it returns: it searches every file it
wrote for every line that only a TODO's solution has.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import logging
import shutil
import tarfile
from dataclasses import dataclass
from pathlib import Path

from .lab import LAB_FILE, Lab
from .markers import (MarkerError, hidden_tests, parse, render, solution_lines, strip_hidden,
                      syntax_for)

LOG = logging.getLogger(__name__)
# Kernel build products and editor litter: never part of a skeleton or a handout.
IGNORED = ("*.o", "*.ko", "*.mod", "*.mod.c", "*.cmd", ".*", "modules.order", "Module.symvers",
           "*~", "__pycache__", "*.pyc")

CHECK_SECTION = """

## Checking your work

From this folder, with the `lab_vm` package installed (the vmexit repository's `scripts/setup`):

```sh
lab-vm check .
```

or, with nothing installed but podman (or docker) and your course's `vmexit` image (the vmexit
repository's README, "In a container"):

```sh
podman run --rm --security-opt seccomp=unconfined --security-opt unmask=ALL \\
    -v "$PWD":/lab -w /lab vmexit lab-vm check .
```

It builds {sources} with the lab's own `{build}` against the lab kernel, boots a
fresh lab VM{devices}, runs the public tests of `tests/` inside it and prints
each test's points, what to fix for each failure, and as its last line
`Score: X/Y`. It exits with status 0 only with full marks; `-v` shows more of
what happens. Your work is graded with the same tests and a few hidden ones:
passing every public test is necessary, not sufficient.
"""

# A Python lab (kind = "python") runs on the host: no kernel, no VM, but /dev/kvm.
CHECK_SECTION_PYTHON = """

## Checking your work

From this folder, with the `lab_vm` package installed (the vmexit repository's `scripts/setup`)
on a Linux machine where you can open `/dev/kvm`:

```sh
lab-vm check .
```

It imports {sources} in the grading sandbox (a bubblewrap container that sees `/dev/kvm`
and nothing else of your machine), runs each public test's guest programs under your VMM
with the lab's own `{build}`, and prints each test's points, what to fix for each failure,
and as its last line `Score: X/Y`. It exits with status 0 only with full marks. Your work is
graded with the same tests and a few hidden ones: passing every public test is necessary,
not sufficient.
"""
# Beside a handout's sources: their digests as handed out, so that `lab-vm pack` can refuse
# to pack a working copy nobody has changed.
SKELETON_DIGESTS = ".skeleton.sha256"


@dataclass(frozen=True)
class Handout:
    folder: Path
    tarball: Path


def _wanted(path: Path, root: Path) -> bool:
    rel = path.relative_to(root)
    return path.is_file() and not any(part.startswith(".") or part == "__pycache__"
                                      for part in rel.parts) \
        and not any(path.match(pattern) for pattern in IGNORED)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if _wanted(p, root))


def skeleton_files(lab: Lab, *, reveal: int = 0) -> dict[str, str]:
    """{relative path: contents} of the skeleton (or, with ``reveal=N``, TODOs 1..N solved)."""
    out: dict[str, str] = {}
    numbers: dict[int, str] = {}
    for path in _files(lab.solution):
        rel = path.relative_to(lab.solution).as_posix()
        syntax = syntax_for(path)
        text = path.read_text()
        if syntax is None:
            out[rel] = text
            continue
        for region in parse(text, syntax, rel):
            if region.number in numbers:
                raise MarkerError(f"{rel}:{region.line}: TODO {region.number} is also in "
                                  f"{numbers[region.number]} (numbers are lab-wide)")
            numbers[region.number] = f"{rel}:{region.line}"
        out[rel] = render(text, syntax, reveal=reveal, filename=rel)
    return out


def secret_lines(lab: Lab, *, reveal: int = 0) -> set[str]:
    """Every line only the solution of a TODO numbered above ``reveal`` holds (stripped)."""
    secrets: set[str] = set()
    for path in _files(lab.solution):
        syntax = syntax_for(path)
        if syntax is not None:
            secrets |= solution_lines(path.read_text(), syntax, path.name, reveal=reveal)
    return secrets


def write_skeleton(lab: Lab, dest: Path | None = None, *, reveal: int = 0) -> Path:
    """(Re)generate ``skeleton/`` (or ``dest``) from the solution."""
    dest = dest or lab.skeleton
    files = skeleton_files(lab, reveal=reveal)
    if dest.exists():
        shutil.rmtree(dest)
    for rel, text in files.items():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    LOG.info("%s: wrote %s (%d files, reveal=%d)", lab.name, dest, len(files), reveal)
    return dest


def skeleton_is_current(lab: Lab) -> list[str]:
    """Files where ``skeleton/`` differs from what the solution generates ([] when current)."""
    want = skeleton_files(lab)
    have = {p.relative_to(lab.skeleton).as_posix(): p.read_text()
            for p in _files(lab.skeleton)} if lab.skeleton.is_dir() else {}
    return sorted(rel for rel in want.keys() | have.keys() if want.get(rel) != have.get(rel))


def make_handout(lab: Lab, out: Path, *, reveal: int = 0) -> Handout:
    """Write ``out/<lab>/`` and ``out/<lab>.tar.gz``; raise if a secret would leak.

    ``reveal=N`` hands out TODOs 1..N solved (a lab given out in steps).
    """
    folder = out / lab.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    files: dict[str, bytes] = {rel: text.encode()
                               for rel, text in skeleton_files(lab, reveal=reveal).items()}
    readme = (lab.root / "README.md").read_text() if (lab.root / "README.md").exists() else ""
    section = CHECK_SECTION_PYTHON if lab.kind == "python" else CHECK_SECTION
    files["README.md"] = (readme.rstrip("\n") + section.format(
        sources=", ".join(f"`{s}`" for s in lab.sources), build=", ".join(lab.build),
        devices=f" with the {', '.join(lab.devices)} device" if lab.devices else "")).encode()
    files[LAB_FILE] = (lab.root / LAB_FILE).read_bytes()
    files[SKELETON_DIGESTS] = "".join(
        f"{hashlib.sha256(files[name]).hexdigest()}  {name}\n"
        for name in lab.sources if name in files).encode()
    tests_dir = lab.checker.parent
    for path in _files(tests_dir):
        rel = path.relative_to(lab.root).as_posix()
        if path.suffix == ".py":
            files[rel] = strip_hidden(path.read_text(), rel).encode()
        else:
            files[rel] = path.read_bytes()
    _check_no_leak(lab, files, reveal)
    for rel, data in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    tarball = out / f"{lab.name}.tar.gz"
    tarball.write_bytes(_tarball(lab.name, files))
    LOG.info("%s: handout in %s and %s", lab.name, folder, tarball)
    return Handout(folder, tarball)


def _check_no_leak(lab: Lab, files: dict[str, bytes], reveal: int) -> None:
    secrets = secret_lines(lab, reveal=reveal)
    for rel, data in files.items():
        lines = {line.strip() for line in data.decode(errors="replace").splitlines()}
        leaked = sorted(secrets & lines)
        if leaked:
            raise MarkerError(f"the handout's {rel} would hold solution lines: {leaked[:5]}")
        if rel.endswith(".py") and hidden_tests(data.decode(), rel):
            raise MarkerError(f"the handout's {rel} would hold hidden tests")


def _tarball(top: str, files: dict[str, bytes]) -> bytes:
    """A reproducible .tar.gz: sorted names, fixed owner and time, no gzip timestamp."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        dirs = sorted({"/".join(rel.split("/")[:i]) for rel in files
                       for i in range(1, rel.count("/") + 1)})
        for name in [top] + [f"{top}/{d}" for d in dirs]:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            tar.addfile(info)
        for rel in sorted(files):
            info = tarfile.TarInfo(f"{top}/{rel}")
            info.size, info.mode, info.mtime = len(files[rel]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[rel]))
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()
