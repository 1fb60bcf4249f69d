"""Where lab_vm keeps things: the package's own data files and the build cache."""
from __future__ import annotations

import os
from pathlib import Path

from lab_vm.errors import ConfigError

PACKAGE_DIR = Path(__file__).resolve().parent
KCONFIG_DIR = PACKAGE_DIR / "kconfig"
GUEST_DIR = PACKAGE_DIR / "guest"


def cache_dir() -> Path:
    """The build cache: $VMEXIT_CACHE, else $XDG_CACHE_HOME/vmexit, else ~/.cache/vmexit.

    It lives outside the work tree so that a fresh clone (CI, a second checkout)
    reuses a kernel built from the same inputs instead of spending minutes on it.
    """
    env = os.environ.get("VMEXIT_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "vmexit"


def checkout_dir() -> Path:
    """The checkout lab_vm runs from (it is installed editable: /opt/vmexit in the image), so a
    chapter finds its book/code/ folder and labs/ wherever the reader's notebook lives."""
    root = PACKAGE_DIR.parent
    if not (root / "pyproject.toml").is_file():
        raise ConfigError(f"lab_vm runs from {PACKAGE_DIR}, not from a vmexit checkout: "
                         "install it editable (pip install -e CHECKOUT)")
    return root
