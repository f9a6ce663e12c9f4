"""Fill checkpoints (lsm/background/fill_checkpoints.py): an idle, read-only
or sync-only DB wakes no thread (nothing polls the spare WAL segment's or
the flush worker's rule), while a filling one still prepares the spare and
starts the flush worker in time; and the write-behind fdatasync
(DB._preseal_locked) never syncs a file that a seal or close closed."""

from __future__ import annotations

import os
import random
import threading
import time

import pytest

import lsm
import lsm.db
import lsm.db_room
from lsm.background import fill_checkpoints, scheduler
from lsm.base.crashfs import CrashFS
from lsm.wal import spare as spare_mod


def _eventually(cond, what: str, timeout: float = 60.0) -> None:
    """Liveness, not timing: the bound only keeps a broken build from hanging."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.005)


class _Counted:
    """Wraps a callable and counts its calls (optionally only those made by
    threads whose name starts with ``thread``)."""

    def __init__(self, fn, thread: str = "") -> None:
        self.fn, self.thread, self.calls = fn, thread, 0

    def __call__(self, *a, **kw):
        if threading.current_thread().name.startswith(self.thread):
            self.calls += 1
        return self.fn(*a, **kw)


class _FakePool:
    """A worker pool that only counts prestarts (WorkerPool.prestart)."""

    def __init__(self) -> None:
        self.prestarts = 0

    def prestart(self) -> None:
        self.prestarts += 1


def _fake_pools(db) -> dict[str, _FakePool]:
    """Thread mode made to look like process mode's lazy start: the flush
    worker waits for its rule (Background._lazy_prestart)."""
    pools = {"flush": _FakePool(), "compaction": _FakePool()}
    with db._write_mu:
        db._bg._pools = pools
        db._bg._prestarted = {"flush": False, "compaction": False}
        db._room_at = 0  # re-arm at the next write (DB._wal_switch_due_locked)
    return pools


def _clock(monkeypatch, step: float) -> None:
    """The checkpoints' clock advances ``step`` seconds per reading: the
    fill rate is then (bytes per checkpoint) / step, whatever the machine."""
    now = [1000.0]

    def monotonic() -> float:
        now[0] += step
        return now[0]

    monkeypatch.setattr(fill_checkpoints, "monotonic", monotonic)


@pytest.mark.parametrize("background", ["process", "thread", "inline"])
def test_idle_read_only_and_sync_only_db_wakes_nothing(background: str, tmp_path, monkeypatch) -> None:
    """After a few writes, 0.5 s of idleness, reads and syncs: no rule is
    evaluated (spare ``due``, ``flush_due``), no checkpoint passed, the
    spare thread never started (its first kick comes from a due look) and
    the idle flush thread never returned from its wait (it polled every
    50 ms before: ~10 calls here; the spare thread every 20 ms)."""
    due = _Counted(spare_mod.due)
    flush_due = _Counted(scheduler.flush_due)
    monkeypatch.setattr(spare_mod, "due", due)
    monkeypatch.setattr(scheduler, "flush_due", flush_due)
    db = lsm.open(str(tmp_path / "db"), background=background, sync="off")
    try:
        cv = db._bg._cv
        flush_waits = cv.wait = _Counted(cv.wait, "lsm-flush")
        for i in range(100):
            db.put(b"k%04d" % i, b"v" * 100)
        looks, calls = db._bg.fill.looks, due.calls + flush_due.calls
        assert looks == 1  # the first write's (a baseline), not one more
        waits = flush_waits.calls
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            assert db.get(b"k0001") == b"v" * 100
            db.sync_wal()
            time.sleep(0.01)
        assert db._bg.fill.looks == looks and due.calls + flush_due.calls == calls
        assert flush_waits.calls == waits
        if background != "inline":
            assert db._wal._spare._thread is None
    finally:
        db.close()


def test_fast_fill_kicks_the_spare_and_starts_the_flush_worker_early(monkeypatch) -> None:
    """An OFF-like fill (1/16 of a memtable per ms): the second checkpoint
    (the first with a rate) kicks the spare thread and starts the flush
    worker, long before half / a quarter of the segment / memtable."""
    _clock(monkeypatch, 0.001)
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="thread", memtable_size=1 << 20, sync="off")
    try:
        pools = _fake_pools(db)
        fill, wal = db._bg.fill, db._wal
        assert wal.spare_pending
        n = 0
        while wal.spare_pending or pools["flush"].prestarts == 0:
            db.put(b"k%06d" % n, b"v" * 100)
            n += 1
            assert db._mem.size < (1 << 20) // 4, "no early start"
        assert fill.looks == 2 and pools["flush"].prestarts == 1
        assert db._mem.size <= 3 * fill.step
        _eventually(lambda: wal._spare._ready, "the spare prepared")
        looks = fill.looks
        for _ in range(200):
            db.put(b"k%06d" % n, b"v" * 100)
            n += 1
        assert fill.looks == looks, "still looking with the spare ready and the worker started"
    finally:
        db.close()


def test_slow_fill_defers_both_until_their_fractions(monkeypatch) -> None:
    """A FULL-like fill (fillsync: 10,000 puts of ~160 WAL bytes, ~1.6 MB
    into an 8 MiB memtable and a 10 MiB spare), here 10 s per checkpoint:
    neither the spare nor the flush worker during those puts (issue 7
    target 1); the worker at a quarter of the memtable, the spare at half
    of the segment."""
    _clock(monkeypatch, 10.0)
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="thread", sync="off")
    try:
        pools = _fake_pools(db)
        wal = db._wal
        for i in range(10_000):
            db.put(b"%016d" % i, b"v" * 100)
        assert wal.bytes_written >= 1_500_000
        assert wal.spare_pending and pools["flush"].prestarts == 0 and db._bg.fill.looks > 1
        assert wal._spare._thread is None
        i = 10_000
        while pools["flush"].prestarts == 0:
            db.put(b"%016d" % i, b"v" * 100)
            i += 1
        assert db._opts.memtable_size // 4 <= db._mem.size <= db._opts.memtable_size // 4 + db._bg.fill.step
        while wal.spare_pending:
            db.put(b"%016d" % i, b"v" * 100)
            i += 1
        size = wal._spare.size
        assert size // 2 <= wal.segment_bytes <= size // 2 + 2 * db._bg.fill.step
    finally:
        db.close()


@pytest.mark.parametrize("batch", [False, True], ids=["put", "write"])
def test_steady_off_fill_every_rotation_finds_the_spare(batch: bool, monkeypatch) -> None:
    """A steady OFF-like fill over many rotations: each one's spare is
    kicked at a checkpoint (the first after the rotation: the WAL rate
    spans rotations) and every rotation takes a ready spare (none created
    without one, no failed preparation). The test waits for the kicked
    preparation before the next write (the race with the spare thread is
    the machine's, not the rule's). ``write``: the general commit path
    (DB.write: its checkpoints are WAL offsets, _room_check_at)."""
    _clock(monkeypatch, 0.001)
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="thread", memtable_size=64 << 10, sync="off")
    try:
        wal = db._wal
        sp = wal._spare
        n = 0
        while wal.segments_created < 8:
            if batch:
                b = lsm.WriteBatch()
                for _ in range(4):
                    b.put(b"k%06d" % n, b"v" * 100)
                    n += 1
                db.write(b)
            else:
                db.put(b"k%06d" % n, b"v" * 100)
                n += 1
            if not wal.spare_pending:
                _eventually(lambda: sp._ready, "the kicked spare prepared")
            assert n < 100_000, "no rotation"
        assert wal.spares_used == wal.segments_created and wal.spare_failures == 0
    finally:
        db.close()
    db = lsm.open("/db", fs=fs, background="thread")
    assert sum(1 for _ in db.items()) == n
    db.close()


@pytest.mark.parametrize("closer", ["seal", "close"])
def test_write_behind_file_stays_open_until_its_sync_returns(closer: str, tmp_path, monkeypatch) -> None:
    """The write-behind thread's fdatasync may still be running when the
    seal (a memtable switch) or close closes the segment: the file then
    stays open until the thread is done (its descriptor number cannot be
    reused by another file under it), and is closed after. Before, the
    seal closed it at once: the thread then synced fd -1 (EBADF) or, had
    the number been reused, another file."""
    started, release = threading.Event(), threading.Event()
    seen: list = []

    def write_behind(f) -> None:  # DB._write_behind with its fdatasync held
        seen.append(f)
        started.set()
        release.wait(60)
        try:
            f.datasync()
            seen.append(("synced", f.fd))
        except OSError as e:
            seen.append(("error", e.errno))

    monkeypatch.setattr(lsm.db_room, "_write_behind", write_behind)
    db = lsm.open(str(tmp_path / "db"), background="thread", memtable_size=64 << 10, sync="off")
    closed = False
    try:
        mem = db._mem
        n = 0
        while not started.is_set():
            db.put(b"k%06d" % n, b"v" * 100)
            n += 1
            assert db._mem is mem, "no write-behind before the switch"
        f = seen[0]
        if closer == "seal":
            while db._mem is mem:
                db.put(b"k%06d" % n, b"v" * 100)
                n += 1
            assert db._wal._file is not f
        else:
            db.close()
            closed = True
        assert f.fd >= 0, "the segment was closed under its running write-behind"
        release.set()
        _eventually(lambda: len(seen) == 2 and f.fd < 0, "the write-behind closed the file")
        assert seen[1][0] == "synced", seen
    finally:
        release.set()
        if not closed:
            db.close()


class _CountingEvent(threading.Event):
    """An Event that counts its waits (the NORMAL syncer's loop turns)."""

    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout=None):
        self.waits += 1
        return super().wait(timeout)


