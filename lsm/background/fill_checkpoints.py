"""Fill checkpoints: how a filling DB prepares its next WAL segment and
starts its flush worker in time, with no timer.

Two things are prepared ahead of need, each by a rule on a fill level and
a fill rate: the spare WAL segment (lsm/wal/spare.py, ``due``: the live
segment half full, or full within 2 s) and, in process mode, the flush
worker (lsm/background/scheduler.py, ``flush_due``: the memtable a
quarter full, or full within 2 s). They were polled by their threads
(every 20 and 50 ms: ~70 wake-ups a second for an idle DB, for ever with
a read-only or sync-only workload). Now the write path evaluates them, on
the data rather than the clock: while either waits (``watching``), the DB
arms its single per-write check (``DB._room_at``, a memtable size, and
``DB._room_check_at``, a live-segment offset, for the general commit path)
no further than the next *checkpoint*, every ``1/STEPS`` of a memtable of
data (memtable bytes, or WAL bytes), and at each one (``look_locked``,
from ``DB._make_room_locked``) applies both rules with the rate since the
previous checkpoint (bytes over ``time.monotonic`` between the two). An
idle or read-only DB passes no checkpoint and so never wakes either
thread; once both are prepared (the spare until the next rotation, the
worker for good) the write path stops looking.

The WAL rate counts the WAL bytes written (``WalWriter.bytes_written``),
across rotations, so the first checkpoint after a rotation already knows
the fill rate (a steady OFF fill kicks the spare there: 1/16 into the
segment). The memtable rate is that of one memtable (after a switch the
first checkpoint has none: the flush worker then starts at the first
flush anyway). A checkpoint is at least ``1/STEPS`` of a memtable of data
after the previous one, so a rate is never taken over a few commits
(``DB._make_room_locked`` is also entered early, near the WAL limits: it
then does not look).

Thread-safety: every method REQUIRES the DB write lock; the state is
guarded by it.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic
from typing import Any

STEPS = 16
"""Checkpoints per memtable of data (memtable bytes for put/delete, WAL
bytes for the general commit path). 16 costs put/delete ~16-32 calls of
DB._make_room_locked per memtable while a rule waits (an 8 MiB memtable
holds ~60,000 puts of 100-byte values) and finds an OFF fill within
~0.5 MiB of WAL."""


class FillCheckpoints:
    """The checkpoints of one DB (module docstring). ``flush_waiting``:
    the flush worker is not started yet; ``flush_look(size, rate)``:
    apply its rule to the live memtable."""

    def __init__(self, memtable_size: int, flush_waiting: Callable[[], bool],
                 flush_look: Callable[[int, float], None]):
        self.step = max(1, memtable_size // STEPS)
        self._flush_waiting = flush_waiting
        self._flush_look = flush_look
        self._mem: Any = None  # the memtable that mem_at measures
        self.mem_at = 0  # its size at the next checkpoint
        self.wal_at = 0  # WalWriter.bytes_written at the next checkpoint (0: at the first write)
        self._mark: tuple[float, Any, int, int] | None = None  # (time, memtable, its size, WAL bytes) at the last look
        self.looks = 0  # checkpoints passed (tests: none while idle)

    def watching(self, wal: Any) -> bool:
        """A rule still waits: the spare WAL segment or the flush worker."""
        return wal.spare_pending or self._flush_waiting()

    def arm_locked(self, db: Any) -> bool:
        """From DB._wal_switch_due_locked, after it set the write path's
        limits: while a rule waits (True), lower them to the next
        checkpoint (``_room_at``, a memtable size, for put/delete;
        ``_room_check_at``, a live-segment offset, for DB.write)."""
        mem, wal = db._mem, db._wal
        if not self.watching(wal):
            return False
        if self._mem is not mem:
            self._mem, self.mem_at = mem, mem.size + self.step
        db._room_at = min(db._room_at, self.mem_at)
        db._room_check_at = min(db._room_check_at, wal.segment_bytes + max(1, self.wal_at - wal.bytes_written))
        return True

    def look_locked(self, mem: Any, wal: Any) -> None:
        """At a checkpoint (else nothing): apply both waiting rules with the
        fill rates since the previous checkpoint; kick the spare thread
        (``WalWriter.look_spare``) or start the flush worker."""
        if self._mem is not mem:  # a new memtable: its first checkpoint is a step into it
            self._mem, self.mem_at = mem, mem.size + self.step
        size, written = mem.size, wal.bytes_written
        if size < self.mem_at and written < self.wal_at:
            return
        now = monotonic()
        mark, self._mark = self._mark, (now, mem, size, written)
        self.mem_at, self.wal_at = size + self.step, written + self.step
        self.looks += 1
        dt = now - mark[0] if mark is not None else 0.0
        if wal.spare_pending:
            wal.look_spare((written - mark[3]) / dt if dt > 0 else 0.0)  # type: ignore[index]
        if self._flush_waiting():
            self._flush_look(size, (size - mark[2]) / dt if dt > 0 and mark[1] is mem else 0.0)  # type: ignore[index]
