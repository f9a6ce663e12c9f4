"""The WAL writer: owns the live segment, appends commit records, and is the
ONE place where a commit's sync level is applied.

Protocol (the DB write path)::

    with db write lock:
        writer.append_locked(record, last_seq, 1, level)  # ordering; FULL/EXTRA: staged,
                                                          # other levels: write(2)
        memtable insert; publish last_seq
    writer.commit_wait(last_seq, level)                 # FULL/EXTRA: group sync
                                                        # BARRIER: kick async sync

Group commit: syncs are shared, and so are the writes of FULL/EXTRA
records. The first committer that needs a sync becomes the sync leader:
it writes every staged record in one write(2) and fdatasyncs (outside
every lock but ``_cv``'s wait, and ``_io_mu`` for the write) while later
committers stage their records and queue up behind it; when it finishes,
the next leader's single write and fdatasync cover all of them. One
write(2) and one fdatasync per group, however many committers wait.

Staged records: a FULL/EXTRA commit's record is appended to ``_staged``
under the DB write lock (no system call there, so the lock is never held
while the GIL is released for one); ``written_seq`` counts it. The sync
leader takes ``_io_mu``, reads ``written_seq`` and then the staged list,
writes that prefix in one write(2), and only then removes it. Invariants:

* Records reach the file in sequence order. A commit at a lower level
  (OFF/NORMAL/BARRIER) writes the staged records and its own in one
  write(2) under ``_io_mu``, so it is in the OS when ``append_locked``
  returns (a kill -9 loses no commit that returned). With nothing staged
  it writes without ``_io_mu``: no leader is writing then (a leader
  unstages only after its write).
* Whatever needs every record in the file first writes the staged ones:
  rotation (``start_segment_locked``: its sealing sync, then
  :meth:`flush_locked`), a checkpoint's pin (:meth:`flush_locked`), a
  sync (the leader), ``close``. ``segment_bytes`` and ``synced_offset``
  count bytes in the file only.
* A staged record is not acknowledged: its committer returns only after a
  sync whose leader wrote it. A kill -9 loses only such commits.
* The record's v2 ``synced`` field is read when it is encoded (under the
  DB write lock), so it is at most the durable offset then, and at most
  the offset the record is later written at; ``synced_offset`` only grows
  within a segment and records are written in encoding order.
* A failed group write fences like a failed sync: the leader publishes
  the error before its gate opens, so every committer of the group (and
  of the next) raises NeedsRecoveryError; nothing is retried. A leader
  that finds the writer fenced once it holds ``_io_mu`` (another
  commit's write failed while it lingered or waited there, maybe after
  tearing the file) neither writes nor syncs, and raises.

Levels: OFF returns after write(2). NORMAL returns after write(2); the
syncer thread fdatasyncs every ``sync_interval``. BARRIER kicks the syncer
and returns; the *next* append waits for that sync before its bytes reach
the file (so a crash keeps a prefix). FULL waits for a sync covering its
record; the first FULL/EXTRA commit in a new segment also syncs the WAL
directory once, so the segment's existence is durable too. EXTRA is FULL
with fsync instead of fdatasync, plus directory syncs when segments are
created or deleted.

Failure: any error from write(2) or a sync fences the writer: ``fenced``
holds the error, every waiter and every later call raises
NeedsRecoveryError, and the failed sync is never retried (the kernel may
have dropped the dirty pages; a retry could falsely succeed).

Group size: a leader may linger before its sync so that the committers the
previous sync released can append first (``_linger_locked``: a fixed
``commit_linger_us``, or by default adaptive, only while several threads
commit). ``_lead_cv`` shares ``_cv``'s lock; the append that fills a
lingering leader's group notifies it (``_linger_until``), once.

Durable offset (WAL format version 2): ``synced_offset`` is the offset in
the live segment up to which it is known durable: the segment's size when
a sync that completed started (0 for a new segment). Each record carries
the value it had when it was appended (``encode_record(..., synced)``), so
that recovery can tell a never-synced hole from damage to synced bytes
(docs/format/wal.md, "Version 2"). It is WRITTEN under ``_cv`` (by the
sync leader, only while the synced file is still the live one, and reset
by ``start_segment_locked``, which swaps ``_file`` under ``_cv`` too) and
READ by the DB under the DB write lock without ``_cv``: a stale (smaller)
value is safe, a read never sees a value larger than the truth.

Preallocation (``preallocate`` > 0, option ``wal_preallocate``): the next
segment is prepared ahead as a *spare* (lsm/wal/spare.py), off the commit
path. Rotation renames the spare into place and writes it from offset 0
(``fs.open_overwrite``); past the preallocated size the file just grows. A
sealed preallocated segment is truncated to the bytes written (so sizes,
archives and the next open see exactly the records); the zero tail of a
crashed one reads as the end of data. Without a ready spare (or after a
failed preparation) rotation creates the segment as without preallocation.

Locks: ``_cv`` (a Condition) guards ``durable_seq``, the sync gates,
``_barrier_seq``, ``synced_offset`` (writes) and the
counters. ``_io_mu`` serializes writes to the live segment while records
are staged (and guards unstaging). Lock order: DB write lock, then
``_io_mu``, then ``_cv`` (taken under ``_io_mu`` only to fence); the sync
leader takes ``_io_mu`` without the DB write lock and never while holding
``_cv``; ``_cv`` is never held across I/O.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left as _bisect_left
from collections.abc import Callable

from lsm.base import filenames
from lsm.base.errors import ClosedError, NeedsRecoveryError
from lsm.base.fs import FileSystem, WritableFile, io_site
from lsm.base.fs import enter_site as _enter_site
from lsm.base.fs import exit_site as _exit_site
from lsm.options import Sync
from lsm.wal.format import encode_segment_header
from lsm.wal.spare import SpareSegment

_perf_counter = time.perf_counter


_UNBOUNDED = 1 << 63  # a sync target above every sequence number


_Lock = threading.Lock


def _new_gate() -> threading.Lock:
    gate = threading.Lock()
    gate.acquire()
    return gate

_FULL = Sync.FULL
_BARRIER = Sync.BARRIER
_EXTRA = Sync.EXTRA
_NORMAL = Sync.NORMAL

GROUP_HIST_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128)
"""Upper bounds of the commits-per-sync histogram buckets (last is +inf)."""

SYNC_LATENCY_SAMPLES = 1024
"""WAL syncs whose durations are kept (a ring) for the latency percentiles
(:meth:`WalWriter.sync_latency`). A power of two."""


class WalWriter:
    def __init__(
        self,
        fs: FileSystem,
        wal_dir: str,
        *,
        segment_size: int,
        sync_interval: float,
        commit_linger_us: int = 0,
        on_fence: Callable[[BaseException], None] | None = None,
        preallocate: int = 0,
        prepare_inline: bool = False,
    ):
        self.fs = fs
        self.wal_dir = wal_dir
        self.segment_size = segment_size
        self.sync_interval = sync_interval
        self.commit_linger = commit_linger_us / 1e6
        self._on_fence = on_fence
        mu = self._mu = threading.Lock()  # ``_cv``'s lock: ``with self._mu`` where no wait is needed (a Condition's __enter__ is a Python call)
        self._cv = threading.Condition(mu)
        self._lead_cv = threading.Condition(mu)  # a lingering leader waits here for appends
        # Staged records (group commit): FULL/EXTRA records encoded but not
        # yet written, in sequence order. Appended under the DB write lock;
        # a prefix is written (one write(2)) and then removed only under
        # ``_io_mu``, which serializes every write to the live segment while
        # records are staged (module docstring, "Staged records").
        self._staged: list[bytes] = []
        self._io_mu = threading.Lock()
        # -- guarded by the DB write lock:
        self._file: WritableFile | None = None
        self._raw_write: Callable[[bytes], int] | None = None  # FileSystem.raw_write(_file), swapped with it
        self.segment_first_seq = 0
        self.segment_records = 0
        self.written_seq = 0  # last seq whose record reached the OS
        self._written_commits = 0
        self.bytes_written = 0
        self.segments_created = 0
        # -- guarded by self._cv:
        self.durable_seq = 0
        self._synced_commits = 0
        # Sync gates (group commit): a gate is a Lock created held. The
        # leader holds ``_sync_gate`` for its sync and releases it after
        # publishing the result; waiters acquire-and-release it, each
        # waking the next (no Condition wait/notify round, no thundering
        # herd on ``_cv``). ``_next_gate`` is the gate the next sync will
        # use, created by the first committer that waits for it.
        self._sync_gate: threading.Lock | None = None
        self._next_gate: threading.Lock | None = None
        self._sync_target = 0  # written_seq the running (or last) sync covers
        self._barrier_seq = 0
        self._dir_synced = True  # the live segment's directory entry is durable
        self.fenced: BaseException | None = None
        self.synced_offset = 0  # the live segment is durable up to here (module docstring)
        self.syncs = 0
        self.dir_syncs = 0
        self.sync_seconds = 0.0
        self._sync_lat = [0.0] * SYNC_LATENCY_SAMPLES  # durations of the last syncs, a ring indexed by syncs
        self.synced_bytes = 0  # bytes_written covered by the last sync
        self.unsynced_since = 0.0  # time.monotonic() of the oldest unsynced commit, about (no lock)
        self.group_hist = [0] * (len(GROUP_HIST_BOUNDS) + 1)
        self.groups = 0  # syncs that covered at least one commit
        self.synced_commits = 0  # commits made durable by those syncs
        self.linger_seconds = 0.0  # time leaders spent waiting for a group to form
        self._last_group = 1  # commits covered by the last sync
        self._sync_ewma = 0.0002  # seconds, a moving average of one WAL sync
        self._linger_until = 0  # while a leader lingers: the _written_commits that fill its group (else 0)
        self._waiting = 0  # threads in _cv.wait() (sync_to, wait_durable): notify only when > 0
        self._closed = False
        self._syncer: threading.Thread | None = None
        self._kick = threading.Event()
        # -- preallocation (module docstring)
        self.preallocate = preallocate
        self._spare = SpareSegment(fs, wal_dir, preallocate, inline=prepare_inline,
                                   stopped=lambda: self.fenced is not None)
        self._file_preallocated = False  # guarded by the DB write lock
        self.spares_used = 0

    # ------------------------------------------------------------- spare
    @property
    def spare_path(self) -> str:
        return self._spare.path

    @property
    def spare_failures(self) -> int:
        return self._spare.failures

    def prepare_spare(self) -> bool:
        """Prepare the spare segment now unless one is ready or being
        prepared (:meth:`SpareSegment.prepare`); True when one is ready."""
        return self._spare.prepare()

    # ------------------------------------------------------------- segments
    def start_segment_locked(self, first_seq: int) -> str:
        """Seal the live segment (if any) and start a new one whose first
        record will have sequence number ``first_seq``. REQUIRES: DB write
        lock held. Returns the new segment's path."""
        self._check_fence()
        old = self._file
        if old is not None and self.written_seq > self.durable_seq:
            # Seal durably: a power cut must never leave an older segment
            # torn behind a newer one (recovery would call that corruption).
            # One sync per rotation; it also covers earlier sealed segments.
            self.sync_to(self.written_seq, _FULL)  # also writes the staged records
        self.flush_locked()  # (a no-op then: no staged record may cross the swap)
        path = filenames.join(self.wal_dir, filenames.wal_name(first_seq))
        take = self._spare.take() if self.preallocate else False
        with io_site("wal"):
            f = None
            try:
                if take:
                    self.fs.rename(self.spare_path, path)
                    f = self.fs.open_overwrite(path)
                else:
                    f = self.fs.create(path)
                f.write(encode_segment_header(first_seq))
                if old is not None and self._file_preallocated:
                    self.fs.truncate(old.path, old.size)  # sealed: its zero tail goes
            except BaseException as e:
                if f is not None:
                    f.close()
                self._fence(e)
                raise NeedsRecoveryError(f"WAL segment creation failed: {e}", e) from e
        self._file_preallocated = take
        if take:
            self.spares_used += 1
        self.segment_first_seq = first_seq
        self.segment_records = 0
        self.segments_created += 1
        while True:
            # Swap only while no sync is in flight: a sync that started
            # before (for the directory entry alone, when every record was
            # already durable) may still be using the old file, which is
            # closed below. Syncs that start after the swap use the new one.
            with self._cv:
                gate = self._sync_gate
                if gate is None:
                    self._file = f
                    self._raw_write = self.fs.raw_write(f)
                    self.synced_offset = 0
                    self._dir_synced = False
                    break
            gate.acquire()
            gate.release()
        if old is not None:
            old.close()
        if self.preallocate:
            self._spare.want()
        return path

    @property
    def segment_path(self) -> str | None:
        return self._file.path if self._file is not None else None

    @property
    def segment_bytes(self) -> int:
        return self._file.size if self._file is not None else 0

    # --------------------------------------------------------------- commits
    def append_locked(self, record: bytes, last_seq: int, count_commits: int = 1, level: int = 0) -> None:
        """Append one commit record (or a group's records concatenated) of a
        commit at sync ``level``. REQUIRES: DB write lock held. A FULL or
        EXTRA record is staged: the leader of the group sync that its
        :meth:`commit_wait` joins writes it with the rest of the group in
        one write(2). Any
        other record reaches the OS here (after the staged ones, in one
        write(2)), so an OFF commit survives a kill -9 once this returns.
        Enforces the BARRIER ordering: a record never reaches the file
        before an earlier barrier commit is durable."""
        if self.fenced is not None:
            self._raise_fenced()
        if self._barrier_seq > self.durable_seq:
            self.sync_to(self._barrier_seq, _FULL)
        if level >= _FULL:
            self._staged.append(record)  # before written_seq moves (sync_to reads them in that order)
        elif self._staged:
            with self._io_mu:
                self._write_staged_io_locked(self._file, record)  # type: ignore[arg-type]
        else:
            # Nothing staged: no leader is writing (a leader removes its
            # records only after their write), so no _io_mu needed.
            f = self._file
            raw = self._raw_write
            try:
                if raw is None:
                    f.write(record)  # type: ignore[union-attr]
                else:  # the plain fs: os.write without three Python frames (FileSystem.raw_write)
                    n = raw(record)
                    f.size += n  # type: ignore[union-attr]
                    if n != len(record):  # a short write: the rest as WritableFile.write does
                        f.write(memoryview(record)[n:])  # type: ignore[union-attr]
            except BaseException as e:
                self._fence(e)
                raise NeedsRecoveryError(f"WAL write to {f.path} failed: {e}", e) from e  # type: ignore[union-attr]
        if self.written_seq <= self.durable_seq:  # the oldest unsynced commit (stats' wal_unsynced_age)
            self.unsynced_since = time.monotonic()
        self.written_seq = last_seq
        n = self._written_commits = self._written_commits + count_commits
        if self._linger_until and n >= self._linger_until:  # a lingering leader's group is full: wake it
            with self._cv:
                self._lead_cv.notify()
        self.segment_records += count_commits
        self.bytes_written += len(record)

    def flush_locked(self) -> None:
        """Write the staged records to the OS (no sync), so the live
        segment's file holds every appended record (a checkpoint's pin, a
        seal). REQUIRES: DB write lock held."""
        if self._staged and self._file is not None:
            if self.fenced is not None:
                self._raise_fenced()
            with self._io_mu:
                self._write_staged_io_locked(self._file)  # type: ignore[arg-type]

    def _write_staged_io_locked(self, f: WritableFile, extra: bytes | None = None) -> None:
        """REQUIRES: ``_io_mu`` held, and the DB write lock when ``extra``
        is given. Write the staged records (then ``extra``) in one write(2)
        and unstage them; a failure fences and raises NeedsRecoveryError."""
        staged = self._staged
        n = len(staged)
        if extra is not None:
            data = extra if n == 0 else b"".join(staged + [extra])
        elif n == 0:
            return
        else:
            data = staged[0] if n == 1 else b"".join(staged[:n])
        try:
            f.write(data)
        except BaseException as e:
            self._fence(e)
            raise NeedsRecoveryError(f"WAL write to {f.path} failed: {e}", e) from e
        del staged[:n]

    def commit_wait(self, seq: int, level: int) -> None:
        """Apply the sync level of a commit whose last sequence number is
        ``seq`` after its record was appended (DB write lock NOT held)."""
        if level >= _FULL:
            if self.durable_seq < seq or (not self._dir_synced):
                self.sync_to(seq, level)
        elif level == _BARRIER:
            with self._cv:
                self._barrier_seq = max(self._barrier_seq, seq)
            self._ensure_syncer()
            self._kick.set()
        elif level == _NORMAL:
            self._ensure_syncer()

    def sync_to(self, seq: int, level: int = _FULL) -> None:
        """Block until every record up to ``seq`` is durable (and the live
        segment's directory entry too). Group commit: at most one sync runs
        at a time; waiters that arrive during it are covered by the next.

        Waiting is on sync gates (see ``__init__``): a committer whose
        record the running sync covers waits for that sync's gate; the
        others wait for the next sync's gate, except the first of them,
        which waits for the running sync and then leads the next one. The
        result (``durable_seq``, or ``fenced``) is published under ``_cv``
        before a gate opens, so a waiter never starts a sync after a failed
        one (a failed sync is never retried). The leader first writes the
        staged records (one write(2), under ``_io_mu``); a failed write is
        published like a failed sync. This is also the lone FULL writer's
        path, once per commit: it takes ``_cv``'s lock twice (as ``_mu``:
        a Condition's ``with`` costs two Python calls) and ``_io_mu`` once
        and does a few attribute updates around the fdatasync. A waiter
        that the sync it waited for covered returns when the gate opens,
        without another round on ``_cv``."""
        mu = self._mu
        designated: threading.Lock | None = None  # the next sync's gate, if this thread is to lead it
        while True:
            with mu:
                if self.fenced is not None:
                    self._raise_fenced()
                if self.durable_seq >= seq and self._dir_synced and (designated is None or self._next_gate is not designated):
                    return  # (a designated leader leads even so: others wait for its gate)
                # Not durable yet, so a segment was started (a record was
                # written or staged). close() sets _closed before it drops
                # the segment: read in this order, f is the live segment
                # unless the writer is closed, and a record staged or
                # written now was never synced.
                f = self._file
                if f is None or self._closed:
                    raise ClosedError(f"WAL writer for {self.wal_dir} is closed: commit {seq} cannot be made durable")
                cur = self._sync_gate
                if cur is None:  # no sync running: lead one
                    gate = self._next_gate
                    if gate is None:
                        gate = _Lock()  # _new_gate(), inlined: once per sync
                        gate.acquire()
                    else:
                        self._next_gate = None
                    self._sync_gate = gate
                    # Committers arriving while the leader lingers or
                    # writes the staged records are covered by this sync
                    # (its target is read after; a waiter that reads
                    # _UNBOUNDED re-checks durable_seq when the gate opens).
                    self._sync_target = _UNBOUNDED
                    if self.commit_linger or self._last_group > 1:
                        self._linger_locked()
                    need_dir = not self._dir_synced
                    break
                if seq <= self._sync_target and self._dir_synced:
                    gate = cur  # the running sync covers seq
                else:
                    gate = self._next_gate
                    if gate is None:  # lead the next sync once this one ends
                        designated = self._next_gate = _new_gate()
                        gate = cur
            gate.acquire()  # blocks until that sync's result is published
            gate.release()  # and lets the next waiter through
            if designated is None and self.durable_seq >= seq and self._dir_synced and self.fenced is None:
                return  # covered (published before the gate opened): no second round on _cv
        err: BaseException | None = None
        token = _enter_site("wal")
        # Write the staged records (this group's and any staged since) in
        # one write(2). written_seq is read before the staged list: every
        # record up to ``target`` is then in the list or already written.
        # Not under _cv: direct appends wait on _io_mu only while records
        # are staged, and never hold _cv while they wait.
        staged = self._staged
        with self._io_mu:
            target = self.written_seq
            target_bytes = self.bytes_written
            commits = self._written_commits
            n = len(staged)
            if self.fenced is not None:
                # Fenced since this leader checked (a write that failed
                # while it lingered or waited here for _io_mu, maybe after
                # a short write that tore the file): it must neither write
                # nor sync, and its commit must not return (a record
                # written behind the damage is lost with it).
                err = self.fenced
            elif n:
                try:
                    f.write(staged[0] if n == 1 else b"".join(staged[:n]))
                    del staged[:n]
                except BaseException as e:  # noqa: BLE001 - fences below, like a failed sync
                    err = e
            target_off = f.size  # all written before the sync starts
        self._sync_target = target  # one store, read under _cv (the comment above)
        t0 = _perf_counter()
        try:
            if err is not None:
                raise err
            f.datasync() if level < _EXTRA else f.fsync()
            if need_dir:
                self.fs.sync_dir(self.wal_dir)
        except BaseException as e:  # noqa: BLE001 - any failure fences
            err = e
        dt = _perf_counter() - t0
        _exit_site(token)
        with mu:
            self._sync_gate = None
            if err is not None:
                if self.fenced is None:
                    self.fenced = err  # before the gate opens: no waiter may retry the sync
                self._open_next_gate_locked()
            else:
                if target > self.durable_seq:
                    self.durable_seq = target
                # f is still the live segment: rotation swaps it only under
                # _cv while no sync gate is set, and this one was cleared
                # in this same hold of _cv.
                if target_off > self.synced_offset:
                    self.synced_offset = target_off
                group = commits - self._synced_commits
                self._synced_commits = commits
                n = self.syncs
                self._sync_lat[n & (SYNC_LATENCY_SAMPLES - 1)] = dt
                self.syncs = n + 1
                self.sync_seconds += dt
                self.synced_bytes = target_bytes
                if self.written_seq > target:  # appended during the sync: at most about this old
                    self.unsynced_since = t0
                self._sync_ewma += (dt - self._sync_ewma) * 0.125
                if need_dir:
                    self.dir_syncs += 1
                    self._dir_synced = True  # f's entry, and f is live (above)
                if group > 0:
                    self.groups += 1
                    self.synced_commits += group
                    self._last_group = group
                    self.group_hist[_bisect_left(GROUP_HIST_BOUNDS, group)] += 1
            if self._waiting:
                self._cv.notify_all()
        gate.release()
        if err is not None:
            self._fence(err)
            self._raise_fenced()

    def sync_latency(self) -> dict[str, float]:
        """Durations of the last ``SYNC_LATENCY_SAMPLES`` WAL syncs, in
        seconds: ``samples``, ``p50``, ``p90``, ``p99``, ``max`` (nearest
        rank; all 0 before the first sync). A sync's duration is what its
        group's commits waited for: the fdatasync (fsync under EXTRA), plus
        any sealed segment's and the directory's sync when due."""
        with self._cv:
            n = min(self.syncs, SYNC_LATENCY_SAMPLES)
            xs = self._sync_lat[:n]
        xs.sort()
        out: dict[str, float] = {"samples": n}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            out[name] = xs[max(0, -int(-q * n) - 1)] if n else 0.0
        out["max"] = xs[-1] if n else 0.0
        return out

    def _linger_locked(self) -> None:
        """REQUIRES: ``_cv`` held, this thread the sync leader. Let the group
        fill before syncing. With ``commit_linger`` set, wait that long.
        Otherwise adapt: when the last sync covered n > 1 commits (several
        threads commit concurrently), wait until n commits are unsynced or
        about one sync's duration (at most 2 ms) has passed. The threads the
        last sync released need a moment (and the GIL) to append their next
        records; a leader that syncs at once covers one or two of them and
        the group never grows. A lone committer (n = 1) never waits."""
        if self.commit_linger:
            t0 = time.perf_counter()
            self._cv.wait(self.commit_linger)
            self.linger_seconds += time.perf_counter() - t0
            return
        want = self._last_group
        if want <= 1 or self._written_commits - self._synced_commits >= want:
            return
        t0 = time.perf_counter()
        deadline = t0 + min(max(self._sync_ewma, 0.00005), 0.002)
        self._linger_until = self._synced_commits + want  # appends wake the leader once, at this count
        try:
            while self._written_commits - self._synced_commits < want and self.fenced is None:
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._lead_cv.wait(left)
        finally:
            self._linger_until = 0
        self.linger_seconds += time.perf_counter() - t0

    def sync_all(self) -> int:
        """Make everything written so far durable; return that seq."""
        seq = self.written_seq
        self.sync_to(seq, _FULL)
        return seq

    def wait_durable(self, seq: int, timeout: float | None = None) -> bool:
        """Block until ``durable_seq >= seq`` or ``timeout`` seconds pass;
        True when durable. Starts the background syncer, so commits made at
        OFF become durable within ``sync_interval`` without a sync of their
        own. Raises NeedsRecoveryError if fenced, ValueError for a sequence
        number never written."""
        if seq > self.written_seq:
            raise ValueError(f"sequence number {seq} was never written (the last written is {self.written_seq})")
        if self.durable_seq >= seq:
            return True
        self._ensure_syncer()
        self._kick.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cv:
            while self.durable_seq < seq:
                if self.fenced is not None:
                    self._raise_fenced()
                if deadline is None:
                    left = None
                else:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                self._waiting += 1
                try:
                    self._cv.wait(left)
                finally:
                    self._waiting -= 1
        return True

    def sync_dir_extra(self) -> None:
        """EXTRA: make the WAL directory's entries durable now (after a
        segment was deleted or archived)."""
        with io_site("wal"):
            try:
                self.fs.sync_dir(self.wal_dir)
            except BaseException as e:
                self._fence(e)
                self._raise_fenced()
        with self._cv:
            self.dir_syncs += 1

    # ---------------------------------------------------------- syncer thread
    def _ensure_syncer(self) -> None:
        if self._syncer is None and not self._closed:
            with self._cv:
                if self._syncer is not None:
                    return
                t = threading.Thread(target=self._syncer_loop, name="lsm-wal-syncer", daemon=True)
                self._syncer = t
            t.start()

    def _syncer_loop(self) -> None:
        """NORMAL: fdatasync every sync_interval when there is unsynced data.
        BARRIER: sync at once when kicked."""
        while not self._closed:
            self._kick.wait(self.sync_interval)
            self._kick.clear()
            if self._closed or self.fenced is not None:
                return
            seq = self.written_seq
            if seq > self.durable_seq:
                try:
                    self.sync_to(seq, _FULL)
                except (NeedsRecoveryError, ClosedError):  # fenced (the committers raise it), or closed under it
                    return

    # ------------------------------------------------------------- fencing
    def _fence(self, err: BaseException) -> None:
        with self._cv:
            if self.fenced is None:
                self.fenced = err
            self._open_next_gate_locked()
            self._cv.notify_all()
        if self._on_fence is not None:
            self._on_fence(err)

    def _open_next_gate_locked(self) -> None:
        """REQUIRES: ``_cv`` held and ``fenced`` set. Release the waiters of
        the next sync, which will never run: the committer that was to lead
        it raises instead of leading (the running sync's leader releases its
        own gate whatever happens)."""
        gate = self._next_gate
        if gate is not None:
            self._next_gate = None
            gate.release()

    def _check_fence(self) -> None:
        if self.fenced is not None:
            self._raise_fenced()

    def _raise_fenced(self) -> None:
        err = self.fenced
        raise NeedsRecoveryError(
            f"the WAL failed an I/O operation ({err!r}); the database is fenced: close and reopen it to recover",
            err,
        )

    # --------------------------------------------------------------- close
    def close(self, sync: bool = True) -> None:
        """Sync (unless fenced or ``sync`` is False) and close the segment.
        A failed final sync fences and is raised (NeedsRecoveryError) after
        everything is closed: the caller must not believe the log durable."""
        if self._closed:
            return
        err: NeedsRecoveryError | None = None
        if sync and self.fenced is None and self._file is not None:
            try:
                self.sync_all()
            except NeedsRecoveryError as e:
                err = e
        self._closed = True
        self._kick.set()
        self._spare.close()
        t = self._syncer
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
        if sync and err is None and self.fenced is None and self.preallocate:
            # A clean close leaves exact files: the live segment without its
            # zero tail, no spare (a crash may leave both: harmless).
            try:
                with io_site("wal"):
                    if self._file is not None and self._file_preallocated:
                        self.fs.truncate(self._file.path, self._file.size)
                    if self.fs.exists(self.spare_path):
                        self.fs.remove(self.spare_path)
            except OSError:
                pass
        if self._file is not None:
            self._raw_write = None  # before the close: its descriptor number may be reused
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        if err is not None:
            raise err
