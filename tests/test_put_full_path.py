"""DB.put's FULL/EXTRA path (issue 7, targets 1 and 2): what it inlines
must stay what it replaces.

* ``WalWriter.append_locked``'s staged branch: the same random FULL op
  list through ``DB.put`` (inlined) and ``DB._commit_one`` (the call) leaves
  the same WAL bytes and the same writer counters; a fenced writer or a
  pending barrier still takes the call (it raises, or syncs the barrier
  first).
* ``GroupSync.sync_to``'s fast path: a put whose forming group's gate opens
  without its commit durable must not return before a sync covers it.
* Many FULL threads through put: every put that returns is durable, and
  survives a power cut.

Randomized tests print their seed; ``LSM_PUT_FULL_SEED`` replays one.
"""

from __future__ import annotations

import os
import random
import threading
import time
import types

import pytest

import lsm
import lsm.db
from lsm.base.crashfs import CrashFS
from lsm.base.errors import NeedsRecoveryError
from tests.test_wal_writer_races import _poll, in_sync_to

SEED = int(os.environ.get("LSM_PUT_FULL_SEED") or random.randrange(1 << 30))
_COUNTERS = ("written_seq", "_written_commits", "segment_records", "bytes_written", "durable_seq", "syncs")


def _fixed_clock(monkeypatch) -> None:
    """The record's timestamp from a fixed clock, for both paths."""
    fake = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("_")})
    fake.time_ns = lambda: 1_700_000_000_000_000_000
    monkeypatch.setattr(lsm.db, "time", fake)


@pytest.mark.parametrize("level", ["full", "extra"])
def test_put_full_equals_commit_one(monkeypatch, level):
    print(f"put full path: LSM_PUT_FULL_SEED={SEED}")
    _fixed_clock(monkeypatch)
    rng = random.Random(SEED)
    ops = [(b"k%05d" % rng.randrange(500), rng.randbytes(rng.randrange(0, 200))) for _ in range(300)]
    out = []
    for inline in (True, False):
        fs = CrashFS()
        db = lsm.open("/db", fs=fs, background="inline", sync=level)
        for k, v in ops:
            if inline:
                db.put(k, v)
            else:
                db._commit_one(lsm.db._PUT, k, v, lsm.Sync.coerce(level))
        w = db._wal
        counters = {c: getattr(w, c) for c in _COUNTERS}
        assert not w._staged
        data = fs.read_file(w.segment_path)
        got = [db.get(k) for k, _ in ops]
        db.close()
        out.append((counters, data, got))
    assert out[0] == out[1]


def test_put_full_fenced_raises():
    """A fenced writer: put's FULL path takes append_locked, which raises."""
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", sync="full")
    db.put(b"a", b"1")
    fs.fail("sync", nth=1, path=r"\.wal$")
    with pytest.raises(NeedsRecoveryError):
        db.put(b"b", b"2")
    staged = list(db._wal._staged)
    with pytest.raises(NeedsRecoveryError):
        db._wal.fenced = db._wal.fenced or OSError("fenced")
        db._blocked = None  # past the DB's own refusal: the WAL's check must hold too
        db.put(b"c", b"3")
    assert db._wal._staged == staged, "a fenced writer staged a record"
    db._simulate_crash()


def test_put_full_after_barrier_syncs_it_first():
    """A BARRIER commit then a FULL put: the barrier's record is durable no
    later than the FULL record (append_locked syncs it first)."""
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", sync="full")
    w = db._wal
    w._ensure_syncer = lambda: None  # no syncer: the barrier stays pending
    s1 = db.put(b"a", b"1", sync="barrier")
    assert w._barrier_seq == s1 and w.durable_seq < s1
    s2 = db.put(b"b", b"2")
    assert w.durable_seq >= s2 > s1
    db.close()


class _Run(threading.Thread):
    def __init__(self, fn):
        super().__init__(daemon=True)
        self.fn, self.result, self.error = fn, None, None

    def run(self):
        try:
            self.result = self.fn()
        except BaseException as e:  # noqa: BLE001 - checked by the test
            self.error = e


def test_put_whose_gate_opens_uncovered_waits_for_a_sync():
    """The inlined fast path reads the gate without a lock, so the gate may
    be stale: an open lock shown as a forming group's gate. The put must
    go on to sync_to (and wait there), not return: it returns only once a
    sync covers its commit."""
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", sync="full")
    w = db._wal
    db.put(b"a", b"1")
    syncs = w.syncs
    with w._mu:
        w._sync_gate = threading.Lock()  # open: its "sync" already published
        w._forming = True
        w._want = 1 << 30  # this put never completes the group
    put = _Run(lambda: db.put(b"b", b"2"))
    put.start()
    _poll(lambda: in_sync_to(put) or not put.is_alive(), 30)
    assert put.is_alive(), f"put returned through a stale gate ({put.result}, {put.error!r})"
    assert w.durable_seq < db._last_seq
    with w._mu:  # the stale group goes: the put forms its own and leads it
        w._sync_gate = None
        w._forming = False
        w._want = 1
    put.join(30)
    assert not put.is_alive() and put.error is None, put.error
    assert w.durable_seq >= put.result and w.syncs > syncs
    db.close()


def test_threads_full_puts_durable_when_they_return():
    """8 threads of FULL puts on a disk that takes time to sync (groups
    form; most puts take the inlined fast path): each put is durable when
    it returns, and every returned put survives a power cut."""
    print(f"put full path: LSM_PUT_FULL_SEED={SEED}")
    fs = CrashFS(sync_latency=0.0005)
    db = lsm.open("/db", fs=fs, background="thread", sync="full")
    w = db._wal
    acked: list[list[tuple[bytes, int]]] = [[] for _ in range(8)]
    bad: list[tuple[bytes, int, int]] = []

    def writer(t: int) -> None:
        rng = random.Random(SEED + t)
        for i in range(60):
            k = b"%d-%03d-%d" % (t, i, rng.randrange(1000))
            seq = db.put(k, k)
            if w.durable_seq < seq:
                bad.append((k, seq, w.durable_seq))
            acked[t].append((k, seq))

    ts = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
        assert not t.is_alive()
    assert not bad, bad[:5]
    assert w.syncs < 480, "no group formed"
    fs2 = fs.power_cut(random.Random(SEED))
    db._simulate_crash()
    db = lsm.open("/db", fs=fs2, background="thread")
    for rows in acked:
        for k, _ in rows:
            assert db.get(k) == k
    db.close()


def test_group_counters():
    """``wal_groups`` and ``wal_synced_commits`` (derived from the
    commits-per-sync histogram and the synced commit count): a lone FULL
    put is a group of one; a sync covering five OFF commits, one of five."""
    db = lsm.open("/db", fs=CrashFS(), background="inline", sync="full")
    s0 = db.stats()
    for i in range(10):
        db.put(b"k%d" % i, b"v")
    s1 = db.stats()
    assert (s1["wal_groups"] - s0["wal_groups"], s1["wal_synced_commits"] - s0["wal_synced_commits"]) == (10, 10)
    for i in range(5):
        db.put(b"o%d" % i, b"v", sync="off")
    db.sync_wal()
    s2 = db.stats()
    assert (s2["wal_groups"] - s1["wal_groups"], s2["wal_synced_commits"] - s1["wal_synced_commits"]) == (1, 5)
    assert s2["wal_groups"] == sum(db._wal.group_hist) and db._wal.group_hist[0] >= 10
    db.close()
