"""Point reads through the block cache (issue 7 target 5, session 10): a
fixed-size block loaded by the reader holds no trailers array (its offsets
are shared by the layout, its trailers read from the payload) and is
charged for what it holds; LZ4 is called directly on the crc-checked path.
The answers must not change: every view gives the generic view's entries,
a cached block still answers right after eviction pressure, and a damaged
block on disk is refused by the first get that reads it."""

from __future__ import annotations

import gc
import os
import random
import tracemalloc

import pytest

import lsm
from lsm.base.errors import CorruptionError
from lsm.base.fs import FileSystem
from lsm.sstable.block import BlockView
from lsm.sstable.cache import BlockCache
from lsm.sstable.format import unframe_block
from lsm.sstable.reader import _BLOCK_CHARGE, _ENTRY_CHARGE, _LAYOUTS, _VIEW_CHARGE, TableReader
from tests.test_read_block_fast import flip_byte

FS = FileSystem()
TOP = (1 << 64) - 1


def _fixed_table(tmp_path, n: int = 3000) -> str:
    """A table of fixed-size entries (16-byte keys, 100-byte values), LZ4."""
    path = tmp_path / "fixed"
    with lsm.open(str(path), background="inline", memtable_size=4 << 20, compression="lz4", min_level_to_compress=0) as db:
        for i in range(n):
            db.put(b"%016d" % i, (b"%08d" % (i * 7)) * 12 + b"tail")
        db.flush()
    return next(str(p) for p in path.iterdir() if p.suffix == ".sst")


def test_fixed_view_has_no_trailers_array_and_matches_the_generic_view(tmp_path):
    r = TableReader.open(FS, _fixed_table(tmp_path), file_number=1, mapped=True)
    try:
        assert len(r._boffs) > 5
        for off, n in zip(r._boffs, r._bsizes):
            generic = BlockView(unframe_block(r.file.pread(off, n), True))
            r._load_block(off, n, True)  # the layout is learned on a first load
            v = r._load_block(off, n, True)
            assert v.k == 16 and v._t is None, "a fixed-size view must not hold a trailers array"
            assert v.t.tolist() == generic.t.tolist()
            m = generic.n
            for lo, hi in ((0, m), (0, 3), (2, m), (m - 1, m), (1, m - 1)):
                assert v.columns(lo, hi) == generic.columns(lo, hi), (lo, hi)
                assert v.entries(lo, hi) == generic.entries(lo, hi), (lo, hi)
            for k, t, val in generic.entries():
                assert v.find(k, TOP) == (k, t, val)
                assert v.find(k, (t >> 8) - 1 << 8 | 0xFF) is None  # older snapshot: not visible
    finally:
        r.close()


def test_cache_charges_what_a_view_holds(tmp_path):
    """A fixed-size view is charged its payload plus _VIEW_CHARGE, a view
    with its own arrays the old charge; and the charge is not below the
    memory a cached view takes (tracemalloc over many blocks)."""
    cache = BlockCache(1 << 30)
    r = TableReader.open(FS, _fixed_table(tmp_path, 12000), file_number=1, cache=cache, mapped=True)
    _LAYOUTS.clear()  # learned by another test: the first block must be loaded with its arrays
    try:
        ik = r._ikeys
        assert r.find_entry(ik[0], TOP) is not None  # learns the layout; block 0 holds arrays
        b0 = cache._map[r._cbase + r._boffs[0]][0]
        assert b0._t is not None and cache.usage == len(b0.p) + _BLOCK_CHARGE + _ENTRY_CHARGE * b0.n
        gc.collect()
        tracemalloc.start()
        try:
            m0 = tracemalloc.get_traced_memory()[0]
            u0 = cache.usage
            nb = len(ik) - 1
            for i in range(1, len(ik)):
                assert r.find_entry(ik[i], TOP) is not None
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - m0
        finally:
            tracemalloc.stop()
        b1 = cache._map[r._cbase + r._boffs[1]][0]
        assert b1._t is None and cache._map[r._cbase + r._boffs[1]][1] == len(b1.p) + _VIEW_CHARGE
        assert nb > 50
        charged = cache.usage - u0
        assert used <= charged, f"{used / nb:.0f} bytes per cached view, charged {charged / nb:.0f}"
        cache.check()
    finally:
        r.close()


def test_random_gets_under_eviction_pressure(tmp_path):
    """Random gets against a dict model, with a block cache of a few blocks
    (hits, misses and evictions all happen), versions spread over several
    tables and levels, deletes included. Seed: LSM_GET_CACHE_SEED."""
    seed = int(os.environ.get("LSM_GET_CACHE_SEED", random.randrange(1 << 30)))
    print("seed", seed)
    rng = random.Random(seed)
    opts = {"sync": lsm.Sync.OFF, "block_cache_size": 40 << 10, "memtable_size": 1 << 20}
    db = lsm.open(str(tmp_path / "db"), background="inline", **opts)
    try:
        n = 6000
        model: dict[bytes, bytes] = {}
        for rnd in range(4):
            for i in rng.sample(range(n), 2500):
                k = b"%016d" % i
                if rng.random() < 0.1:
                    db.delete(k)
                    model.pop(k, None)
                else:
                    v = (b"%d-%d-" % (rnd, i)).ljust(100, b"v")
                    db.put(k, v)
                    model[k] = v
            db.flush()
            if rnd == 1:
                db.compact_range()
        v = db._sv.version
        assert sum(v.num_files(i) for i in range(v.num_levels)) >= 3
        cache = next(iter(db._sv.readers.values()))._cache
        h0, m0 = cache.hits, cache.misses
        for _ in range(20000):
            hot = rng.random() < 0.5  # half the gets in a small range: cache hits
            k = b"%016d" % (rng.randrange(120) if hot else rng.randrange(n))
            assert db.get(k) == model.get(k), (seed, k)
        assert cache.hits - h0 > 1000 and cache.misses - m0 > 1000
        assert cache.usage <= 40 << 10 and len(cache) < 20
        cache.check()
    finally:
        db.close()


@pytest.mark.parametrize("mapped", [True, False])
def test_damaged_block_is_refused_by_the_first_get_and_not_cached(tmp_path, mapped):
    path = tmp_path / "db"
    with lsm.open(str(path), background="inline", compression="lz4", min_level_to_compress=0) as db:
        for i in range(3000):
            db.put(b"%016d" % i, (b"%08d" % i) * 12 + b"tail")
        db.flush()
    sst = next(str(p) for p in path.iterdir() if p.suffix == ".sst")
    r = TableReader.open(FS, sst, file_number=1)
    off, n, key = r._boffs[3], r._bsizes[3], r._ikeys[3]
    other = r._ikeys[0]
    r.close()
    flip_byte(sst, off + n // 2, 0x04)
    db = lsm.open(str(path), background="inline", mmap_reads=mapped)
    try:
        for _ in range(2):  # the second get reads the disk again: nothing was cached
            with pytest.raises(CorruptionError, match="checksum") as ei:
                db.get(key)
            assert ei.value.offset == off
        assert db.get(other) is not None
    finally:
        db.close()
