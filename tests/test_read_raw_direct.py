"""A point lookup in a mapped table whose data blocks are stored raw
(compression "none") reads its block where it lies: TableReader.find_entry's
direct path (lsm/sstable/reader.py, ``_raw``). It must find exactly what the
view path finds (every version, every snapshot, deletions), cache nothing,
check every block's crc (a damaged block raises CorruptionError naming the
file and offset, never a wrong value), and leave compressed tables and
tables of variable-size entries to the view path."""

from __future__ import annotations

import os
import random
from bisect import bisect_left

import pytest

import lsm
from lsm.base.errors import ClosedError, CorruptionError
from lsm.base.fs import FileSystem
from lsm.sstable.cache import BlockCache
from lsm.sstable.reader import TableReader

FS = FileSystem()
TOP = 1 << 55  # a snapshot seq above every write


def _build(path, codec: str, seed: int, fixed: bool = True) -> tuple[str, dict, list]:
    """One table of random 16-byte keys, overwritten in rounds with a
    snapshot held before each round, so the table keeps several versions of
    some keys. ``fixed``: every value 100 bytes (the direct path's layout);
    otherwise values of 1-200 bytes and deletions in the rounds. Returns
    (table path, {seq: {key: value or None}} per snapshot, keys)."""
    rng = random.Random(seed)
    keys = [rng.randbytes(16) for _ in range(3000)]
    model: dict[bytes, bytes | None] = {}
    views: dict[int, dict[bytes, bytes | None]] = {}
    snaps = []
    with lsm.open(str(path), background="inline", memtable_size=64 << 20, compression=codec,
                  min_level_to_compress=0) as db:
        for rnd in range(4):
            if rnd:
                snaps.append(db.snapshot())
                views[snaps[-1].seq] = dict(model)
            for k in rng.sample(keys, 1500 if rnd else len(keys)):
                if rnd and not fixed and rng.random() < 0.2:
                    db.delete(k)
                    model[k] = None
                else:
                    v = rng.randbytes(50) * 2 if fixed else rng.randbytes(rng.randrange(1, 100)) * 2  # LZ4 halves it
                    db.put(k, v)
                    model[k] = v
        views[TOP] = dict(model)
        db.flush()
        for s in snaps:
            s.close()
        tables = [p for p in os.listdir(path) if p.endswith(".sst")]
        assert len(tables) == 1, tables
    return os.path.join(path, tables[0]), views, keys


def _value(r: TableReader, key: bytes, seq: int) -> bytes | None | str:
    """The table's answer at ``seq``: the value, None for a deletion, or
    "absent" when the table holds no version at or below ``seq``."""
    e = r.get_entry(key, seq)
    if e is None:
        return "absent"
    return None if e[1] & 0xFF == 0 else e[2]


def _expect(views: dict, key: bytes, seq: int) -> bytes | None | str:
    v = views[seq]
    return v.get(key, "absent")


def _open(path: str, mapped: bool) -> tuple[TableReader, BlockCache]:
    cache = BlockCache(8 << 20)
    return TableReader.open(FS, path, file_number=1, cache=cache, mapped=mapped), cache


@pytest.mark.parametrize("seed", [random.randrange(1 << 30) for _ in range(2)])
def test_direct_reads_find_every_version_and_cache_nothing(tmp_path, seed):
    print(f"seed {seed}")
    path, views, keys = _build(tmp_path / "db", "none", seed)
    direct, dcache = _open(path, mapped=True)
    viewed, vcache = _open(path, mapped=False)
    try:
        rng = random.Random(seed)
        absent = [rng.randbytes(16) for _ in range(300)]
        for seq in views:
            for k in keys + absent:
                want = _expect(views, k, seq)
                assert _value(direct, k, seq) == want, (seed, k, seq)
                assert _value(viewed, k, seq) == want, (seed, k, seq)
        assert direct._raw, "a raw fixed-size table must stay on the direct path"
        # The view path filled its cache; the direct path cached at most the
        # blocks that taught the process a layout: a full block's, and the
        # shorter last block's.
        assert vcache.misses > 20
        assert dcache.misses <= 2 and len(dcache._map) <= 2
    finally:
        direct.close()
        viewed.close()


def _flip_in_block(path: str, r: TableReader, i: int) -> None:
    """Flip one byte in the middle of data block ``i`` on disk."""
    at = r._boffs[i] + (r._bsizes[i] - 9) // 2
    with open(path, "r+b") as f:
        f.seek(at)
        b = f.read(1)
        f.seek(at)
        f.write(bytes([b[0] ^ 0x40]))


def _block_of(r: TableReader, key: bytes) -> int:
    return bisect_left(r._ikeys, key)


