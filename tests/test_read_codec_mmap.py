"""The point-read levers of issue 7 target 5: LZ4 data blocks (compression
id 2; tables of any codec open whatever ``compression`` says) and table
reads through a memory map (``mmap_reads``, ``FileSystem.open_read_mapped``)."""

from __future__ import annotations

import os
import tracemalloc

import pytest

import lsm
from lsm.base import compression
from lsm.base.crashfs import CrashFS
from lsm.base.errors import ClosedError
from lsm.base.fs import FileSystem, MappedFile, ReadableFile
from lsm.sstable.block import encode_block
from lsm.sstable.format import BLOCK_TRAILER, BLOCK_TRAILER_SIZE, frame_block, unframe_block
from lsm.sstable.reader import TableReader

FS = FileSystem()
KEYS = [b"%08d" % i for i in range(3000)]


def _value(i: int) -> bytes:
    return (b"value-%d-" % (i % 97)) * 6


def _fill(path, **kw) -> None:
    with lsm.open(str(path), background="inline", memtable_size=64 * 1024, **kw) as db:
        for i, k in enumerate(KEYS):
            db.put(k, _value(i))
        db.flush()


def _block_codecs(db) -> set[int]:
    """The compression ids of the first data block of every live table."""
    ids = set()
    for r in db._sv.readers.values():
        data = r.file.pread(r._boffs[0], r._bsizes[0])
        ids.add(BLOCK_TRAILER.unpack_from(data, len(data) - BLOCK_TRAILER_SIZE)[0])
    return ids


def test_lz4_is_the_default_and_round_trips(tmp_path):
    """By default a flush writes raw level-0 tables and the levels from
    min_level_to_compress (2) down are lz4 (tests/test_compress_levels.py)."""
    _fill(tmp_path / "db")
    with lsm.open(str(tmp_path / "db"), background="inline") as db:
        assert _block_codecs(db) == {compression.NONE}
        db.compact_range()
        assert _block_codecs(db) == {compression.LZ4}
        assert all(db.get(k) == _value(i) for i, k in enumerate(KEYS))
        assert list(db.keys()) == KEYS


@pytest.mark.parametrize("old", ["zstd", "none"])
def test_tables_of_another_codec_still_open_and_compact_to_lz4(tmp_path, old):
    """Tables written before lz4 was the default (zstd) read with the new
    default, and a compaction rewrites them as lz4; mixed tables read."""
    _fill(tmp_path / "db", compression=old, min_level_to_compress=0)
    want = {compression.ZSTD if old == "zstd" else compression.NONE}
    with lsm.open(str(tmp_path / "db"), background="inline", min_level_to_compress=0) as db:
        assert _block_codecs(db) == want
        assert all(db.get(k) == _value(i) for i, k in enumerate(KEYS))
        for k in KEYS[:200]:
            db.put(k, b"new" * 20)
        db.flush()  # one lz4 table beside the old ones
        assert compression.LZ4 in _block_codecs(db) and len(_block_codecs(db)) == 2
        assert db.get(KEYS[0]) == b"new" * 20 and db.get(KEYS[200]) == _value(200)
        db.compact_range()
        assert _block_codecs(db) == {compression.LZ4}
        assert all(db.get(k) == (b"new" * 20 if i < 200 else _value(i)) for i, k in enumerate(KEYS))


def _lz4_block() -> tuple[bytes, bytes]:
    payload = encode_block(
        [b"key%03d" % i for i in range(30)], [(i + 1) << 8 | 1 for i in range(30)], [b"v" * 40] * 30
    )
    stored, trailer = frame_block(payload, compression.LZ4)
    assert trailer[0] == compression.LZ4 and len(stored) < len(payload)
    return payload, stored


def test_lz4_block_must_decompress_to_the_trailer_size():
    payload, stored = _lz4_block()
    assert compression.decompress(compression.LZ4, memoryview(stored), len(payload)) == payload
    for size in (len(payload) - 1, len(payload) + 1):
        with pytest.raises(ValueError, match="lz4"):
            compression.decompress(compression.LZ4, stored, size)
    with pytest.raises(ValueError, match="lz4"):
        compression.decompress(compression.LZ4, stored[:-5], len(payload))
    assert (
        compression.decompress_many(compression.LZ4, [memoryview(stored)] * 3, [len(payload)] * 3)
        == [payload] * 3
    )
    with pytest.raises(ValueError, match="lz4"):
        compression.decompress_many(compression.LZ4, [memoryview(stored)], [len(payload) + 1])


