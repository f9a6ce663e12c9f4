"""Bulk ingestion: ``db.ingest`` (pairs from any iterable) and
``db.ingest_files`` (tables built by ``lsm.TableWriter``). Tables are built
directly, bypassing the WAL and the memtable, and added to the tree by one
version edit: a crash leaves all of an ingest or none of it.

Semantics (RocksDB's IngestExternalFile): the ingested data is newer than
every commit before the ingest and older than every commit after it, and
it becomes visible at once. It carries one fresh sequence number ``S =
last_seq + 1``:

* it shadows older versions of the same keys (in the memtables and the
  tables) and is shadowed by later writes;
* a snapshot taken before the ingest (seq < S) does not see it;
* ``S`` is recorded in the manifest (``last_seq``), so recovery never hands
  it out again.

Design: *build outside the lock, install under it.*

1. If the memtable holds commits, ``db.flush()`` first (so step 3 normally
   finds nothing to flush).
2. Without any lock: read, validate and sort the input (external merge in
   bounded memory, lsm/ingest/sort.py) and write the output tables, split
   at ``target_file_size``, with a *provisional* sequence number ``P =
   last_seq + 1`` (read at the start). Tables are fsynced.
3. Under ``_install_mu`` and then the DB write lock (commits wait; readers
   do not): let ``L = last_seq``, ``S = L + 1``.

   * Immutable memtables still waiting for their flush: release the locks,
     wait for the flush, retry.
   * The live memtable holds commits (writes arrived during step 2): flush
     it here, in this thread, into level-0 tables that go into the same
     edit (``Background.flush_live_locked``).
   * ``S != P`` (commits arrived during step 2): rewrite the tables with
     ``S`` (one more pass over the ingested data, with commits waiting).
     Without concurrent writers this never happens.
   * Choose the level: the deepest level ``n`` such that no table of levels
     ``0..n`` overlaps the ingested key range (so nothing above the new
     tables holds an older version of one of their keys); level 0 when a
     compaction is running (its outputs could land in that range).
   * One version edit: the tables, ``flushed_seq = last_seq = S``. It is
     made durable by the one install path (``Background._install``: tables
     fsynced, directory synced, edit logged and synced, super version
     swapped), then ``last_seq = S``, a new WAL segment starting at
     ``S + 1``, and the old segments are retired.

Why the WAL needs nothing: replay requires contiguous sequence numbers
after the manifest's flushed_seq. At the install every commit up to ``L``
is in tables (memtables empty or flushed into the edit), and the edit sets
flushed_seq to ``S``; later commits start at ``S + 1`` in a new segment
named so. A crash before the edit is durable leaves the log as it was (the
new tables are orphans, removed at the next open); a crash after it finds
flushed_seq = S and either no newer segment or one starting at ``S + 1``.

``ingest_files`` first tries to add the files as they are, without
rewriting (copied or linked into the database directory): when no live
snapshot exists and no key of any table, memtable or range tombstone falls
within a file's key range, the file's entries keep sequence number 0. Since
nothing else holds their keys, no read or compaction can tell them from
older data; the file goes to the last level (level 0 while a compaction
runs). Otherwise the files' entries are ingested like ``db.ingest``'s,
with a fresh sequence number.

Errors: input that is not (bytes, bytes) pairs raises TypeError naming the
position; ``sorted=True`` input out of order raises ValueError naming the
positions and keys; the database is unchanged and every temporary file is
removed. A failure while logging the edit fences the database (its state
on disk is unknown until reopened), as a failed flush does.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import pairwise
from typing import TYPE_CHECKING, Any, Final

from lsm.base import filenames
from lsm.base.coding import ValueKind
from lsm.base.errors import CorruptionError
from lsm.base.fs import FileSystem, io_site
from lsm.compaction.runner import remove_outputs
from lsm.ingest.external import TableInfo, inspect_external
from lsm.ingest.sort import ExternalSorter, checked_sorted, chunks_of
from lsm.memtable import MemTable
from lsm.sstable.reader import TableReader
from lsm.sstable.writer import TableProperties, TableWriter

if TYPE_CHECKING:
    from lsm.db import DB
    from lsm.manifest.version import Version

DEFAULT_MEMORY_BUDGET: Final = 64 * 1024 * 1024
"""Bytes of input ``db.ingest`` buffers before it spills a sorted run."""

MIN_MEMORY_BUDGET: Final = 4096

COPY_CHUNK: Final = 1 << 20
"""Bytes per read/write when ``ingest_files`` copies a table."""

_TABLE_CHUNK: Final = 512
"""Entries between two checks of the output table's size."""

