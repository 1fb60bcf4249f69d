"""Saved states without a VM: the cache stays bounded (old and surplus states pruned, recent
ones kept), and a file that cannot be restored is a LabVMError."""
from __future__ import annotations

import os

import pytest

from lab_vm.vm import state


def test_prune_keeps_the_recently_used_and_drops_old_and_surplus(tmp_path, monkeypatch):
    monkeypatch.setenv("VMEXIT_CACHE", str(tmp_path))
    folder = tmp_path / "states"
    folder.mkdir()
    now = 1_000_000_000.0
    day = 86400

    def make(name, age_days):
        p = folder / name
        p.write_bytes(b"x")
        os.utime(p, (now - age_days * day, now - age_days * day))
        return p

    recent = [make(f"r{i}.state", i * 0.1) for i in range(4)]       # used in the last hours
    old = make("old.state", 30)
    kernel_new, kernel_old = make("vmlinux-new", 1), make("vmlinux-old", 40)
    partial = make("vmlinux-x.partial", 40)                         # a save in progress
    removed = state.prune(keep=3, max_age_days=21, now=now)
    assert set(removed) == {recent[3], old, kernel_old}
    assert all(p.exists() for p in recent[:3] + [kernel_new, partial])
    assert not any(p.exists() for p in removed)


def test_mark_used_makes_a_state_recent(tmp_path, monkeypatch):
    monkeypatch.setenv("VMEXIT_CACHE", str(tmp_path))
    (tmp_path / "states").mkdir()
    p = tmp_path / "states" / "a.state"
    p.write_bytes(b"x")
    os.utime(p, (0, 0))
    state.mark_used(p)
    assert p.stat().st_mtime == 0                       # the save's time is kept
    assert state.prune(keep=5, max_age_days=21) == []


def test_an_unusable_state_file_is_a_lab_vm_error(tmp_path):
    """LabVM's restore falls back to a cold boot on a LabVMError: a damaged file must be one."""
    from lab_vm.errors import LabVMError

    truncated, foreign = tmp_path / "t.state", tmp_path / "f.state"
    truncated.write_bytes(b"x" * 100)
    foreign.write_bytes(bytes((1 << 20) + state.TRAILER.size))      # 1 MiB of RAM, no trailer
    with pytest.raises(LabVMError, match="t.state is truncated"):
        state.SavedState(truncated, memory=1)
    with pytest.raises(LabVMError, match="f.state is not a saved state"):
        state.SavedState(foreign, memory=1)
