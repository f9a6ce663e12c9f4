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

Range tombstones (lsm/base/rangedel.py) of all inputs are fragmented
together. Their seqs in each fragment follow the same rule among
themselves (:func:`dedup_range_dels`), and at the bottommost level a seq is
dropped when no snapshot is older than it (every reader sees it, and every
version it covers is dropped below, so it has nothing left to hide). A
version covered by a fragment takes part in the dedup rule as if each of
the fragment's seqs were a deletion marker of that key (a *pseudo-version*,
never written): so a covered version goes exactly when no snapshot
separates it from the tombstone above it. Whatever survives is written to
the outputs, clipped to each output's key range: an output file ends at
``last_key + b"\x00"`` (the next one starts there), so neighbouring files
never share a key, and the last one keeps the rest. The work is
proportional to the entries read and the tombstones, never to the number
of keys a tombstone covers that are not there.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from lsm.base import filenames
from lsm.base.coding import ValueKind
from lsm.base.compression import NONE as _NO_COMPRESSION
from lsm.base.errors import CorruptionError
from lsm.base.fs import DEFAULT_FS, FileSystem, io_site
from lsm.base.rangedel import RangeDels, Tombstone
from lsm.batch import decode_body
from lsm.options import Options
from lsm.sstable.reader import TableReader
from lsm.sstable.writer import TableProperties, TableWriter
from lsm.wal.reader import scan_segment

_DELETE = ValueKind.DELETE
_RANGE_DELETE = ValueKind.RANGE_DELETE
_PSEUDO = object()  # the value of a pseudo-version (a range tombstone's seq taking part in a key's dedup)


@dataclass
class TableOptions:
    block_size: int
    bloom_bits_per_key: int
    compression: int
    compression_level: int
    target_file_size: int
    verify_checksums: bool = True


def table_options(opts: Options, level: int, verify_checksums: bool | None = None) -> TableOptions:
    """How a table written into ``level`` is built: compressed with
    ``opts.compression`` from ``opts.min_level_to_compress`` down, raw
    above it (its docstring). ``verify_checksums`` defaults to
    ``opts.paranoid_checks``."""
    return TableOptions(
        block_size=opts.block_size,
        bloom_bits_per_key=opts.bloom_bits_per_key,
        compression=opts.compression_id if level >= opts.min_level_to_compress else _NO_COMPRESSION,
        compression_level=opts.compression_level,
        target_file_size=opts.target_file_size,
        verify_checksums=opts.paranoid_checks if verify_checksums is None else verify_checksums,
    )


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
    range_dels: list[Tombstone] | None = None  # (start, stop, seq), with ``entries`` (in-process flush)


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


def dedup_range_dels(rd: RangeDels, snapshots: list[int], bottommost: bool) -> RangeDels:
    """The tombstone seqs that must survive, per fragment: the newest, and
    an older one only if a snapshot ``s`` has ``seq <= s < newer``; at the
    bottommost level, only seqs some snapshot is older than (a snapshot
    below the seq still reads what it covers, so it keeps hiding it from
    the readers above). Fragments left without a seq disappear."""
    starts: list[bytes] = []
    ends: list[bytes] = []
    seqs: list[tuple[int, ...]] = []
    nsnap = len(snapshots)
    for s, e, qs in zip(rd.starts, rd.ends, rd.seqs):
        kept = [qs[0]]
        newer = qs[0]
        for q in qs[1:]:
            i = bisect.bisect_left(snapshots, q)
            if i < nsnap and snapshots[i] < newer:
                kept.append(q)
            newer = q
        if bottommost:
            kept = [q for q in kept if bisect.bisect_left(snapshots, q) > 0]
        if not kept:
            continue
        t = tuple(kept)
        if ends and ends[-1] == s and seqs[-1] == t:
            ends[-1] = e
        else:
            starts.append(s)
            ends.append(e)
            seqs.append(t)
    return RangeDels(starts, ends, seqs)


def _group_dedup_covered(
    entries: Iterable[tuple[bytes, int, bytes]], rd: RangeDels, snapshots: list[int], bottommost: bool
) -> Iterator[tuple[bytes, int, bytes]]:
    """:func:`_group_dedup` with range tombstones ``rd`` (as read, before
    :func:`dedup_range_dels`): a key covered by a fragment whose newest seq
    is above some version of it is deduplicated together with the
    fragment's seqs as pseudo-versions (deletion markers), which are then
    left out. ``entries`` in internal order, so a cursor walks the
    fragments once."""
    starts, ends, frag_seqs = rd.starts, rd.ends, rd.seqs
    nf = len(starts)
    fi = 0
    plain = not bottommost

    def flush(group: list[tuple[bytes, int, bytes]]) -> Iterator[tuple[bytes, int, bytes]]:
        nonlocal fi
        key = group[0][0]
        while fi < nf and key >= ends[fi]:
            fi += 1
        if fi < nf and starts[fi] <= key and frag_seqs[fi][0] > group[-1][1] >> 8:
            both: list[Any] = group + [(key, (q << 8) | _DELETE, _PSEUDO) for q in frag_seqs[fi]]
            both.sort(key=itemgetter(1), reverse=True)  # stable: a real version first on a tie
            for e in dedup_versions(both, snapshots, bottommost):
                if e[2] is not _PSEUDO:
                    yield e
        elif len(group) == 1 and plain:
            yield group[0]
        else:
            yield from dedup_versions(group, snapshots, bottommost)

    group: list[tuple[bytes, int, bytes]] = []
    cur = None
    for e in entries:
        k = e[0]
        if k != cur:
            if group:
                yield from flush(group)
            group = [e]
            cur = k
        else:
            group.append(e)
    if group:
        yield from flush(group)