_PUT = ValueKind.PUT

Output = tuple[int, TableProperties]


# ------------------------------------------------------------------ db.ingest
def ingest_items(db: DB, items: Iterable[Any], *, presorted: bool = False,
                 memory_budget: int | None = None) -> int:
    """``db.ingest``: see the module docstring. Returns the ingest's
    sequence number (``db.last_seq`` unchanged when ``items`` is empty)."""
    if not isinstance(presorted, bool):
        raise TypeError(f"sorted: expected bool, got {type(presorted).__name__}")
    budget = DEFAULT_MEMORY_BUDGET if memory_budget is None else memory_budget
    if isinstance(budget, bool) or not isinstance(budget, int):
        raise TypeError(f"memory_budget: expected an int (bytes), got {type(budget).__name__}")
    if budget < MIN_MEMORY_BUDGET:
        raise ValueError(f"memory_budget: must be at least {MIN_MEMORY_BUDGET} bytes, got {budget}")
    if isinstance(items, Mapping):
        items = items.items()
    elif isinstance(items, (bytes, bytearray, memoryview, str)) or not isinstance(items, Iterable):
        raise TypeError(f"items must be an iterable of (key, value) pairs, not {type(items).__name__}")
    db._check_usable()
    t0 = time.perf_counter()
    fs = db._fs
    with io_site("ingest"):
        _flush_if_needed(db)
        provisional = db._last_seq + 1
        sorter = None
        outputs: list[Output] = []
        try:
            if presorted:
                chunks: Iterable[Iterable[Any]] = checked_sorted(items)
            else:
                sorter = ExternalSorter(fs, lambda: _tmp_path(db, "run"), budget)
                sorter.add_all(items)
                chunks = sorter.merged_chunks(_TABLE_CHUNK)
            _write_tables(db, chunks, provisional, outputs)
        except BaseException:
            remove_outputs(fs, db.path, [n for n, _p in outputs])
            raise
        finally:
            if sorter is not None:
                sorter.cleanup()
        if not outputs:
            return db._last_seq
        seq = _install(db, outputs, provisional)
    _log(db, "ingest: %d entries in %d table(s) at seq %d (%s), %.3f s", outputs, seq, t0,
         f"{sorter.spills} run(s) spilled" if sorter is not None else "sorted input")
    return seq


def _flush_if_needed(db: DB) -> None:
    sv = db._sv
    if not sv.mem.is_empty() or sv.imms:
        db.flush()


def _tmp_path(db: DB, what: str) -> str:
    """A fresh temporary file name in the database directory (``*.tmp``
    files are removed at every open)."""
    with db._install_mu:
        number = db._vs.new_file_number()
    return filenames.join(db.path, f"ingest-{number:06d}.{what}.tmp")


def _new_table(db: DB) -> tuple[int, TableWriter]:
    # Compressed as the deepest level's tables: an ingest goes to the
    # deepest level it can (_ingest_level).
    t = db._bg.tables[-1]
    with db._install_mu:
        number = db._vs.new_file_number()
    w = TableWriter(db._fs, filenames.join(db.path, filenames.sst_name(number)), block_size=t.block_size,
                    bloom_bits_per_key=t.bloom_bits_per_key, compression=t.compression,
                    compression_level=t.compression_level)
    return number, w


def _write_tables(db: DB, chunks: Iterable[Iterable[Any]], seq: int, outputs: list[Output], *,
                  kinds: bool = False) -> None:
    """Write the entries of ``chunks`` (lists; ascending unique keys;
    ``(key, value)`` pairs, all puts, or with ``kinds`` ``(key, kind,
    value)``) at sequence number ``seq`` into tables of about
    ``target_file_size`` (checked after each chunk), appending ``(number,
    properties)`` to ``outputs`` as each is finished (fsynced). On an error
    the unfinished table is deleted; the caller deletes those in
    ``outputs``."""
    target = db._bg.tables[-1].target_file_size
    base = seq << 8
    put = base | _PUT
    w: TableWriter | None = None
    number = 0
    try:
        for chunk in chunks:
            if w is None:
                number, w = _new_table(db)
            add = w.add
            if kinds:
                for k, kind, v in chunk:
                    add(k, base | kind, v)
            else:
                for k, v in chunk:
                    add(k, put, v)
            if w.estimated_size >= target:
                outputs.append((number, w.finish(sync=True)))
                w = None
        if w is not None:
            outputs.append((number, w.finish(sync=True)))
            w = None
    finally:
        if w is not None:
            w.abandon()


