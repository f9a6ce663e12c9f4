"""The tables' read plan (lsm/sstable/get_plan.py) and the block-miss path
of ``TableReader.find_entry`` (the crc masked inline, ``BlockCache.put``
inlined).

The plan's lookup must answer what the tables answer one by one
(``Version.files_for_key`` and ``TableReader.lookup`` in read order), over
every filter kind a reader may hold (blocked filters of two k, Roaring, no
filter), at the newest seq and at an older snapshot, and count the same
bloom statistics in sum. Replay a seed with LSM_GET_PLAN_SEED."""

from __future__ import annotations

import os
import pathlib
import random
from zlib import crc32

import pytest
from crc32c import crc32c

import lsm
from lsm.base.checksum import masked_crc
from lsm.base.compression import LZ4
from lsm.base.errors import CorruptionError
from lsm.base.fs import FileSystem
from lsm.sstable import get_plan
from lsm.sstable import writer as writer_mod
from lsm.sstable.bloom import BloomBuilder, BloomFilter, RoaringBloomBuilder
from lsm.sstable.cache import BlockCache
from lsm.sstable.get_plan import _PASS
from lsm.sstable.reader import TableReader
from lsm.sstable.writer import TableWriter

_PUT = 1


def _reference(sv, key: bytes, snap: int):
    """The tables one by one, as ``DB._get_covered`` reads them."""
    h1, h2 = crc32c(key), crc32(key) | 1
    for _level, meta in sv.version.files_for_key(key):
        e = sv.readers[meta.number].lookup(key, (snap << 8) | 0xFF, h1, h2)
        if e is not None:
            return e
    return None


def _bloom_sums(readers):
    return sum(r.bloom_checked for r in readers), sum(r.bloom_useful for r in readers)


def test_plan_lookup_matches_the_tables_and_a_model(tmp_path, monkeypatch):
    seed = int(os.environ.get("LSM_GET_PLAN_SEED", random.randrange(1 << 30)))
    print("seed", seed, "(replay: LSM_GET_PLAN_SEED)")
    rng = random.Random(seed)
    d = str(tmp_path / "db")
    universe = [b"k%07d" % rng.randrange(10**7) for _ in range(3000)]
    model: dict[bytes, bytes] = {}
    # Level-0 files stay (a compaction would rewrite them all blocked, k = 5).
    opts = {"l0_compaction_trigger": 50, "l0_slowdown_trigger": 60, "l0_stop_trigger": 70}

    def phase(bpk: int, n: int, deletes: int, builder=None, compact=False) -> None:
        if builder is not None:
            monkeypatch.setattr(writer_mod, "BloomBuilder", builder)
        db = lsm.open(d, background="inline", sync=lsm.Sync.OFF, bloom_bits_per_key=bpk, **opts)
        try:
            for k in rng.sample(universe, n):
                v = b"v%d-" % rng.randrange(1000) + k
                db.put(k, v)
                model[k] = v
            for k in rng.sample(universe, deletes):
                db.delete(k)
                model.pop(k, None)
            db.flush()
            if compact:
                db.compact_range()
        finally:
            db.close()
            monkeypatch.undo()

    phase(13, 2500, 0, compact=True)  # deeper levels, blocked k = 5
    phase(13, 300, 100, builder=RoaringBloomBuilder)  # a level-0 file with a Roaring filter
    phase(20, 300, 100)  # blocked, k = 8
    phase(0, 300, 100)  # no filter
    old = dict(model)
    db = lsm.open(d, background="inline", sync=lsm.Sync.OFF, bloom_bits_per_key=13, **opts)
    try:
        snap = db.snapshot()
        for k in rng.sample(universe, 300):  # blocked k = 5, newer than the snapshot
            db.put(k, b"new-" + k)
            model[k] = b"new-" + k
        for k in rng.sample(universe, 100):
            db.delete(k)
            model.pop(k, None)
        db.flush()
        sv = db._sv
        masks, steps = sv.plan
        v = sv.version
        assert v.num_files(0) == 4 and sum(v.num_files(i) for i in range(1, v.num_levels)) >= 1
        assert len(steps) == len(v.read_plan)
        assert len(masks) == 4096
        kinds = []
        for (largest, smallest, n, probes), (l2, s2, nums) in zip(steps, v.read_plan):
            assert largest is l2 and smallest is s2 and n == len(nums) == len(probes)
            for (holes, nw, r), num in zip(probes, nums):
                assert r is sv.readers[num]
                b = r._bloom
                if b is not None and b.k == 5:
                    assert holes is b.holes and nw == b.nw and masks is b.masks
                    kinds.append("k5")
                else:
                    assert holes is _PASS and nw == 1
                    kinds.append("pass")
        assert kinds.count("pass") == 3, kinds  # Roaring, k = 8, none

        readers = list(sv.readers.values())
        absent = [k + b"." for k in rng.sample(universe, 500)] + [b"a", b"z", b"k"]
        keys = universe + absent
        for seq, want in ((db._last_seq, model), (snap.seq, old)):
            before = _bloom_sums(readers)
            ref = [_reference(sv, k, seq) for k in keys]
            mid = _bloom_sums(readers)
            got = [get_plan.lookup(sv.plan, k, seq) for k in keys]
            after = _bloom_sums(readers)
            assert got == ref
            # The same probes counted, in sum (rejections are credited to
            # the last reader a get probed).
            assert (after[0] - mid[0], after[1] - mid[1]) == (mid[0] - before[0], mid[1] - before[1])
            assert mid[1] - before[1] > len(keys)  # the filters rejected something
            for k, e in zip(keys, got):
                value = e[2] if e is not None and e[1] & 0xFF == _PUT else None
                assert value == want.get(k), k
        for k in keys:
            assert db.get(k) == model.get(k), k
            assert snap.get(k) == old.get(k), k
        snap.close()
    finally:
        db.close()


