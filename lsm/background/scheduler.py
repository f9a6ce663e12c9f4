"""The background scheduler of a DB: the flush and compaction threads (or
inline runs), job execution in the worker pools (lsm/compaction/worker.py)
with retries, the install of a job's version edit, and write pacing. See
the package docstring (lsm/background/__init__.py) for modes, the install
order and the lock order."""

from __future__ import annotations

import collections
import contextlib
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from lsm.background.fill_checkpoints import FillCheckpoints
from lsm.background.ingest import IngestEntryPoints
from lsm.background.state import ImmJob, SuperVersion, meta, open_reader, remove_table
from lsm.background.wal_lifecycle import WalLifecycle
from lsm.base import filenames
from lsm.base.errors import CorruptionError, NeedsRecoveryError
from lsm.base.fs import io_site
from lsm.compaction.picker import Compaction, pick_compaction, pick_manual
from lsm.compaction.runner import CompactionJob, FlushJob, JobResult, remove_outputs, run_job, table_options
from lsm.compaction.worker import WorkerError, shared_pool
from lsm.manifest.edit import VersionEdit
from lsm.memtable import MemTable
from lsm.sstable.reader import TableReader
from lsm.wal.archive import WalArchive
from lsm.wal.spare import due

if TYPE_CHECKING:
    from lsm.db import DB

MAX_JOB_RETRIES = 3
PRESTART_FRACTION = 0.25
"""Process mode: the flush worker is started (``WorkerPool.prestart``) once
the live memtable is this full, not at open (:meth:`Background._lazy_prestart`)."""
PRESTART_LEAD_SECONDS = 2.0
"""... or once, at its fill rate since the last checkpoint, it would be full this soon."""


def flush_due(limit: int, size: int, rate: float) -> bool:
    """A memtable of ``size`` bytes (of ``limit``) filling at ``rate``
    bytes per second will need a flush soon: start the flush worker
    (:meth:`Background._lazy_prestart`): the spare segment's rule
    (:func:`lsm.wal.spare.due`) with the memtable's fraction and lead."""
    return due(limit, size, rate, PRESTART_FRACTION, PRESTART_LEAD_SECONDS)


