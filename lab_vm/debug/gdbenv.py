"""The environment gdb runs in: its embedded Python must see the venv's packages (rpyc)."""
from __future__ import annotations

import os
import site


def gdb_environment() -> dict[str, str]:
    """os.environ plus PYTHONPATH pointing at this interpreter's site-packages.

    Debian's gdb embeds the system Python 3.11; pwntools' gdb API runs an rpyc
    server inside it, so gdb must import rpyc from our venv (same minor version).
    """
    dirs = [p for p in site.getsitepackages() if os.path.isdir(p)]
    if hasattr(site, "getusersitepackages") and os.path.isdir(site.getusersitepackages()):
        dirs.append(site.getusersitepackages())
    env = dict(os.environ)
    old = env.get("PYTHONPATH")
    env["PYTHONPATH"] = os.pathsep.join(dirs + ([old] if old else []))
    env.setdefault("PYTHONNOUSERSITE", "1")
    return env
