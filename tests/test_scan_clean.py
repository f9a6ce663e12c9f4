"""The scan's clean-table fast path: the ``distinct_keys`` table property
(docs/format/sstable.md) and ``TableReader.clean_at``, which let
``lsm.iterators.visible_columns`` hand a table's entries on with no
per-entry version check when every entry is a PUT of a key of its own
visible at the scan's snapshot.

Each DB test builds a case where skipping the check would return a wrong
or stale version (two versions of a key in one table, a snapshot older
than the table's max_seq, newer versions and deletions in other sources)
and asserts the scan both ways against a dict model. Randomized: prints
its seed; ``LSM_SCAN_SEED=N`` replays one.
"""

from __future__ import annotations

import os
import random
from itertools import chain

import pytest

import lsm
import lsm.db_scan
import lsm.db
import lsm.sstable.block as block_mod
import lsm.sstable.format as format_mod
import lsm.sstable.writer as writer_mod
from lsm.base.coding import MAX_SEQ, ValueKind, pack_trailer
from lsm.base.errors import CorruptionError
from lsm.base.fs import DEFAULT_FS
from lsm.iterators import _splice, visible, visible_columns
from lsm.sstable import TableReader, TableWriter
from tests.test_scan import chunks

PUT = ValueKind.PUT
DELETE = ValueKind.DELETE
FS = DEFAULT_FS


def write(path, entries, **kw):
    w = TableWriter(FS, path, **kw)
    for e in entries:
        w.add(*e)
    return w.finish(sync=False)


def opened(path):
    return TableReader.open(FS, path, file_number=1)


# ---------------------------------------------------------------- the property
def test_writer_sets_distinct_keys_only_when_no_key_repeats(tmp_path):
    distinct = [(b"k%03d" % i, pack_trailer(i + 1, PUT), b"v") for i in range(200)]
    p = write(str(tmp_path / "a.sst"), distinct, block_size=128)
    assert p.distinct_keys
    r = opened(str(tmp_path / "a.sst"))
    assert r.properties.distinct_keys
    r.check()
    r.close()

    two = distinct[:50] + [(b"k049", pack_trailer(1, PUT), b"old")] + distinct[50:]
    two[49] = (b"k049", pack_trailer(300, PUT), b"new")
    assert not write(str(tmp_path / "b.sst"), two, block_size=128).distinct_keys
    r = opened(str(tmp_path / "b.sst"))
    assert not r.properties.distinct_keys
    r.check()
    r.close()

    # The empty key counts as a key (add() leaves it out of its count).
    first_empty = [(b"", pack_trailer(5, PUT), b"e"), (b"a", pack_trailer(4, PUT), b"a")]
    assert write(str(tmp_path / "c.sst"), first_empty).distinct_keys
    empty_twice = [(b"", pack_trailer(5, PUT), b"e"), (b"", pack_trailer(4, PUT), b"f")]
    assert not write(str(tmp_path / "d.sst"), empty_twice).distinct_keys
    assert not write(str(tmp_path / "e.sst"), []).distinct_keys


def test_add_columns_sets_it_too(tmp_path):
    w = TableWriter(FS, str(tmp_path / "a.sst"), block_size=256)
    keys = [b"k%04d" % i for i in range(500)]
    w.add_columns(keys, [pack_trailer(i + 1, PUT) for i in range(500)], [b"v"] * 500)
    assert w.finish(sync=False).distinct_keys


def test_table_without_the_property_reads_and_is_not_clean(tmp_path, monkeypatch):
    """A table written before the property existed: same entries, the
    property absent, read as False, never clean."""
    real = writer_mod.encode_properties

    def old_format(props, nblocks, rd_h=None):
        props.distinct_keys = False
        return real(props, nblocks, rd_h)

    monkeypatch.setattr(writer_mod, "encode_properties", old_format)
    entries = [(b"k%03d" % i, pack_trailer(i + 1, PUT), b"v%d" % i) for i in range(100)]
    write(str(tmp_path / "old.sst"), entries, block_size=128)
    monkeypatch.undo()
    r = opened(str(tmp_path / "old.sst"))
    assert not r.properties.distinct_keys and not r.clean_at(10**6)
    assert list(r.iter_entries()) == entries
    r.check()
    r.close()


