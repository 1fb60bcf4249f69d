"""The config check that catches symbols olddefconfig drops (parser tests on text)."""
from pathlib import Path

from lab_vm.build.kernel import fragments, missing_symbols, parse_fragment


def test_parse_fragment_reads_set_and_unset_lines():
    text = "CONFIG_A=y\n# CONFIG_B is not set\n# a comment\nCONFIG_C=\"x\"\n"
    assert parse_fragment(text) == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_C": '"x"'}


def test_dropped_symbol_is_named(tmp_path: Path):
    frag = tmp_path / "10-x.config"
    frag.write_text("CONFIG_PCI=y\nCONFIG_9P_FS=y\n# CONFIG_KASAN is not set\n")
    final = "CONFIG_PCI=y\n# CONFIG_9P_FS is not set\n"
    assert missing_symbols(final, [frag]) == ["CONFIG_9P_FS=y (got n; asked in 10-x.config)"]


def test_fragments_are_merged_in_a_fixed_order():
    names = [f.name for f in fragments()]
    assert names == sorted(names) and names, names


def test_built_kernel_config_holds_every_fragment_line(built):
    k, _ = built
    assert missing_symbols(k.config.read_text(), fragments()) == []


def test_prune_keeps_the_newest_complete_entries(tmp_path):
    import os

    from lab_vm.build import cache

    for i, name in enumerate(["kernel-a", "kernel-b", "kernel-c"]):
        (tmp_path / name).mkdir()
        (tmp_path / name / cache.STAMP).write_text("{}")
        os.utime(tmp_path / name / cache.STAMP, (1000 + i, 1000 + i))
    (tmp_path / "kernel-building").mkdir()          # no stamp: maybe being built now
    removed = cache.prune("kernel", keep=2, root=tmp_path)
    assert [p.name for p in removed] == ["kernel-a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernel-b", "kernel-building",
                                                          "kernel-c"]
