"""Found by the soak (session 12): tools/fuzz_atheris.py --engine random
--target sst_table --seed 54915575 (and --seed 173639386 over every
target): "get(b'\\x00bb') after a passing check()".

A data block with a good crc whose offsets decrease can still slice into
entries that look right: ``[40, 40, 44, 43, 43]`` over a 43-byte payload
gives keys ``b""`` and ``p[40:44] == b"\\x00bb"`` (the slice stops at the
end) and values ``p[44:43] == p[43:43] == b""``, the same entries as the
honest ``[40, 40, 43, 43, 43]``. Iteration, the index and the properties
all agree, so ``TableReader.check()`` passed; but a point lookup searches
by the offsets and misses the key. With checksums verified the read path
trusts the offsets (only an unverified read checks that they never
decrease: block.decode_block's ``check_offsets``), so check(), the
invariant checker, must check them: a table that passes it must answer
gets as it iterates.
"""

from __future__ import annotations

import pytest

from lsm.base import compression
from lsm.base.errors import CorruptionError
from lsm.base.fs import FileSystem
from lsm.sstable.format import frame_block
from lsm.sstable.reader import TableReader
from lsm.sstable.writer import TableWriter

FS = FileSystem()
ENTRIES = [(b"", 2 << 8 | 1, b""), (b"\x00bb", 1 << 8 | 1, b"")]


def _table(path: str, offsets: list[int] | None) -> None:
    """A table of ENTRIES in one raw data block; ``offsets``: its offsets
    replaced (the crc recomputed, so the damage is not a checksum error)."""
    w = TableWriter(FS, path, compression=compression.NONE)
    for e in ENTRIES:
        w.add(*e)
    w.finish()
    if offsets is None:
        return
    r = TableReader.open(FS, path, file_number=1)
    off, n = r._boffs[0], r._bsizes[0]
    r.close()
    with open(path, "r+b") as f:
        f.seek(off)
        data = f.read(n)
        payload = bytearray(data[: n - 9])
        assert list(memoryview(bytes(payload[4:24])).cast("I")) == [40, 40, 43, 43, 43]
        for i, o in enumerate(offsets):
            payload[4 + 4 * i : 8 + 4 * i] = o.to_bytes(4, "little")
        stored, trailer = frame_block(bytes(payload), compression.NONE)
        assert len(stored) + len(trailer) == n
        f.seek(off)
        f.write(stored + trailer)


def test_the_honest_table_checks_and_answers_gets(tmp_path):
    path = str(tmp_path / "000001.sst")
    _table(path, None)
    r = TableReader.open(FS, path, file_number=1)
    try:
        r.check()
        for k, t, v in ENTRIES:
            assert r.get(k, 1 << 40) == (t & 0xFF, v)
    finally:
        r.close()


@pytest.mark.parametrize("mapped", [True, False])
def test_decreasing_offsets_with_a_good_crc_fail_check(tmp_path, mapped):
    path = str(tmp_path / "000001.sst")
    _table(path, [40, 40, 44, 43, 43])
    r = TableReader.open(FS, path, file_number=1, mapped=mapped)
    try:
        assert list(r.iter_entries()) == ENTRIES  # iteration sees the honest entries
        assert r.get(b"\x00bb", 1 << 40) is None  # the lookup does not: check() must refuse the table
        with pytest.raises(CorruptionError, match="offsets decrease") as ei:
            r.check()  # was: passed
        assert ei.value.path == path and ei.value.offset == r._boffs[0]
    finally:
        r.close()