class Background(WalLifecycle, IngestEntryPoints):
    """Flushes and compactions of one DB, and their installs (see the
    package docstring for modes, install order and locks)."""

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
        # Flushes at once (process mode: each in a worker of the flush pool;
        # built in any order, installed in queue order, _await_turn).
        self._flush_par = self.opts.max_background_flushes if self.mode == "process" else 1
        self._flush_starts: list[float] = []  # perf_counter at each running flush's start, guarded by _cv
        self._compact_wanted = True  # guarded by _cv
        self._stopped = False
        self._compact_mu = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._pools = {k: shared_pool(k) for k in ("flush", "compaction")} if self.mode == "process" else None
        self._prestarted = {"flush": self._pools is None, "compaction": self._pools is None}
        if self._pools is not None:
            self._pools["flush"].allow(self._flush_par)
        # The write path's fill checkpoints (under the DB write lock): they
        # start the flush worker (_flush_look) and kick the spare WAL segment.
        self.fill = FillCheckpoints(self.opts.memtable_size, lambda: not self._prestarted["flush"], self._flush_look)
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
        # the writers' rate by whether a compaction ran). compactions_running
        # is written by whoever holds _compact_mu; flushes_running is the
        # length of _flush_starts (a property).
        self.compactions_running = 0
        self.stall_max_seconds = 0.0  # longest single write stall (DB._make_room_locked); under the write lock
        # Write pacing (DB._delay_write): the shared schedule of delayed
        # writes and the paced writes per cause, both guarded by
        # db._pace_mu; when the oldest running flush started (0: none
        # running; set under _cv from _flush_starts) and the moving average
        # of flush durations in seconds (0: none yet; set under _cv by the
        # flush threads, _do_flush). delayed_write_rate reads the last two
        # with no lock: one float each, which a rebind replaces whole.
        self.delay_next = 0.0
        self.paced: dict[str, list] = {"memtables": [0, 0.0], "l0_slowdown": [0, 0.0]}  # sleeps: [count, seconds]
        self._flush_started = 0.0
        self._flush_recent = 0.0
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
        # How tables are written into each level (flushes: level 0): raw
        # above Options.min_level_to_compress, compressed from it down.
        self.tables = [table_options(self.opts, lv) for lv in range(self.opts.num_levels)]

    @property
    def flushes_running(self) -> int:
        """Flushes in progress (one start time each in ``_flush_starts``; a
        len() needs no lock)."""
        return len(self._flush_starts)

    @property
    def sst_bytes_written(self) -> int:
        return self.flush_bytes_written + self.compaction_bytes_written + self.ingest_bytes_written

    def start(self) -> None:
        if self.mode == "inline":
            return
        # (process mode: the worker processes start lazily, _lazy_prestart)
        loops = [("lsm-flush", self._flush_loop)] * self._flush_par + [("lsm-compaction", self._compaction_loop)]
        for name, fn in loops:
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

    def _lazy_prestart(self, kind: str) -> None:
        """Process mode: start the ``kind`` pool's worker in the background
        (``WorkerPool.prestart``, a no-op when the process's pool has one),
        once. Not at open: a worker's Python start-up (~0.25 s of CPU each)
        competed with the first workload's commits on 2 cores (issue 7
        target 1, fillsync right after open). The flush worker starts when
        the live memtable is ``PRESTART_FRACTION`` full or, at its fill
        rate, would be full within ``PRESTART_LEAD_SECONDS`` (an OFF fill:
        at the second fill checkpoint, lsm/background/fill_checkpoints.py;
        nothing polls), or at the first flush; the compaction worker at the first flush (compactions
        need ``l0_compaction_trigger`` flushes). A job that finds no worker
        starts one itself (``WorkerPool.run``)."""
        if not self._prestarted[kind]:
            self._prestarted[kind] = True
            self._pools[kind].prestart()  # type: ignore[index]

    def _flush_look(self, size: int, rate: float) -> None:
        """A fill checkpoint (the DB write path, under its write lock): the
        live memtable holds ``size`` bytes, filling at ``rate`` bytes per
        second. Never blocks (``WorkerPool.prestart`` starts the worker on
        a thread of its own)."""
        if flush_due(self.opts.memtable_size, size, rate):
            self._lazy_prestart("flush")

    def _flush_loop(self) -> None:
        while True:
            with self._cv:
                job = self._unclaimed()
                while job is None and not self._stopped:
                    self._cv.wait()  # no timeout: a job or stop (the worker's early start: _flush_look)
                    job = self._unclaimed()
                if job is None or self._stopped:
                    return
                job.claimed = True
            self._lazy_prestart("flush")
            self._lazy_prestart("compaction")
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

    def _unclaimed(self) -> ImmJob | None:
        """The oldest queued job no flush thread has taken. REQUIRES: _cv."""
        for job in self._queue:
            if not job.claimed:
                return job
        return None

    def _await_turn(self, job: ImmJob) -> bool:
        """After its table is built: wait until every older queued job is
        installed (flushes install in queue order, so ``flushed_seq`` and
        level 0 grow in commit order). False when the job left the queue
        because the DB fenced (its table is then an orphan, removed at the
        next open; its commits are still in the WAL). A job that was never
        queued (an inline flush) goes on."""
        with self._cv:
            while True:
                if self._queue and self._queue[0] is job:
                    return True
                if self.db._fenced is not None:
                    return False
                if job not in self._queue:
                    return True
                self._cv.wait(0.1)

    def _do_flush(self, job: ImmJob) -> None:
        t0 = time.perf_counter()
        with self._cv:
            self._flush_starts.append(t0)
            self._flush_started = min(self._flush_starts)
        c0 = time.thread_time()
        dt: float | None = None  # the flush's duration, once it succeeded
        try:
            self._flush_one(job)
            dt = time.perf_counter() - t0
        finally:
            with self._cv:  # (flush threads run at once: _flush_recent is read, then set)
                if dt is not None:
                    self._flush_recent = dt if not self._flush_recent else 0.7 * self._flush_recent + 0.3 * dt
                self.cpu_seconds["flush"] += time.thread_time() - c0
                self._flush_starts.remove(t0)
                self._flush_started = min(self._flush_starts) if self._flush_starts else 0.0

    def _flush_one(self, job: ImmJob) -> None:
        db = self.db
        t0 = time.perf_counter()
        with db._install_mu:
            number = self.vs.new_file_number()
        fj = FlushJob(
            dbdir=db.path,
            file_number=number,
            table=self.tables[0],
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
        if not self._await_turn(job):
            return  # fenced while an older flush installed or failed: touch nothing
        edit = VersionEdit(flushed_seq=job.end_seq, last_seq=max(self.vs.last_seq, job.end_seq))
        for num, props in result.outputs:
            edit.added.append((0, meta(num, props)))
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

    # ------------------------------------------------------------- compaction
    def _compaction_loop(self) -> None:
        while True:
            with self._cv:
                while not self._compact_wanted and not self._stopped:
                    self._cv.wait()  # no timeout: every install that may want one sets _compact_wanted
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
                    raise self.error.with_traceback(None)  # (see DB._raise_blocked)
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
        with self._cv:  # its outputs may leave a level over its target: the idle loop looks
            self._compact_wanted = True
            self._cv.notify_all()

    def _run_compaction(self, c: Compaction) -> None:
        """REQUIRES: _compact_mu held."""
        db = self.db
        t0 = time.perf_counter()
        inputs = [(c.level, f) for f in c.inputs] + [(c.output_level, f) for f in c.next_inputs]
        tables = self.tables
        if c.is_trivial_move and tables[c.level].compression == tables[c.output_level].compression:
            # Trivial move: nothing overlaps below, so the file changes level
            # only. Not across Options.min_level_to_compress: a raw file
            # moved there would stay raw (RocksDB's trivial move likewise
            # needs the input's compression to match the output level's).
            f = c.inputs[0]
            edit = VersionEdit(removed=[(c.level, f.number)], added=[(c.output_level, f)])
            self._install(edit, [], removed=[])
            self.compaction_count += 1
            db._info_log.compacted(c, None, time.perf_counter() - t0)
            return
        total = sum(f.file_size for _lv, f in inputs)
        n = 2 * (4 * total // max(1, self.opts.target_file_size)) + len(inputs) + 16
        with db._install_mu:
            numbers = [self.vs.new_file_number() for _ in range(n)]
        job = CompactionJob(
            dbdir=db.path,
            inputs=[(lv, f.number) for lv, f in inputs],
            file_numbers=numbers,
            table=tables[c.output_level],
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
            edit.added.append((c.output_level, meta(num, props)))
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
            weakref.finalize(r, remove_table, self.fs, r.path)
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
          average with weight 0.3 on the newest, times the flushes run at
          once; before the first flush is timed, ``delayed_write_rate``),
          or the live memtable's
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
            mem_rate = opts.memtable_size * self._flush_par / max(mean, 1e-3)  # what flushes drain
            started = self._flush_started
            if started:
                left = mean - (time.perf_counter() - started)
                if left > 0.0:  # faster while the room outlasts the running flush
                    mem_rate = max(mem_rate, (opts.memtable_size - mem_size) / max(left, 0.05))
            if rate == 0.0 or mem_rate < rate:
                rate, cause = mem_rate, "memtables"
        return rate, cause

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
