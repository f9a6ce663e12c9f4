"""The DB's operational surface, kept out of lsm/db.py (which keeps the
write and read paths): the snapshot registry, the durability API
(default sync level, sequence numbers, health), the fence
(``_on_fence``), maintenance (flush, compact_range, bulk_load),
operations (stats, checkpoint, verify, ingest; their implementations are
in lsm/ops/ and lsm/ingest/) and close.

:class:`DBAdmin` is a base class of :class:`lsm.db.DB`, never used alone:
its methods read and set the DB's attributes (set by lsm.recovery.open_db)
and call its write-path methods (``_switch_memtable_locked``,
``_check_usable``), under the DB's locks in the DB's lock order (lsm/db.py).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from lsm.base.errors import ClosedError, NeedsRecoveryError
from lsm.batch import as_bytes
from lsm.db_state import DBState
from lsm.ops.checkpoint import CheckpointInfo, checkpoint
from lsm.ops.stats import db_stats
from lsm.ops.verify import VerifyReport, verify_db
from lsm.options import Sync
from lsm.snapshot import Snapshot

if TYPE_CHECKING:
    from lsm.db import DB


class DBAdmin(DBState):
    """The part of :class:`lsm.db.DB` outside the write and read paths
    (module docstring)."""

    # ---------------------------------------------------------------- snapshots
    def snapshot(self) -> Snapshot:
        """A consistent read-only view as of now (release it with close() or
        ``with``)."""
        self._check_usable()
        with self._snap_mu:
            seq = self._last_seq
            self._snapshots[seq] = self._snapshots.get(seq, 0) + 1
        return Snapshot(cast("DB", self), seq)  # (cast: a DBAdmin is always a DB; module docstring)

    def _release_snapshot(self, seq: int) -> None:
        with self._snap_mu:
            n = self._snapshots.get(seq, 0) - 1
            if n <= 0:
                self._snapshots.pop(seq, None)
            else:
                self._snapshots[seq] = n

    def _snapshot_list(self) -> list[int]:
        with self._snap_mu:
            return sorted(self._snapshots)

    # --------------------------------------------------------- durability api
    @property
    def sync(self) -> Sync:
        """The default sync level of a commit."""
        return self._sync

    def set_sync(self, level: Sync | int | str) -> None:
        """Change the default sync level at runtime (e.g. OFF for a bulk
        load, then back to FULL and ``flush()``)."""
        self._check_usable()
        self._sync = Sync.coerce(level)

    @property
    def last_seq(self) -> int:
        """Sequence number of the newest commit."""
        return self._last_seq

    @property
    def durable_seq(self) -> int:
        """The highest sequence number known to be on disk (WAL synced, or
        flushed to SSTables)."""
        return max(self._wal.durable_seq, self._bg.flushed_seq)

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        """Block until commit ``seq`` is durable (within about
        ``sync_interval`` for commits made at OFF or NORMAL); False on
        timeout."""
        self._check_usable()
        if seq <= self.durable_seq:
            return True
        return self._wal.wait_durable(seq, timeout)

    def sync_wal(self) -> int:
        """Make every commit so far durable now; return the durable seq."""
        self._check_usable()
        return self._wal.sync_all()

    @property
    def health(self) -> str:
        """"ok", "fenced" (reopen to recover), "background_error" or "closed"."""
        if self._closed:
            return "closed"
        if self._fenced is not None:
            return "fenced"
        if self._bg.error is not None:
            return "background_error"
        return "ok"

    # -------------------------------------------------------------- maintenance
    def flush(self) -> None:
        """Write the memtable to an SSTable now; return once it is durable
        and recorded in the manifest (and its WAL segments deleted)."""
        self._check_usable()
        with self._write_mu:
            self._check_usable()
            if not self._mem.is_empty():
                self._switch_memtable_locked()
            target = self._last_seq
        self._bg.wait_flushed(target)

    def compact_range(self, start: bytes | None = None, stop: bytes | None = None) -> None:
        """Flush, then compact the keys in [start, stop] (None: unbounded)
        down the levels; return when done."""
        start = None if start is None else as_bytes(start, "start")
        stop = None if stop is None else as_bytes(stop, "stop")
        self.flush()
        self._bg.compact_range(start, stop)

    # ------------------------------------------- operations (lsm/ops/, docs/operations.md)
    def checkpoint(self, dest_dir: str | os.PathLike[str]) -> CheckpointInfo:
        """Write a consistent, openable copy of the database into
        ``dest_dir`` (new, or an empty directory; outside this database's
        directories) while writes go on: tables hard-linked where the
        filesystem allows (copied otherwise), a fresh manifest, and the WAL
        tail, all fsynced before it returns. The copy holds exactly the
        commits up to ``.seq`` (a prefix of the commit order, including
        every commit acknowledged before the call); its WAL lives in
        ``dest_dir`` itself; the WAL archive is not copied. Raises
        TargetNotEmptyError for a bad destination. See lsm/ops/checkpoint.py."""
        return checkpoint(cast("DB", self), dest_dir)

    def verify(self) -> VerifyReport:
        """Read every block of every live table, every live WAL segment and
        the manifest; check every checksum and the manifest's claims (file
        sizes, key and sequence ranges, level invariants). Returns a report
        (``.ok``, ``.problems`` naming each damaged file); damage never
        raises, and nothing is changed. See lsm/ops/verify.py."""
        return verify_db(cast("DB", self))

    @contextlib.contextmanager
    def bulk_load(self) -> Iterator[DB]:
        """``with db.bulk_load(): ...``: the default sync level is OFF in the
        block (for every thread that writes without an explicit ``sync=``).
        On exit, normal or by an exception, the previous default comes back
        and the database is flushed, so everything written in the block is
        durable; an exception from the block is then re-raised (a failure of
        that flush is attached to it as a note: the database fences on such
        a failure). Not nested across threads: the level restored is the one
        seen on entry."""
        self._check_usable()
        prev = self._sync
        self._sync = Sync.OFF
        try:
            yield cast("DB", self)
        except BaseException as e:
            self._sync = prev
            if self._blocked is None:
                try:
                    self.flush()
                except Exception as flush_err:  # noqa: BLE001 - the block's error is the one to raise
                    add_note = getattr(e, "add_note", None)  # Python >= 3.11
                    if add_note is not None:
                        add_note(f"bulk_load: the flush on exit failed too: {flush_err!r}")
            raise
        self._sync = prev
        self.flush()

    # ------------------------------------------------- bulk ingestion (lsm/ingest/)
    def ingest(self, items: Any, *, sorted: bool = False, memory_budget: int | None = None) -> int:
        """Add many ``(key, value)`` pairs at once (a mapping's items too),
        the fastest way in: SSTables are built directly and added with one
        version edit, bypassing the WAL and the memtable. Atomic, also
        across a crash; the data takes one fresh sequence number, returned
        (``last_seq`` unchanged for empty input): it shadows every earlier
        value of its keys, later writes shadow it, and snapshots taken
        before do not see it. Durable when it returns. A key given twice:
        the last pair wins.

        Unsorted input is sorted in about ``memory_budget`` bytes of memory
        (default 64 MiB): sorted runs are spilled to temporary files in the
        database directory and merged. ``sorted=True`` skips that and checks
        the order instead (ValueError naming the positions and keys of the
        first pair out of order). Wrong types raise TypeError naming the
        position; the database is then unchanged. Commits wait while the
        new tables are installed (a manifest sync; a whole rewrite of them
        when other commits arrived meanwhile). See lsm/ingest/job.py."""
        from lsm.ingest.job import ingest_items

        return ingest_items(cast("DB", self), items, presorted=sorted, memory_budget=memory_budget)

    def ingest_files(self, paths: Any, *, move: bool = False) -> int:
        """Add SSTables built by ``lsm.TableWriter`` (a list of paths; their
        key ranges must be disjoint), atomically. Each file is checked
        whole first (checksums, order). When no key of the database and no
        live snapshot falls in their ranges they are added as they are,
        copied (``move=True``: hard-linked, and the sources removed) into
        the database directory; otherwise their entries are ingested as by
        :meth:`ingest`, with a fresh sequence number. Returns the sequence
        number from which reads see them."""
        from lsm.ingest.job import ingest_tables

        return ingest_tables(cast("DB", self), paths, move=move)

    # ------------------------------------------------------------ failure state
    def _on_fence(self, err: BaseException) -> None:
        """Enter the needs-recovery state (called by the WAL writer and by
        background work on an I/O failure)."""
        if self._fenced is None:
            self._fenced = err
            self._blocked = NeedsRecoveryError(
                f"the database fenced itself after an I/O failure ({err!r}); close and reopen it to recover",
                err,
            )
            self._info_log.fenced(err)
            self._bg.write_fence_marker(err)
        # The caller may hold the write lock (a failed WAL append): wake
        # stalled writers only if the lock is free; they also poll _blocked
        # every 0.1 s, so a skipped wake-up costs at most that.
        if self._write_mu.acquire(blocking=False):
            try:
                self._write_cv.notify_all()
            finally:
                self._write_mu.release()

    def _sync_dirs_extra(self) -> bool:
        """EXTRA: also sync directories after deleting files."""
        return self._sync >= Sync.EXTRA

    # ----------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """Figures about the database (see docs/architecture.md#stats)."""
        return db_stats(cast("DB", self))

    # ----------------------------------------------------------------- close
    def close(self) -> None:
        """Flush nothing, sync the WAL, stop background work and release the
        lock. Idempotent. Later calls raise ClosedError. Raises
        NeedsRecoveryError (after releasing everything) when the final WAL
        sync fails: commits made below FULL may then not be durable."""
        if self._closed:
            return
        with self._write_mu:
            if self._closed:
                return
            self._closed = True
            if self._blocked is None:
                self._blocked = ClosedError(f"database {self.path} is closed")
        self._bg.stop()
        try:
            self._wal.close(sync=self._fenced is None)
        finally:
            self._bg.close_readers()
            self._info_log.info("close: last seq %d, durable seq %d", self._last_seq, self.durable_seq)
            self._info_log.close()
            self._lock.release()

    def _simulate_crash(self) -> None:
        """Tests: stop as a killed process would: no sync, no flush; the
        lock is released so the directory can be reopened."""
        with self._write_mu:
            self._closed = True
            self._blocked = ClosedError(f"database {self.path} crashed (simulated)")
        self._bg.stop()
        self._wal.close(sync=False)
        self._bg.close_readers()
        self._info_log.close()
        self._lock.release()
