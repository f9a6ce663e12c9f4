"""Background work of a DB: flushes of immutable memtables and compactions,
and the installs that follow them (the only callers of
``VersionSet.log_and_apply`` after open).

Modes (``Options.background``):

* ``process``: jobs run in the shared worker process pool
  (lsm/compaction/worker.py); two orchestrating threads here (flush,
  compaction) only wait on pipes and install results.
* ``thread``: jobs run in those threads (needed for an in-memory fs).
* ``inline``: everything runs synchronously in the writer's thread, under
  the DB write lock (deterministic; tests).

Order of an install (crash safety): output tables are fsynced by the job;
the data directory is fsynced (their names are durable); the version edit
is appended to the manifest and synced; only then are obsolete WAL
segments and tables unlinked. A table unlinked while an old super version
still reads it stays readable through the reader's open descriptor; its
space is freed when the last reader is garbage collected.

Locks: ``_cv`` guards the flush queue and the wake-up flags; ``_install_mu``
(the DB's) guards ``readers`` and the version set; ``_compact_mu``
serialises compactions (one at a time). Lock order: DB write lock is never
taken while holding ``_cv``; ``_install_mu`` may be held while briefly
taking the write lock to swap the super version.
"""

from __future__ import annotations

import collections
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lsm.base import filenames
from lsm.base.errors import CorruptionError, NeedsRecoveryError
from lsm.base.fs import io_site
from lsm.compaction.picker import Compaction, pick_compaction, pick_manual
from lsm.compaction.runner import CompactionJob, FlushJob, JobResult, TableOptions, remove_outputs, run_job
from lsm.compaction.worker import WorkerError, shared_pool
from lsm.manifest.edit import VersionEdit
from lsm.manifest.version import FileMeta
from lsm.memtable import MemTable
from lsm.sstable.reader import TableReader

if TYPE_CHECKING:
    from lsm.db import DB

MAX_JOB_RETRIES = 3


class SuperVersion:
    """What a read needs, replaced atomically: the live memtable, the
    immutable memtables (newest first), the version and its open readers."""

    __slots__ = ("imms", "mem", "readers", "version")

    def __init__(self, mem: MemTable, imms: tuple[MemTable, ...], version: Any, readers: dict[int, Any]):
        self.mem = mem
        self.imms = imms
        self.version = version
        self.readers = readers


@dataclass
class ImmJob:
    """An immutable memtable waiting for its flush, with the WAL segments
    that hold exactly its commits (start_seq < seq <= end_seq)."""

    mem: MemTable
    wal_paths: list[str]
    start_seq: int
    end_seq: int


def open_reader(db: DB, number: int) -> TableReader:
    """Open a table reader whose descriptor closes when it is collected."""
    r = TableReader.open(
        db._fs,
        filenames.join(db.path, filenames.sst_name(number)),
        file_number=number,
        cache=db._cache,
        verify_checksums=db._opts.paranoid_checks,
    )
    weakref.finalize(r, r.file.close)  # closes the descriptor when no super version holds r
    return r


