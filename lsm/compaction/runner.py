"""Flush and compaction jobs: the only code that writes SSTables.

A job is a plain picklable dataclass and :func:`run_job` a pure function of
it plus the filesystem, so the same code runs inline, in a thread, or in the
worker process (``lsm.compaction.worker``). A job never changes the
manifest: it writes its output tables (fsynced) and returns their numbers
and properties; the DB installs them with one version edit, or deletes them
if the job failed.

Flush sources: the immutable memtable's entries (given in memory), or the
WAL segments that hold exactly the memtable's commits (re-read in the
worker process, so the writers' process spends no CPU on the flush).

Dedup rule (:func:`dedup_versions`), for the versions of one user key,
newest first: the newest version is kept; an older version is kept only if
some live snapshot ``s`` satisfies ``version.seq <= s < newer.seq`` (that
snapshot reads it). At the bottommost level, a trailing run of deletion
markers among the kept versions is dropped: nothing older can show through.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter

from lsm.base import filenames
from lsm.base.coding import ValueKind
from lsm.base.errors import CorruptionError
from lsm.base.fs import DEFAULT_FS, FileSystem, io_site
from lsm.batch import decode_body
from lsm.sstable.reader import TableReader
from lsm.sstable.writer import TableProperties, TableWriter
from lsm.wal.reader import scan_segment

_DELETE = ValueKind.DELETE


@dataclass
class TableOptions:
    block_size: int
    bloom_bits_per_key: int
    compression: int
    compression_level: int
    target_file_size: int
    verify_checksums: bool = True


@dataclass
class FlushJob:
    dbdir: str
    file_number: int
    table: TableOptions
    snapshots: list[int]  # sorted live snapshot seqs
    wal_paths: list[str] = field(default_factory=list)  # read records with start_seq < seq <= end_seq
    start_seq: int = 0
    end_seq: int = 0
    entries: list[tuple[bytes, int, bytes]] | None = None  # in internal order (in-process flush)


@dataclass
class CompactionJob:
    dbdir: str
    inputs: list[tuple[int, int]]  # (level, file number), newest source first
    file_numbers: list[int]  # reserved output numbers, used in order
    table: TableOptions
    snapshots: list[int]
    bottommost: bool


@dataclass
class JobResult:
    outputs: list[tuple[int, TableProperties]]  # (file number, properties), in key order
    bytes_read: int = 0
    entries_in: int = 0
    entries_out: int = 0


def dedup_versions(
    versions: list[tuple[bytes, int, bytes]], snapshots: list[int], bottommost: bool
) -> list[tuple[bytes, int, bytes]]:
    """The versions of one user key (newest first) that must survive."""
    if len(versions) == 1:
        e = versions[0]
        if bottommost and (e[1] & 0xFF) == _DELETE:
            return []
        return versions
    kept = [versions[0]]
    newer_seq = versions[0][1] >> 8
    for e in versions[1:]:
        seq = e[1] >> 8
        i = bisect.bisect_left(snapshots, seq)
        if i < len(snapshots) and snapshots[i] < newer_seq:
            kept.append(e)
        newer_seq = seq
    if bottommost:
        while kept and (kept[-1][1] & 0xFF) == _DELETE:
            kept.pop()
    return kept


def _group_dedup(
    entries: Iterable[tuple[bytes, int, bytes]], snapshots: list[int], bottommost: bool
) -> Iterator[tuple[bytes, int, bytes]]:
    """Entries in internal order -> the surviving entries, same order."""
    group: list[tuple[bytes, int, bytes]] = []
    cur = None
    for e in entries:
        k = e[0]
        if k != cur:
            if group:
                if len(group) == 1 and not bottommost:
                    yield group[0]
                else:
                    yield from dedup_versions(group, snapshots, bottommost)
            group = [e]
            cur = k
        else:
            group.append(e)
    if group:
        yield from dedup_versions(group, snapshots, bottommost)


def _new_writer(fs: FileSystem, dbdir: str, number: int, t: TableOptions) -> TableWriter:
    return TableWriter(
        fs,
        filenames.join(dbdir, filenames.sst_name(number)),
        block_size=t.block_size,
        bloom_bits_per_key=t.bloom_bits_per_key,
        compression=t.compression,
        compression_level=t.compression_level,
    )


def _wal_entries(fs: FileSystem, job: FlushJob) -> tuple[list[tuple[bytes, int, bytes]], int]:
    """The flush's entries re-read from its WAL segments, internal order."""
    latest: dict[bytes, list[tuple[int, int, bytes]]] = {}
    nbytes = 0
    lo, hi = job.start_seq, job.end_seq
    for path in job.wal_paths:
        scan = scan_segment(fs, path)
        for r in scan.records:
            if r.seq + r.count - 1 <= lo or r.seq > hi:
                continue
            nbytes += len(r.body)
            seq = r.seq
            for kind, key, value in decode_body(r.body, r.count, r.path, r.offset):
                if lo < seq <= hi:
                    vs = latest.get(key)
                    if vs is None:
                        latest[key] = [(seq, kind, value)]
                    else:
                        vs.append((seq, kind, value))
                seq += 1
        if scan.damage is not None and scan.records and scan.records[-1].seq + scan.records[-1].count - 1 < hi:
            d = scan.damage
            raise CorruptionError(f"WAL segment damaged before the end of a flushed memtable: {d.reason}", d.path, d.offset)
    out: list[tuple[bytes, int, bytes]] = []
    append = out.append
    for key in sorted(latest):
        vs = latest[key]
        for seq, kind, value in reversed(vs):
            append((key, (seq << 8) | kind, value))
    return out, nbytes


