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

WAL lifecycle: a flushed memtable's segments are *retired* once its edit
is synced: unlinked, or, with ``wal_retention_segments`` /
``wal_retention_seconds``, moved into ``<wal_dir>/archive/`` under a name
that records when (docs/format/wal.md, "Archive"); then the archive is
pruned (the archive itself: lsm/wal/archive.py, :class:`WalArchive`; this
module decides when, and supplies the clock). Open retires the segments a
crash left behind the same way and prunes too. Nothing else deletes from
the archive.

Locks: ``_cv`` guards the flush queue and the wake-up flags; ``_install_mu``
(the DB's) guards ``readers`` and the version set; ``_compact_mu``
serialises compactions (one at a time); ``_wal_mu`` (a leaf: no I/O, no
other lock taken under it) guards the live-segment set and their sizes
(the archive listing has its own leaf lock, ``WalArchive._mu``; the two
are never nested). Lock order: DB write lock is never taken while
holding ``_cv``; ``_install_mu`` may be held while briefly taking the
write lock to swap the super version.
"""

from __future__ import annotations

import collections
import contextlib
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
from lsm.wal.archive import ArchivedSegment, WalArchive, archive_victims  # noqa: F401 (re-exported: tests)
from lsm.wal.format import SEGMENT_HEADER_SIZE

if TYPE_CHECKING:
    from lsm.db import DB

MAX_JOB_RETRIES = 3


class SuperVersion:
    """What a read needs, replaced atomically: the live memtable, the
    immutable memtables (newest first), the version and its open readers.

    ``range_dels``: some memtable or table holds a range tombstone (reads
    take their range-tombstone path only then). The live memtable's first
    tombstone replaces the super version (``DB.write``), so the flag never
    lags a published commit."""

    __slots__ = ("imms", "mem", "range_dels", "readers", "version")

    def __init__(self, mem: MemTable, imms: tuple[MemTable, ...], version: Any, readers: dict[int, Any]):
        self.mem = mem
        self.imms = imms
        self.version = version
        self.readers = readers
        self.range_dels = (
            mem.range_del_count > 0
            or any(m.range_del_count for m in imms)
            or any(r.range_dels is not None for r in readers.values())
        )


@dataclass
class ImmJob:
    """An immutable memtable waiting for its flush, with the WAL segments
    that hold exactly its commits (start_seq < seq <= end_seq)."""

    mem: MemTable
    wal_paths: list[str]
    start_seq: int
    end_seq: int


def wall_clock() -> float:
    """Seconds since the Unix epoch: the archive's clock (the time recorded
    in an archived segment's name, and "now" for age pruning). Tests
    replace it (monkeypatch ``lsm.background.wall_clock``)."""
    return time.time()


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
        self.ingest_bytes_written = 0  # tables built by db.ingest / ingest_files (lsm/ingest)
        # Jobs in progress (stats: the benchmark harness samples them to split
        # the writers' rate by whether a compaction ran). Plain ints: each is
        # written by one thread (flush loop / whoever holds _compact_mu).
        self.flushes_running = 0
        self.compactions_running = 0
        self.stall_max_seconds = 0.0  # longest single write stall (DB._make_room_locked); under the write lock
        # Write pacing (DB._delay_write): the shared schedule of delayed
        # writes, and when the running flush started (0: none running).
        # Races between writers only blur the pacing.
        self.delay_next = 0.0
        self.paced: dict[str, list] = {"memtables": [0, 0.0], "l0_slowdown": [0, 0.0]}  # sleeps: [count, seconds]
        self._flush_started = 0.0
        self._flush_recent = 0.0  # moving average of flush durations, seconds (0: none yet)
        # CPU seconds this process's threads spent in flushes and automatic
        # compactions (process mode: only the orchestration and install, the
        # GIL work the writers share; the jobs' own CPU is the workers').
        self.cpu_seconds = {"flush": 0.0, "compaction": 0.0}
        self._imms = 0  # immutable memtables, as of the last switch or install (under the DB write lock)
        self.wal_files_deleted = 0  # unlinked from the WAL directory (not archived)
        self.retired_bloom = [0, 0]
        self.level_io = [[0, 0] for _ in range(self.opts.num_levels)]  # per level: [bytes read, bytes written]
        # The WAL (see "WAL lifecycle" above); all guarded by _wal_mu:
        self._wal_mu = threading.Lock()
        self._live_wal: set[str] = set()  # segments of immutable memtables (and replayed ones) not yet retired
        self._wal_sizes: dict[str, int] = {}  # sizes of sealed live segments, learnt by wal_live()
        self.archive = WalArchive(self.fs, db.wal_dir)
        self.archive_dir = self.archive.dir
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
        return self.flush_bytes_written + self.compaction_bytes_written + self.ingest_bytes_written

    def start(self) -> None:
        if self.mode == "inline":
            return
        if self._pools is not None:
            for pool in self._pools.values():
                pool.prestart()
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
        with self._wal_mu:
            self._live_wal.update(job.wal_paths)
        if self.mode == "inline":
            try:
                self._do_flush(job)
            except BaseException as e:  # noqa: BLE001 - any failure fences, as in _flush_loop
                self.db._on_fence(e)
                self.db._raise_blocked()
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
        self.flushes_running += 1
        self._flush_started = t0 = time.perf_counter()
        c0 = time.thread_time()
        try:
            self._flush_one(job)
            dt = time.perf_counter() - t0
            self._flush_recent = dt if not self._flush_recent else 0.7 * self._flush_recent + 0.3 * dt
        finally:
            self.cpu_seconds["flush"] += time.thread_time() - c0
            self._flush_started = 0.0
            self.flushes_running -= 1

    def _flush_one(self, job: ImmJob) -> None:
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
        # The memtable itself, in every mode (pickled to a worker process:
        # ~0.4 us per entry here, where re-reading the WAL cost the worker
        # ~8 us per entry; docs/architecture.md, "Flush").
        fj.entries = job.mem.frozen()  # type: ignore[assignment]
        fj.range_dels = job.mem.range_del_list()
        try:
            result = self._run_with_retries(fj)
        except BaseException:
            if db._fenced is None:  # fenced: touch nothing; the next open removes orphans
                remove_outputs(self.fs, db.path, [number])
            raise
        edit = VersionEdit(flushed_seq=job.end_seq, last_seq=max(self.vs.last_seq, job.end_seq))
        for num, props in result.outputs:
            edit.added.append((0, _meta(num, props)))
        self._install(edit, [o[0] for o in result.outputs], remove_mem=job.mem)
        self.flush_count += 1
        written = sum(p.file_size for _n, p in result.outputs)
        self.flush_bytes_written += written
        self.level_io[0][1] += written
        dt = time.perf_counter() - t0
        self.flush_seconds += dt
        db._info_log.flushed(job.start_seq + 1, job.end_seq, job.mem.count, job.mem.size, result.outputs, dt,
                             self.l0_files)
        self._delete_wal(job.wal_paths)
        # Last: wait_flushed (DB.flush) returns once this passes its seq, and
        # promises the WAL segments are gone by then.
        self.flushed_seq = max(self.flushed_seq, job.end_seq)  # an ingest may have moved it past end_seq

    def _delete_wal(self, paths: list[str]) -> None:
        """Retire the WAL segments of a flushed memtable. REQUIRES: the
        version edit holding their commits is synced in the manifest."""
        with io_site("wal"):
            if self._retire_wal(paths):
                self._prune_archive()
        self.db._wal_released()

    def retire_at_open(self, paths: list[str]) -> None:
        """Open (before background work starts): load the archive listing,
        retire ``paths`` (segments whose commits are all in tables, left by
        a crash before their retirement) as after a flush, prune the
        archive. I/O is labelled with the caller's site."""
        self.archive.load()
        self._retire_wal(paths, at_open=True)
        if self.opts.wal_archive:
            self._prune_archive()
        self.db._wal_released()

    def _retire_wal(self, paths: list[str], *, at_open: bool = False) -> bool:
        """Archive (retention on) or unlink each segment of ``paths``; under
        EXTRA make that durable (archive directory first: the segment never
        lacks a durable name). A segment no longer than its header holds no
        commit and is unlinked; so is one that open finds already archived
        (a power cut kept both names of a rename). True if any was archived."""
        fs = self.fs
        archive = self.opts.wal_archive
        moved = False
        for p in paths:
            try:
                size = fs.file_size(p)
                if archive and size > SEGMENT_HEADER_SIZE and not (at_open and self.archive.holds(p, size)):
                    self.archive.archive(p, size, max(0, int(wall_clock() * 1e6)))
                    moved = True
                else:
                    fs.remove(p)
                    self.wal_files_deleted += 1
            except FileNotFoundError:
                pass
            with self._wal_mu:
                self._live_wal.discard(p)
                self._wal_sizes.pop(p, None)
        if paths and self.db._sync_dirs_extra():
            if moved:
                self._sync_archive_dir()
            self.db._wal.sync_dir_extra()
        return moved

    def _prune_archive(self) -> None:
        """Delete the archived segments no retention rule keeps."""
        opts = self.opts
        pruned = self.archive.prune(opts.wal_retention_segments, opts.wal_retention_seconds,
                                    int(wall_clock() * 1e6))
        if pruned and self.db._sync_dirs_extra():
            self._sync_archive_dir()

    def _sync_archive_dir(self) -> None:
        try:
            self.archive.sync_dir()
        except BaseException as e:
            self.db._on_fence(e)
            raise

    @property
    def wal_files_archived(self) -> int:
        return self.archive.files

    @property
    def wal_bytes_archived(self) -> int:
        return self.archive.bytes

    @property
    def wal_files_pruned(self) -> int:
        """Deleted from the archive by the retention rule."""
        return self.archive.pruned

    def wal_live(self, mem_paths: list[str], current: str | None, current_bytes: int, *,
                 remember: bool = False) -> tuple[int, int, bool]:
        """(files, bytes, flushing) of the live WAL: the segments recovery
        still needs, those of the immutable memtables and ``mem_paths`` (the
        live memtable's; ``current``, ``current_bytes`` long, is the one
        being written). ``flushing``: some live segment belongs to an
        immutable memtable whose flush is queued or running. Sealed
        segments are sized with ``fs.file_size``; ``remember`` caches
        those sizes (only a caller holding the DB write lock, for which
        ``mem_paths`` is exact, may ask)."""
        mem = set(mem_paths)
        with self._wal_mu:
            paths = self._live_wal | mem
            flushing = not self._live_wal <= mem
            sizes = {p: self._wal_sizes.get(p) for p in paths}
        files, total = 0, 0
        if current is not None:
            paths.discard(current)
            files, total = 1, current_bytes
        learnt = {}
        for p in paths:
            n = sizes[p]
            if n is None:
                try:
                    n = learnt[p] = self.fs.file_size(p)
                except FileNotFoundError:
                    continue  # retired meanwhile
            files += 1
            total += n
        if remember and learnt:
            with self._wal_mu:
                for p, n in learnt.items():
                    if p in self._live_wal or p in mem:
                        self._wal_sizes[p] = n
        return files, total, flushing

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
            self.db._info_log.error("compaction failed; compactions stopped, their inputs kept: %s", e)
        else:
            self.db._on_fence(e)
        with self.db._write_cv:
            self.db._write_cv.notify_all()

    def compaction_pending(self, version: Any) -> bool:
        """True when ``version`` wants a compaction (some level scores >= 1)
        or one is running: the benchmark harness waits for False to measure
        the write amplification a workload leaves settled. False once
        compactions have stopped (a background error, a fence)."""
        if self.compactions_running:
            return True
        if self.error is not None or self.db._fenced is not None or self.mode == "inline":
            return False  # inline: every wanted compaction ran before the write returned
        return pick_compaction(version, self.opts) is not None

    def _compact_once(self) -> bool:
        with self._compact_mu:
            if self.db._fenced is not None or self._stopped:
                return False  # a fenced database starts no more work
            c = pick_compaction(self.vs.current, self.opts)
            if c is None:
                return False
            self.compactions_running += 1
            c0 = time.thread_time()
            try:
                self._run_compaction(c)
            finally:
                self.compactions_running -= 1
                self.cpu_seconds["compaction"] += time.thread_time() - c0
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
                self.compactions_running += 1
                try:
                    self._run_compaction(c)
                except CorruptionError as e:
                    self.error = e
                    raise
                except Exception as e:  # an I/O failure fences, as in the background loop
                    self._compaction_failed(e)
                    if db._blocked is not None:
                        db._raise_blocked()
                    raise
                finally:
                    self.compactions_running -= 1

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
            db._info_log.compacted(c, None, time.perf_counter() - t0)
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
            if db._fenced is None:  # fenced: touch nothing; the next open removes orphans
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
        written = sum(p.file_size for _n, p in result.outputs)
        self.compaction_bytes_written += written
        self.compaction_bytes_read += result.bytes_read
        for lv, f in inputs:
            self.level_io[lv][0] += f.file_size
        self.level_io[c.output_level][1] += written
        dt = time.perf_counter() - t0
        self.compaction_seconds += dt
        db._info_log.compacted(c, result, dt)

    # --------------------------------------------------------------- install
    def _install(self, edit: VersionEdit, added: list[int], *, removed: list[int] | None = None,
                 remove_mem: MemTable | None = None, new_mem: MemTable | None = None,
                 write_locked: bool = False) -> None:
        """Make ``edit`` durable in the manifest and visible to reads; then
        unlink tables it removed. ``new_mem`` replaces the live memtable in
        the new super version; ``write_locked``: the caller already holds
        ``_install_mu`` and then the DB write lock (an ingest)."""
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
            with contextlib.nullcontext() if write_locked else db._write_mu:
                sv = db._sv
                imms = sv.imms if remove_mem is None else tuple(m for m in sv.imms if m is not remove_mem)
                db._sv = SuperVersion(sv.mem if new_mem is None else new_mem, imms, version, readers)
                l0_before = self.l0_files
                self.l0_files = len(version.levels[0])
                trigger = self.opts.l0_slowdown_trigger
                if (l0_before >= trigger) != (self.l0_files >= trigger):
                    db._info_log.l0_slowdown(self.l0_files >= trigger, self.l0_files, trigger)
                self.update_delay_locked(len(db._sv.imms))
                db._write_cv.notify_all()
        # A replaced table is unlinked when its reader is collected: when no
        # super version (an open iterator) can read it any more. An
        # interrupted deletion leaves an orphan that the next open removes.
        for r in retired:
            weakref.finalize(r, _remove_table, self.fs, r.path)
        del retired

    # ------------------------------------------------------------ write pacing
    def update_delay_locked(self, imms: int) -> None:
        """Turn write pacing (DB._delay_write) on or off for the current
        state: level 0 at ``l0_slowdown_trigger`` or more, or as many
        immutable memtables waiting as ``max_immutable_memtables`` (the next
        switch would stall). REQUIRES: DB write lock held."""
        self._imms = imms
        opts = self.opts
        self.db._l0_delay = self.l0_files >= opts.l0_slowdown_trigger or imms >= opts.max_immutable_memtables

    def delayed_write_rate(self, mem_size: int) -> tuple[float, str]:
        """(bytes per second writers may go at, the stall cause it is
        counted under); 0.0: no limit. The lower of two limits:

        * ``l0_slowdown``: level 0 at ``l0_slowdown_trigger`` + k files:
          ``delayed_write_rate / 2**k``, so each file more halves the rate
          (at ``l0_stop_trigger`` writes stop).
        * ``memtables``: every immutable slot is taken, so the live memtable
          can only switch when the running flush ends: the rate flushes
          drain (``memtable_size`` per recent flush duration, a moving
          average with weight 0.3 on the newest; before the first
          flush is timed, ``delayed_write_rate``), or the live memtable's
          room over the running flush's expected remaining time (at least
          50 ms) when that is faster. So the memtable fills about when the
          flush ends, not long before, and a writer meets a full memtable
          (a hard stall) only when a flush takes longer than the mean."""
        opts = self.opts
        rate, cause = 0.0, "l0_slowdown"
        k = self.l0_files - opts.l0_slowdown_trigger
        if k >= 0:
            rate = opts.delayed_write_rate / (1 << min(k, 30))
        if self._imms >= opts.max_immutable_memtables and mem_size < opts.memtable_size:
            # Before the first flush is timed: one memtable at delayed_write_rate.
            mean = self._flush_recent or opts.memtable_size / opts.delayed_write_rate
            mem_rate = opts.memtable_size / max(mean, 1e-3)  # what flushes drain, memtable after memtable
            started = self._flush_started
            if started:
                left = mean - (time.perf_counter() - started)
                if left > 0.0:  # faster while the room outlasts the running flush
                    mem_rate = max(mem_rate, (opts.memtable_size - mem_size) / max(left, 0.05))
            if rate == 0.0 or mem_rate < rate:
                rate, cause = mem_rate, "memtables"
        return rate, cause

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
        fj = FlushJob(dbdir=db.path, file_number=number, table=self.table, snapshots=db._snapshot_list(),
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
            edit.added.append((level, _meta(num, props)))
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
