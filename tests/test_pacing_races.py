"""Races in write pacing and flush timing: many writers in DB._delay_write
at once (no DB write lock) must neither lose a claim on the pacing
schedule nor a count, and concurrent flushes update the moving average of
flush durations under Background._cv.

The writers' race is provoked, not merely allowed: a switch interval of a
microsecond, and a fake clock and sleep in lsm/db_room.py (a Python call
each, so a thread switch point between reading the schedule and writing
it back); the counters are read and written through Python calls too
(SwitchyList, the _stall_seconds property of CountingDB), since CPython
3.11 switches threads only at calls and loop jumps, never inside a bare
``x += 1``. The fake clock stands still, so every claim is charged
against the same ``now`` and the exact totals are known in advance."""

from __future__ import annotations

import sys
import threading
import types

import lsm
from lsm import db_room
from lsm.background import scheduler as scheduler_mod
from lsm.base.crashfs import CrashFS

THREADS = 8
CALLS = 2000  # per thread
NOW = 1.0  # the fake clock's reading
CHARGE = 2.0**-20  # seconds per paced write: 128 bytes (an empty memtable's charge) at 2**27 B/s
SLEPT = 2.0**-10  # what a fake sleep adds to the sleeper's next clock reading
# A claim sleeps once the schedule is 1 ms ahead of the clock: the first
# claims that do not (k * CHARGE < 0.001, k = 1, 2, ...).
NO_SLEEP = int(0.001 / CHARGE)


class FakeTime:
    """A clock that stands at NOW; a sleep returns at once and makes the
    sleeper's next reading NOW + SLEPT (the one _delay_write takes to time
    its sleep)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.sleeps: list[float] = []  # list.append is atomic

    def perf_counter(self) -> float:
        if getattr(self._local, "slept", False):
            self._local.slept = False
            return NOW + SLEPT
        return NOW

    def sleep(self, secs: float) -> None:
        self.sleeps.append(secs)
        self._local.slept = True


class SwitchyList(list):
    """A [count, seconds] counter whose item reads and writes are Python
    calls: thread switch points between the read and the write of ``+=``."""

    def __getitem__(self, i):
        return super().__getitem__(i)

    def __setitem__(self, i, v):
        super().__setitem__(i, v)


def _race(fn, threads: int) -> None:
    """Run fn in ``threads`` threads at once, thread switches every microsecond."""
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            fn()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        ts = [threading.Thread(target=run) for _ in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors, errors


def test_concurrent_paced_writes_claim_the_schedule_and_count_exactly(monkeypatch):
    db = lsm.open("/db", fs=CrashFS(), background="inline", l0_slowdown_trigger=4, l0_stop_trigger=100,
                  delayed_write_rate=1 << 27)
    bg = db._bg
    bg.l0_files = 4  # at the trigger: delayed_write_rate itself
    assert bg.delayed_write_rate(db._mem.size) == (1 << 27, "l0_slowdown")
    assert db._mem.count == 0  # so each write is charged 128 bytes: CHARGE
    fake = FakeTime()
    stalled = {"s": db._stall_seconds}

    class CountingDB(type(db)):  # type: ignore[misc]
        @property
        def _stall_seconds(self) -> float:
            return stalled["s"]

        @_stall_seconds.setter
        def _stall_seconds(self, v: float) -> None:
            stalled["s"] = v

    try:
        with monkeypatch.context() as m:
            m.setattr(db, "__class__", CountingDB)
            m.setattr(bg, "paced", {k: SwitchyList(v) for k, v in bg.paced.items()})
            m.setattr(db, "_stall_causes", {k: SwitchyList(v) for k, v in db._stall_causes.items()})
            m.setattr(db_room, "time", types.SimpleNamespace(perf_counter=fake.perf_counter, sleep=fake.sleep))

            def writer() -> None:
                for _ in range(CALLS):
                    db._delay_write()

            _race(writer, THREADS)
            paced, causes = dict(bg.paced), dict(db._stall_causes)
        n = THREADS * CALLS
        assert n * CHARGE < 0.1  # the cap (now + 0.1 s) never applies
        # Every claim moved the schedule by its charge (all values here are
        # exact binary fractions: no rounding).
        assert bg.delay_next == NOW + n * CHARGE
        # Claim k (1..n) is k * CHARGE ahead of the clock; it sleeps from 1 ms on.
        assert len(fake.sleeps) == n - NO_SLEEP
        slept = len(fake.sleeps) * SLEPT
        assert paced["l0_slowdown"] == [n, slept]
        assert paced["memtables"] == [0, 0.0]
        assert causes["l0_slowdown"] == [n, slept]
        assert stalled["s"] == slept
    finally:
        bg.l0_files = 0
        db.close()


def test_flush_durations_average_under_the_queue_lock(monkeypatch):
    """Background._flush_recent is written by the flush threads (up to
    max_background_flushes at once) only while they hold _cv."""
    db = lsm.open("/db", fs=CrashFS(), background="inline")
    bg = db._bg
    owned: list[bool] = []
    values = {"v": 0.0}

    class Probe(type(bg)):  # type: ignore[misc]
        @property
        def _flush_recent(self) -> float:
            return values["v"]

        @_flush_recent.setter
        def _flush_recent(self, v: float) -> None:
            owned.append(self._cv._is_owned())
            values["v"] = v

    clock = iter(range(1_000_000))  # perf_counter: 0, 1, 2, ...; next() is atomic
    try:
        with monkeypatch.context() as m:
            m.setattr(bg, "__class__", Probe)
            m.setattr(bg, "_flush_one", lambda job: None)
            m.setattr(scheduler_mod, "time", types.SimpleNamespace(perf_counter=lambda: float(next(clock)),
                                                                   thread_time=lambda: 0.0))

            def flusher() -> None:
                for _ in range(50):
                    bg._do_flush(None)

            _race(flusher, 4)
        assert len(owned) == 4 * 50 and all(owned)
        assert values["v"] > 0.0 and bg._flush_starts == [] and bg._flush_started == 0.0
    finally:
        db.close()
