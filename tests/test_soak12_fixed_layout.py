"""Found by the soak (session 12): tools/fuzz_atheris.py --engine random
--seed 494384753 (target sst_table) raised IndexError from
lsm/sstable/block.py fixed_block_head, reached through
TableReader._load_block's one-frame path and reader._learn_layout.

A data block with a good crc whose offsets decrease (a crafted block, or
one damaged before its crc was computed) passes the fast path's span check
(first offset ``16n + 8``, last the payload size) and is offered to
``_learn_layout``, which derived a *negative* key length from it
(``o[1] - o[0]``); ``fixed_block_head`` then built an empty offsets array
and indexed it. A fixed layout has keys and values of a non-negative
length: anything else is not one. A damaged block may give a
CorruptionError or a view, never another exception.
"""

from __future__ import annotations

import struct

import pytest

import lsm
from lsm.base import compression
from lsm.base.errors import CorruptionError
from lsm.base.fs import FileSystem
from lsm.sstable.format import frame_block
from lsm.sstable.reader import _LAYOUTS, TableReader

FS = FileSystem()


def _table(tmp_path) -> str:
    with lsm.open(str(tmp_path / "db"), background="inline") as db:
        for i in range(50):
            db.put(b"%04d" % i, b"v%d" % i)
        db.flush()
    return next(str(p) for p in (tmp_path / "db").iterdir() if p.suffix == ".sst")


def _crafted(n: int, offsets: list[int], size: int) -> bytes:
    """A payload of ``size`` bytes: count ``n``, the given ``2n + 1``
    offsets, ``n`` zero trailers, filler."""
    head = struct.pack(f"<I{2 * n + 1}I{n}Q", n, *offsets, *([0] * n))
    return head + b"x" * (size - len(head))


# (n, offsets) with offsets[0] = 16n + 8 and offsets[-1] = the payload's size (46 bytes),
# and a key or value "length" below zero
CASES = {
    "key length -1 (the fuzz input's shape)": (1, [24, 23, 46]),
    "value length negative (learned before)": (1, [24, 50, 46]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_block_with_decreasing_offsets_is_not_learned_as_a_fixed_layout(tmp_path, case):
    n, offsets = CASES[case]
    payload = _crafted(n, offsets, 46)
    block = b"".join(frame_block(payload, compression.NONE))
    _LAYOUTS.pop(len(payload), None)
    r = TableReader.open(FS, _table(tmp_path), file_number=1, mapped=True)
    try:
        r._learn = True  # the first block of the table: its layout is tried
        r._map = b"\x00" * 64 + block
        try:
            r._load_block(64, len(block), True)  # was: IndexError (or a layout with a negative length learned)
        except CorruptionError:
            pass
        assert len(payload) not in _LAYOUTS, case
    finally:
        r._map = None
        r.close()
