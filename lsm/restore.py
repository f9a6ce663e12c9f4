"""Point-in-time restore (``lsm.restore``): rebuild a database as of a
sequence number or a wall-clock time from a *base* (a checkpoint, or a
database that is not open) and the WAL segments that follow it, live and
archived (``wal_retention_segments`` / ``wal_retention_seconds`` keep
them; docs/format/wal.md, "Archive").

The restore point P is a prefix of the commit order:

* ``to_seq=N``: every commit with sequence number <= N. A batch is all or
  nothing: when N falls inside one, P is the last sequence number before it.
* ``to_time=T``: the commits before the first one stamped after T (each WAL
  record carries its commit time in microseconds). With a clock that never
  steps back this is every commit stamped at or before T.
* neither: every commit the available log holds.

Procedure:

1. Base: read the base's manifest (read-only): its tables hold exactly the
   commits up to its flushed sequence number F. F must be <= P: compaction
   may have dropped the versions an earlier point needs, so a base newer
   than the point cannot go back (RestoreError: use an older checkpoint).
2. Plan, reading only: collect the segments of the base directory and of
   each of ``wal_dirs`` (``*.wal`` and ``archive/*.wal``; a directory of
   archived segments itself also works), then walk the chain of intact
   records from F+1: each next record must start where the previous one
   ended, in whichever file holds it (a checkpoint's copy of a segment and
   the archived original are both fine; where two files overlap, the
   boundary record they share must be identical, else RestoreError: two
   histories). A missing link before P is a gap (RestoreGapError); a point
   after the newest record is an error (for ``to_time`` too: the log
   cannot tell whether commits it lacks came before T).
3. Build: the target is created (or must be empty). The base's tables are
   hard-linked (or copied) under their own names; the planned records are
   replayed in chunks of about ``memtable_size`` bytes: each chunk is
   written verbatim (original sequence numbers and timestamps) as a WAL
   segment in the target, turned into a level-0 table by the engine's own
   flush job (the code a worker process runs), and removed. Last, a
   manifest naming every table with flushed = last = P, after everything
   is fsynced, and CURRENT (temp, fsync, rename, directory fsync). The
   target holds no WAL; opening it needs no replay, and its first
   compactions merge the level-0 tables.

The source is never written. A base directory with a LOCK file is locked
while it is read, so a database open in a live process is refused
(LockedError): a restore would race with its flushes and compactions.
Take a checkpoint (``db.checkpoint``) and restore from it, or close the
database. ``wal_dirs`` may name the WAL directory of an open database:
its files are only read, a segment it archives meanwhile is found again in
its archive, and a record still being written is not used.

On an error nothing of the target remains but the (empty) directory.
"""

from __future__ import annotations

import math
import os
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from lsm.background import _meta
from lsm.base import filenames
from lsm.base.errors import InvalidDatabaseError, LockedError, RestoreError, RestoreGapError
from lsm.base.fs import FileLock, FileSystem, io_site
from lsm.compaction.runner import FlushJob, run_job, table_options
from lsm.manifest.edit import VersionEdit
from lsm.manifest.version import FileMeta
from lsm.manifest.version_set import VersionSet
from lsm.ops.files import (
    TableCopier,
    check_empty_target,
    make_dir_durable,
    refuse_inside,
    remove_created,
    write_manifest_and_current,
)
from lsm.options import Options
from lsm.wal.format import encode_record, encode_segment_header
from lsm.wal.reader import SegmentScan, WalRecord, scan_segment

MAX_LEVELS = 20
"""Levels read from the base's manifest (the most ``Options.num_levels``
allows); the restored database keeps each table at its level."""

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class RestoreResult:
    """What :func:`restore` made."""

    path: str
    seq: int
    """P: the restored database holds exactly the commits up to here."""
    timestamp_us: int | None
    """Commit time of ``seq`` (microseconds since the epoch) when the log
    holds it."""
    base_seq: int
    """F: the base's tables held the commits up to here."""
    replayed_records: int
    """WAL records (commits; a batch is one) replayed after the base."""
    tables_linked: int
    tables_copied: int
    tables_written: int
    """Level-0 tables built from the replayed records."""
    segments_read: int
    notes: list[str] = field(default_factory=list)


