"""Opening a database: directory checks, locking, manifest recovery, WAL
replay, clean-up of files no version needs, and the start of the DB.

Open is all-or-nothing with respect to the user's data: a failure before
the DB is returned changes nothing on disk except (a) truncating a torn WAL
tail that replay has decided to discard and (b) removing temporary and
orphaned files (tables no manifest names, left by a crash mid-flush or
mid-compaction).
"""

from __future__ import annotations

import os
import threading
from typing import Any

from lsm.background import Background, SuperVersion, open_reader
from lsm.base import filenames
from lsm.base.errors import CorruptionError, InvalidDatabaseError, LockedError
from lsm.base.fs import io_site, makedirs_durable
from lsm.base.infolog import LOG_OLD, InfoLog
from lsm.batch import decode_columns
from lsm.db import DB
from lsm.manifest.edit import VersionEdit
from lsm.manifest.version_set import VersionSet
from lsm.memtable import ENTRY_OVERHEAD, MemTable
from lsm.options import Options, Sync
from lsm.sstable.cache import BlockCache
from lsm.wal.reader import replay
from lsm.wal.writer import WalWriter

_OURS_DATA = (filenames.CURRENT, filenames.LOCK, filenames.FENCE, filenames.LOG, LOG_OLD)


def _is_ours(name: str) -> bool:
    return (
        name in _OURS_DATA
        or filenames.parse_sst(name) is not None
        or filenames.parse_manifest(name) is not None
        or filenames.parse_wal(name) is not None
        or name.endswith(".tmp")
        or name.endswith(".wal.dropped")
        or name == filenames.ARCHIVE_DIR
    )


def _check_directory(fs: Any, path: str, opts: Options) -> bool:
    """Create or vet the data directory; True when a database exists."""
    if not fs.exists(path):
        if not opts.create_if_missing:
            raise InvalidDatabaseError(f"{path}: no database here (create_if_missing is False)")
        makedirs_durable(fs, path)
        return False
    if not fs.is_dir(path):
        raise InvalidDatabaseError(f"{path}: not a directory")
    names = fs.listdir(path)
    if filenames.CURRENT in names:
        if opts.error_if_exists:
            raise InvalidDatabaseError(f"{path}: a database already exists (error_if_exists is True)")
        return True
    foreign = [n for n in names if not _is_ours(n)]
    if foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        raise InvalidDatabaseError(f"{path}: directory holds files that are not an lsm database ({shown})")
    if any(filenames.parse_sst(n) is not None for n in names):
        raise CorruptionError("CURRENT file is missing but table files exist", os.path.join(path, filenames.CURRENT))
    # A creation interrupted before CURRENT was switched leaves only a
    # manifest (and perhaps an empty WAL): no data, so create afresh.
    for n in names:
        if filenames.parse_manifest(n) is not None or n.endswith(".tmp"):
            fs.remove(os.path.join(path, n))
    if not opts.create_if_missing:
        raise InvalidDatabaseError(f"{path}: no database here (create_if_missing is False)")
    return False


def open_db(path: str, opts: Options) -> DB:
    fs = opts.validate_open().fs
    # Absolute: worker processes (background="process") and later
    # os.chdir calls must see the same directories.
    path = os.path.abspath(os.fspath(path))
    wal_dir = os.path.abspath(opts.wal_dir) if opts.wal_dir else path
    with io_site("open"):
        exists = _check_directory(fs, path, opts)
        if wal_dir != path:
            if not fs.exists(wal_dir):
                makedirs_durable(fs, wal_dir)
            foreign = [n for n in fs.listdir(wal_dir) if not _is_ours(n)]
            if foreign:
                raise InvalidDatabaseError(f"{wal_dir}: WAL directory holds files that are not lsm WAL segments ({', '.join(foreign[:5])})")
        try:
            lock = fs.lock(path)
        except OSError as e:
            raise LockedError(f"{path}: database is already open (in this process or another): {e.strerror or e}") from None
    try:
        return _open_locked(fs, path, wal_dir, opts, exists, lock)
    except BaseException:
        lock.release()
        raise


