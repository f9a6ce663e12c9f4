"""Scans (``DB.items`` forward and reverse) against a dict model, and the
bulk merge's fast paths against the plain heap merge.

The bulk merge (``lsm.iterators.visible_columns``) decides each round
with C-level passes: one source alone handed through, a dict where every
entry is a visible PUT (newest source wins), and a keep-mask when some
entries are deletions, newer than the snapshot or under a range
tombstone. Fixed-size records take ``BlockView.columns``' Struct path.
These tests drive every one of them, forward and reverse, with bounds and
prefixes, over memtables, overlapping level-0 files and sorted levels, at
the current sequence number and at snapshots.

Randomized: each test prints its seed; ``LSM_SCAN_SEED=N`` replays one,
``LSM_SCAN_ROUNDS`` runs more rounds.
"""

from __future__ import annotations

import os
import random
from itertools import chain

import pytest

import lsm
from lsm.base.coding import MAX_SEQ, ValueKind, pack_trailer
from lsm.base.rangedel import RangeDels, visible_fragments
from lsm.iterators import visible, visible_columns
from lsm.sstable.block import BlockView, encode_block
from tests.seeds import seed_list

PUT = ValueKind.PUT
DELETE = ValueKind.DELETE
ROUNDS = int(os.environ.get("LSM_SCAN_ROUNDS", "12"))


# ---------------------------------------------------------------- blocks
@pytest.mark.parametrize("seed", seed_list("LSM_SCAN_SEED", 10, 3))
def test_block_columns_fixed_and_variable_sizes(seed):
    print("seed", seed)
    rng = random.Random(seed)
    for _ in range(400):
        n = rng.randint(1, 60)
        kl, vl = rng.choice([0, 1, 16]), rng.choice([0, 3, 100])
        var = rng.random() < 0.3  # some lengths differ: the slicing path
        ks = sorted(rng.randbytes(rng.randint(0, 5) if var else kl) for _ in range(n))
        vs = [rng.randbytes(rng.randint(0, 5) if var else vl) for _ in range(n)]
        if not var and n > 2 and rng.random() < 0.3:
            # Same total key and value bytes, one length off: the offsets
            # differ from the fixed layout's.
            ks[0], ks[1] = ks[0] + b"\x00", ks[1][:-1] if ks[1] else ks[1]
            ks.sort()
        ts = [rng.randrange(1 << 64) for _ in range(n)]
        b = BlockView(encode_block(ks, ts, vs))
        lo = rng.randint(0, n)
        hi = rng.randint(lo, n)
        k, t, v = b.columns(lo, hi)
        assert (k, list(t), v) == (ks[lo:hi], ts[lo:hi], vs[lo:hi])
        assert b.columns()[0] == ks and b.columns()[2] == vs


# ---------------------------------------------------------------- the merge
def rand_key(rng):
    return bytes(rng.choice(b"abcxyz\x00\xff") for _ in range(rng.randint(0, 5)))


def sources_for(rng):
    """1-5 sources, newest first; a newer source's versions of a key are
    newer than an older source's; sometimes several versions of a key in
    one source, deletions, and sources that overlap or do not."""
    n_src = rng.randint(1, 5)
    keys = sorted({rand_key(rng) for _ in range(rng.randint(1, 150))})
    out = []
    for si in range(n_src):
        base = (n_src - si) * 1000
        seqs = rng.sample(range(base - 999, base + 1), 3 * len(keys))
        es = []
        p_del = rng.choice([0.0, 0.0, 0.2])
        multi = rng.random() < 0.3
        for k in keys:
            if rng.random() < rng.choice([0.3, 0.9]):
                for _ in range(rng.choice([1, 2, 3]) if multi else 1):
                    kind = DELETE if rng.random() < p_del else PUT
                    es.append((k, pack_trailer(seqs.pop(), kind), rng.randbytes(3)))
        es.sort(key=lambda e: (e[0], -e[1]))
        out.append(es)
    return out


