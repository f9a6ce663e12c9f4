"""Options.min_level_to_compress: levels above it are written raw (flushes
and compactions into them), levels from it down with ``compression``; a
file is rewritten, not trivially moved, into a compressed level; every
value reads back either way."""

from __future__ import annotations

import random

import pytest

import lsm
from lsm.base import compression, filenames
from lsm.base.fs import DEFAULT_FS
from lsm.sstable import TableReader
from lsm.sstable.format import BLOCK_TRAILER, BLOCK_TRAILER_SIZE
from tests.conftest import TINY


def _codecs(db: lsm.DB, number: int) -> set[int]:
    """The compression ids of a table's data blocks, read through the
    reader's file (as tests/test_read_codec_mmap.py's ``_block_codecs``
    reads the first block of each table)."""
    r = TableReader.open(DEFAULT_FS, filenames.join(db.path, filenames.sst_name(number)), file_number=number)
    try:
        return {BLOCK_TRAILER.unpack_from(r.file.pread(off, size), size - BLOCK_TRAILER_SIZE)[0]
                for off, size in zip(r._boffs, r._bsizes)}
    finally:
        r.close()


def _by_level(db: lsm.DB) -> dict[int, list[int]]:
    return {lv: [f.number for f in files] for lv, files in enumerate(db._sv.version.levels) if files}


def _values(n: int, seed: int) -> dict[bytes, bytes]:
    rng = random.Random(seed)
    # Compressible (LZ4 shrinks each block well past an eighth), in a
    # shuffled order so that compactions merge overlapping files.
    keys = [b"k%06d" % i for i in range(n)]
    rng.shuffle(keys)
    return {k: rng.randbytes(12) * 8 for k in keys}


@pytest.mark.parametrize("m", [2, 1])
def test_levels_above_are_raw_levels_from_it_compressed(tmp_path, m):
    data = _values(3000, 1)
    opts = dict(TINY, block_size=1024, memtable_size=16384, target_file_size=16384, max_bytes_for_level_base=65536,
                l0_compaction_trigger=4, l0_slowdown_trigger=8, l0_stop_trigger=12)
    db = lsm.open(tmp_path / "db", background="inline", sync=lsm.Sync.OFF, min_level_to_compress=m, **opts)
    try:
        for k, v in data.items():
            db.put(k, v)
        db.flush()
        levels = _by_level(db)
        assert max(levels) >= 2 and any(lv < m for lv in levels) and 0 in levels, levels  # the shape the test needs
        for lv, numbers in levels.items():
            want = {compression.NONE} if lv < m else {compression.LZ4}
            for n in numbers:
                assert _codecs(db, n) == want, (lv, n)
        assert all(db.get(k) == v for k, v in data.items())
    finally:
        db.close()


@pytest.mark.parametrize("m", [2, 0])
def test_no_trivial_move_into_a_compressed_level(tmp_path, m):
    """One flushed file and an empty tree: compact_range moves it down
    level by level. Raw at level 0, it must be rewritten (a new file
    number) on its way into level 2; with every level compressed it moves
    by edits alone."""
    data = _values(500, 2)
    db = lsm.open(tmp_path / "db", background="inline", sync=lsm.Sync.OFF, min_level_to_compress=m,
                  block_size=1024)
    try:
        for k, v in data.items():
            db.put(k, v)
        db.flush()
        (flushed,) = _by_level(db)[0]
        assert _codecs(db, flushed) == ({compression.NONE} if m else {compression.LZ4})
        db.compact_range()
        levels = _by_level(db)
        assert min(levels) >= 2, levels
        (moved,) = [n for ns in levels.values() for n in ns]
        assert (moved != flushed) if m else (moved == flushed)
        assert _codecs(db, moved) == {compression.LZ4}
        assert all(db.get(k) == v for k, v in data.items())
    finally:
        db.close()


def test_process_workers_write_level_zero_raw(tmp_path):
    """The table options travel with the job to a worker process."""
    db = lsm.open(tmp_path / "db", sync=lsm.Sync.OFF, block_size=1024)
    try:
        data = _values(500, 3)
        for k, v in data.items():
            db.put(k, v)
        db.flush()
        (flushed,) = _by_level(db)[0]
        assert _codecs(db, flushed) == {compression.NONE}
        db.compact_range()
        for numbers in _by_level(db).values():
            for n in numbers:
                assert _codecs(db, n) == {compression.LZ4}
        assert all(db.get(k) == v for k, v in data.items())
    finally:
        db.close()


@pytest.mark.parametrize("bad, err", [(-1, ValueError), (21, ValueError), ("2", TypeError), (True, TypeError), (2.0, TypeError)])
def test_min_level_to_compress_is_checked(tmp_path, bad, err):
    with pytest.raises(err, match="min_level_to_compress"):
        lsm.open(tmp_path / "db", min_level_to_compress=bad)
    assert not (tmp_path / "db").exists() or not any((tmp_path / "db").iterdir())