def _open_locked(fs: Any, path: str, wal_dir: str, opts: Options, exists: bool, lock: Any) -> DB:
    vs = VersionSet(fs, path, num_levels=opts.num_levels)
    with io_site("recovery"):
        if exists:
            vs.recover()
        else:
            vs.create()
            fs.sync_dir(path)
        fenced_before = fs.exists(filenames.join(path, filenames.FENCE))
        result = replay(fs, wal_dir, start_seq=vs.flushed_seq, mode=opts.wal_recovery)

    db = DB.__new__(DB)
    db.path = path
    db.wal_dir = wal_dir
    db._opts = opts
    db._fs = fs
    db._lock = lock
    db._vs = vs
    db._sync = opts.sync
    db._memtable_size = opts.memtable_size
    db._room_check_at = opts.wal_segment_size  # live-segment size at which a write calls _make_room_locked
    db._room_at = 0  # live-memtable size at which put/delete call _make_room_locked (DB._wal_switch_due_locked)
    # The lock order is _install_mu, then _write_mu (ingest, checkpoints,
    # installs). Inline, a writer that switches the memtable runs the flush
    # and its install while it holds _write_mu, against that order: the two
    # are one reentrant lock there, or a writer and an ingest (or a
    # checkpoint) on another thread would deadlock
    # (tests/test_inline_lock_order.py).
    install_mu = threading.RLock()
    db._install_mu = install_mu
    db._write_mu = install_mu if opts.background == "inline" else threading.Lock()
    db._write_cv = threading.Condition(db._write_mu)
    db._snap_mu = threading.Lock()
    db._pace_mu = threading.Lock()
    db._snapshots = {}
    db._info_log = InfoLog.from_options(fs, path, opts)  # entries are held until the open succeeds
    db._closed = False
    db._fenced = None
    db._blocked = None
    db._keys_written = 0
    db._user_bytes = 0
    db._stall_seconds = 0.0
    db._stalls = 0
    db._stall_causes = {"memtables": [0, 0.0], "l0_stop": [0, 0.0], "l0_slowdown": [0, 0.0]}  # [count, seconds]
    db._l0_delay = False
    db._cache = BlockCache(opts.block_cache_size, admission=True) if opts.block_cache_size > 0 else None
    db.recovery_report = {"replayed_records": len(result.records), "dropped": list(result.dropped),
                          "fence_found": fenced_before}

    # Replay the WAL into a memtable (it may exceed memtable_size; the first
    # write after open then switches it out and flushes it). Each record as
    # the write path added its batch (MemTable.add_batch; nothing else
    # can reach this memtable yet: no write lock needed): a batch of several
    # puts is kept pending, indexed at the first read or in the flush
    # worker; other records are indexed at once, one op at a time (nbytes
    # not given). A WAL of 1M puts in 1000-put batches (tools/replay_lab.py,
    # medians of 7): open 1.51 -> 0.70 s, and the first read then indexes
    # the batches (0.47 s); callgrind, 100k puts: 8,790 -> 3,400
    # instructions a put for the open, 5,520 with the first get.
    mem = MemTable(db._write_mu)
    last = vs.flushed_seq
    add_batch = mem.add_batch
    for r in result.records:
        keys, values, kinds, nbytes = decode_columns(r.body, r.count, r.path, r.offset)
        add_batch(r.seq, keys, values, kinds, nbytes if kinds is None else None)
        last = r.seq + r.count - 1
    last = max(last, vs.last_seq)
    db._last_seq = last

    with io_site("recovery"):
        # Cut a torn tail (and make the cut durable, so a second crash cannot
        # bring the torn bytes back); set aside segments a point-in-time
        # recovery dropped (never replayed, never reused).
        if result.truncate is not None:
            tpath, toff = result.truncate
            fs.truncate(tpath, toff)
            f = fs.open_append(tpath)
            try:
                f.fsync()
            finally:
                f.close()
        for seg_path in result.dropped_segments:
            fs.rename(seg_path, _set_aside_name(fs, seg_path))
        if result.truncate is not None or result.dropped_segments:
            fs.sync_dir(wal_dir)
        if exists:
            # The manifest was read through the page cache: an edit whose
            # sync failed before a restart can be there and not on disk.
            # Write the recovered state into a new manifest (fsynced, CURRENT
            # switched durably) before anything is deleted on its word: WAL
            # segments, tables, older manifests (tests/test_fault_sweep.py).
            vs.log_and_apply(VersionEdit())
        _remove_garbage(fs, path, wal_dir, vs)

    readers = {}
    for level in vs.current.levels:
        for f in level:
            readers[f.number] = open_reader(db, f.number)
    db._bg = Background(db, vs.flushed_seq, readers)

    wal = WalWriter(
        fs,
        wal_dir,
        segment_size=opts.wal_segment_size,
        sync_interval=opts.sync_interval,
        commit_linger_us=opts.commit_linger_us,
        on_fence=db._on_fence,
        preallocate=opts.wal_preallocate_bytes,
        prepare_inline=opts.background == "inline",
        map_writes=opts.wal_mmap_writes,
    )
    wal.written_seq = last
    wal.durable_seq = last  # replayed segments are synced below, before the new segment starts
    db._wal = wal
    set_aside = set(result.dropped_segments)  # scanned, maybe with intact records, but not replayed
    replayed_paths = [seg.path for seg in result.segments if seg.records and seg.path not in set_aside and
                      seg.records[-1].seq + seg.records[-1].count - 1 > vs.flushed_seq]
    new_path = filenames.join(wal_dir, filenames.wal_name(last + 1))
    replayed_paths = [p for p in replayed_paths if p != new_path]
    with io_site("recovery"):
        # Every other segment holds only commits already in tables: it is
        # retired as after a flush (archived under retention, else
        # unlinked), and the archive is pruned. Replay never reads the
        # archive, and nothing but its retention rule deletes from it.
        keep = set(replayed_paths)
        obsolete = [filenames.join(wal_dir, name) for name in fs.listdir(wal_dir)
                    if filenames.parse_wal(name) is not None]
        db._bg.retire_at_open([p for p in obsolete if p not in keep and p != new_path])
        # A killed process loses nothing, but what it wrote below Sync.FULL
        # may be in the page cache only (and a segment's name not in its
        # directory on disk). Sync the replayed segments and their names
        # before a newer segment can reach the disk: otherwise a power cut
        # could tear or lose them behind later, acknowledged commits (the
        # writer's REQUIRES in docs/format/wal.md, "Edge cases").
        for p in replayed_paths:
            f = fs.open_append(p)
            try:
                f.datasync()
            finally:
                f.close()
        if replayed_paths:
            fs.sync_dir(wal_dir)
    wal.prepare_spare()  # so that the first segment is preallocated too (before any commit, off the lock)
    with db._write_mu:
        seg = wal.start_segment_locked(last + 1)
    db._bg._live_wal.update(replayed_paths)
    db._mem = mem
    # Write counters: the replayed entries were not written by this open
    # (DB._retire_counts_locked counts the memtables' entries).
    db._keys_written = -mem.count
    db._user_bytes = -(mem.size - ENTRY_OVERHEAD * mem.count)
    db._mem_wal_paths = replayed_paths + [seg]
    db._mem_start_seq = vs.flushed_seq
    db._sv = SuperVersion(mem, (), vs.current, readers)
    if opts.sync >= Sync.FULL:
        wal.sync_to(last)  # the new segment's directory entry
    with io_site("recovery"):
        if fenced_before:
            fs.remove(filenames.join(path, filenames.FENCE))
            fs.sync_dir(path)
    db._info_log.opened(
        path=path, created=not exists, options=opts, manifest=filenames.manifest_name(vs.manifest_number),
        tables=len(vs.current.all_numbers()), last_seq=last, flushed_seq=vs.flushed_seq,
        torn_manifest_tail=vs.recovered_torn_tail, replayed_records=len(result.records),
        replayed_segments=sum(1 for s in result.segments if s.records),
        first_replayed=result.records[0].seq if result.records else None, dropped=list(result.dropped),
        truncated=result.truncate, set_aside=list(result.dropped_segments), fence_found=fenced_before,
        memtable_entries=mem.count,
    )
    db._info_log.start()
    db._bg.start()
    return db


