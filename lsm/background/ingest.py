"""Entry points of a DB's background work for lsm/ingest/job.py: flush the
live memtable in the caller's thread, install ingested tables, count them,
and finish (advance the flushed watermark, retire WAL segments, wake
compaction). A mixin of :class:`Background` (lsm/background/scheduler.py)."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from lsm.background.state import meta
from lsm.compaction.runner import FlushJob, TableOptions, remove_outputs, run_job
from lsm.manifest.edit import VersionEdit
from lsm.memtable import MemTable

if TYPE_CHECKING:
    from lsm.db import DB


class IngestEntryPoints:
    """The attributes and the methods used here are :class:`Background`'s."""

    db: DB
    fs: Any
    vs: Any
    mode: str
    tables: list[TableOptions]  # per output level (flushes: [0])
    flushed_seq: int
    flush_count: int
    flush_bytes_written: int
    flush_seconds: float
    ingest_bytes_written: int
    level_io: list[list[int]]
    _cv: threading.Condition
    _compact_wanted: bool

    if TYPE_CHECKING:
        def _install(self, edit: VersionEdit, added: list[int], *, removed: list[int] | None = None,
                     remove_mem: MemTable | None = None, new_mem: MemTable | None = None,
                     write_locked: bool = False) -> None: ...

        def _delete_wal(self, paths: list[str]) -> None: ...

        def _maybe_compact_inline(self) -> None: ...

    # ---------------------------------------------------------------- ingest
    # Entry points for lsm/ingest/job.py. An ingest installs with the DB
    # write lock held (no commit can take a sequence number meanwhile), so
    # it takes _install_mu first, then the write lock, like _install.

    def flush_live_locked(self, wal_paths: list[str], start_seq: int, end_seq: int) -> list[tuple[int, Any]]:
        """Write the live memtable's commits (start_seq < seq <= end_seq,
        in its segments ``wal_paths``) to level-0 tables in the calling
        thread and return them as ``(number, properties)`` for the caller's
        own version edit. The job re-reads the WAL, as :meth:`_do_flush`'s
        does in process mode (the memtable's sorted view needs the write
        lock, which the caller holds). REQUIRES: ``_install_mu`` and then
        the DB write lock held."""
        db = self.db
        t0 = time.perf_counter()
        number = self.vs.new_file_number()
        fj = FlushJob(dbdir=db.path, file_number=number, table=self.tables[0], snapshots=db._snapshot_list(),
                      wal_paths=list(wal_paths), start_seq=start_seq, end_seq=end_seq)
        try:
            result = run_job(fj, self.fs)
        except BaseException:
            remove_outputs(self.fs, db.path, [number])
            raise
        self.flush_count += 1
        written = sum(p.file_size for _n, p in result.outputs)
        self.flush_bytes_written += written
        self.level_io[0][1] += written
        self.flush_seconds += time.perf_counter() - t0
        return result.outputs

    def install_ingest_locked(self, files: list[tuple[int, int, Any]], seq: int | None,
                              new_mem: MemTable | None) -> None:
        """Install ``files`` (``(level, number, properties)``) with one
        version edit; with ``seq``, the edit also records ``flushed_seq =
        last_seq = seq`` (every commit up to it is in tables). ``new_mem``
        replaces the live memtable (flushed into ``files``). REQUIRES:
        ``_install_mu`` and then the DB write lock held."""
        edit = VersionEdit(flushed_seq=seq, last_seq=seq)
        for level, num, props in files:
            edit.added.append((level, meta(num, props)))
        self._install(edit, [num for _lv, num, _p in files], new_mem=new_mem, write_locked=True)

    def count_ingest(self, level: int, nbytes: int) -> None:
        """Count ``nbytes`` of ingested tables added at ``level`` (stats).
        REQUIRES: ``_install_mu`` held."""
        self.ingest_bytes_written += nbytes
        self.level_io[level][1] += nbytes

    def ingest_done(self, seq: int, wal_paths: list[str]) -> None:
        """After an ingest's install, with no lock held: advance the flushed
        watermark to ``seq``, retire ``wal_paths`` (segments whose commits
        the ingest's edit recorded as flushed) and let compaction look at
        the new tables."""
        self.flushed_seq = max(self.flushed_seq, seq)
        if wal_paths:
            self._delete_wal(wal_paths)
        if self.mode == "inline":
            self._maybe_compact_inline()
            return
        with self._cv:
            self._compact_wanted = True
            self._cv.notify_all()