def _reseq(db: DB, outputs: list[Output], seq: int) -> None:
    """Rewrite every table of ``outputs`` with sequence number ``seq``
    (in place in the list; the old files are deleted)."""
    fs = db._fs
    new: list[Output] = []
    try:
        for number, _p in outputs:
            r = TableReader.open(fs, filenames.join(db.path, filenames.sst_name(number)), file_number=number,
                                 cache=None, verify_checksums=True)
            try:
                before = len(new)
                entries = ((k, t & 0xFF, v) for k, t, v in r.iter_entries(fill_cache=False))
                _write_tables(db, chunks_of(entries, _TABLE_CHUNK), seq, new, kinds=True)
                assert len(new) <= before + 1
            finally:
                r.close()
    except BaseException:
        remove_outputs(fs, db.path, [n for n, _p in new])
        raise
    remove_outputs(fs, db.path, [n for n, _p in outputs])
    outputs[:] = new


# ------------------------------------------------------------------- install
def _install(db: DB, outputs: list[Output], provisional: int) -> int:
    """Add ``outputs`` (written at ``provisional``) to the tree under a
    fresh sequence number; return it. On an error before the edit may have
    been logged, the outputs are deleted."""
    bg = db._bg
    fs = db._fs
    state = {"logging": False}
    while True:
        wait_for: int | None = None  # set: immutable memtables to flush first, then try again
        try:
            with db._install_mu, db._write_mu:
                db._check_usable()
                if db._sv.imms:
                    wait_for = db._last_seq
                else:
                    seq, old_wal = _install_locked(db, outputs, provisional, state)
        except BaseException:
            if not state["logging"]:
                remove_outputs(fs, db.path, [n for n, _p in outputs])
            raise
        if wait_for is None:
            bg.ingest_done(seq, old_wal)
            return seq
        try:
            bg.wait_flushed(wait_for)
        except BaseException:
            remove_outputs(fs, db.path, [n for n, _p in outputs])
            raise


def _install_locked(db: DB, outputs: list[Output], provisional: int,
                    state: dict[str, bool]) -> tuple[int, list[str]]:
    """REQUIRES: ``_install_mu`` and then the DB write lock held, no
    immutable memtable. Returns (seq, WAL segments to retire)."""
    bg = db._bg
    last = db._last_seq
    seq = last + 1
    mem = db._sv.mem
    l0_extra: list[Output] = []
    new_mem = None
    if not mem.is_empty():
        l0_extra = bg.flush_live_locked(db._mem_wal_paths, db._mem_start_seq, last)
        new_mem = MemTable(db._write_mu)
    try:
        if seq != provisional:
            _reseq(db, outputs, seq)
        lo = min(p.smallest for _n, p in outputs)
        hi = max(p.largest for _n, p in outputs)
        _log_and_install(
            db, outputs, lambda: _ingest_level(db._vs.current, lo, hi, [p for _n, p in l0_extra]),
            seq, new_mem, state, l0_extra,
        )
    except BaseException:
        if not state["logging"]:
            remove_outputs(db._fs, db.path, [n for n, _p in l0_extra])
        raise
    db._last_seq = seq
    if new_mem is not None:
        db._retire_counts_locked(mem)
        db._mem = new_mem
    old_wal = list(db._mem_wal_paths)
    db._mem_wal_paths = [db._wal.start_segment_locked(seq + 1)]
    db._room_at = 0  # new memtable and segment: the next put re-checks and re-arms (DB._wal_switch_due_locked)
    db._mem_start_seq = seq
    db._keys_written += sum(p.num_entries for _n, p in outputs)
    db._user_bytes += sum(p.data_size for _n, p in outputs)
    return seq, old_wal


