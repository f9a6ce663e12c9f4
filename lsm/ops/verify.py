"""Verification: read every byte of a database that it still needs and
check it, without changing anything. ``DB.verify()`` checks a live database
(:func:`verify_db`); :func:`verify_path` checks one that is not open (or
cannot be opened because it is damaged).

What is checked:

* every live table: opened afresh (footer, index, properties and filter
  blocks with their checksums), then every data block read with its
  checksum verified and its entries in order (``TableReader.check``); the
  file's size and what it holds (first and last key, sequence range,
  entry and deletion counts) against what the manifest records; no entry
  newer than the flushed sequence number;
* the manifest: re-read from disk (CURRENT, every record's checksum, the
  edits replayed) and compared with the version in memory; the level
  invariants (``Version.check``: level-0 order, no overlap in levels >= 1);
* every WAL segment still live: framing, checksums and sequence continuity
  (``scan_segment``), every batch body decoded, and the chain replay
  requires (the oldest segment starts at or below flushed + 1, segments
  follow each other, the log reaches the newest commit);
* the memtables (``MemTable.check``).

Damage never raises: each problem becomes a :class:`Problem` naming the
file (and the offset when known) in the :class:`VerifyReport`. Only
misuse raises (a closed DB: ClosedError; verify_path on a database open
elsewhere: LockedError).

Nothing is written: tables are read through new readers without the block
cache, the manifest through a separate VersionSet's read-only ``recover``,
WAL segments through descriptors pinned as for a checkpoint
(:func:`lsm.ops.files.pin`), which also keeps every
table of the checked version on disk while it is read.

Thread-safety: ``verify_db`` runs concurrently with writes, flushes and
compactions; it holds the install lock only while it pins the state and
re-reads the manifest (so that both describe the same version).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lsm.base import filenames
from lsm.base.errors import ClosedError, CorruptionError, LockedError
from lsm.base.fs import DEFAULT_FS, FileSystem
from lsm.batch import decode_body
from lsm.manifest.version import FileMeta, Version
from lsm.manifest.version_set import VersionSet
from lsm.ops.files import pin
from lsm.sstable.reader import TableReader
from lsm.wal.reader import scan_segment_bytes

if TYPE_CHECKING:
    from lsm.db import DB

MAX_LEVELS = 20
"""Levels read from a manifest by :func:`verify_path` (the most an
``Options.num_levels`` allows)."""


@dataclass(frozen=True)
class Problem:
    """One piece of damage or one broken claim."""

    path: str
    """The file (or ``<memtable>``)."""
    reason: str
    offset: int | None = None

    def __str__(self) -> str:
        where = f" at offset {self.offset}" if self.offset is not None else ""
        return f"{self.path}{where}: {self.reason}"


@dataclass
class VerifyReport:
    """What :func:`verify_db` / :func:`verify_path` found."""

    path: str
    files_checked: int = 0
    """Tables, WAL segments and manifests read."""
    tables: int = 0
    table_blocks: int = 0
    """Data blocks read with their checksums (the meta blocks and the footer
    of each table are checked when it is opened)."""
    table_bytes: int = 0
    wal_segments: int = 0
    wal_records: int = 0
    wal_bytes: int = 0
    manifest_bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Findings that are not damage (a torn WAL tail the next open cuts,
    files no version names that the next open removes)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def problem(self, path: str, reason: str, offset: int | None = None) -> None:
        p = Problem(path, reason, offset)
        if p not in self.problems:
            self.problems.append(p)

    def corruption(self, e: CorruptionError, default_path: str) -> None:
        self.problem(e.path or default_path, e.reason, e.offset)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ok"] = self.ok
        return d

    def __str__(self) -> str:
        head = (f"{self.path}: {'OK' if self.ok else f'{len(self.problems)} problem(s)'}; "
                f"{self.tables} tables ({self.table_blocks} data blocks, {self.table_bytes} bytes), "
                f"{self.wal_segments} WAL segments ({self.wal_records} records), manifest {self.manifest_bytes} bytes")
        return "\n".join([head] + [f"  {p}" for p in self.problems] + [f"  note: {n}" for n in self.notes])


# -------------------------------------------------------------------- tables
_CLAIMS = tuple(f.name for f in dataclasses.fields(FileMeta) if f.name not in ("number", "file_size"))


def check_table(fs: FileSystem, path: str, meta: FileMeta | None, flushed_seq: int | None,
                report: VerifyReport) -> None:
    """Read and check one table; compare it with ``meta`` (the manifest's
    record of it) when given."""
    report.tables += 1
    try:
        size = fs.file_size(path)
    except FileNotFoundError:
        report.problem(path, "missing table file referenced by the manifest")
        return
    except OSError as e:
        report.problem(path, f"cannot stat the table: {e}")
        return
    report.files_checked += 1
    if meta is not None and size != meta.file_size:
        report.problem(path, f"table file is {size} bytes but the manifest records {meta.file_size}")
    number = filenames.parse_sst(os.path.basename(path))
    try:
        r = TableReader.open(fs, path, file_number=number or 0, cache=None, verify_checksums=True)
    except CorruptionError as e:
        report.corruption(e, path)
        return
    except Exception as e:  # noqa: BLE001 - damage must be reported, never raised
        report.problem(path, f"cannot open the table: {e!r}")
        return
    try:
        r.check()
    except CorruptionError as e:
        report.corruption(e, path)
        return
    except Exception as e:  # noqa: BLE001
        report.problem(path, f"cannot read the table: {e!r}")
        return
    finally:
        r.close()
    report.table_blocks += len(getattr(r, "_boffs", ()))
    report.table_bytes += size
    p = r.properties
    if meta is not None:
        for name in _CLAIMS:
            got = getattr(p, name, None)
            want = getattr(meta, name)
            if got is not None and got != want:
                report.problem(path, f"the manifest records {name} {want!r} but the file holds {got!r}")
    if flushed_seq is not None and p.num_entries and p.max_seq > flushed_seq:
        report.problem(path, f"holds sequence number {p.max_seq}, above the flushed sequence number {flushed_seq}")


def check_version(version: Version, manifest_path: str, report: VerifyReport) -> None:
    try:
        version.check()
    except AssertionError as e:
        report.problem(manifest_path, f"level invariant broken: {e}")


# ----------------------------------------------------------------------- WAL
@dataclass
class _Segment:
    path: str
    first_seq: int
    read: Callable[[], bytes]


def check_log(segments: list[_Segment], flushed_seq: int | None, last_seq: int | None,
              report: VerifyReport, *, where: str, tail_ok: bool) -> None:
    """Check ``segments`` (first-seq order) as replay would from
    ``flushed_seq`` (None: unknown, only each segment by itself), and that
    the log reaches ``last_seq`` when given. ``tail_ok``: a torn tail of the
    newest segment is a note (what the next open cuts), not a problem."""
    start = 0
    if flushed_seq is not None:
        while start + 1 < len(segments) and segments[start + 1].first_seq <= flushed_seq + 1:
            start += 1
        if segments and segments[start].first_seq > flushed_seq + 1:
            report.problem(segments[start].path,
                           f"sequence gap: the oldest WAL segment starts at {segments[start].first_seq}, "
                           f"but the tables end at {flushed_seq}")
    expected: int | None = None
    prev_next: int | None = None
    for i, seg in enumerate(segments):
        try:
            data = seg.read()
        except OSError as e:
            report.problem(seg.path, f"cannot read the WAL segment: {e}")
            prev_next = None
            continue
        report.files_checked += 1
        report.wal_segments += 1
        report.wal_bytes += len(data)
        scan = scan_segment_bytes(data, seg.path, expected_first_seq=seg.first_seq)
        report.wal_records += len(scan.records)
        for r in scan.records:
            try:
                decode_body(r.body, r.count, r.path, r.offset)
            except CorruptionError as e:
                report.corruption(e, seg.path)
                break
        d = scan.damage
        if d is not None:
            if tail_ok and d.is_tail and i == len(segments) - 1:
                report.notes.append(f"{d.describe()}: a torn tail; the next open cuts it")
            else:
                report.problem(d.path, f"{d.reason} ({d.detail})" if d.detail else d.reason, d.offset)
        if flushed_seq is None or i < start:
            continue
        if prev_next is not None and seg.first_seq != prev_next:
            report.problem(seg.path, f"sequence gap between segments: expected a segment starting at {prev_next}, "
                                     f"found {seg.first_seq}")
        for r in scan.records:
            last = r.seq + r.count - 1
            if expected is None:
                if r.seq > flushed_seq + 1:
                    report.problem(seg.path, f"sequence gap: the log resumes at {r.seq}, the tables end at "
                                             f"{flushed_seq}", r.offset)
            elif r.seq != expected:
                report.problem(seg.path, f"sequence gap: expected {expected}, found {r.seq}", r.offset)
            if r.seq <= flushed_seq < last:
                report.problem(seg.path, f"record {r.seq}..{last} straddles the flushed sequence number "
                                         f"{flushed_seq}", r.offset)
            expected = last + 1
        prev_next = scan.next_seq if scan.records else None
    if flushed_seq is not None and last_seq is not None and last_seq > flushed_seq:
        end = flushed_seq if expected is None else max(expected - 1, flushed_seq)
        if end < last_seq:
            report.problem(where, f"the log ends at sequence number {end} but the database holds commits up "
                                  f"to {last_seq}")


# ------------------------------------------------------------------ manifest
def _read_manifest(fs: FileSystem, path: str, num_levels: int) -> tuple[VersionSet | None, Exception | None, str]:
    """A VersionSet recovered (read-only) from ``path``, or the error; and
    the live manifest's path (or CURRENT's when unknown)."""
    vs = VersionSet(fs, path, num_levels=num_levels)
    try:
        vs.recover()
    except Exception as e:  # noqa: BLE001 - reported, never raised
        return None, e, filenames.join(path, filenames.CURRENT)
    return vs, None, filenames.join(path, filenames.manifest_name(vs.manifest_number))


def _manifest_problem(e: Exception, where: str, report: VerifyReport) -> None:
    if isinstance(e, CorruptionError):
        report.corruption(e, where)
    else:
        report.problem(where, f"cannot read the manifest: {e}")


def _note_manifest(fs: FileSystem, vs: VersionSet, mpath: str, report: VerifyReport) -> None:
    report.files_checked += 1
    try:
        report.manifest_bytes = fs.file_size(mpath)
    except OSError:
        pass
    if vs.recovered_torn_tail is not None:
        report.notes.append(f"{mpath}: a torn final record at offset {vs.recovered_torn_tail} "
                            "(an edit never acknowledged; ignored)")


def _note_orphans(fs: FileSystem, path: str, live: set[int], report: VerifyReport) -> None:
    try:
        names = fs.listdir(path)
    except OSError:
        return
    orphans = [n for n in names if (num := filenames.parse_sst(n)) is not None and num not in live]
    if orphans:
        report.notes.append(f"{len(orphans)} table file(s) no version names ({', '.join(orphans[:5])}): output of "
                            "work in progress, or left by a crash (the next open removes them)")


# ------------------------------------------------------------------ entries
def verify_db(db: DB) -> VerifyReport:
    """The implementation of ``DB.verify`` (module docstring)."""
    if db._closed:
        raise ClosedError(f"database {db.path} is closed")
    fs = db._fs
    report = VerifyReport(db.path)
    num_levels = db._opts.num_levels
    pinned = pin(db, while_locked=lambda: _read_manifest(fs, db.path, num_levels))
    try:
        disk, err, mpath = pinned.extra
        if err is not None:
            _manifest_problem(err, mpath, report)
        else:
            assert disk is not None
            _note_manifest(fs, disk, mpath, report)
            if disk.current != pinned.version:
                report.problem(mpath, f"the manifest on disk describes {disk.current!r}, the database uses "
                                      f"{pinned.version!r}")
            if disk.flushed_seq != pinned.flushed_seq:
                report.problem(mpath, f"the manifest on disk records flushed sequence number {disk.flushed_seq}, "
                                      f"the database {pinned.flushed_seq}")
        check_version(pinned.version, mpath, report)
        for _level, f in pinned.version.all_files():
            check_table(fs, filenames.join(db.path, filenames.sst_name(f.number)), f, pinned.flushed_seq, report)
        _note_orphans(fs, db.path, pinned.version.all_numbers(), report)
        segs = [_Segment(s.path, s.first_seq, _reader(s.file, s.size)) for s in pinned.segments]
        check_log(segs, pinned.flushed_seq, pinned.last_seq, report, where=db.wal_dir, tail_ok=False)
        for m in pinned.mems:
            try:
                m.check()
            except AssertionError as e:
                report.problem("<memtable>", str(e))
    finally:
        pinned.close()
    return report


def _reader(f: Any, size: int) -> Callable[[], bytes]:
    def read() -> bytes:
        data = f.pread(0, size)
        if len(data) != size:
            raise OSError(f"read {len(data)} of {size} bytes")
        return data

    return read


def verify_path(path: str | os.PathLike[str], *, wal_dir: str | os.PathLike[str] | None = None,
                fs: FileSystem | None = None) -> VerifyReport:
    """Verify the database in ``path`` without opening it (nothing is
    replayed, cut or removed), e.g. one whose open fails. It is locked while
    it is read (when it has a LOCK file), so a database open elsewhere
    raises LockedError: use ``db.verify()`` there. When the manifest cannot
    be read, every ``*.sst`` file in the directory is checked by itself."""
    fs = fs if fs is not None else DEFAULT_FS
    path = os.fspath(path)
    wdir = os.fspath(wal_dir) if wal_dir is not None else path
    report = VerifyReport(path)
    lock = None
    if fs.exists(filenames.join(path, filenames.LOCK)):
        try:
            lock = fs.lock(path)
        except OSError:
            raise LockedError(f"{path}: the database is open (in this process or another); use db.verify()") from None
    try:
        vs, err, mpath = _read_manifest(fs, path, MAX_LEVELS)
        flushed: int | None = None
        last: int | None = None
        if err is not None:
            _manifest_problem(err, mpath, report)
            for name in _names(fs, path):
                if filenames.parse_sst(name) is not None:
                    check_table(fs, filenames.join(path, name), None, None, report)
        else:
            assert vs is not None
            _note_manifest(fs, vs, mpath, report)
            check_version(vs.current, mpath, report)
            flushed = vs.flushed_seq
            for _level, f in vs.current.all_files():
                check_table(fs, filenames.join(path, filenames.sst_name(f.number)), f, flushed, report)
            _note_orphans(fs, path, vs.current.all_numbers(), report)
        segs = sorted(
            (_Segment(filenames.join(wdir, n), first, _whole(fs, filenames.join(wdir, n)))
             for n in _names(fs, wdir) if (first := filenames.parse_wal(n)) is not None),
            key=lambda s: s.first_seq,
        )
        check_log(segs, flushed, last, report, where=wdir, tail_ok=True)
    finally:
        if lock is not None:
            lock.release()
    return report


def _names(fs: FileSystem, d: str) -> Iterable[str]:
    try:
        return fs.listdir(d)
    except OSError:
        return []


def _whole(fs: FileSystem, p: str) -> Callable[[], bytes]:
    return lambda: fs.read_file(p)