def run_flush(job: FlushJob, fs: FileSystem) -> JobResult:
    with io_site("flush"):
        if job.entries is not None:
            entries = job.entries
            nread = 0
        else:
            entries, nread = _wal_entries(fs, job)
        w = _new_writer(fs, job.dbdir, job.file_number, job.table)
        n_out = 0
        try:
            add = w.add
            for key, trailer, value in _group_dedup(entries, job.snapshots, False):
                add(key, trailer, value)
                n_out += 1
            props = w.finish(sync=True)
        except BaseException:
            w.abandon()
            raise
        outputs = [(job.file_number, props)] if props.num_entries else []
        if not outputs:
            fs.remove(filenames.join(job.dbdir, filenames.sst_name(job.file_number)))
        return JobResult(outputs, nread, len(entries), n_out)


def run_compaction(job: CompactionJob, fs: FileSystem) -> JobResult:
    """Merge the inputs (newer sources first win ties) into new tables of
    about ``target_file_size``, split only between user keys so that files
    of one level never share a key."""
    readers: list[TableReader] = []
    outputs: list[tuple[int, TableProperties]] = []
    numbers = list(job.file_numbers)
    writer: TableWriter | None = None
    n_in = n_out = 0
    nread = 0
    with io_site("compaction"):
        try:
            for _level, number in job.inputs:
                r = TableReader.open(
                    fs,
                    filenames.join(job.dbdir, filenames.sst_name(number)),
                    file_number=number,
                    cache=None,
                    verify_checksums=True,
                )
                readers.append(r)
                nread += r.properties.file_size
            merged = heapq.merge(*(r.iter_entries() for r in readers), key=itemgetter(0))
            target = job.table.target_file_size
            last_key = None
            writer_number = 0
            box = [0]
            for key, trailer, value in _group_dedup(_counted(merged, box), job.snapshots, job.bottommost):
                if writer is not None and key != last_key and writer.estimated_size >= target:
                    outputs.append((writer_number, writer.finish(sync=True)))
                    writer = None
                if writer is None:
                    if not numbers:
                        raise RuntimeError("compaction ran out of reserved file numbers")
                    writer_number = numbers.pop(0)
                    writer = _new_writer(fs, job.dbdir, writer_number, job.table)
                writer.add(key, trailer, value)
                last_key = key
                n_out += 1
            if writer is not None:
                outputs.append((writer_number, writer.finish(sync=True)))
                writer = None
            n_in = box[0]
        except BaseException:
            if writer is not None:
                writer.abandon()
            for number, _p in outputs:
                try:
                    fs.remove(filenames.join(job.dbdir, filenames.sst_name(number)))
                except OSError:
                    pass
            raise
        finally:
            for r in readers:
                r.close()
    return JobResult(outputs, nread, n_in, n_out)


def _counted(it: Iterable, box: list[int]) -> Iterator:
    """Yield from ``it``, counting into ``box[0]``."""
    for e in it:
        box[0] += 1
        yield e


def run_job(job: FlushJob | CompactionJob, fs: FileSystem | None = None) -> JobResult:
    """Run a job with ``fs`` (the default filesystem in a worker process)."""
    fs = fs if fs is not None else DEFAULT_FS
    if isinstance(job, FlushJob):
        return run_flush(job, fs)
    return run_compaction(job, fs)


def remove_outputs(fs: FileSystem, dbdir: str, numbers: Iterable[int]) -> None:
    """Best-effort removal of a failed job's output files."""
    for n in numbers:
        p = filenames.join(dbdir, filenames.sst_name(n))
        try:
            if fs.exists(p):
                fs.remove(p)
        except OSError:
            pass
