"""Found by the soak (session 12): tools/crash_kill.py --mode power --seed
412722767 --option wal_segment_size=4096, with a 20 us GIL switch interval
in every process, failed in cycle 27: "thread 4 commit 26 (put of 1 op(s)
at BARRIER) was acknowledged at BARRIER, and a later commit was
acknowledged", but the power cut lost it (the reopened database ended
three seqs before it).

Cause: a BARRIER commit set the writer's ``_barrier_seq`` in
``WalWriter.commit_wait``, after the DB write lock was released. Another
thread's commit that took the write lock in that window found no barrier
pending, wrote its record and returned (an OFF/NORMAL/BARRIER commit
returns after write(2)) before the barrier commit's sync: a power cut then
lost both, breaking the BARRIER promise of docs/durability.md ("every
BARRIER commit that a later commit followed" survives). The replay does not
fail again (thread timing), so this test puts the other commit in the
window deterministically: ``commit_wait`` is wrapped so that, for the
barrier commit, a second commit runs (in the same thread, the write lock
being free) before the original ``commit_wait``.
"""

from __future__ import annotations

import random

import pytest

import lsm
from lsm import Sync
from lsm.base.crashfs import CrashFS


def _write(db, level: Sync) -> int:
    batch = lsm.WriteBatch()
    batch.put(b"barrier", b"1")
    batch.put(b"b2", b"2")
    return db.write(batch, sync=level)


OPS = {  # the three commit paths: DB.put (inlined), DB._commit_one, DB.write
    "put": lambda db, level: db.put(b"barrier", b"1", sync=level),
    "delete": lambda db, level: db.delete(b"base", sync=level),
    "write": _write,
}


def _race(db, barrier_op: str, later_level: Sync) -> dict:
    """The barrier commit ``barrier_op``, with a ``later_level`` put
    committed in the window after its write lock is released and before its
    commit_wait runs; what was seen when the later commit returned."""
    wal = db._wal
    seen: dict = {}

    def commit_wait(seq: int, level: int) -> None:
        if level == Sync.BARRIER and "later" not in seen:
            del wal.commit_wait  # the class's method again (the later commit's, and the original below)
            seen["later"] = db.put(b"later", b"2", sync=later_level)  # another thread, in the window
            seen["barrier"] = seq
            seen["durable"] = wal.durable_seq  # (the syncer was not kicked yet: nothing else syncs)
            if isinstance(db._fs, CrashFS):
                seen["image"] = db._fs.power_cut(random.Random(0), mode="drop")  # unsynced bytes lost
        wal.commit_wait(seq, level)

    wal.commit_wait = commit_wait
    OPS[barrier_op](db, Sync.BARRIER)
    assert "later" in seen and seen["later"] > seen["barrier"]
    return seen


@pytest.mark.parametrize("barrier_op", list(OPS))
@pytest.mark.parametrize("later_level", [Sync.OFF, Sync.NORMAL, Sync.BARRIER])
def test_a_commit_in_the_barrier_window_waits_for_the_barrier_sync(tmp_path, barrier_op, later_level):
    """The plain filesystem (DB.put's inlined direct write for the later
    commit): when the later commit returns, the barrier commit is durable."""
    with lsm.open(str(tmp_path / "db"), background="inline") as db:
        db.put(b"base", b"0", sync=Sync.FULL)
        seen = _race(db, barrier_op, later_level)
        assert seen["durable"] >= seen["barrier"], seen  # was: durable_seq below the barrier commit


@pytest.mark.parametrize("barrier_op", list(OPS))
def test_a_power_cut_after_a_later_commit_keeps_the_barrier_commit(barrier_op):
    """CrashFS (append_locked for every commit): a power cut dropping every
    unsynced byte, taken when the later OFF commit returned, keeps the
    barrier commit (a later commit followed it)."""
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline")
    try:
        db.put(b"base", b"0", sync=Sync.FULL)
        seen = _race(db, barrier_op, Sync.OFF)
    finally:
        db.close()
    with lsm.open("/db", fs=seen["image"], background="inline") as again:
        assert again.last_seq >= seen["barrier"], seen  # was: last_seq = the FULL put's, the barrier commit lost