def test_check_rejects_a_false_claim_and_open_a_bad_value(tmp_path, monkeypatch):
    real = writer_mod.encode_properties

    def lying(props, nblocks, rd_h=None):
        props.distinct_keys = True
        return real(props, nblocks, rd_h)

    monkeypatch.setattr(writer_mod, "encode_properties", lying)
    two = [(b"a", pack_trailer(2, PUT), b"new"), (b"a", pack_trailer(1, PUT), b"old")]
    write(str(tmp_path / "lie.sst"), two)
    r = opened(str(tmp_path / "lie.sst"))
    with pytest.raises(CorruptionError, match="distinct_keys"):
        r.check()
    r.close()

    def bad_value(props, nblocks, rd_h=None):
        payload = real(props, nblocks, rd_h)
        keys, trailers, values = block_mod.decode_block(payload)
        keys.append(format_mod.PROP_DISTINCT_KEYS)
        trailers.append(0)
        values.append((2).to_bytes(8, "little"))
        order = sorted(range(len(keys)), key=keys.__getitem__)
        return block_mod.encode_block([keys[i] for i in order], [0] * len(keys), [values[i] for i in order])

    monkeypatch.setattr(writer_mod, "encode_properties", bad_value)
    write(str(tmp_path / "bad.sst"), [(b"a", pack_trailer(1, PUT), b"v")])
    with pytest.raises(CorruptionError, match="distinct_keys"):
        opened(str(tmp_path / "bad.sst"))


def test_clean_at_needs_distinct_puts_at_or_below_the_snapshot(tmp_path):
    puts = [(b"k%02d" % i, pack_trailer(10 + i, PUT), b"v") for i in range(20)]
    write(str(tmp_path / "p.sst"), puts)
    r = opened(str(tmp_path / "p.sst"))
    assert r.clean_at(29) and r.clean_at(10**9)
    assert not r.clean_at(28)  # the newest entry (seq 29) is above the snapshot
    r.close()
    dels = list(puts)
    dels[3] = (b"k03", pack_trailer(13, DELETE), b"")
    write(str(tmp_path / "d.sst"), dels)
    r = opened(str(tmp_path / "d.sst"))
    assert r.properties.distinct_keys and not r.clean_at(10**9)
    r.close()
    w = TableWriter(FS, str(tmp_path / "r.sst"))
    for e in puts:
        w.add(*e)
    w.add_range_del(b"k05", b"k07", 40)
    w.finish(sync=False)
    r = opened(str(tmp_path / "r.sst"))
    assert r.properties.distinct_keys and not r.clean_at(10**9)
    r.close()


# ---------------------------------------------------------------- the merge
SEEDS = [int(os.environ["LSM_SCAN_SEED"])] if "LSM_SCAN_SEED" in os.environ else None


@pytest.mark.parametrize("seed", SEEDS or range(500, 520))
def test_splice_equals_a_dict_merge(seed):
    print("seed", seed)
    rng = random.Random(seed)
    pool = sorted({rng.randbytes(rng.randint(0, 3)) for _ in range(300)})
    bk = sorted(rng.sample(pool, rng.randint(0, len(pool))))
    sk = sorted(rng.sample(pool, rng.randint(0, 60)))
    bv = [b"old" + k for k in bk]
    sv = [b"new" + k for k in sk]
    d = dict(zip(bk, bv))
    d.update(zip(sk, sv))
    ok, ov = _splice(bk, bv, sk, sv)
    assert list(zip(ok, ov)) == sorted(d.items())


def _chunks(entries, rng, reverse):
    return chunks(entries, rng, reverse, most=200)