def _set_aside_name(fs: Any, seg_path: str) -> str:
    """A free name for a segment that recovery sets aside: ``S.wal.dropped``,
    or ``S.N.wal.dropped`` (N = 1, 2, ...) when an earlier lossy recovery set
    aside a segment of the same name (open then starts a new segment under
    the old name). Never an existing file: a set-aside segment is the only
    copy of what was dropped."""
    path = seg_path + ".dropped"
    n = 0
    while fs.exists(path):
        n += 1
        path = f"{seg_path.removesuffix('.wal')}.{n}.wal.dropped"
    return path


def _remove_garbage(fs: Any, path: str, wal_dir: str, vs: VersionSet) -> None:
    """Remove temp files, tables no version names and obsolete manifests."""
    live = vs.current.all_numbers()
    for name in fs.listdir(path):
        num = filenames.parse_sst(name)
        if name.endswith(".tmp") or (num is not None and num not in live):
            fs.remove(filenames.join(path, name))
    for name in vs.obsolete_manifests():  # listed from the directory, which the lock keeps to us
        fs.remove(filenames.join(path, name))
    spare = filenames.join(wal_dir, filenames.WAL_SPARE)
    if fs.exists(spare):  # may hold records of a segment whose rename a power cut undid: none acknowledged
        fs.remove(spare)
    fs.sync_dir(path)
    if wal_dir != path:
        fs.sync_dir(wal_dir)