def test_a_damaged_raw_block_raises_and_returns_nothing(tmp_path):
    path, views, keys = _build(tmp_path / "db", "none", 7)
    probe, _ = _open(path, mapped=False)
    try:
        blocks = {}  # block index -> keys in it
        for k in keys:
            blocks.setdefault(_block_of(probe, k), []).append(k)
        victim = sorted(blocks)[len(blocks) // 2]
        _flip_in_block(path, probe, victim)
        off = probe._boffs[victim]
    finally:
        probe.close()
    r, _ = _open(path, mapped=True)
    try:
        r.get_entry(blocks[min(blocks)][0], TOP)  # learns the layout from a sound block
        for k in blocks[victim]:
            with pytest.raises(CorruptionError) as ei:
                r.get_entry(k, TOP)
            assert str(off) in str(ei.value) and path in str(ei.value)
        for i in sorted(blocks)[:3]:  # other blocks still read
            for k in blocks[i]:
                assert _value(r, k, TOP) == _expect(views, k, TOP)
    finally:
        r.close()


def test_compressed_tables_leave_the_direct_path_after_one_lookup(tmp_path):
    path, views, keys = _build(tmp_path / "db", "lz4", 11)
    r, cache = _open(path, mapped=True)
    try:
        assert r._raw
        for k in keys[:500]:
            assert _value(r, k, TOP) == _expect(views, k, TOP)
        assert not r._raw
        assert cache.misses > 20  # the view path and its cache served them
    finally:
        r.close()


def test_variable_size_entries_are_read_through_views(tmp_path):
    path, views, keys = _build(tmp_path / "db", "none", 13, fixed=False)
    r, cache = _open(path, mapped=True)
    try:
        for seq in views:
            for k in keys:
                assert _value(r, k, seq) == _expect(views, k, seq), (k, seq)
        assert not r._raw
        assert cache.misses > 20
    finally:
        r.close()


def test_a_closed_reader_raises_closed(tmp_path):
    path, _, keys = _build(tmp_path / "db", "none", 17)
    r, _ = _open(path, mapped=True)
    r.get_entry(keys[0], TOP)
    r.close()
    with pytest.raises(ClosedError):
        r.get_entry(keys[1], TOP)


def test_database_gets_through_direct_reads(tmp_path):
    """End to end: a database of raw tables of fixed-size entries answers
    from them after a reopen (nothing left in a memtable), its block cache
    untouched by point reads."""
    rng = random.Random(23)
    model = {}
    d = str(tmp_path / "db")
    with lsm.open(d, background="inline", memtable_size=256 << 10, compression="none", sync="OFF") as db:
        for _ in range(6000):
            k, v = rng.randbytes(16), rng.randbytes(100)
            db.put(k, v)
            model[k] = v
        db.flush()
    with lsm.open(d, compression="none") as db:
        assert sum(lvl["files"] for lvl in db.stats()["levels"]) >= 1
        before = db.stats()["block_cache_misses"]
        for k, v in model.items():
            assert db.get(k) == v
        # At most the few blocks that taught the process a layout went
        # through the cache (mmap_reads is on by default).
        assert db.stats()["block_cache_misses"] - before <= 3


def test_a_key_found_across_two_entries_is_looked_up_properly(tmp_path):
    """``bytes.find`` may hit the sought key straddling two neighbours (the
    end of one key and the start of the next); the direct path must not
    take that for an answer. K = A[8:] + B[:8] sorts after A and B, so its
    straddling occurrence comes first."""
    a, b = b"aaaaaaaa" + b"zzzzzzzz", b"aaaaaaab" + b"cccccccc"
    k = a[8:] + b[:8]
    fill = [b"m%015d" % i for i in range(12)]
    d = str(tmp_path / "db")
    with lsm.open(d, background="inline", compression="none", sync="OFF") as db:
        for key in [a, b, k, *fill]:
            db.put(key, key[::-1] * 6 + b"1234")  # 100 bytes
        db.flush()
    path = next(os.path.join(d, p) for p in os.listdir(d) if p.endswith(".sst"))
    r, cache = _open(path, mapped=True)
    try:
        assert _value(r, fill[0], TOP) == fill[0][::-1] * 6 + b"1234"  # learns the layout
        seen = cache.hits + cache.misses
        assert _value(r, k, TOP) == k[::-1] * 6 + b"1234"
        assert r.find_entry(a[4:] + b[:4], TOP << 8 | 0xFF) is None  # straddles, absent (no filter asked)
        assert r._raw and cache.hits + cache.misses == seen + 2  # both went round by the view path
    finally:
        r.close()
