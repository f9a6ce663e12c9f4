"""The merging scan's paths for clean sources (issue 7, target 6) and the
read-ahead cut of whole runs of blocks into columns:

* ``visible_columns`` takes a round's bound key whole when every source
  whose chunk ends there is clean (its keys distinct: no version of the
  bound key can follow in its next chunk), so that source needs no copy
  at its refill; the memtable window then reaches past the bound key;
* ``_resolve``'s dict path with a clean oldest part: when the newer parts
  only hold keys it has, the dict's order is the round's (no sort);
* ``payload_columns``: a read-ahead run's payloads cut into joined
  columns (fixed-size blocks by one Struct, others through a view).

Each is checked against the plain heap merge (``visible``) or the block
decoder, with the cases where a wrong shortcut gives a wrong answer: a
non-clean source whose versions of one key straddle a chunk edge, newer
keys that the oldest source lacks, memtable versions of a bound key,
snapshots below the newer sources. Randomized: prints its seed;
``LSM_SCAN_SEED=N`` replays one.
"""

from __future__ import annotations

import os
import random
from itertools import chain

import pytest

from lsm.base import compression
from lsm.base.coding import MAX_SEQ, ValueKind, pack_trailer
from lsm.base.fs import DEFAULT_FS
from lsm.iterators import visible, visible_columns
from lsm.sstable import TableReader, TableWriter
from lsm.sstable.block import BlockView, decode_block, encode_block
from lsm.sstable.cache import BlockCache
from lsm.sstable.scan import payload_columns
from tests.test_scan import chunks, window

PUT = ValueKind.PUT
DELETE = ValueKind.DELETE
FS = DEFAULT_FS
SEEDS = [int(os.environ["LSM_SCAN_SEED"])] if "LSM_SCAN_SEED" in os.environ else None


def _levels(rng: random.Random) -> tuple[list[list[tuple[bytes, int, bytes]]], list[bool]]:
    """Sources newest first, and which are clean. The last is a clean base
    level (distinct PUTs); above it clean levels whose keys are mostly (or,
    in some runs, only) the base's, with higher seqs; sometimes a non-clean
    level with two or three versions of some keys (one above a snapshot)."""
    nkeys = rng.randint(50, 1200)
    keys = sorted({b"k%05d" % rng.randrange(20_000) for _ in range(nkeys)})
    seq = 1
    base = []
    for k in keys:
        base.append((k, pack_trailer(seq, PUT), b"base" + k))
        seq += 1
    srcs = [base]
    clean = [True]
    subset = rng.random() < 0.5
    for li in range(rng.randint(1, 3)):
        if rng.random() < 0.3:
            # A non-clean level: versions of one key, newest first.
            es = []
            for k in rng.sample(keys, rng.randint(1, len(keys))):
                for _ in range(rng.randint(1, 3)):
                    kind = DELETE if rng.random() < 0.1 else PUT
                    es.append((k, pack_trailer(seq, kind), b"nc%d" % li + k))
                    seq += 1
            es.sort(key=lambda e: (e[0], -e[1]))
            srcs.insert(0, es)
            clean.insert(0, False)
            continue
        frac = rng.choice([0.05, 0.5, 0.95, 1.0])
        ks = [k for k in keys if rng.random() < frac]
        if not subset:
            ks = sorted(set(ks) | {b"k%05d" % rng.randrange(20_000) for _ in range(rng.randint(1, 30))})
        es = []
        for k in ks:
            es.append((k, pack_trailer(seq, PUT), b"l%d" % li + k))
            seq += 1
        srcs.insert(0, es)
        clean.insert(0, True)
    return srcs, clean


def _memtable(rng: random.Random, srcs, seq0: int) -> list[tuple[bytes, int, bytes]]:
    """A windowed source's entries: versions of keys of the tables (bound
    keys among them, whatever the chunk edges) and a few new keys."""
    pool = sorted({e[0] for s in srcs for e in s})
    ks = rng.sample(pool, min(len(pool), rng.randint(0, 60))) + [b"k%05d" % rng.randrange(20_000) for _ in range(3)]
    es = []
    seq = seq0
    for k in set(ks):
        kind = DELETE if rng.random() < 0.05 else PUT
        es.append((k, pack_trailer(seq, kind), b"mem" + k))
        seq += 1
    es.sort(key=lambda e: (e[0], -e[1]))
    return es


@pytest.mark.parametrize("seed", SEEDS or range(2000, 2060))
def test_clean_levels_under_a_memtable_equal_heap_merge(seed):
    print("seed", seed)
    rng = random.Random(seed)
    srcs, clean = _levels(rng)
    top = sum(len(s) for s in srcs)
    mem = _memtable(rng, srcs, top + 1) if rng.random() < 0.8 else []
    pool = sorted({e[0] for s in srcs for e in s})
    for snap in (MAX_SEQ, rng.randint(len(srcs[-1]), top), len(srcs[-1])):
        # Clean at the snapshot: distinct PUTs, none above it (clean_at).
        cl = [c and all(e[1] >> 8 <= snap for e in s) for c, s in zip(clean, srcs)]
        for reverse in (False, True):
            lo = hi = None
            if rng.random() < 0.5:
                lo, hi = sorted(rng.sample(pool, 2)) if len(pool) > 1 else (None, None)
                if rng.random() < 0.3:
                    lo = None

            def inr(es, lo=lo, hi=hi):
                return [e for e in es if (lo is None or e[0] >= lo) and (hi is None or e[0] < hi)]

            ranged = [inr(s) for s in srcs]
            want = list(visible([iter(s[::-1] if reverse else s) for s in [inr(mem), *ranged]], snap, reverse))
            # Chunks cut anywhere (a non-clean level's versions of a key
            # straddle chunk edges), small or large against the levels.
            most = rng.choice([3, 40, 400])
            cs = [chunks(s, rng, reverse, most=most) for s in ranged]
            wins = [lambda a, b: window(mem, a, b)] if mem else []
            got = list(chain.from_iterable(visible_columns(cs, snap, None, None, wins, lo, hi, reverse, cl)))
            assert got == want, (snap, reverse, lo, hi, cl)