def _log_and_install(db: DB, outputs: list[Output], pick_level: Callable[[], int], seq: int | None,
                     new_mem: MemTable | None, state: dict[str, bool], l0_extra: list[Output] | None = None) -> None:
    """Log and install the version edit adding ``outputs`` (after
    ``l0_extra``, into level 0) at the level ``pick_level()`` picks, or at
    level 0 while a compaction runs (its lock is busy: the levels below may
    be changing); then count the ingest. Sets ``state["logging"]`` just
    before the edit is logged: from then on the outputs are the manifest's,
    not the caller's to delete. A failure to log fences the DB.
    REQUIRES: ``_install_mu`` and the DB write lock held."""
    bg = db._bg
    compacting = not bg._compact_mu.acquire(blocking=False)
    try:
        level = 0 if compacting else pick_level()
        files = [(0, n, p) for n, p in l0_extra or ()] + [(level, n, p) for n, p in outputs]
        state["logging"] = True
        try:
            bg.install_ingest_locked(files, seq, new_mem)
        except OSError as e:
            db._on_fence(e)
            raise
        bg.count_ingest(level, sum(p.file_size for _n, p in outputs))
    finally:
        if not compacting:
            bg._compact_mu.release()


def _ingest_level(version: Version, lo: bytes, hi: bytes, l0_extra: list[TableProperties]) -> int:
    """The deepest level ``n`` such that no table of levels ``0..n`` (nor
    one of ``l0_extra``, about to join level 0) overlaps ``[lo, hi]``."""
    if any(p.smallest <= hi and p.largest >= lo for p in l0_extra):
        return 0
    level = 0
    for n in range(version.num_levels):
        if version.overlapping(n, lo, hi):
            break
        level = n
    return level


# ------------------------------------------------------------ db.ingest_files
def ingest_tables(db: DB, paths: Iterable[Any], *, move: bool = False) -> int:
    """``db.ingest_files``: see the module docstring. Returns the sequence
    number from which reads see the data (the ingest's own when it took
    one, else ``db.last_seq``)."""
    if isinstance(paths, (str, bytes, os.PathLike)):
        raise TypeError("paths must be a list of paths (wrap a single path in a list)")
    if not isinstance(move, bool):
        raise TypeError(f"move: expected bool, got {type(move).__name__}")
    srcs = []
    for p in paths:
        if not isinstance(p, (str, os.PathLike)) or isinstance(p, bytes):
            raise TypeError(f"paths: expected str or os.PathLike items, got {type(p).__name__}")
        srcs.append(os.fspath(p))
    db._check_usable()
    t0 = time.perf_counter()
    fs = db._fs
    with io_site("ingest"):
        infos = sorted((i for i in (inspect_external(fs, p) for p in srcs) if i.num_entries),
                       key=lambda i: i.smallest)
        for a, b in pairwise(infos):
            if a.largest >= b.smallest:
                raise ValueError(f"ingest_files: {a.path} and {b.path} overlap (keys {b.smallest!r} .. "
                                 f"{min(a.largest, b.largest)!r}); the files' key ranges must be disjoint")
        if not infos:
            seq = db._last_seq
        else:
            added = _add_as_is(db, infos, move)
            seq = _rewrite_files(db, infos) if added is None else added
        if move:
            for p in srcs:
                try:
                    fs.remove(p)
                except FileNotFoundError:
                    pass
    if infos:
        _log(db, "ingest_files: %d entries in %d table(s) at seq %d (%s), %.3f s",
             [(0, i) for i in infos], seq, t0, "moved" if move else "copied")
    return seq


def _rewrite_files(db: DB, infos: list[TableInfo]) -> int:
    """Ingest the entries of ``infos`` (disjoint, in key order) with a
    fresh sequence number, like db.ingest."""
    fs = db._fs
    _flush_if_needed(db)
    provisional = db._last_seq + 1
    outputs: list[Output] = []
    try:
        _write_tables(db, chunks_of(_chain_files(fs, infos), _TABLE_CHUNK), provisional, outputs, kinds=True)
    except BaseException:
        remove_outputs(fs, db.path, [n for n, _p in outputs])
        raise
    return _install(db, outputs, provisional)


def _chain_files(fs: FileSystem, infos: list[TableInfo]) -> Iterator[tuple[bytes, int, bytes]]:
    for info in infos:
        r = TableReader.open(fs, info.path, file_number=0, cache=None, verify_checksums=True)
        try:
            for k, t, v in r.iter_entries(fill_cache=False):
                yield k, t & 0xFF, v
        finally:
            r.close()