def restore(
    source_dir: str | os.PathLike[str],
    target_dir: str | os.PathLike[str],
    *,
    to_seq: int | None = None,
    to_time: datetime | float | None = None,
    wal_dirs: Iterable[str | os.PathLike[str]] = (),
    options: Options | None = None,
) -> RestoreResult:
    """Rebuild the database in ``source_dir`` (a checkpoint, or a database
    not open anywhere) in the new or empty directory ``target_dir`` as of
    sequence number ``to_seq`` or wall-clock time ``to_time`` (a
    ``datetime``, naive meaning local time, or seconds since the epoch);
    with neither, as of the newest commit available. Commits after the base
    come from the segments of ``source_dir`` (live and ``archive/``) and of
    each of ``wal_dirs`` (typically the WAL directory of the database the
    checkpoint was taken from). ``options`` gives the filesystem and the
    table options of the tables the restore writes (block size,
    compression, and ``memtable_size``, the size of each).

    Raises TargetNotEmptyError, LockedError (the source is open),
    InvalidDatabaseError (no database in ``source_dir``), RestoreGapError
    (the log has a hole before the point), RestoreError (the base is newer
    than the point, the point is after the newest commit available, or the
    segments disagree), CorruptionError (the base's manifest or tables),
    ValueError / TypeError for bad arguments. See the module docstring.
    """
    if to_seq is not None and to_time is not None:
        raise ValueError("restore: give to_seq or to_time, not both")
    if to_seq is not None:
        if isinstance(to_seq, bool) or not isinstance(to_seq, int):
            raise TypeError(f"to_seq: expected an int, got {type(to_seq).__name__}")
        if to_seq < 0:
            raise ValueError(f"to_seq: must be >= 0, got {to_seq}")
    to_us = None if to_time is None else time_us(to_time)
    if options is not None and not isinstance(options, Options):
        raise TypeError(f"options must be an lsm.Options, not {type(options).__name__}")
    opts = (options if options is not None else Options()).validate()
    fs = opts.fs
    source = _path(source_dir, "source_dir")
    target = _path(target_dir, "target_dir")
    if isinstance(wal_dirs, (str, os.PathLike)):
        wal_dirs = [wal_dirs]
    dirs = [_path(d, "wal_dirs") for d in wal_dirs]
    if not fs.is_dir(source) or filenames.CURRENT not in fs.listdir(source):
        raise InvalidDatabaseError(f"{source}: no database here (no CURRENT file)")
    for d in dirs:
        if not fs.is_dir(d):
            raise InvalidDatabaseError(f"wal_dirs: {d} is not a directory")
    refuse_inside(target, [source, *dirs], "restore target")
    check_empty_target(fs, target, "restore target")
    lock = _lock_source(fs, source)
    try:
        with io_site("restore"):
            return _restore(fs, opts, source, target, dirs, to_seq, to_us, to_time)
    finally:
        if lock is not None:
            lock.release()


def time_us(t: datetime | float) -> int:
    """``t`` (a datetime, naive meaning local time, or seconds since the
    epoch) in microseconds since the epoch, the unit of WAL timestamps."""
    if isinstance(t, datetime):
        if t.tzinfo is None:
            t = t.astimezone()  # naive: local time
        us = (t - _EPOCH) // timedelta(microseconds=1)
    elif isinstance(t, (int, float)) and not isinstance(t, bool):
        if not math.isfinite(t):
            raise ValueError(f"to_time: must be a finite number of seconds, got {t!r}")
        us = round(t * 1_000_000)
    else:
        raise TypeError(f"to_time: expected a datetime or seconds since the epoch, got {type(t).__name__}")
    if us < 0:
        raise ValueError(f"to_time: {t!r} is before the epoch")
    return us