def test_empty_plan_and_a_plan_without_blocked_filters(tmp_path):
    db = lsm.open(str(tmp_path / "db"), background="inline", sync=lsm.Sync.OFF, bloom_bits_per_key=0)
    try:
        assert db._sv.plan[1] == ()
        assert get_plan.lookup(db._sv.plan, b"x", 1 << 40) is None
        db.put(b"a", b"1")
        db.delete(b"b")
        db.flush()
        ((_largest, _smallest, n, probes),) = db._sv.plan[1]
        assert n == 1 and probes[0][0] is _PASS
        assert get_plan.lookup(db._sv.plan, b"a", db._last_seq)[2] == b"1"
        assert get_plan.lookup(db._sv.plan, b"b", db._last_seq)[1] & 0xFF == 0  # the tombstone
        assert get_plan.lookup(db._sv.plan, b"c", db._last_seq) is None
        assert db.get(b"a") == b"1" and db.get(b"b") is None
    finally:
        db.close()


def test_holes_are_the_complement_of_the_words():
    rng = random.Random(5)
    b = BloomBuilder()
    added = [b"%d" % rng.randrange(10**9) for _ in range(2000)]
    b.add_keys(added)
    f = BloomFilter(b.finish(13))
    assert len(f.holes) == len(f.words) == f.nw
    assert all(h == w ^ 0xFFFFFFFFFFFFFFFF for h, w in zip(f.holes, f.words))
    for k in added + [b"x%d" % i for i in range(2000)]:
        h1, h2 = crc32c(k), crc32(k) | 1
        assert (not f.holes[h1 % f.nw] & f.masks[h2 >> 20]) == f.may_contain(k)


def _table(tmp_path, n=3000):
    path = str(tmp_path / "1.sst")
    w = TableWriter(FileSystem(), path, compression=LZ4)  # the fast path's codec
    for i in range(n):
        w.add(b"%016d" % i, (i + 1) << 8 | _PUT, b"v" * 100)
    w.finish()
    return path