_SYNCER_SEED = int(os.environ.get("LSM_IDLE_SYNCER_SEED", random.randrange(1 << 30)))


def test_normal_syncer_sleeps_while_nothing_is_unsynced_and_wakes_for_commits(tmp_path) -> None:
    """sync=NORMAL: once everything written is durable the syncer waits
    with no timeout (it turned every sync_interval for ever); a NORMAL
    commit after an idle spell of any length (randomized, seed printed) is
    still made durable by it, and a BARRIER one too."""
    print(f"idle syncer: LSM_IDLE_SYNCER_SEED={_SYNCER_SEED}")
    rng = random.Random(_SYNCER_SEED)
    db = lsm.open(str(tmp_path / "db"), background="thread", sync="normal", sync_interval=0.02)
    try:
        w = db._wal
        w._kick, w._wake = kick, wake = _CountingEvent(), _CountingEvent()  # before the syncer starts
        for i in range(100):
            db.put(b"k%03d" % i, b"v")
        _eventually(lambda: w.durable_seq >= db._last_seq and w._syncer_idle, "the first commits synced")
        waits, syncs = kick.waits + wake.waits, w.syncs
        time.sleep(0.5)  # 25 sync intervals
        assert (kick.waits + wake.waits, w.syncs) == (waits, syncs), "the idle syncer turned"
        for r in range(30):  # a commit after idle spells from 0 to 3 intervals: never left unsynced
            time.sleep(rng.choice((0.0, 0.001, 0.01, 0.03, 0.06)))
            seq = db.put(b"r%03d" % r, b"v", sync=rng.choice((lsm.Sync.NORMAL, lsm.Sync.BARRIER)))
            _eventually(lambda s=seq: w.durable_seq >= s, f"commit {seq} durable (round {r})", timeout=30)
        assert w.syncs > syncs
    finally:
        db.close()
    assert not w._syncer.is_alive()


def test_idle_syncer_kicked_syncs_at_once(tmp_path) -> None:
    """With a sync_interval far longer than the test, a kick still syncs at
    once from the idle wait: wait_durable after an OFF commit returns True
    (not after the interval), and a BARRIER commit becomes durable."""
    db = lsm.open(str(tmp_path / "db"), background="thread", sync="normal", sync_interval=3600)
    try:
        w = db._wal
        assert db.wait_durable(db.put(b"a", b"1"), timeout=30)  # starts the syncer, kicks it
        _eventually(lambda: w._syncer_idle, "the syncer idle")
        assert db.wait_durable(db.put(b"b", b"2", sync=lsm.Sync.OFF), timeout=30)
        _eventually(lambda: w._syncer_idle, "the syncer idle again")
        seq = db.put(b"c", b"3", sync=lsm.Sync.BARRIER)
        _eventually(lambda: w.durable_seq >= seq, "the barrier commit durable", timeout=30)
    finally:
        db.close()
