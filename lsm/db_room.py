"""The DB's room checks, kept out of lsm/db.py (which holds the write
path's hot code and the point reads): when the live memtable is switched
and the WAL segment rotated (``_make_room_locked``, entered once the write
path's single check ``_room_at`` / ``_room_check_at`` is reached), how that
check is armed (``_wal_switch_due_locked``, including the fill checkpoints
of lsm/background/fill_checkpoints.py), the write-behind before a seal
(``_preseal_locked``), stalls and write pacing (``_delay_write``).

Locks as in lsm/db.py: every ``_locked`` method REQUIRES ``_write_mu``.
"""

from __future__ import annotations

import time
from typing import Any

from lsm.background import ImmJob, SuperVersion
from lsm.db_scan import DBScan
from lsm.memtable import ENTRY_OVERHEAD as _ENTRY_OVERHEAD
from lsm.memtable import MemTable

# Every WAL record is at most 45/16 times the memtable bytes its ops are
# charged (one op: 36-byte record header + 9-byte op header + key + value
# in the WAL, key + value + ENTRY_OVERHEAD (16) in the memtable; more ops per
# record only lower the ratio): how _wal_switch_due_locked turns the WAL
# room left into a memtable size for put/delete's single check (_room_at).
_WAL_BYTES_PER_MEM = (45, 16)
assert _ENTRY_OVERHEAD == _WAL_BYTES_PER_MEM[1]


def _write_behind(f: Any) -> None:
    """DB._preseal_locked's thread: a hint, so any error is the seal's to meet."""
    try:
        f.datasync()  # (f stays open until this returns: WalWriter.write_behind_locked)
    except Exception:  # noqa: BLE001, S110
        pass


