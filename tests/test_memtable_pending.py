"""Batches of puts deferred in the memtable (``MemTable._pending``): what a
memtable shows with batches pending is what the same ops applied one at a
time show, whenever it is read; a memtable of pending batches only reaches
its flush as columns (``FrozenEntries`` tagged ``"r"``) whose versions,
pickled or not, are the model's; readers racing a writer of batches see
every committed batch.

Randomized tests print their seed; set LSM_TEST_SEED to replay one."""

from __future__ import annotations

import pickle
import random
import sys
import threading
from itertools import pairwise

import pytest

import lsm
from lsm import WriteBatch
from lsm.base.coding import ValueKind
from lsm.base.crashfs import CrashFS
from lsm.memtable import FrozenEntries, MemTable
from tests.memtable_model import add_one_at_a_time, assert_same_memtable
from tests.seeds import seed as _seed

PUT, DELETE, RANGE_DELETE = ValueKind.PUT, ValueKind.DELETE, ValueKind.RANGE_DELETE


def _nbytes(keys: list[bytes], values: list[bytes]) -> int:
    return sum(map(len, keys)) + sum(map(len, values))


def _put_batch(rng: random.Random, nkeys: int, size: int) -> tuple[list[bytes], list[bytes]]:
    keys = [b"%03d" % rng.randrange(nkeys) for _ in range(size)]
    return keys, [rng.randbytes(rng.randrange(0, 6)) for _ in keys]


# ---------------------------------------------------------------- the memtable alone
def test_pending_batches_read_like_ops_one_at_a_time():
    # Batches of puts (deferred), batches holding a deletion or a range
    # deletion (indexed at once, after the pending ones), single adds, and
    # reads at random points (each read indexes what is pending).
    rng = random.Random(_seed())
    deferred = 0  # over all trials (a trial may hold no batch of puts)
    for trial in range(60):
        m, model = MemTable(), MemTable()
        seq = 1
        keys_seen: set[bytes] = set()
        for _ in range(rng.randrange(1, 40)):
            r = rng.random()
            if r < 0.55:
                keys, values = _put_batch(rng, 60, rng.randrange(2, 30))
                before = len(m._pending)
                m.add_batch(seq, keys, values, None, _nbytes(keys, values))
                deferred += len(m._pending) > before
                seq = add_one_at_a_time(model, seq, [(PUT, k, v) for k, v in zip(keys, values)])
            elif r < 0.7:
                ops = [(rng.choice((PUT, DELETE)), b"%03d" % rng.randrange(60), b"x") for _ in range(rng.randrange(2, 8))]
                if rng.random() < 0.3:
                    ops.append((RANGE_DELETE, b"%03d" % rng.randrange(30), b"%03d" % rng.randrange(30, 60)))
                m.add_batch(seq, [o[1] for o in ops], [o[2] for o in ops], bytes(o[0] for o in ops),
                            sum(len(o[1]) + len(o[2]) for o in ops))
                assert not m._pending, "a batch that is not deferred indexes the pending ones first"
                seq = add_one_at_a_time(model, seq, ops)
            elif r < 0.85:
                k = b"%03d" % rng.randrange(60)
                m.add(seq, PUT, k, b"single")
                assert not m._pending
                seq = add_one_at_a_time(model, seq, [(PUT, k, b"single")])
            else:
                k = b"%03d" % rng.randrange(60)
                snap = rng.randrange(seq + 1)
                assert m.get(k, snap) == model.get(k, snap), (trial, k, snap)
                assert not m._pending
            keys_seen.update(k for k, *_ in model.iter_entries())
        assert m.size == model.size  # charged when deferred, not again when indexed
        assert_same_memtable(m, model, keys_seen | {b"none"}, range(0, seq + 1, 3))
    assert deferred, "no batch was deferred"


def test_a_single_put_after_pending_batches_is_newer():
    m = MemTable()
    m.add_batch(1, [b"a", b"b"], [b"1", b"2"], None, 4)
    assert m._pending and not m._latest
    m.add(3, PUT, b"a", b"3")  # indexes the batch first
    assert not m._pending
    assert m.get(b"a", 3) == (3, PUT, b"3") and m.get(b"a", 2) == (1, PUT, b"1")
    assert [e[1] >> 8 for e in m.iter_entries()] == [3, 1, 2]


def test_counts_and_emptiness_with_batches_pending():
    m = MemTable()
    assert m.is_empty()
    m.add_batch(1, [b"a", b"b", b"a"], [b"1", b"2", b"3"], None, 6)
    assert not m.is_empty() and m._pending
    assert m.count == 3 and m._pending  # counted, not indexed (stats polls count)
    assert len(m) == 2 and not m._pending
    m2 = MemTable()
    m2.add_batch(1, [b"a", b"b", b"a"], [b"1", b"2", b"3"], None, 6)
    assert m2.keys_in_range(None, None) == [b"a", b"b"] and not m2._pending


# ---------------------------------------------------------------- the flush hand-off
def _frozen_twins(rng: random.Random, nkeys: int, gaps: bool) -> tuple[MemTable, MemTable, list[tuple[bytes, int, bytes]]]:
    """A memtable of pending batches only and its one-op-at-a-time model."""
    m, model = MemTable(), MemTable()
    seq = 1
    for _ in range(rng.randrange(1, 12)):
        keys, values = _put_batch(rng, nkeys, rng.randrange(2, 40))
        m.add_batch(seq, keys, values, None, _nbytes(keys, values))
        seq = add_one_at_a_time(model, seq, [(PUT, k, v) for k, v in zip(keys, values)])
        if gaps and rng.random() < 0.5:
            seq += rng.randrange(1, 4)  # seqs not consecutive (as after an empty seq range)
    assert m._pending and not m._latest
    return m, model, list(model.iter_entries())