def _path(p: Any, what: str) -> str:
    if isinstance(p, bytes) or not isinstance(p, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or os.PathLike, not {type(p).__name__}")
    return os.fspath(p)


def _lock_source(fs: FileSystem, source: str) -> FileLock | None:
    """Lock the base while it is read, when it has a LOCK file (a directory
    without one was never opened: nothing to exclude, and creating the
    file would write to the source)."""
    if filenames.LOCK not in fs.listdir(source):
        return None
    try:
        return fs.lock(source)
    except OSError:
        raise LockedError(
            f"{source}: the database is open (in this process or another); restore never reads a live "
            "database: take a checkpoint with db.checkpoint() and restore from it, or close the database"
        ) from None


def _when(to_seq: int | None, to_us: int | None, to_time: Any) -> str:
    if to_seq is not None:
        return f"sequence number {to_seq}"
    if to_us is not None:
        return f"time {to_time!r} ({to_us} us since the epoch)"
    return "the newest commit"


def _restore(fs: FileSystem, opts: Options, source: str, target: str, dirs: list[str], to_seq: int | None,
             to_us: int | None, to_time: Any) -> RestoreResult:
    vs = VersionSet(fs, source, num_levels=MAX_LEVELS)
    vs.recover()
    flushed = vs.flushed_seq
    what = _when(to_seq, to_us, to_time)
    if to_seq is not None and to_seq < flushed:
        raise RestoreError(
            f"cannot restore to {what} from {source}: its tables already hold the commits up to {flushed}, "
            "and what they replaced is gone; restore from an older checkpoint"
        )
    log = _Log(fs, _collect(fs, [source, *dirs]))
    point, point_ts, nrec = _plan(log, source, flushed, to_seq, to_us, what)
    planned_reads = log.segments_read
    notes = list(log.notes)
    created: list[str] = []
    try:
        make_dir_durable(fs, target)
        copier = TableCopier(fs)
        files: list[tuple[int, FileMeta]] = list(vs.current.all_files())
        for _level, f in files:
            name = filenames.sst_name(f.number)
            copier.table(filenames.join(source, name), filenames.join(target, name), f.file_size, created)
        number = vs.next_file_number  # the new manifest's; replayed tables follow it
        written: list[tuple[int, FileMeta]] = []
        if point > flushed:
            written = _replay_into(fs, opts, log, target, flushed, point, number + 1, created)
        files += written
        next_number = max([number] + [f.number for _lv, f in written]) + 1
        edit = VersionEdit(added=files, next_file_number=next_number, last_seq=point, flushed_seq=point)
        write_manifest_and_current(fs, target, number, edit, created)
    except BaseException:
        remove_created(fs, created)
        raise
    return RestoreResult(
        path=target,
        seq=point,
        timestamp_us=point_ts,
        base_seq=flushed,
        replayed_records=nrec,
        tables_linked=copier.linked,
        tables_copied=copier.copied,
        tables_written=len(written),
        segments_read=planned_reads,
        notes=notes,
    )


# ----------------------------------------------------------------- the log
@dataclass(frozen=True)
class _Seg:
    first_seq: int
    path: str
    archived: bool
    home: str
    """The WAL directory it was found in (its archive is ``home/archive``)."""


def _collect(fs: FileSystem, dirs: list[str]) -> list[_Seg]:
    """Every segment in ``dirs`` and their archives, by first sequence
    number. Set-aside (``.wal.dropped``) segments are not used: a lossy
    recovery dropped them from the history."""
    found: dict[str, _Seg] = {}

    def add(seg: _Seg) -> None:
        found.setdefault(os.path.realpath(os.path.abspath(seg.path)), seg)

    for d in dirs:
        for name in fs.listdir(d):
            first = filenames.parse_wal(name)
            if first is not None:
                add(_Seg(first, filenames.join(d, name), False, d))
            elif (parsed := filenames.parse_archived_wal(name)) is not None:
                add(_Seg(parsed[0], filenames.join(d, name), True, d))
        a = filenames.join(d, filenames.ARCHIVE_DIR)
        if fs.is_dir(a):
            for name in fs.listdir(a):
                parsed = filenames.parse_archived_wal(name)
                if parsed is not None:
                    add(_Seg(parsed[0], filenames.join(a, name), True, d))
    return sorted(found.values(), key=lambda s: (s.first_seq, s.archived, s.path))


class _Log:
    """The chain of intact records across every segment file found.

    A segment named S holds commits from S on, contiguous. Several files may
    hold the same commits: a checkpoint's copy of a segment cut at its
    sequence number and the archived original; an opened checkpoint's own
    new (perhaps empty) segment beside the original that continues. So each
    step of the walk reads every file not read yet whose name lies between
    the file the chain is in and the next sequence number wanted: one that
    starts exactly there continues the chain, and any two files holding the
    same sequence number must hold the same record (else RestoreError: two
    histories). The first step reads the newest file starting at or below
    the start, and older ones only while those hold no record."""

    def __init__(self, fs: FileSystem, segs: list[_Seg]):
        self.fs = fs
        self.segs = segs  # sorted by first_seq
        self._firsts = [s.first_seq for s in segs]
        self.segments_read = 0
        self.notes: list[str] = []
        self._noted: set[str] = set()

    def _scan(self, seg: _Seg) -> SegmentScan | None:
        fs = self.fs
        self.segments_read += 1
        try:
            scan = scan_segment(fs, seg.path, expected_first_seq=seg.first_seq)
        except FileNotFoundError:
            scan = None
            if not seg.archived:  # archived since it was listed: it is in the archive now, byte for byte
                a = filenames.join(seg.home, filenames.ARCHIVE_DIR)
                try:
                    names = fs.listdir(a)
                except FileNotFoundError:
                    names = []
                for name in sorted(names, reverse=True):
                    parsed = filenames.parse_archived_wal(name)
                    if parsed is not None and parsed[0] == seg.first_seq:
                        try:
                            scan = scan_segment(fs, filenames.join(a, name), expected_first_seq=seg.first_seq)
                        except FileNotFoundError:
                            continue
                        break
        if scan is not None and scan.damage is not None and seg.path not in self._noted:
            self._noted.add(seg.path)
            self.notes.append(f"{scan.damage.describe()}; records after it are not used")
        return scan

    def _find(self, pool: list[_Seg], expected: int, last: WalRecord | None, tried: set[str],
              every: bool) -> tuple[_Seg, list[WalRecord], int] | None:
        """Read the files of ``pool`` (newest name first) for the record
        starting at ``expected``: (file, its records, index) of the one
        holding it that reaches furthest. ``every``: read them all and
        cross-check (every file read is then done with: the others end no
        later); else stop at the first file that holds it, or that holds
        records ending before it (older files end earlier still)."""
        found: tuple[_Seg, list[WalRecord], int] | None = None
        for seg in sorted(pool, key=lambda x: -x.first_seq):
            tried.add(seg.path)
            scan = self._scan(seg)
            if scan is None:
                continue
            idx = None
            for i, r in enumerate(scan.records):
                if last is not None and r.seq == last.seq and not _same(r, last):
                    raise _disagree(r, last)
                end = r.seq + r.count - 1
                if r.seq == expected:
                    idx = i
                    break
                if r.seq < expected <= end:
                    raise RestoreError(
                        f"WAL files disagree: {r.path} holds a record {r.seq}..{end} across sequence number "
                        f"{expected}, where the record of {last.path if last else 'another file'} ended "
                        "(two histories, e.g. of a database restored or a checkpoint written to later); give "
                        "wal_dirs of one database only"
                    )
                if r.seq > expected:
                    break
            if idx is None:
                if not every and scan.records:
                    break
                continue
            if found is None:
                found = (seg, scan.records, idx)
            else:
                if not _same(scan.records[idx], found[1][found[2]]):
                    raise _disagree(scan.records[idx], found[1][found[2]])
                if scan.records[-1].seq > found[1][-1].seq:
                    found = (seg, scan.records, idx)  # the copy that reaches furthest
            if not every:
                break
        return found

    def records(self, start: int) -> Iterator[WalRecord]:
        """The intact records chained from sequence number ``start`` (the
        first one yielded starts exactly there), until no file continues
        the chain."""
        expected = start
        tried: set[str] = set()
        last: WalRecord | None = None
        cur_first: int | None = None  # name of the file the chain is in
        while True:
            lo = 0 if cur_first is None else bisect_left(self._firsts, cur_first)
            hi = bisect_right(self._firsts, expected)
            pool = [s for s in self.segs[lo:hi] if s.path not in tried]
            found = self._find(pool, expected, last, tried, every=cur_first is not None)
            if found is None:
                return
            seg, recs, idx = found
            for r in recs[idx:]:  # contiguous within one file (scan_segment checks)
                yield r
                last = r
                expected = r.seq + r.count
            cur_first = seg.first_seq

    def record_ending_at(self, seq: int) -> WalRecord | None:
        """The record whose last sequence number is ``seq``, if a file holds it."""
        for seg in sorted((s for s in self.segs if s.first_seq <= seq), key=lambda x: -x.first_seq):
            scan = self._scan(seg)
            if scan is None or not scan.records:
                continue
            for r in scan.records:
                if r.seq + r.count - 1 == seq:
                    return r
            if scan.records[0].seq <= seq:
                return None  # the file that should hold it does not: older files end earlier
        return None

    def first_after(self, seq: int) -> int | None:
        """The lowest segment name above ``seq``: the log resumes there."""
        i = bisect_right(self._firsts, seq)
        return self._firsts[i] if i < len(self._firsts) else None


def _disagree(a: WalRecord, b: WalRecord) -> RestoreError:
    return RestoreError(
        f"WAL files disagree: {a.path} and {b.path} hold different commits with sequence number {a.seq} "
        "(two histories, e.g. of a database restored or a checkpoint written to later); give wal_dirs of "
        "one database only"
    )


def _same(a: WalRecord, b: WalRecord) -> bool:
    return a.count == b.count and a.timestamp_us == b.timestamp_us and a.body == b.body


def _plan(log: _Log, source: str, flushed: int, to_seq: int | None, to_us: int | None,
          what: str) -> tuple[int, int | None, int]:
    """(P, its timestamp, records to replay) for the restore point; raises
    when the log cannot reach it (module docstring)."""
    point, point_ts, n = flushed, None, 0
    reached = False
    for r in log.records(flushed + 1):
        last = r.seq + r.count - 1
        if to_seq is not None and last > to_seq:
            if r.seq <= to_seq:
                log.notes.append(f"sequence number {to_seq} is inside the batch {r.seq}..{last}: restored to "
                                 f"{r.seq - 1} (a batch is all or nothing)")
            reached = True
            break
        if to_us is not None and r.timestamp_us > to_us:
            reached = True
            break
        point, point_ts, n = last, r.timestamp_us, n + 1
    if to_us is not None and point == flushed and flushed > 0:
        # The point is the base itself or before it: commit F must be
        # stamped at or before to_time.
        rf = log.record_ending_at(flushed)
        if rf is None:
            raise RestoreError(
                f"cannot restore to {what} from {source}: cannot tell whether its newest commit ({flushed}) "
                "is at or before that time (no available segment holds it); restore from an older checkpoint "
                "or give to_seq"
            )
        if rf.timestamp_us > to_us:
            raise RestoreError(
                f"cannot restore to {what} from {source}: its tables already hold commit {flushed}, stamped "
                f"{rf.timestamp_us} us, after that time; restore from an older checkpoint"
            )
        point_ts = rf.timestamp_us
    if reached or (to_seq is not None and point == to_seq):
        return point, point_ts, n
    resumes = log.first_after(point + 1)
    if resumes is not None:
        base = (f"the base's tables end at {flushed} and no available segment reaches back to {flushed + 1}"
                if point == flushed else f"the log breaks after {point}")
        raise RestoreGapError(
            f"cannot restore to {what} from {source}: {base}; the log resumes at {resumes} "
            f"(sequence numbers {point + 1}..{resumes - 1} are missing: pruned from the archive, or a "
            "directory is missing from wal_dirs (raise wal_retention_segments / wal_retention_seconds), "
            "or taken by an ingest (ingest / ingest_files add tables without log records, so the log "
            "cannot replay across one); restore from a checkpoint taken after the gap, or to a point "
            f"before {point + 1})" + _damage_hint(log),
            point + 1,
            resumes,
        )
    if to_seq is None and to_us is None:
        return point, point_ts, n
    newest = f"the newest commit available is {point}" + (f", stamped {point_ts} us" if point_ts else "")
    raise RestoreError(
        f"cannot restore to {what} from {source}: {newest}; the log may lack later commits (give the live "
        f"database's WAL directory in wal_dirs), or restore to to_seq={point} or to the newest commit "
        "(neither to_seq nor to_time)" + _damage_hint(log)
    )


def _damage_hint(log: _Log) -> str:
    return f" [damage found: {'; '.join(log.notes)}]" if log.notes else ""


# ------------------------------------------------------------------ build
def _replay_into(fs: FileSystem, opts: Options, log: _Log, target: str, flushed: int, point: int,
                 number: int, created: list[str]) -> list[tuple[int, FileMeta]]:
    """Turn the records flushed+1..point into level-0 tables numbered from
    ``number``, one per ``memtable_size`` bytes of log (module docstring)."""
    table = table_options(opts, 0, verify_checksums=True)
    out: list[tuple[int, FileMeta]] = []
    buf: bytearray | None = None  # the chunk's segment, written with one write
    seg_start = flushed  # the chunk holds seg_start < seq <= end
    end = flushed
    for r in log.records(flushed + 1):
        last = r.seq + r.count - 1
        if last > point:
            break
        if buf is None:
            buf = bytearray(encode_segment_header(r.seq))
            seg_start = r.seq - 1
        buf += encode_record(r.seq, r.count, r.timestamp_us, r.body, 0)  # synced 0: written whole, then synced
        end = last
        if len(buf) >= opts.memtable_size or last == point:
            path = filenames.join(target, filenames.wal_name(seg_start + 1))
            created.append(path)
            w = fs.create(path)
            try:
                w.write(buf)
            finally:
                w.close()
            buf = None
            job = FlushJob(dbdir=target, file_number=number, table=table, snapshots=[], wal_paths=[path],
                           start_seq=seg_start, end_seq=end)
            created.append(filenames.join(target, filenames.sst_name(number)))
            result = run_job(job, fs)
            if not result.outputs:
                created.pop()
            for num, props in result.outputs:
                out.append((0, _meta(num, props)))
            number += 1
            fs.remove(path)
            created.remove(path)
        if last == point:
            break
    if end != point:
        raise RestoreError(
            f"the WAL changed while restoring: the log now ends at {end}, the plan reached {point}; "
            "try again (a segment was pruned from the archive meanwhile?)"
        )
    return out