@pytest.mark.parametrize("capacity", [0, 1000, 40_000, 1 << 30])
def test_find_entry_caches_what_fits(tmp_path, capacity):
    # The inlined BlockCache.put: nothing cached at capacity 0 or when one
    # block's charge exceeds the capacity; else usage is the sum of the
    # charges and stays within the capacity under eviction.
    path = _table(tmp_path)
    cache = BlockCache(capacity)
    r = TableReader.open(FileSystem(), path, file_number=1, cache=cache, mapped=True)
    try:
        rng = random.Random(9)
        for _ in range(3000):
            i = rng.randrange(3000)
            e = r.find_entry(b"%016d" % i, (1 << 64) - 1)
            assert e == (b"%016d" % i, (i + 1) << 8 | _PUT, b"v" * 100)
            cache.check()
        if capacity <= 1000:
            assert len(cache) == 0 and cache.usage == 0 and cache.hits == 0
        else:
            assert len(cache) > 0 and cache.hits > 0
            if capacity == 40_000:
                assert cache.misses > 1000  # evictions ran
    finally:
        r.close()


@pytest.mark.parametrize("mapped", [True, False])
def test_every_bit_of_a_stored_crc_is_checked(tmp_path, mapped):
    # The crc's mask is computed inline in _load_block (no masked_crc
    # call): a block loads only with its exact stored value.
    path = _table(tmp_path, 200)
    fs = FileSystem()
    r = TableReader.open(fs, path, file_number=1, mapped=mapped)
    off, size = r._boffs[1], r._bsizes[1]
    r.close()
    data = bytearray(pathlib.Path(path).read_bytes())
    at = off + size - 4  # the trailer's masked crc, u32 little-endian
    stored = int.from_bytes(data[at : at + 4], "little")
    assert stored == masked_crc(bytes(data[off:at]))
    for bit in range(32):
        bad = bytearray(data)
        bad[at : at + 4] = (stored ^ (1 << bit)).to_bytes(4, "little")
        p = str(tmp_path / "bad.sst")
        pathlib.Path(p).write_bytes(bad)
        r = TableReader.open(fs, p, file_number=2, mapped=mapped)
        try:
            with pytest.raises(CorruptionError, match="checksum"):
                r._load_block(off, size, True)
            # A good block takes the fast path (the inline mask agrees with
            # masked_crc), not the checked one.
            r._load_block_checked = None  # type: ignore[method-assign]
            assert r._load_block(r._boffs[0], r._bsizes[0], True).n > 0
        finally:
            r.close()


@pytest.mark.parametrize("cached", [True, False])
def test_find_entry_in_fixed_size_blocks_at_every_snapshot(tmp_path, cached):
    # find_entry's inlined BlockView.find (fixed-size keys): each key's
    # versions, newest first, at snapshots between them; a key that occurs
    # only across two keys, one of another length and one absent.
    rng = random.Random(4)
    path = str(tmp_path / "v.sst")
    w = TableWriter(FileSystem(), path, compression=LZ4)
    model = {}
    seq = 10**6
    for i in range(2000):
        key = b"%016d" % (i * 7)
        for _ in range(rng.choice((1, 1, 2, 3))):
            seq -= 1
            w.add(key, seq << 8 | _PUT, b"%0100d" % seq)
            model.setdefault(key, []).append(seq)
    w.finish()
    cache = BlockCache(1 << 30 if cached else 0)
    r = TableReader.open(FileSystem(), path, file_number=3, cache=cache, mapped=True)
    try:
        assert sum(r._block(i, fill_cache=False).k != 0 for i in range(1, len(r._boffs))) > 10
        for _round in range(2 if cached else 1):  # misses, then hits
            for key, seqs in model.items():
                for s in seqs:  # newest first
                    assert r.find_entry(key, s << 8 | 0xFF) == (key, s << 8 | _PUT, b"%0100d" % s)
                assert r.find_entry(key, (seqs[-1] - 1) << 8 | 0xFF) is None  # older than every version
            for i in range(0, 2000, 37):
                k1, k2 = b"%016d" % (i * 7), b"%016d" % (i * 7 + 7)
                across = k1[8:] + k2[:8]  # occurs across two keys (not at a multiple of 16)
                assert across in model or r.find_entry(across, 1 << 60) is None
                assert r.find_entry(k1 + b"0", 1 << 60) is None
                assert r.find_entry(b"%016d" % (i * 7 + 3), 1 << 60) is None
        assert cache.hits > 0 if cached else len(cache) == 0
    finally:
        r.close()
