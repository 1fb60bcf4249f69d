"""The build cache's failures are LabVMErrors that name the fix (no VM, no build)."""
from __future__ import annotations

import pytest

from lab_vm.build import cache
from lab_vm.errors import BuildError


def test_an_unusable_cache_is_a_build_error_naming_the_fix(tmp_path):
    """Not a bare OSError, which lab-vm would print as a traceback."""
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    with pytest.raises(BuildError, match="VMEXIT_CACHE"):
        with cache.Entry("kernel", "k", root=not_a_folder / "cache").locked():
            pass


def test_a_damaged_stamp_is_a_build_error(tmp_path):
    entry = cache.Entry("kernel", "k", root=tmp_path)
    entry.path.mkdir()
    (entry.path / cache.STAMP).write_text("{half")
    with pytest.raises(BuildError, match="unreadable COMPLETE"):
        entry.info()