@pytest.mark.parametrize("seed", SEEDS or range(600, 640))
def test_visible_columns_with_a_clean_oldest_source_equal_heap_merge(seed):
    """The oldest source is clean (distinct PUTs, seqs 1..n, scanned at a
    snapshot at or above them); newer sources are few or many entries:
    deletions, several versions, versions above the snapshot, so the
    splice, the dict path and the single-source path all run. Would fail
    if a newer version, a deletion or the snapshot were ignored."""
    print("seed", seed)
    rng = random.Random(seed)
    keys = sorted({b"k%04d" % rng.randrange(3000) for _ in range(rng.randint(1, 1500))})
    base = [(k, pack_trailer(i + 1, PUT), b"base") for i, k in enumerate(keys)]
    top = len(base)
    srcs = []
    for si in range(rng.randint(0, 3)):
        lo_seq = top + 1 + si * 10_000
        es = []
        frac = rng.choice([0.005, 0.05, 0.3])
        for k in keys + [b"k%04d" % rng.randrange(3000) for _ in range(20)]:
            if rng.random() < frac:
                for _ in range(rng.choice([1, 1, 2])):
                    kind = DELETE if rng.random() < 0.2 else PUT
                    es.append((k, pack_trailer(lo_seq + rng.randrange(9_000), kind), b"s%d" % si))
        es.sort(key=lambda e: (e[0], -e[1]))
        dedup = [e for i, e in enumerate(es) if i == 0 or e[:2] != es[i - 1][:2]]
        srcs.append(dedup)
    srcs.reverse()  # newest first
    srcs.append(base)
    for snap in (MAX_SEQ, top + 10_000 + rng.randrange(20_000), top):
        for reverse in (False, True):
            want = list(visible([iter(s[::-1] if reverse else s) for s in srcs], snap, reverse))
            cs = [_chunks(s, rng, reverse) for s in srcs]
            clean = [False] * (len(srcs) - 1) + [True]
            got = list(
                chain.from_iterable(visible_columns(cs, snap, None, None, (), None, None, reverse, clean))
            )
            assert got == want, (snap, reverse)


# ---------------------------------------------------------------- the DB
def scans(view, model, bounds):
    for start, stop in bounds:
        want = sorted(
            (k, v) for k, v in model.items() if (start is None or k >= start) and (stop is None or k < stop)
        )
        assert list(view.items(start, stop)) == want, (start, stop)
        assert list(view.items(start, stop, reverse=True)) == want[::-1], (start, stop)


BOUNDS = [(None, None), (b"key00100", b"key00250"), (b"key00123", None), (None, b"key00007")]


def open_db(tmp_path, **kw):
    opts = {"background": "inline", "sync": lsm.Sync.OFF, "block_size": 256}
    opts.update(kw)
    return lsm.open(str(tmp_path / "db"), **opts)


def readers(db):
    return [r for r in db._sv.readers.values()]


def test_two_versions_of_a_key_in_one_table(tmp_path):
    # A snapshot held across the flush keeps both versions of each key in
    # one table: not distinct, so never clean; a fast path that trusted it
    # would hand out both versions (a duplicate key) or the old one.
    db = open_db(tmp_path)
    keys = [b"key%05d" % i for i in range(400)]
    for k in keys:
        db.put(k, b"old-" + k)
    snap = db.snapshot()
    old = {k: b"old-" + k for k in keys}
    for k in keys[::3]:
        db.put(k, b"new-" + k)
    db.flush()
    db.compact_range()
    rs = readers(db)
    assert rs and not any(r.properties.distinct_keys for r in rs)
    live = dict(old)
    live.update({k: b"new-" + k for k in keys[::3]})
    scans(db, live, BOUNDS)
    scans(snap, old, BOUNDS)
    snap.close()
    db.close()