def _table(path: str, entries, **kw) -> TableReader:
    w = TableWriter(FS, path, **kw)
    for e in entries:
        w.add(*e)
    w.finish(sync=False)
    return TableReader.open(FS, path, file_number=1, cache=BlockCache(1 << 24))


@pytest.mark.parametrize("comp", [compression.LZ4, compression.NONE, compression.ZSTD])
@pytest.mark.parametrize("fixed", [True, False])
def test_long_scans_cut_whole_runs_equal_model(tmp_path, comp, fixed):
    """A long scan's read-ahead runs cut by :func:`payload_columns`:
    fixed-size records (one Struct per block) and variable ones (a view
    per block), blocks cached by point reads in the middle of runs, bounds
    both ways; every chunk ascending, the whole equal to the model."""
    rng = random.Random(11)
    entries = []
    for i in range(3000):
        k = b"key%06d" % i if fixed else b"key%d" % i + b"x" * rng.randrange(8)
        v = (b"v%05d" % i) * 6 if fixed else rng.randbytes(rng.randrange(60))
        entries.append((k, pack_trailer(i + 1, PUT), v))
    entries.sort(key=lambda e: e[0])
    r = _table(str(tmp_path / "t.sst"), entries, block_size=512, compression=comp)
    assert len(r._boffs) > 80
    keys = [e[0] for e in entries]
    for _ in range(12):
        for e in rng.sample(entries, 5):
            assert r.get(e[0], MAX_SEQ) == (PUT, e[2])  # cached blocks inside runs
        a, b = sorted(rng.sample([None, *keys], 2), key=lambda x: (x is not None, x))
        if rng.random() < 0.3:
            a = None
        want = [e for e in entries if (a is None or e[0] >= a) and (b is None or e[0] < b)]
        for reverse in (False, True):
            cs = list(r.iter_columns(a, b, reverse=reverse))
            for k, t, v in cs:
                assert list(k) == sorted(k) and len(k) == len(t) == len(v) > 0
            got = [e for k, t, v in (cs[::-1] if reverse else cs) for e in zip(k, t, v)]
            assert got == want, (a, b, reverse)
    r.close()


def test_payload_columns_equal_decode_block():
    rng = random.Random(5)
    payloads = []
    for i in range(40):
        n = rng.randint(1, 40)
        if i % 3:
            kl, vl = rng.choice([(16, 100), (9, 0), (1, 7)])
            ks = sorted({rng.randbytes(kl) for _ in range(n)})
            vs = [rng.randbytes(vl) for _ in ks]
        else:
            ks = sorted({rng.randbytes(rng.randint(0, 12)) for _ in range(n)})
            vs = [rng.randbytes(rng.randint(0, 30)) for _ in ks]
        ts = [pack_trailer(rng.randrange(1 << 40), rng.choice([PUT, DELETE])) for _ in ks]
        payloads.append(encode_block(ks, ts, vs))
    want_k, want_t, want_v = [], [], []
    for p in payloads:
        k, t, v = decode_block(p)
        want_k += k
        want_t += t
        want_v += v
    for check in (False, True):
        for _ in range(2):  # the second time with every layout known
            k, t, v = payload_columns(payloads, check)
            assert (k, list(t), v) == (want_k, want_t, want_v)
    # A payload whose head matches a known layout but whose length does
    # not, and an empty block, are refused (ValueError), as BlockView does.
    fixed = encode_block([b"a" * 16] * 5, [1] * 5, [b"b" * 100] * 5)
    payload_columns([fixed], False)
    with pytest.raises(ValueError):
        payload_columns([fixed[:-1]], False)
    with pytest.raises(ValueError):
        payload_columns([fixed + b"x"], False)
    with pytest.raises(ValueError):
        payload_columns([encode_block([], [], [])], False)
    with pytest.raises(ValueError):
        BlockView(fixed[:-1])


@pytest.mark.parametrize("reverse", [False, True])
def test_a_table_of_tombstones_only_scans_empty_with_bounds(tmp_path, reverse):
    """A table with no data block (a range tombstone alone, kept by a full
    compaction): every bound both ways reads nothing from it (the reverse
    scan once read block -1 when given a start)."""
    import lsm

    # (every level compressed: compact_range moves the table down by edits,
    # where a rewrite into a compressed level would drop the lone tombstone)
    db = lsm.open(str(tmp_path / "db"), background="inline", sync=lsm.Sync.OFF, min_level_to_compress=0)
    db.delete_range(b"k", b"k\x00")
    db.compact_range()
    rs = list(db._sv.readers.values())
    assert rs and all(not r._ikeys for r in rs)
    for start, stop in [(None, None), (b"", None), (b"a", b"z"), (None, b"k"), (b"k", None)]:
        assert list(db.items(start, stop, reverse=reverse)) == []
        for r in rs:
            assert list(r.iter_columns(start, stop, reverse=reverse)) == []
    assert list(db.items(prefix=b"", reverse=reverse)) == []
    db.close()
