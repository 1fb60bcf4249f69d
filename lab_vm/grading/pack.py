"""``lab-vm pack``: the archive a student hands in, made the way the grader takes it apart.

A hand-in goes wrong in a few ways: the wrong file (the skeleton, an old copy),
a file that does not build, build products and editor files nobody asked for.
``pack`` avoids each one:

1. it takes the lab's source files (``sources`` in lab.toml) from the working copy
   by the grader's own rule (sources.find_sources), and nothing else;
2. it refuses a copy whose sources are all still the skeleton as handed out;
3. it builds them as the grader does, in the sandbox with the lab's own build
   files (a module lab: its Kbuild against the lab kernel; a Python lab: the
   harness imports the code), and refuses what does not build;
4. it writes a reproducible ``.tar.gz`` (``<lab>/<source>``), unpacks it again with
   the grader's unpacker and checks that the grader finds the same bytes;
5. it says what went in, and what of the working copy did not.
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..build.kernel import find_kernel
from ..errors import ConfigError, ModuleBuildError
from . import hostrun
from .archive import unpack
from .handout import SKELETON_DIGESTS, _tarball, skeleton_files
from .lab import Lab
from .runner import build
from .sources import NoModule, find_sources, prepare

LOG = logging.getLogger(__name__)


class PackError(ConfigError):
    """The working copy cannot be handed in as it is; the message says what to change."""


@dataclass
class Packed:
    archive: Path
    files: dict[str, Path]                      # name in the archive -> the working copy's file
    sizes: dict[str, int] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    left_out: list[str] = field(default_factory=list)   # the working copy's other files
    build: str = ""                             # what the build check did

    def listing(self) -> str:
        lines = [f"{self.archive} holds:"]
        for name, path in self.files.items():
            lines.append(f"  {name:<32} {self.sizes[name]:>7} bytes  sha256 "
                         f"{self.digests[name][:16]}  (from {path})")
        lines.append(f"checked: {self.build}")
        if self.left_out:
            lines.append("not included (the grader uses the lab's own copies, or does not need "
                         f"them): {', '.join(self.left_out[:12])}"
                         + (" ..." if len(self.left_out) > 12 else ""))
        return "\n".join(lines)


def skeleton_digests(lab: Lab) -> dict[str, str] | None:
    """{source: sha256} of the sources as handed out; None if this copy cannot tell."""
    if not lab.is_handout:
        files = skeleton_files(lab)
        return {name: _sha256(files[name].encode()) for name in lab.sources if name in files}
    path = lab.root / SKELETON_DIGESTS
    if not path.is_file():
        return None
    digests = {}
    for line in path.read_text().splitlines():
        digest, _, name = line.partition("  ")
        if name:
            digests[name] = digest
    return digests


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_builds(lab: Lab, tree: Path) -> str:
    """Build the copy's sources as the grader does; PackError with the errors if they do not."""
    with tempfile.TemporaryDirectory(prefix="vmexit-pack-") as scratch:
        work = Path(scratch) / "build"
        try:
            prepare(lab, tree, work)
            if lab.kind == "python":
                hostrun.check_sources(lab, work)
                return f"{', '.join(lab.sources)} imports in the grading sandbox"
            built = build(lab, work, kernel=find_kernel(), timeout=lab.build_timeout)
        except NoModule as exc:
            raise PackError(exc.message) from None
        except ModuleBuildError as exc:
            errors = "\n".join(f"  {e}" for e in exc.errors[:20]) or exc.output[-3000:]
            raise PackError(f"{exc.message}; fix it before you hand it in:\n{errors}") from None
        warnings = f", {len(built.warnings)} warning(s)" if built.warnings else ""
        return (f"{built.ko.name} builds with the lab's own {', '.join(lab.build)} in the "
                f"grading sandbox{warnings}")


def pack(lab: Lab, tree: Path, output: Path) -> Packed:
    """Check the working copy ``tree`` and write its hand-in archive to ``output``."""
    tree = tree.resolve()
    if not tree.is_dir():
        raise PackError(f"{tree} is not a folder")
    found = find_sources(lab, tree)
    missing = [name for name in lab.sources if name not in found]
    if missing:
        raise PackError(f"{tree} has no {', '.join(missing)} (looked {4} folders deep, as the "
                        "grader does)")
    data = {name: found[name].read_bytes() for name in lab.sources}
    skeleton = skeleton_digests(lab)
    if skeleton is None:
        LOG.warning("%s: no %s here, so the copy cannot be compared with the skeleton",
                    lab.name, SKELETON_DIGESTS)
    elif all(skeleton.get(name) == _sha256(data[name]) for name in lab.sources):
        raise PackError(f"{', '.join(str(found[n]) for n in lab.sources)}: still the skeleton as "
                        "handed out: nothing of your work would be handed in (wrong folder? "
                        "use --dir)")
    checked = check_builds(lab, tree)
    members = {f"{lab.name}/{name}": data[name] for name in lab.sources}
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(_tarball(lab.name, {name: data[name] for name in lab.sources}))
    _verify(lab, output, data)
    packed_paths = {found[name].resolve() for name in lab.sources}
    left_out = sorted(p.relative_to(tree).as_posix() for p in tree.rglob("*")
                      if p.is_file() and p.resolve() not in packed_paths
                      and p.resolve() != output.resolve()
                      and not any(part.startswith(".") or part == "__pycache__"
                                  for part in p.relative_to(tree).parts))
    return Packed(output, {m: found[m.split("/", 1)[1]] for m in members},
                  {m: len(b) for m, b in members.items()},
                  {m: _sha256(b) for m, b in members.items()}, left_out, checked)


def _verify(lab: Lab, archive: Path, data: dict[str, bytes]) -> None:
    """Unpack the archive as the grader does: it must find exactly these bytes."""
    with tempfile.TemporaryDirectory(prefix="vmexit-pack-verify-") as tmp:
        unpack(archive, Path(tmp) / "submission")
        found = find_sources(lab, Path(tmp) / "submission")
        got = {name: path.read_bytes() for name, path in found.items()}
    if got != data:
        raise PackError(f"{archive}: the grader would not find the files just packed "
                        "(a bug in lab-vm pack)")
