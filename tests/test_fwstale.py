"""The firmware benches refuse a build older than the C module (tests/support/fwstale.py)."""

import os

from support.fwstale import newer_sources, stale_reason


def test_a_build_older_than_a_source_is_stale_and_named(tmp_path):
    mod = tmp_path / "rbnn"
    mod.mkdir()
    for name in ("rbnn_core.c", "rbnn_train.c", "micropython.mk"):
        (mod / name).write_text("x")
    image = tmp_path / "micropython"
    image.write_text("elf")
    old, new = 1_000_000_000, 1_000_000_100
    for p in mod.iterdir():
        os.utime(p, (old, old))
    os.utime(image, (new, new))
    assert newer_sources(image, mod) == [] and stale_reason(image, mod) is None
    os.utime(mod / "rbnn_train.c", (new + 5, new + 5))
    os.utime(mod / "rbnn_core.c", (new + 9, new + 9))
    assert newer_sources(image, mod) == ["rbnn_core.c", "rbnn_train.c"]
    why = stale_reason(image, mod)
    assert "older than cmodules/rbnn/rbnn_core.c (and 1 more)" in why and "make firmware" in why
