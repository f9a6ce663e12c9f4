"""The WAL writer: owns the live segment, appends commit records, and is the
ONE place where a commit's sync level is applied.

Protocol (the DB write path)::

    with db write lock:
        writer.append_locked(record, last_seq, 1, level)  # ordering; FULL/EXTRA: staged,
                                                          # other levels: write(2)
        memtable insert; publish last_seq
    writer.commit_wait(last_seq, level)                 # FULL/EXTRA: group sync
                                                        # BARRIER: kick async sync

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

Preallocation (``preallocate`` > 0, option ``wal_preallocate``): the next
segment is prepared ahead as a *spare* (lsm/wal/spare.py), off the commit
path. Rotation renames the spare into place and writes it from offset 0
(``fs.open_overwrite``); past the preallocated size the file just grows. A
sealed preallocated segment is truncated to the bytes written (so sizes,
archives and the next open see exactly the records); the zero tail of a
crashed one reads as the end of data. Without a ready spare (or after a
failed preparation) rotation creates the segment as without preallocation.

Mapped writes (``map_writes``, option ``wal_mmap_writes``): a preallocated
segment is opened with ``fs.open_overwrite_mapped``, and every write above
(a direct write, a group's, the header) is a store into a shared map of
it while it fits (lsm/base/fs.py, "Mapped writes": in the page cache when
it returns, like a write(2), without a system call or a GIL release). A
record that would pass the map's end is written on with write(2)
(:meth:`WalWriter.direct_write_failed`, ``WritableFile.write``). The map
is dropped before the seal's and close's truncations, and at close.

Group commit, the sync path, fencing, the durable offset and the locks:
lsm/wal/sync.py (:class:`GroupSync`, which :class:`WalWriter` extends).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from lsm.base import filenames
from lsm.base.errors import NeedsRecoveryError
from lsm.base.fs import FileSystem, WritableFile, io_site
from lsm.options import Sync
from lsm.wal.format import encode_segment_header
from lsm.wal.spare import SpareSegment
from lsm.wal.sync import GROUP_HIST_BOUNDS, SYNC_LATENCY_SAMPLES, GroupSync

__all__ = ["GROUP_HIST_BOUNDS", "SYNC_LATENCY_SAMPLES", "WalWriter"]

_FULL = Sync.FULL
_BARRIER = Sync.BARRIER
_NORMAL = Sync.NORMAL


class WalWriter(GroupSync):
    """The WAL writer (module docstring); its sync path is :class:`GroupSync`."""

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
        map_writes: bool = False,
    ):
        self.fs = fs
        self.wal_dir = wal_dir
        self.segment_size = segment_size
        self.sync_interval = sync_interval
        self.commit_linger = commit_linger_us / 1e6
        self._on_fence = on_fence
        mu = self._mu = threading.Lock()  # ``_cv``'s lock: ``with self._mu`` where no wait is needed (a Condition's __enter__ is a Python call)
        self._cv = threading.Condition(mu)
        # Staged records (group commit): FULL/EXTRA records encoded but not
        # yet written, in sequence order. Appended under the DB write lock;
        # a prefix is written (one write(2)) and then removed only under
        # ``_io_mu``, which serializes every write to the live segment while
        # records are staged (module docstring, "Staged records").
        self._staged: list[bytes] = []
        self._io_mu = threading.Lock()
        # -- guarded by the DB write lock:
        self._file: WritableFile | None = None
        self.segment_first_seq = 0
        self.segment_records = 0
        self.written_seq = 0  # last seq whose record reached the OS
        self._written_commits = 0
        self.bytes_written = 0
        self.segments_created = 0
        self._init_sync()
        # -- preallocation (module docstring)
        self.preallocate = preallocate
        self.map_writes = map_writes  # a preallocated segment is written through a shared map (module docstring)
        self._spare = SpareSegment(fs, wal_dir, preallocate, inline=prepare_inline,
                                   stopped=lambda: self.fenced is not None, deferred=True)
        self._file_preallocated = False  # guarded by the DB write lock
        self.spares_used = 0
        # Write-behind (write_behind_locked): [file, close wanted] while its
        # thread runs; guarded by _behind_mu.
        self._behind: list[list] = []
        self._behind_mu = threading.Lock()

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

    @property
    def spare_pending(self) -> bool:
        """The next spare waits for a fill checkpoint that finds the live
        segment due (:meth:`look_spare`; lsm/wal/spare.py, "When")."""
        return self._spare.pending

    def look_spare(self, rate: float) -> None:
        """A fill checkpoint (the DB's write path, REQUIRES: DB write lock
        held): the live segment fills at ``rate`` bytes per second; kick
        the spare thread if the segment is due (SpareSegment.look)."""
        self._spare.look(self.segment_bytes, rate)

    # ------------------------------------------------------------- write-behind
    def write_behind_locked(self, target: Callable[[WritableFile], None]) -> None:
        """REQUIRES: DB write lock held; a live segment. Run ``target(f)``
        (DB._write_behind: an fdatasync hint) on the live segment's file on
        a short-lived thread, outside every lock. The file stays open until
        ``target`` returns: a seal or close meanwhile leaves its close to
        the thread (``_close_file``), so the descriptor number cannot be
        reused, and another file synced, under it."""
        f = self._file
        if f is None:  # (no live segment: nothing to write back)
            return
        entry = [f, False]
        with self._behind_mu:
            self._behind.append(entry)

        def run() -> None:
            try:
                target(f)
            finally:
                with self._behind_mu:
                    self._behind.remove(entry)
                if entry[1]:
                    try:
                        f.close()
                    except OSError:
                        pass

        threading.Thread(target=run, name="lsm-wal-writebehind", daemon=True).start()

    def _close_file(self, f: WritableFile) -> None:
        """Close ``f`` (a sealed or the closing segment), or leave it to its
        running write-behind (:meth:`write_behind_locked`)."""
        with self._behind_mu:
            for entry in self._behind:
                if entry[0] is f:
                    entry[1] = True
                    return
        f.close()

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
                    f = self.fs.open_overwrite_mapped(path) if self.map_writes else self.fs.open_overwrite(path)
                else:
                    f = self.fs.create(path)
                f.write(encode_segment_header(first_seq))
                if old is not None and self._file_preallocated:
                    old.unmap()  # (no store may meet the truncation: SIGBUS)
                    self.fs.truncate(old.path, old.size)  # sealed: its zero tail goes
            except BaseException as e:
                if f is not None:
                    f.close()
                self._fence(e)
                raise NeedsRecoveryError(f"WAL segment creation failed: {e}", e) from e
            finally:
                if take:
                    self._spare.taken()  # renamed away (or fenced): the spare path is free again
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
                    self.synced_offset = 0
                    self._dir_synced = False
                    break
            gate.acquire()
            gate.release()
        if old is not None:
            self._close_file(old)
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
        if level >= _FULL:  # (DB.put inlines this branch: keep in step)
            self._staged.append(record)  # before written_seq moves (sync_to reads them in that order)
        elif self._staged:
            with self._io_mu:
                self._write_staged_io_locked(self._file, record)  # type: ignore[arg-type]
        else:
            # Nothing staged: no leader is writing (a leader removes its
            # records only after their write), so no _io_mu needed.
            f = self._file
            raw = f.raw_write  # type: ignore[union-attr]
            try:
                if raw is None:
                    f.write(record)  # type: ignore[union-attr]
                else:
                    # WritableFile.write's direct branch, inlined: no Python
                    # frame (~280 instructions per put, tools/put_callgrind.py
                    # putb); the short-write rule stays the file's.
                    n = raw(record)
                    f.size += n  # type: ignore[union-attr]
                    if n != len(record):
                        f.write_rest(record, n)  # type: ignore[union-attr]
            except BaseException as e:  # noqa: BLE001 - re-raised there unless only the map was full
                self.direct_write_failed(f, record, e)  # type: ignore[arg-type]
        if self.written_seq <= self.durable_seq:  # the oldest unsynced commit (stats' wal_unsynced_age)
            self.unsynced_since = time.monotonic()
        self.written_seq = last_seq
        self._written_commits += count_commits  # (a forming group's commit that completes it leads its sync: lsm/wal/sync.py)
        self.segment_records += count_commits
        self.bytes_written += len(record)
        if level == _BARRIER:
            # Here, under the DB write lock, not in commit_wait: a commit
            # that takes the lock after this one releases it must find the
            # barrier (it returned before the barrier's sync: soak 12,
            # tests/test_soak12_barrier_window.py).
            self._barrier_seq = last_seq

    def direct_write_failed(self, f: WritableFile, record: bytes, e: BaseException) -> None:
        """The direct write of ``record`` to the live segment ``f`` (the
        branch of :meth:`append_locked` that DB.put inlines) raised ``e``.
        A mapped segment whose map is full raises ValueError having stored
        nothing: the record then goes through :meth:`WritableFile.write`,
        which unmaps and writes on with write(2), and this returns. Any
        other error (or a failure of that write) fences the writer and
        raises NeedsRecoveryError. REQUIRES: DB write lock held."""
        if type(e) is ValueError and f.mapped:
            try:
                f.write(record)
                return
            except BaseException as e2:  # noqa: BLE001 - fences below
                e = e2
        self._fence(e)
        raise NeedsRecoveryError(f"WAL write to {f.path} failed: {e}", e) from e

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
        elif level == _BARRIER:  # (_barrier_seq was set by append_locked)
            self._ensure_syncer()
            self._kick_syncer()
        elif level == _NORMAL:
            self._ensure_syncer()
            if self._syncer_idle:  # (after written_seq moved: GroupSync._syncer_loop)
                self._wake.set()

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
        self._kick_syncer()
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
                        self._file.unmap()
                        self.fs.truncate(self._file.path, self._file.size)
                    if self.fs.exists(self.spare_path):
                        self.fs.remove(self.spare_path)
            except OSError:
                pass
        if self._file is not None:
            try:
                self._close_file(self._file)
            except OSError:
                pass
            self._file = None
        if err is not None:
            raise err