def test_snapshot_older_than_the_tables_max_seq(tmp_path):
    # One distinct-key table holding keys written after the snapshot: clean
    # for the live scan, not for the snapshot's, which must not see them.
    db = open_db(tmp_path)
    first = {b"key%05d" % i: b"a%d" % i for i in range(0, 400, 2)}
    for k, v in first.items():
        db.put(k, v)
    snap = db.snapshot()
    later = {b"key%05d" % i: b"b%d" % i for i in range(1, 400, 2)}
    for k, v in later.items():
        db.put(k, v)
    db.flush()
    db.compact_range()
    rs = readers(db)
    assert rs and all(r.properties.distinct_keys for r in rs)
    assert all(r.clean_at(db._last_seq) for r in rs)
    assert not all(r.clean_at(snap.seq) for r in rs)
    scans(db, {**first, **later}, BOUNDS)
    scans(snap, first, BOUNDS)
    snap.close()
    db.close()


def test_clean_level_under_newer_versions_and_deletions(tmp_path):
    # The bottom level is clean; level 0 and the memtable hold newer
    # versions and deletions of some of its keys, which must win.
    db = open_db(tmp_path)
    model = {b"key%05d" % i: b"base%d" % i for i in range(500)}
    for k, v in model.items():
        db.put(k, v)
    db.flush()
    db.compact_range()
    assert all(r.clean_at(db._last_seq) for r in readers(db))
    for i in range(0, 500, 7):
        k = b"key%05d" % i
        db.put(k, b"l0-%d" % i)
        model[k] = b"l0-%d" % i
    db.delete(b"key00014")
    model.pop(b"key00014")
    db.flush()
    for i in range(3, 500, 11):
        k = b"key%05d" % i
        db.put(k, b"mem-%d" % i)
        model[k] = b"mem-%d" % i
    for i in range(5, 500, 13):
        db.delete(b"key%05d" % i)
        model.pop(b"key%05d" % i, None)
    scans(db, model, BOUNDS)
    db.close()


@pytest.mark.parametrize(
    "seed", [int(os.environ["LSM_SCAN_SEED"])] if "LSM_SCAN_SEED" in os.environ else [31, 32, 33]
)
def test_random_ops_with_clean_tables_equal_model(tmp_path, seed, monkeypatch):
    print("seed", seed)
    rng = random.Random(seed)
    hits = []
    real = lsm.db_scan.visible_columns

    def counting(*args):
        hits.extend(args[-1])  # the clean flags of the scan's table sources
        return real(*args)

    monkeypatch.setattr(lsm.db_scan, "visible_columns", counting)
    db = open_db(tmp_path, memtable_size=4096, target_file_size=4096, l0_compaction_trigger=2)
    model: dict[bytes, bytes] = {}
    snaps: list[tuple[lsm.Snapshot, dict]] = []
    try:
        for step in range(700):
            r = rng.random()
            k = b"key%05d" % rng.randrange(300)
            if r < 0.75:
                v = rng.randbytes(8)
                db.put(k, v)
                model[k] = v
            elif r < 0.85:
                db.delete(k)
                model.pop(k, None)
            elif r < 0.9:
                db.flush()
            elif r < 0.93:
                db.compact_range()
            elif r < 0.95 and len(snaps) < 2:
                snaps.append((db.snapshot(), dict(model)))
            elif r < 0.97 and snaps:
                snaps.pop(0)[0].close()
            if step % 100 == 99:
                bounds = [(None, None), tuple(sorted((b"key%05d" % rng.randrange(300),) * 2))]
                bounds.append((b"key%05d" % rng.randrange(150), b"key%05d" % rng.randrange(150, 300)))
                scans(db, model, bounds)
                for s, d in snaps:
                    scans(s, d, bounds)
        db.compact_range()
        scans(db, model, BOUNDS)
        for s, d in snaps:
            scans(s, d, BOUNDS)
    finally:
        for s, _d in snaps:
            s.close()
        db.close()
    assert any(hits) and not all(hits), "both the fast path and the checked path were taken"