def test_lz4_huge_size_claim_is_refused_before_allocating():
    """The size comes from the block trailer (with paranoid_checks off, not
    covered by a verified crc): a claim beyond LZ4's maximum ratio is
    refused without allocating it."""
    _payload, stored = _lz4_block()
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="cannot hold"):
            compression.decompress(compression.LZ4, stored, (1 << 32) - 1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_damaged_lz4_block_is_corruption_through_the_frame():
    payload, stored = _lz4_block()
    _, trailer = frame_block(payload, compression.LZ4)
    assert unframe_block(stored + trailer, True) == payload
    bad = bytearray(stored + trailer)
    bad[len(stored) // 2] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        unframe_block(bytes(bad), True)
    try:  # without the crc: an error or the wrong bytes, never a crash
        out = unframe_block(bytes(bad), False)
    except ValueError:
        pass
    else:
        assert len(out) == len(payload)


# ---------------------------------------------------------------- mmap reads
def test_open_read_mapped_reads_like_pread(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(bytes(range(256)) * 40)
    f = FS.open_read_mapped(str(p))
    g = FS.open_read(str(p))
    assert isinstance(f, MappedFile) and type(g) is ReadableFile
    assert f.size == g.size == 10240
    for off, n in ((0, 10), (4090, 20), (10230, 100), (10240, 5), (20000, 5)):
        assert f.pread(off, n) == g.pread(off, n), (off, n)
    data = f.pread(0, 4096)
    f.close()
    g.close()
    assert f.fd == -1 and data == bytes(range(256)) * 16  # a copy: valid after the unmap
    f.close()  # idempotent
    with pytest.raises(ValueError):
        f.pread(0, 1)


def test_open_read_mapped_falls_back_where_reads_are_hooked(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"x" * 100)
    (tmp_path / "empty").write_bytes(b"")

    class Hooked(FileSystem):
        def _pread(self, f, offset, n):
            return os.pread(f.fd, n, offset)

    patched = FileSystem()
    patched._pread = lambda f, offset, n: b""  # type: ignore[method-assign]
    for fs in (Hooked(), patched):
        f = fs.open_read_mapped(str(p))
        assert type(f) is ReadableFile
        f.close()
    e = FS.open_read_mapped(str(tmp_path / "empty"))
    assert type(e) is ReadableFile and e.size == 0
    e.close()
    cfs = CrashFS()
    cfs.makedirs("/d")
    cfs.write_file("/d/f", b"abc")
    f = cfs.open_read_mapped("/d/f")
    assert type(f) is ReadableFile and f.pread(1, 5) == b"bc"
    f.close()


@pytest.mark.parametrize("mapped", [True, False])
def test_db_reads_tables_through_the_map_option(tmp_path, mapped):
    _fill(tmp_path / "db")
    with lsm.open(str(tmp_path / "db"), background="inline", mmap_reads=mapped) as db:
        kinds = {type(r.file) for r in db._sv.readers.values()}
        assert kinds == ({MappedFile} if mapped else {ReadableFile})
        assert all(db.get(k) == _value(i) for i, k in enumerate(KEYS))


def test_unlinked_mapped_table_reads_until_its_iterator_is_done(tmp_path):
    """Tables replaced by a compaction and unlinked while an iterator opened
    before still reads them: mapped pages of an unlinked file stay valid."""
    _fill(tmp_path / "db")
    with lsm.open(str(tmp_path / "db"), background="inline", block_cache_size=0) as db:
        for i, k in enumerate(KEYS):  # overlapping tables: the compaction rewrites them
            db.put(k, _value(i))
        db.flush()
        old = {n: r.path for n, r in db._sv.readers.items()}
        it = db.items()
        first = next(it)
        db.compact_range()
        for p in old.values():  # as the DB may do at once (it defers while a version holds them)
            if os.path.exists(p):
                os.unlink(p)
        rest = list(it)
        assert [first[0]] + [k for k, _ in rest] == KEYS
        assert all(db.get(k) == _value(i) for i, k in enumerate(KEYS))


def test_closed_mapped_reader_raises_closed_error(tmp_path):
    _fill(tmp_path / "db")
    path = next(str(p) for p in (tmp_path / "db").iterdir() if p.suffix == ".sst")
    r = TableReader.open(FS, path, file_number=1, mapped=True)
    assert isinstance(r.file, MappedFile)
    assert r.get_entry(KEYS[0], 1 << 40) is not None or r.get_entry(r._ikeys[0], 1 << 40) is not None
    r.close()
    with pytest.raises(ClosedError):
        r.get_entry(r._ikeys[-1], 1 << 40)