def _surviving(
    entries: Iterable[tuple[bytes, int, bytes]], rd: RangeDels | None, snapshots: list[int], bottommost: bool
) -> Iterator[tuple[bytes, int, bytes]]:
    if rd:
        return _group_dedup_covered(entries, rd, snapshots, bottommost)
    return _group_dedup(entries, snapshots, bottommost)


def _new_writer(fs: FileSystem, dbdir: str, number: int, t: TableOptions) -> TableWriter:
    return TableWriter(
        fs,
        filenames.join(dbdir, filenames.sst_name(number)),
        block_size=t.block_size,
        bloom_bits_per_key=t.bloom_bits_per_key,
        compression=t.compression,
        compression_level=t.compression_level,
    )


def _wal_entries(fs: FileSystem, job: FlushJob) -> tuple[list[tuple[bytes, int, bytes]], int, list[Tombstone]]:
    """The flush's entries re-read from its WAL segments, internal order,
    bytes read, and its range tombstones."""
    latest: dict[bytes, list[tuple[int, int, bytes]]] = {}
    rdels: list[Tombstone] = []
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
                if kind == _RANGE_DELETE:
                    if lo < seq <= hi:
                        rdels.append((key, value, seq))
                elif lo < seq <= hi:
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
    return out, nbytes, rdels


def run_flush(job: FlushJob, fs: FileSystem) -> JobResult:
    with io_site("flush"):
        if job.entries is not None:
            entries = job.entries
            rdels = job.range_dels or []
            nread = 0
        else:
            entries, nread, rdels = _wal_entries(fs, job)
        rd = RangeDels.build(rdels) if rdels else None
        w = _new_writer(fs, job.dbdir, job.file_number, job.table)
        n_out = 0
        try:
            # One version per key and no range tombstone: nothing to dedup,
            # the columns go to the writer in bulk (lsm/memtable.py FrozenEntries),
            # their order checked there once.
            cols = entries.columns() if rd is None and hasattr(entries, "columns") else None
            if cols is not None:
                w.add_columns(*cols, ascending=True)
                n_out = len(cols[0])
            else:
                add = w.add
                for key, trailer, value in _surviving(entries, rd, job.snapshots, False):
                    add(key, trailer, value)
                    n_out += 1
            if rd:
                for start, stop, seq in dedup_range_dels(rd, job.snapshots, False):
                    w.add_range_del(start, stop, seq)
            props = w.finish(sync=True)
        except BaseException:
            w.abandon()
            raise
        outputs = [(job.file_number, props)] if props.num_entries or props.num_range_dels else []
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
            rd_in = [r.range_dels for r in readers if r.range_dels is not None]
            rd = RangeDels.build(t for x in rd_in for t in x) if rd_in else None
            rd_out = dedup_range_dels(rd, job.snapshots, job.bottommost) if rd else None
            lo_bound: bytes | None = None  # where the current output's key range starts (None: first output)
            for key, trailer, value in _surviving(_counted(merged, box), rd, job.snapshots, job.bottommost):
                if writer is not None and key != last_key and writer.estimated_size >= target:
                    if rd_out:
                        hi_bound = last_key + b"\x00"  # type: ignore[operator]
                        _add_range_dels(writer, rd_out, lo_bound, hi_bound)
                        lo_bound = hi_bound
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
            if rd_out and writer is None and rd_out.overlaps(lo_bound, None):
                # Tombstones past the last entry (or no entry at all): a table of their own.
                if not numbers:
                    raise RuntimeError("compaction ran out of reserved file numbers")
                writer_number = numbers.pop(0)
                writer = _new_writer(fs, job.dbdir, writer_number, job.table)
            if writer is not None:
                if rd_out:
                    _add_range_dels(writer, rd_out, lo_bound, None)
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


def _add_range_dels(w: TableWriter, rd: RangeDels, lo: bytes | None, hi: bytes | None) -> None:
    """Give ``w`` the pieces of ``rd`` inside ``[lo, hi)``."""
    for start, stop, seq in rd.clipped(lo, hi):
        w.add_range_del(start, stop, seq)


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
