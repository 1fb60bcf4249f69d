"""A student's working copies of the notebooks: made once, never overwritten.

The notebooks in ``notebooks/`` are tracked by git and kept without outputs. JupyterLab
(``make lab``) opens copies of them in ``notebooks/mine/`` (git-ignored), so saving a notebook
never dirties the tree and a ``git pull`` never conflicts with a student's edits:

- a copy is made when it does not exist yet;
- when the tracked notebook changed since the copy was made (a pull brought a new version),
  the new version is put *beside* the copy (``NN-name.new-YYYYMMDD-HHMMSS.ipynb``), once;
- ``lab-vm notebooks --reset NAME`` starts a copy afresh, after moving the old one to
  ``NN-name.backup-YYYYMMDD-HHMMSS.ipynb``. Nothing a student wrote is ever deleted.

``mine/.upstream.json`` records, per notebook, the digest of the tracked version each copy
(or the last offered new version) came from.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from .. import paths
from ..errors import ConfigError

LOG = logging.getLogger(__name__)

WORK_DIR = "mine"
STATE_FILE = ".upstream.json"


@dataclass
class Change:
    """What ``sync`` did for one notebook: "created", "kept", "offered" (a new version put
    beside the copy) or "reset"."""

    name: str
    action: str
    path: Path


def source_dir() -> Path:
    """The tracked notebooks: ``notebooks/`` of the checkout lab_vm was installed from."""
    return paths.checkout_dir() / "notebooks"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


def _copy(src: Path, dst: Path) -> None:
    """Copy atomically: a half-written notebook never appears under the final name."""
    tmp = dst.with_name(f".{dst.name}.partial")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


class Workbench:
    """The working copies of one checkout's notebooks."""

    def __init__(self, source: Path | None = None, work: Path | None = None) -> None:
        self.source = Path(source) if source else source_dir()
        self.work = Path(work) if work else self.source / WORK_DIR
        if not self.source.is_dir():
            raise ConfigError(f"no notebooks folder at {self.source}")

    def tracked(self) -> list[Path]:
        return sorted(self.source.glob("*.ipynb"))

    def _state(self) -> dict:
        try:
            return json.loads((self.work / STATE_FILE).read_text())
        except (FileNotFoundError, ValueError):
            return {}

    def _save_state(self, state: dict) -> None:
        tmp = self.work / f".{STATE_FILE}.partial"
        tmp.write_text(json.dumps(state, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.work / STATE_FILE)

    def sync(self) -> list[Change]:
        """Make missing copies; offer changed upstream versions beside existing copies."""
        self.work.mkdir(parents=True, exist_ok=True)
        state, changes = self._state(), []
        for src in self.tracked():
            dst, upstream = self.work / src.name, _digest(src)
            if not dst.exists():
                _copy(src, dst)
                changes.append(Change(src.name, "created", dst))
            elif state.get(src.name) not in (None, upstream):
                offered = dst.with_name(f"{src.stem}.new-{_stamp()}.ipynb")
                _copy(src, offered)
                changes.append(Change(src.name, "offered", offered))
                LOG.info("%s changed upstream; the new version is beside your copy: %s",
                         src.name, offered.name)
            else:
                changes.append(Change(src.name, "kept", dst))
            state[src.name] = upstream
        self._save_state(state)
        return changes

    def reset(self, name: str) -> Change:
        """Start ``name``'s copy afresh from the tracked notebook; the old copy is kept aside."""
        matches = [p for p in self.tracked() if p.name == name or p.stem == name
                   or p.stem.startswith(f"{name}-")]
        if len(matches) != 1:
            known = ", ".join(p.stem for p in self.tracked())
            raise ConfigError(f"no single notebook called {name!r} (there are: {known})")
        src = matches[0]
        self.work.mkdir(parents=True, exist_ok=True)
        dst = self.work / src.name
        if dst.exists():
            os.replace(dst, dst.with_name(f"{src.stem}.backup-{_stamp()}.ipynb"))
        _copy(src, dst)
        state = self._state()
        state[src.name] = _digest(src)
        self._save_state(state)
        return Change(src.name, "reset", dst)