@pytest.mark.parametrize("gaps", [False, True])
def test_pending_memtable_freezes_as_runs_with_every_version(gaps):
    rng = random.Random(_seed())
    multi = unique = 0
    for _ in range(80):
        m, _model, want = _frozen_twins(rng, rng.choice((30, 10_000)), gaps)
        f = m.frozen()
        assert f._runs is not None  # handed over as the batches, no dict built
        state = f.__getstate__()
        assert state[0] == "r"
        p = m._pending
        consecutive = all(b[0] == a[0] + len(a[1]) for a, b in pairwise(p))
        assert state[2] == p[0][0] if consecutive else type(state[2]) is bytes  # seqs: the first, or each one
        for g in (f, pickle.loads(pickle.dumps(f, protocol=5)), pickle.loads(pickle.dumps(f, protocol=4))):
            assert list(g) == want
            assert len(g) == len(want)
            cols = g.columns()
            if len({k for k, _t, _v in want}) == len(want):
                unique += 1
                assert cols is not None and list(zip(*cols)) == want
            else:
                multi += 1
                assert cols is None  # versions: iterated, as the dicts with older versions are
        # Freezing did not index: the memtable still reads right afterwards.
        assert list(m.iter_entries()) == want
    assert multi and unique


def test_a_runs_job_with_a_repeated_seq_is_refused():
    # Two entries of one key with one seq: no memtable makes that.
    f = FrozenEntries.__new__(FrozenEntries)
    seqs = b"".join(s.to_bytes(8, "little") for s in (5, 6, 5))
    f.__setstate__(("r", pickle.dumps(([b"k", b"j", b"k"], [b"1", b"2", b"3"])), seqs, bytes([PUT]) * 3))
    with pytest.raises(ValueError, match="hold a key twice"):
        f.columns()
    with pytest.raises(ValueError, match="hold a key twice"):
        list(f)
    # The same keys with distinct seqs are versions, newest first.
    g = FrozenEntries.__new__(FrozenEntries)
    g.__setstate__(("r", pickle.dumps(([b"k", b"j", b"k"], [b"1", b"2", b"3"])), 5, bytes([PUT]) * 3))
    assert g.columns() is None
    assert list(g) == [(b"j", (6 << 8) | PUT, b"2"), (b"k", (7 << 8) | PUT, b"3"), (b"k", (5 << 8) | PUT, b"1")]


# ---------------------------------------------------------------- through the DB
def test_a_batch_reused_after_write_does_not_change_the_memtable():
    db = lsm.open("/db", fs=CrashFS(), background="inline", sync=lsm.Sync.OFF)
    b = WriteBatch()
    b.put(b"a", b"1")
    b.put(b"b", b"2")
    db.write(b)
    assert db._mem._pending, "the batch was not deferred"
    b.put(b"c", b"3")  # the caller's lists grow; the memtable kept copies
    b._values[0] = b"changed"
    assert dict(db.items()) == {b"a": b"1", b"b": b"2"}
    db.close()


@pytest.mark.parametrize("background", ["inline", "thread", "process"])
def test_batches_with_overwrites_flush_and_recover(tmp_path, background):
    # Small memtables filled by batches alone (keys repeated across and
    # within batches): each flush takes the runs; a snapshot taken midway
    # keeps its versions through the flushes; a reopen reads the same.
    rng = random.Random(_seed())
    path = str(tmp_path / "db")
    db = lsm.open(path, background=background, sync=lsm.Sync.OFF, memtable_size=16 << 10)
    model: dict[bytes, bytes] = {}
    snap = snap_model = None
    for i in range(120):
        keys, values = _put_batch(rng, 400, 50)
        values = [v + b"%d" % i for v in values]
        with db.batch() as b:
            for k, v in zip(keys, values):
                b.put(k, v)
        model.update(zip(keys, values))
        if i == 40:
            snap, snap_model = db.snapshot(), dict(model)
    db.flush()
    assert db.stats()["flush_count"] >= 3
    assert dict(db.items()) == model
    assert snap is not None and dict(snap.items()) == snap_model
    for k in rng.sample(sorted(snap_model), 50):
        assert snap.get(k) == snap_model[k] and db.get(k) == model[k]
    snap.close()
    db.close()
    db = lsm.open(path, background=background, sync=lsm.Sync.OFF)
    assert dict(db.items()) == model
    db.close()


def test_readers_racing_a_batch_writer_see_every_committed_batch():
    # Readers read a key of the last batch the writer says it committed:
    # the batch is pending or being indexed by another reader meanwhile,
    # never missed. A tiny switch interval makes the threads interleave
    # inside _index and the reads.
    seed = _seed()
    db = lsm.open("/db", fs=CrashFS(), background="inline", sync=lsm.Sync.OFF, memtable_size=256 << 10)
    committed = [-1]
    stop = threading.Event()
    errors: list[str] = []

    def reader(r: random.Random) -> None:
        while not stop.is_set():
            i = committed[0]
            if i < 0:
                continue
            j = r.randrange(i + 1)
            for k in (b"k%06d-%02d" % (j, r.randrange(20)),):
                v = db.get(k)
                if v != b"v%d" % j:
                    errors.append(f"batch {j} (committed {i}): {k!r} -> {v!r}")
                    stop.set()

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=reader, args=(random.Random(seed + t),)) for t in range(3)]
    try:
        for t in threads:
            t.start()
        for i in range(1500):
            with db.batch() as b:
                for x in range(20):
                    b.put(b"k%06d-%02d" % (i, x), b"v%d" % i)
            committed[0] = i
            if stop.is_set():
                break
    finally:
        stop.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(old)
    assert not errors, errors[:5]
    assert db.stats()["flush_count"] >= 1
    db.close()