def chunks(entries, rng, reverse, most=40):
    """Columns chunks of 1-``most`` entries, each in internal order;
    reverse: the last chunk first."""
    cs = []
    i = 0
    while i < len(entries):
        j = i + rng.randint(1, most)
        cs.append(tuple(list(x) for x in zip(*entries[i:j])))
        i = j
    return iter(cs[::-1] if reverse else cs)


def window(entries, a, b):
    es = [e for e in entries if (a is None or e[0] >= a) and (b is None or e[0] < b)]
    return tuple(list(x) for x in zip(*es)) if es else None


@pytest.mark.parametrize("seed", seed_list("LSM_SCAN_SEED", 1000, 40))
def test_visible_columns_both_ways_equal_heap_merge(seed):
    print("seed", seed)
    rng = random.Random(seed)
    srcs = sources_for(rng)
    top = len(srcs) * 1000
    for _ in range(4):
        snap = rng.choice([MAX_SEQ, rng.randint(0, top)])
        rdels = None
        if rng.random() < 0.4:
            pieces = [(*sorted((rand_key(rng), rand_key(rng))), rng.randint(1, top)) for _ in range(rng.randint(1, 4))]
            pieces = [p for p in pieces if p[0] < p[1]]
            if pieces:
                rdels = visible_fragments([RangeDels.build(pieces)], None, None, snap)
        lo, hi = rng.choice([None, rand_key(rng)]), rng.choice([None, rand_key(rng)])
        inr = [[e for e in s if (lo is None or e[0] >= lo) and (hi is None or e[0] < hi)] for s in srcs]
        nwin = rng.randint(0, len(inr))  # the newest sources read by window, as memtables are
        for reverse in (False, True):
            src_iters = [iter(s[::-1] if reverse else s) for s in inr]
            want = list(visible(src_iters, snap, reverse, rdels))
            win = [lambda a, b, s=s: window(s, a, b) for s in inr[:nwin]]
            cs = [chunks(s, rng, reverse) for s in inr[nwin:]]
            rounds = list(visible_columns(cs, snap, rdels, None, win, lo, hi, reverse))
            got = list(chain.from_iterable(rounds))
            assert got == want, (reverse, snap, rdels, lo, hi, nwin)


def test_heap_merge_reference_by_hand():
    # The reference itself, on a case worked out by hand: b is newer than a.
    a = [(b"k", pack_trailer(5, PUT), b"a5"), (b"m", pack_trailer(4, PUT), b"a4"), (b"n", pack_trailer(3, PUT), b"a3")]
    b = [(b"k", pack_trailer(9, DELETE), b""), (b"m", pack_trailer(8, PUT), b"b8")]
    assert list(visible([iter(b), iter(a)], MAX_SEQ)) == [(b"m", b"b8"), (b"n", b"a3")]
    assert list(visible([iter(b), iter(a)], 7)) == [(b"k", b"a5"), (b"m", b"a4"), (b"n", b"a3")]
    assert list(visible([iter(b[::-1]), iter(a[::-1])], 7, True)) == [(b"n", b"a3"), (b"m", b"a4"), (b"k", b"a5")]
    rd = ([b"l"], [b"n"], [6])  # hides m@4 (not m@8)
    assert list(visible([iter(b), iter(a)], 7, False, rd)) == [(b"k", b"a5"), (b"n", b"a3")]
    assert list(visible([iter(b[::-1]), iter(a[::-1])], MAX_SEQ, True, rd)) == [(b"n", b"a3"), (b"m", b"b8")]


# ---------------------------------------------------------------- the DB
class Model:
    """The dict model: the live view, and a copy per snapshot."""

    def __init__(self):
        self.d: dict[bytes, bytes] = {}

    def scan(self, d, start, stop, prefix, reverse):
        ks = sorted(k for k in d if (start is None or k >= start) and (stop is None or k < stop)
                    and (prefix is None or k.startswith(prefix)))
        if reverse:
            ks.reverse()
        return [(k, d[k]) for k in ks]


