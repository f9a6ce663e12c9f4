"""The database's block cache admission (lsm/sstable/cache.py, the
doorkeeper): once the cache is full, a block read from disk goes in at its
second recent miss, so a hot set still gets cached, and a sweep over far
more blocks than fit does not flush it (a plain LRU would)."""

from __future__ import annotations

import lsm


def _deltas(db, before):
    st = db.stats()
    return {k: st[k] - before[k] for k in ("block_cache_hits", "block_cache_misses", "block_cache_refused")}


def test_hot_set_enters_a_full_cache_and_a_sweep_leaves_it(tmp_path):
    n = 20000
    path = str(tmp_path / "db")
    with lsm.open(path, background="inline", min_level_to_compress=0) as db:
        for i in range(n):
            db.put(b"k%06d" % i, b"value %06d " % i * 8)  # compressible: LZ4 blocks, read through the cache
        db.flush()
    with lsm.open(path, background="inline", block_cache_size=64 * 1024) as db:
        hot = [b"k%06d" % i for i in range(40)]  # two or three blocks
        # One get per block (a block holds ~33 entries), far more blocks
        # than 64 KiB holds: each sweep misses every block once.
        sweep = [b"k%06d" % i for i in range(100, n, 50)]

        st = db.stats()
        for k in sweep:
            assert db.get(k) is not None
        d = _deltas(db, st)
        assert d["block_cache_refused"] > 0, d  # the cache filled, then refused first misses

        for _ in range(2):  # first miss remembered, second admitted
            for k in hot:
                assert db.get(k) is not None
        st = db.stats()
        for k in hot:
            assert db.get(k) is not None
        assert _deltas(db, st) == {"block_cache_hits": len(hot), "block_cache_misses": 0, "block_cache_refused": 0}

        st = db.stats()
        for k in sweep:  # again: each block's earlier miss is long forgotten
            assert db.get(k) is not None
        d = _deltas(db, st)
        # (a few sweep blocks may still be cached from the first sweep)
        assert d["block_cache_refused"] == d["block_cache_misses"] >= 0.9 * len(sweep), d
        st = db.stats()
        for k in hot:
            assert db.get(k) is not None
        assert _deltas(db, st) == {"block_cache_hits": len(hot), "block_cache_misses": 0, "block_cache_refused": 0}