class DBRoom(DBScan):
    """The room checks of a DB (module docstring); DB's base class."""

    def _make_room_locked(self) -> None:
        """REQUIRES: _write_mu held. Seal the WAL segment and/or switch the
        memtable when full, or when the live WAL is past max_total_wal_size
        (_wal_switch_due_locked); stall while too much work is pending (a
        full memtable waits; the WAL limit alone never makes a writer wait,
        its switch is simply tried again at the next write)."""
        opts = self._opts
        wal = self._wal
        if self._looking:  # a fill checkpoint? (lsm/background/fill_checkpoints.py)
            self._bg.fill.look_locked(self._mem, wal)
        if self._presealed is not self._mem and self._mem.size >= self._memtable_size * 3 // 4:
            self._preseal_locked()
        stalled = 0.0
        cause = "memtables"
        while True:
            if self._blocked is not None:
                self._raise_blocked()
            mem_full = self._mem.size >= self._memtable_size
            if mem_full or self._wal_switch_due_locked():
                if len(self._sv.imms) < opts.max_immutable_memtables and self._bg.l0_files < opts.l0_stop_trigger:
                    self._switch_memtable_locked()
                    self._bg.update_delay_locked(len(self._sv.imms))
                    break
                if mem_full:
                    bg_err = self._bg.error
                    if bg_err is not None:
                        raise bg_err.with_traceback(None)  # (see _raise_blocked)
                    if not stalled:
                        cause = "l0_stop" if self._bg.l0_files >= opts.l0_stop_trigger else "memtables"
                    t0 = time.perf_counter()
                    self._write_cv.wait(0.1)
                    stalled += time.perf_counter() - t0
                    continue
            if wal.segment_bytes >= wal.segment_size:
                path = wal.start_segment_locked(self._last_seq + 1)
                self._mem_wal_paths.append(path)
            break
        self._wal_switch_due_locked()  # re-arm the write path's check for the new state
        if stalled:
            self._stalls += 1
            self._bg.stall_max_seconds = max(self._bg.stall_max_seconds, stalled)
            with self._pace_mu:  # (shared with _delay_write, which runs without _write_mu)
                self._stall_seconds += stalled
                counts = self._stall_causes[cause]
                counts[0] += 1
                counts[1] += stalled
            self._info_log.stalled(cause, stalled, self._bg.l0_files, len(self._sv.imms), opts)

    def _wal_switch_due_locked(self) -> bool:
        """REQUIRES: _write_mu held. True when the live WAL (segments of the
        live and immutable memtables) is past max_total_wal_size
        (``Options.total_wal_limit``) and switching the live memtable would
        release bytes: it holds commits, and no older segment already waits
        for a flush. While one does, that flush releases bytes first (its
        ``_wal_released`` re-arms this check); switching meanwhile would
        only cut ever smaller memtables, one per write.

        Also re-arms the write path, which calls _make_room_locked once the
        live segment reaches ``_room_check_at``: that becomes the segment
        size, or less where the live WAL would pass the limit, or the next
        write while over it. put and delete check one figure instead,
        ``_room_at``: a live-memtable size reached no later than either
        limit (the memtable size, or the WAL room left scaled by
        _WAL_BYTES_PER_MEM), so they may call _make_room_locked early (it
        then only re-arms), never late; both no later than the next fill
        checkpoint while one is armed (lsm/background/fill_checkpoints.py)."""
        wal = self._wal
        _files, live, flushing = self._bg.wal_live(self._mem_wal_paths, wal.segment_path, wal.segment_bytes,
                                                   remember=True)
        room = self._opts.total_wal_limit - live
        if flushing:
            at = self._room_check_at = wal.segment_size
        elif room >= 0:
            at = self._room_check_at = min(wal.segment_size, wal.segment_bytes + room + 1)
        else:
            self._room_check_at = wal.segment_bytes + 1
            self._room_at = 0
            return not self._mem.is_empty()
        wal_per, mem_per = _WAL_BYTES_PER_MEM
        self._room_at = min(self._memtable_size, self._mem.size + (at - wal.segment_bytes) * mem_per // wal_per)
        if self._presealed is not self._mem:  # (_preseal_locked)
            self._room_at = min(self._room_at, self._memtable_size * 3 // 4)
        self._looking = self._bg.fill.arm_locked(self)  # (may lower _room_at and _room_check_at)
        return False

    _presealed: MemTable | None = None  # the live memtable once _preseal_locked ran for it
    _looking = True  # a fill checkpoint is armed (_wal_switch_due_locked); under _write_mu

    def _preseal_locked(self) -> None:
        """REQUIRES: _write_mu held; the live memtable 3/4 full. Start
        writing its WAL segment back now: an fdatasync on a short-lived
        thread, outside the write lock and the writer's group sync (a hint,
        like RocksDB's ``wal_bytes_per_sync``: no durability claimed, no
        counter moved, errors ignored), so the rotation's seal (an
        fdatasync under the write lock) finds a quarter of the segment
        dirty, not all of it (no-sync fills: 15-30 -> ~8 ms per seal of the
        default ~10 MiB segment). Only on a plain file (not CrashFS: its
        crash points stay deterministic), with background threads, when
        the segment holds unsynced commits."""
        self._presealed = self._mem
        wal = self._wal
        f = wal._file
        if (self._opts.background != "inline" and f is not None and f.raw_write is not None
                and wal.written_seq > wal.durable_seq):
            wal.write_behind_locked(_write_behind)  # (f stays open until it returns)

    def _wal_released(self) -> None:
        """Background work retired WAL segments (after a flush, or at open):
        the next write re-checks max_total_wal_size in _make_room_locked."""
        with self._write_mu:
            self._room_check_at = 0
            self._room_at = 0

    def _switch_memtable_locked(self) -> None:
        """REQUIRES: _write_mu held. The live memtable becomes immutable, a
        new one and a new WAL segment start, the flush is queued."""
        old = self._mem
        wal = self._wal
        if wal.segment_records == 0:
            # The live segment holds no commit yet: it serves the new
            # memtable (its name, last_seq + 1, is already right).
            # (str: the WAL is open while _blocked is None, which callers check under _write_mu)
            path: str = wal.segment_path  # type: ignore[assignment]
            paths = [p for p in self._mem_wal_paths if p != path]
        else:
            paths = list(self._mem_wal_paths)
            path = wal.start_segment_locked(self._last_seq + 1)
        job = ImmJob(old, paths, self._mem_start_seq, self._last_seq)
        self._retire_counts_locked(old)
        new = MemTable(self._write_mu)
        self._mem = new
        self._mem_wal_paths = [path]
        self._mem_start_seq = self._last_seq
        sv = self._sv
        self._sv = SuperVersion(new, (old,) + sv.imms, sv.version, sv.readers)
        self._bg.schedule_flush(job)

    def _retire_counts_locked(self, mem: MemTable) -> None:
        """REQUIRES: _write_mu held; ``mem`` stops being the live memtable
        (a switch, an ingest). The write counters (``stats()``'s
        keys_written and user_bytes_written) are kept per memtable instead
        of per put: every op of a put, delete or batch adds one entry and
        its key and value bytes to the live memtable, so they are the
        retired memtables' entries (``_keys_written``, ``_user_bytes``,
        which ingested tables also add to) plus the live one's, less what
        recovery replayed into the first one (the counters start at minus
        that: lsm/recovery.py)."""
        n = mem.count
        self._keys_written += n
        self._user_bytes += mem.size - _ENTRY_OVERHEAD * n

    def _delay_write(self) -> None:
        """Background work is falling behind (``_l0_delay``, set by
        Background.update_delay_locked): pace this write so the writers'
        rate matches what background work sustains, instead of letting them
        run into a hard stop (RocksDB's delayed write rate). A write is
        charged its memtable bytes (the memtable's average entry) at
        ``Background.delayed_write_rate``; the schedule is shared by all
        writers and a writer sleeps only once it is at least 1 ms ahead
        of it, so the pacing is smooth at any put rate despite the sleep
        granularity. One sleep is at most 0.1 s; a memtable that fills
        anyway takes the hard stall of _make_room_locked. Counted per paced
        write (``stats()["write_pacing"]``; level-0 pacing also in
        ``stalls["l0_slowdown"]``) when its slot is claimed, seconds slept
        once the sleep ends.

        Runs without _write_mu, in many writers at once: the claim (read
        the schedule, move it on by this write's charge) and each counter
        update are made under ``_pace_mu``, so no claim or count is lost
        between two writers; the sleep is outside it."""
        bg = self._bg
        mem = self._mem
        rate, cause = bg.delayed_write_rate(mem.size)
        if rate <= 0.0:
            return
        charge = (mem.size // mem.count if mem.count else 128) / rate
        now = time.perf_counter()
        with self._pace_mu:
            nxt = min(max(bg.delay_next, now) + charge, now + 0.1)
            bg.delay_next = nxt
            paced = bg.paced[cause]  # count: writes paced; seconds: their sleeps
            paced[0] += 1
            if cause == "l0_slowdown":
                self._stall_causes[cause][0] += 1
        wait = nxt - now
        if wait >= 0.001:
            time.sleep(wait)
            dt = time.perf_counter() - now
            with self._pace_mu:
                self._stall_seconds += dt
                paced[1] += dt
                if cause == "l0_slowdown":
                    self._stall_causes[cause][1] += dt