@pytest.mark.parametrize("seed", seed_list("LSM_SCAN_SEED", 2000, ROUNDS))
def test_db_scans_equal_model(tmp_path, seed):
    print("seed", seed)
    rng = random.Random(seed)
    fixed = rng.random() < 0.6  # fixed-size records: the Struct path in blocks
    nkeys = rng.choice([60, 400])

    def key():
        if fixed:
            return b"k%05d" % rng.randrange(nkeys)
        return b"k" + bytes(rng.choice(b"0123\xff") for _ in range(rng.randint(0, 4)))

    def value():
        return rng.randbytes(12 if fixed else rng.randint(0, 20))

    opts = {"memtable_size": rng.choice([2048, 16384]), "block_size": rng.choice([64, 512, 4096]),
            "target_file_size": rng.choice([2048, 16384]), "l0_compaction_trigger": rng.choice([2, 4]),
            "l0_slowdown_trigger": 8, "l0_stop_trigger": 12, "max_bytes_for_level_base": 16384,
            "level_multiplier": 2, "num_levels": 4, "background": "inline", "sync": lsm.Sync.OFF}
    path = str(tmp_path / "db")
    db = lsm.open(path, **opts)
    m = Model()
    snaps: list[tuple[lsm.Snapshot, dict]] = []

    def check():
        views = [(db, m.d)] + [(s, d) for s, d in snaps]
        for view, d in views:
            bounds = [None, key(), key()]
            for _ in range(3):
                start, stop = rng.choice(bounds), rng.choice(bounds)
                prefix = rng.choice([None, None, b"k0", b"k00", b"k1", b"k\xff"])
                for reverse in (False, True):
                    got = list(view.items(start, stop, prefix=prefix, reverse=reverse))
                    assert got == m.scan(d, start, stop, prefix, reverse), (start, stop, prefix, reverse)
            # A seek: the first few keys from a point.
            s = key()
            want = m.scan(d, s, None, None, False)[:5]
            it = view.items(s)
            assert [next(it) for _ in range(len(want))] == want

    try:
        for step in range(rng.choice([400, 900])):
            r = rng.random()
            if r < 0.7:
                k, v = key(), value()
                db.put(k, v)
                m.d[k] = v
            elif r < 0.85:
                k = key()
                db.delete(k)
                m.d.pop(k, None)
            elif r < 0.88:
                a, b = sorted((key(), key()))
                if a < b:
                    db.delete_range(a, b)
                    for k in [k for k in m.d if a <= k < b]:
                        del m.d[k]
            elif r < 0.91:
                db.flush()
            elif r < 0.93 and len(snaps) < 3:
                snaps.append((db.snapshot(), dict(m.d)))
            elif r < 0.95 and snaps:
                snaps.pop(rng.randrange(len(snaps)))[0].close()
            elif r < 0.96:
                db.compact_range()
            elif r < 0.965:
                for s, _d in snaps:
                    s.close()
                snaps.clear()
                db.close()
                db = lsm.open(path, **opts)
            if step % 150 == 149:
                check()
        check()
        levels = [len(lv) for lv in db._sv.version.levels]
        print("files per level", levels, "memtable entries", db._sv.mem.count)
    finally:
        for s, _d in snaps:
            s.close()
        db.close()


def test_db_scan_sees_overwrites_in_the_memtable_and_levels(tmp_path):
    # Every source holds versions of the same keys: the dict path with
    # duplicates (no deletions), forward and reverse, and at a snapshot.
    db = lsm.open(str(tmp_path / "db"), background="inline", sync=lsm.Sync.OFF, block_size=256)
    keys = [b"key%05d" % i for i in range(300)]
    for gen in range(4):
        for k in keys[gen::2]:
            db.put(k, b"v%d-" % gen + k)
        if gen == 1:
            snap = db.snapshot()
            at_snap = {k: db[k] for k in keys if k in db}
        if gen < 3:
            db.flush()
    want = {k: db[k] for k in keys if k in db}
    assert list(db.items()) == sorted(want.items())
    assert list(db.items(reverse=True)) == sorted(want.items(), reverse=True)
    assert list(snap.items()) == sorted(at_snap.items())
    assert list(snap.items(b"key00100", b"key00200", reverse=True)) == sorted(
        ((k, v) for k, v in at_snap.items() if b"key00100" <= k < b"key00200"), reverse=True)
    snap.close()
    db.close()