def _add_as_is(db: DB, infos: list[TableInfo], move: bool) -> int | None:
    """Add the files unchanged (sequence number 0) when nothing in the
    database holds a key in their ranges and no snapshot is live; None when
    that is not possible (nothing changed then). Returns ``db.last_seq``.

    The overlap check runs once, without locks: what was written before
    the call is in the super version read then (a flush or compaction only
    moves it), and a commit after the check is ordered after the ingest,
    which its higher sequence number gives it anyway. Snapshots are checked
    again at the install, under the snapshot lock: a snapshot taken before
    the ingest must not see it, and entries at sequence number 0 would be
    visible to any snapshot."""
    if not _free_for(db, infos):
        return None
    fs = db._fs
    numbers: list[int] = []
    try:
        for info in infos:
            with db._install_mu:
                number = db._vs.new_file_number()
            numbers.append(number)
            _import_file(fs, info, filenames.join(db.path, filenames.sst_name(number)), move)
        files = [(n, _props_of(fs, db.path, n, i)) for n, i in zip(numbers, infos)]
    except BaseException:
        remove_outputs(fs, db.path, numbers)
        raise
    state = {"logging": False}
    try:
        with db._install_mu, db._write_mu, db._snap_mu:
            db._check_usable()
            if db._snapshots:
                remove_outputs(fs, db.path, numbers)
                return None
            _log_and_install(db, files, lambda: _bottom_if_free(db._vs.current, files), None, None, state)
            seq = db._last_seq
            db._keys_written += sum(i.num_entries for i in infos)
            db._user_bytes += sum(i.data_size for i in infos)
    except BaseException:
        if not state["logging"]:
            remove_outputs(fs, db.path, numbers)
        raise
    db._bg.ingest_done(0, [])
    return seq


def _bottom_if_free(version: Version, files: list[Output]) -> int:
    """The last level when no table of it overlaps any of ``files``, else 0."""
    last = version.num_levels - 1
    return 0 if any(version.overlapping(last, p.smallest, p.largest) for _n, p in files) else last


def _free_for(db: DB, infos: list[TableInfo]) -> bool:
    """No live snapshot, and no table, memtable entry or memtable range
    tombstone within the key range of any of ``infos``. Takes the write
    lock briefly (the memtables' sorted view): REQUIRES it not held."""
    if db._snapshots:
        return False
    sv = db._sv
    version = sv.version
    for info in infos:
        lo, hi = info.smallest, info.largest
        for level in range(version.num_levels):
            if version.overlapping(level, lo, hi):
                return False
        for mem in (sv.mem, *sv.imms):
            if mem.keys_in_range(lo, hi + b"\x00"):
                return False
            for start, stop, _seq in mem.range_del_list():
                if start <= hi and stop > lo:
                    return False
    return True


def _props_of(fs: FileSystem, dbdir: str, number: int, info: TableInfo) -> TableProperties:
    """The properties of the imported table ``number`` (re-read from the
    copy, and checked against what the source held)."""
    r = TableReader.open(fs, filenames.join(dbdir, filenames.sst_name(number)), file_number=number, cache=None,
                         verify_checksums=True)
    try:
        p = r.properties
    finally:
        r.close()
    if (p.file_size, p.num_entries, p.smallest, p.largest) != (info.file_size, info.num_entries, info.smallest,
                                                               info.largest):
        raise CorruptionError(f"ingest_files: this copy of {info.path} differs from the file checked", r.path)
    return p


def _import_file(fs: FileSystem, info: TableInfo, dst: str, move: bool) -> None:
    """Put a durable copy of ``info.path`` at ``dst``: a hard link when
    ``move`` (the source is removed after the install), else (or when
    linking fails, e.g. across devices) a copy."""
    if move:
        try:
            fs.link(info.path, dst)
        except OSError:
            pass  # another device, or no hard links: copy
        else:
            try:
                f = fs.open_append(dst)  # the source may never have been synced
                try:
                    f.fsync()
                finally:
                    f.close()
                return
            except OSError:
                fs.remove(dst)  # e.g. a read-only file: copy it instead
    src = fs.open_read(info.path)
    try:
        out = fs.create(dst)
        try:
            off = 0
            size = src.size
            while off < size:
                chunk = src.pread(off, min(COPY_CHUNK, size - off))
                if not chunk:
                    raise OSError(f"{info.path}: shorter than its {size} bytes while copying")
                out.write(chunk)
                off += len(chunk)
            out.fsync()
        finally:
            out.close()
    finally:
        src.close()


def _log(db: DB, fmt: str, outputs: list[tuple[int, Any]], seq: int, t0: float, how: str) -> None:
    log = getattr(db, "_info_log", None)
    if log is not None:
        n = sum(p.num_entries for _n, p in outputs)
        log.info(fmt, n, len(outputs), seq, how, time.perf_counter() - t0)
