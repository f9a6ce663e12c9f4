"""The filesystem layer's and the power-cut model's paths the families do
not reach by themselves (issue 5: branch coverage of lsm/base/fs.py and the
crash layer, target 100%), each checked by its outcome."""

from __future__ import annotations

import os
import random

from lsm.base.fs import DEFAULT_FS
from lsm.base.powercut import HOLE_BLOCK, cut_holes


def test_open_overwrite_on_the_real_filesystem_keeps_the_bytes_past_what_it_writes(tmp_path) -> None:
    """``open_overwrite`` (a preallocated WAL segment reused in place)
    writes from offset 0 without truncating; ``size`` counts the bytes
    written, not the file's length."""
    path = str(tmp_path / "seg")
    DEFAULT_FS.write_file(path, b"z" * 100)
    f = DEFAULT_FS.open_overwrite(path)
    try:
        f.write(b"abc")
        f.write(b"de")
        assert f.size == 5
        f.datasync()
    finally:
        f.close()
    assert DEFAULT_FS.read_file(path) == b"abcde" + b"z" * 95
    assert os.path.getsize(path) == 100


def test_holes_never_shorten_a_rewrite_below_the_synced_length() -> None:
    """A file rewritten in place with fewer bytes than it had synced: the
    holes outcome keeps the synced bytes past the rewritten region (a power
    cut never shortens a file below its synced length), and every block of
    the rewritten region is the new bytes, the old ones, or garbage."""
    base = b"B" * 10
    tail = b"n" * (2 * HOLE_BLOCK)
    old = b"o" * (3 * HOLE_BLOCK)
    seen = set()
    for seed in range(40):
        outcomes: dict[str, int] = {}
        out = cut_holes(base, tail, random.Random(seed), outcomes, old)
        assert len(out) == len(base) + len(old)
        assert out[: len(base)] == base
        assert out[len(base) + len(tail):] == old[len(tail):]
        for a in range(len(base), len(base) + len(tail), HOLE_BLOCK):
            b = min((a // HOLE_BLOCK + 1) * HOLE_BLOCK, len(base) + len(tail))
            block = out[a:b]
            kind = "new" if block == tail[: b - a] else "old" if block == old[: b - a] else "garbage"
            seen.add(kind)
        assert sum(outcomes.values()) == 1
    assert seen == {"new", "old", "garbage"}