class Background:
    def __init__(self, db: DB, flushed_seq: int, readers: dict[int, TableReader]):
        self.db = db
        self.opts = db._opts
        self.fs = db._fs
        self.mode = self.opts.background
        self.vs = db._vs
        self.readers = readers  # guarded by db._install_mu
        self.flushed_seq = flushed_seq
        self.error: BaseException | None = None  # a compaction that failed closed
        self.l0_files = len(self.vs.current.levels[0])
        self._cv = threading.Condition()
        self._queue: collections.deque[ImmJob] = collections.deque()  # guarded by _cv
        self._compact_wanted = True  # guarded by _cv
        self._stopped = False
        self._compact_mu = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._pools = {k: shared_pool(k) for k in ("flush", "compaction")} if self.mode == "process" else None
        # counters (written by the install path under _install_mu)
        self.flush_count = 0
        self.flush_seconds = 0.0
        self.flush_bytes_written = 0
        self.compaction_count = 0
        self.compaction_seconds = 0.0
        self.compaction_bytes_written = 0
        self.compaction_bytes_read = 0
        self.wal_files_deleted = 0
        self.retired_bloom = [0, 0]
        self._live_wal: set[str] = set()
        self.table = TableOptions(
            block_size=self.opts.block_size,
            bloom_bits_per_key=self.opts.bloom_bits_per_key,
            compression=self.opts.compression_id,
            compression_level=self.opts.compression_level,
            target_file_size=self.opts.target_file_size,
            verify_checksums=self.opts.paranoid_checks,
        )

    @property
    def sst_bytes_written(self) -> int:
        return self.flush_bytes_written + self.compaction_bytes_written

    def start(self) -> None:
        if self.mode == "inline":
            return
        for name, fn in (("lsm-flush", self._flush_loop), ("lsm-compaction", self._compaction_loop)):
            t = threading.Thread(target=fn, name=name, daemon=True)
            self._threads.append(t)
            t.start()

    # ------------------------------------------------------------ execution
    def _execute(self, job: FlushJob | CompactionJob) -> JobResult:
        if self._pools is not None:
            return self._pools["flush" if isinstance(job, FlushJob) else "compaction"].run(job)
        return run_job(job, self.fs)

    def _run_with_retries(self, job: FlushJob | CompactionJob) -> JobResult:
        tries = 0
        while True:
            try:
                return self._execute(job)
            except WorkerError:
                tries += 1
                if tries >= MAX_JOB_RETRIES or self._stopped:
                    raise
                time.sleep(0.05 * tries)

    # ----------------------------------------------------------------- flush
    def schedule_flush(self, job: ImmJob) -> None:
        """REQUIRES: DB write lock held."""
        self._live_wal.update(job.wal_paths)
        if self.mode == "inline":
            self._do_flush(job)
            self._maybe_compact_inline()
            return
        with self._cv:
            self._queue.append(job)
            self._cv.notify_all()

    def wait_flushed(self, seq: int) -> None:
        """Block until every commit up to ``seq`` is in SSTables (or the DB
        fences / closes)."""
        db = self.db
        with self._cv:
            while self.flushed_seq < seq and self._queue:
                if db._blocked is not None:
                    db._raise_blocked()
                self._cv.wait(0.1)
        if db._blocked is not None:
            db._raise_blocked()

    def _flush_loop(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    return
                job = self._queue[0]
            try:
                self._do_flush(job)
            except BaseException as e:  # noqa: BLE001 - any failure fences
                self.db._on_fence(e)
                with self._cv:
                    self._queue.clear()
                    self._cv.notify_all()
                return
            with self._cv:
                if self._queue and self._queue[0] is job:
                    self._queue.popleft()
                self._compact_wanted = True
                self._cv.notify_all()

    def _do_flush(self, job: ImmJob) -> None:
        db = self.db
        t0 = time.perf_counter()
        with db._install_mu:
            number = self.vs.new_file_number()
        fj = FlushJob(
            dbdir=db.path,
            file_number=number,
            table=self.table,
            snapshots=db._snapshot_list(),
            start_seq=job.start_seq,
            end_seq=job.end_seq,
        )
        if self.mode == "process":
            fj.wal_paths = job.wal_paths
        else:
            fj.entries = list(job.mem.iter_entries())
        try:
            result = self._run_with_retries(fj)
        except BaseException:
            remove_outputs(self.fs, db.path, [number])
            raise
        edit = VersionEdit(flushed_seq=job.end_seq, last_seq=max(self.vs.last_seq, job.end_seq))
        for num, props in result.outputs:
            edit.added.append((0, _meta(num, props)))
        self._install(edit, [o[0] for o in result.outputs], remove_mem=job.mem)
        self.flushed_seq = job.end_seq
        self.flush_count += 1
        self.flush_bytes_written += sum(p.file_size for _n, p in result.outputs)
        self.flush_seconds += time.perf_counter() - t0
        self._delete_wal(job.wal_paths)

    def _delete_wal(self, paths: list[str]) -> None:
        """Unlink WAL segments whose data the manifest now has in tables."""
        with io_site("wal"):
            for p in paths:
                try:
                    self.fs.remove(p)
                    self.wal_files_deleted += 1
                except FileNotFoundError:
                    pass
                self._live_wal.discard(p)
        if self.db._sync_dirs_extra():
            self.db._wal.sync_dir_extra()

    def wal_files_live(self) -> int:
        return len(self._live_wal) + 1

    # ------------------------------------------------------------- compaction
    def _compaction_loop(self) -> None:
        while True:
            with self._cv:
                while not self._compact_wanted and not self._stopped:
                    self._cv.wait(1.0)
                if self._stopped:
                    return
                self._compact_wanted = False
            if self.error is not None or self.db._fenced is not None:
                continue
            try:
                while not self._stopped and self._compact_once():
                    pass
            except BaseException as e:  # noqa: BLE001
                self._compaction_failed(e)

    def _maybe_compact_inline(self) -> None:
        if self.error is not None:
            return
        try:
            while self._compact_once():
                pass
        except BaseException as e:
            self._compaction_failed(e)
            if isinstance(self.error, NeedsRecoveryError):
                raise

    def _compaction_failed(self, e: BaseException) -> None:
        if isinstance(e, CorruptionError):
            # Fail closed: keep the inputs, stop compacting, report.
            self.error = e
        else:
            self.db._on_fence(e)
        with self.db._write_cv:
            self.db._write_cv.notify_all()

    def _compact_once(self) -> bool:
        with self._compact_mu:
            c = pick_compaction(self.vs.current, self.opts)
            if c is None:
                return False
            self._run_compaction(c)
            return True

    def compact_range(self, start: bytes | None, stop: bytes | None) -> None:
        """Compact [start, stop] from level 0 to the last non-empty level."""
        db = self.db
        for level in range(self.opts.num_levels - 1):
            with self._compact_mu:
                if db._blocked is not None:
                    db._raise_blocked()
                if self.error is not None:
                    raise self.error
                version = self.vs.current
                deeper = any(version.levels[lv] for lv in range(level + 1, self.opts.num_levels))
                if not version.levels[level] and not deeper:
                    break
                c = pick_manual(version, self.opts, level, start, stop)
                if c is None:
                    continue
                try:
                    self._run_compaction(c)
                except CorruptionError as e:
                    self.error = e
                    raise

    def _run_compaction(self, c: Compaction) -> None:
        """REQUIRES: _compact_mu held."""
        db = self.db
        t0 = time.perf_counter()
        inputs = [(c.level, f) for f in c.inputs] + [(c.output_level, f) for f in c.next_inputs]
        if c.is_trivial_move:
            # Trivial move: nothing overlaps below, so the file changes level only.
            f = c.inputs[0]
            edit = VersionEdit(removed=[(c.level, f.number)], added=[(c.output_level, f)])
            self._install(edit, [], removed=[])
            self.compaction_count += 1
            return
        total = sum(f.file_size for _lv, f in inputs)
        n = 2 * (4 * total // max(1, self.table.target_file_size)) + len(inputs) + 16
        with db._install_mu:
            numbers = [self.vs.new_file_number() for _ in range(n)]
        job = CompactionJob(
            dbdir=db.path,
            inputs=[(lv, f.number) for lv, f in inputs],
            file_numbers=numbers,
            table=self.table,
            snapshots=db._snapshot_list(),
            bottommost=c.is_bottommost,
        )
        try:
            result = self._run_with_retries(job)
        except BaseException:
            remove_outputs(self.fs, db.path, numbers)
            raise
        edit = VersionEdit(removed=[(lv, f.number) for lv, f in inputs])
        for num, props in result.outputs:
            edit.added.append((c.output_level, _meta(num, props)))
        # On an install failure the outputs stay: the edit may be durable
        # although log_and_apply raised; the DB fences and the next open
        # removes any table the recovered manifest does not name.
        self._install(edit, [o[0] for o in result.outputs], removed=[f.number for _lv, f in inputs])
        self.compaction_count += 1
        self.compaction_bytes_written += sum(p.file_size for _n, p in result.outputs)
        self.compaction_bytes_read += result.bytes_read
        self.compaction_seconds += time.perf_counter() - t0

    # --------------------------------------------------------------- install
    def _install(self, edit: VersionEdit, added: list[int], *, removed: list[int] | None = None,
                 remove_mem: MemTable | None = None) -> None:
        """Make ``edit`` durable in the manifest and visible to reads; then
        unlink tables it removed."""
        db = self.db
        with db._install_mu:
            if db._fenced is not None:
                raise NeedsRecoveryError("database is fenced; not installing", db._fenced)
            new_readers = {}
            for num in added:
                new_readers[num] = open_reader(db, num)
            with io_site("manifest"):
                if added:
                    self.fs.sync_dir(db.path)
                before = self.vs.manifest_number
                version = self.vs.log_and_apply(edit)
                if self.vs.manifest_number != before:
                    for name in self.vs.obsolete_manifests():
                        try:
                            self.fs.remove(filenames.join(db.path, name))
                        except FileNotFoundError:
                            pass
            readers = dict(self.readers)
            readers.update(new_readers)
            retired = []
            for num in removed or ():
                r = readers.pop(num, None)
                if r is not None:
                    self.retired_bloom[0] += r.bloom_checked
                    self.retired_bloom[1] += r.bloom_useful
                    retired.append(r)
            self.readers = readers
            with db._write_mu:
                sv = db._sv
                imms = sv.imms if remove_mem is None else tuple(m for m in sv.imms if m is not remove_mem)
                db._sv = SuperVersion(sv.mem, imms, version, readers)
                self.l0_files = len(version.levels[0])
                db._l0_delay = self.l0_files >= self.opts.l0_slowdown_trigger
                db._write_cv.notify_all()
        # A replaced table is unlinked when its reader is collected: when no
        # super version (an open iterator) can read it any more. An
        # interrupted deletion leaves an orphan that the next open removes.
        for r in retired:
            weakref.finalize(r, _remove_table, self.fs, r.path)
        del retired

    # ------------------------------------------------------------------ misc
    def write_fence_marker(self, err: BaseException) -> None:
        """Record the fence on disk (best effort: the disk may be failing)."""
        try:
            self.fs.write_file(filenames.join(self.db.path, filenames.FENCE), f"{err!r}\n".encode(), sync=True)
        except OSError:
            pass
        with self._cv:
            self._cv.notify_all()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._cv.notify_all()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=60)
        self._threads = []

    def close_readers(self) -> None:
        with self.db._install_mu:
            for r in self.readers.values():
                r.close()
            self.readers = {}


def _remove_table(fs: Any, path: str) -> None:
    with io_site("compaction"):
        try:
            fs.remove(path)
        except OSError:
            pass  # an orphan now; removed at the next open


def _meta(number: int, p: Any) -> FileMeta:
    return FileMeta(
        number=number,
        file_size=p.file_size,
        smallest=p.smallest,
        largest=p.largest,
        min_seq=p.min_seq,
        max_seq=p.max_seq,
        num_entries=p.num_entries,
        num_deletes=p.num_deletes,
    )
