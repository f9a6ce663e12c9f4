"""``DB.stats()``: the figures of a live database, gathered from the DB, its
WAL writer, its background work and its current super version (the
meaning of each figure: docs/architecture.md#stats). Reads only; takes the
write lock once, for the write counters (lsm/db.py, ``_retire_counts_locked``),
and the pacing lock once, for the stall and pacing counters (``_pace_mu``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lsm.memtable import ENTRY_OVERHEAD as _ENTRY_OVERHEAD

if TYPE_CHECKING:
    from lsm.db import DB


def db_stats(db: DB) -> dict[str, Any]:
    """The implementation of ``DB.stats`` (module docstring)."""
    wal = db._wal
    sv = db._sv
    bg = db._bg
    levels = []
    for lv, files in enumerate(sv.version.levels):
        levels.append({
            "level": lv,
            "files": len(files),
            "bytes": sum(f.file_size for f in files),
            "target_bytes": 0 if lv == 0 else db._opts.max_bytes_for_level(lv),
            "read_bytes": bg.level_io[lv][0] if lv < len(bg.level_io) else 0,
            "write_bytes": bg.level_io[lv][1] if lv < len(bg.level_io) else 0,
        })
    cache = db._cache
    bloom_checked = bloom_useful = 0
    for r in list(sv.readers.values()):
        bloom_checked += r.bloom_checked
        bloom_useful += r.bloom_useful
    bloom_checked += bg.retired_bloom[0]
    bloom_useful += bg.retired_bloom[1]
    sst_bytes_written = bg.sst_bytes_written
    wal_files_live, wal_bytes_live, _flushing = bg.wal_live(list(db._mem_wal_paths), wal.segment_path,
                                                            wal.segment_bytes)
    with db._write_mu:  # the live memtable and the retired counts of one moment (_retire_counts_locked)
        mem = db._mem
        n = mem.count
        keys_written = db._keys_written + n
        user = db._user_bytes + mem.size - _ENTRY_OVERHEAD * n
    with db._pace_mu:  # each [count, seconds] pair of one moment (DBRoom._delay_write)
        stall_seconds = db._stall_seconds
        write_pacing = {cause: {"count": c, "seconds": secs} for cause, (c, secs) in bg.paced.items()}
        stalls = {cause: {"count": c, "seconds": secs} for cause, (c, secs) in db._stall_causes.items()}
    live_sst = sum(lv["bytes"] for lv in levels)
    last_level_bytes = next((lv["bytes"] for lv in reversed(levels) if lv["bytes"]), 0)
    unsynced = wal.written_seq > wal.durable_seq
    return {
        "health": db.health,
        "last_seq": db._last_seq,
        "durable_seq": db.durable_seq,
        "keys_written": keys_written,
        "user_bytes_written": user,
        "wal_bytes_written": wal.bytes_written,
        "sst_bytes_written": sst_bytes_written,
        "flush_bytes_written": bg.flush_bytes_written,
        "compaction_bytes_written": bg.compaction_bytes_written,
        "compaction_bytes_read": bg.compaction_bytes_read,
        "write_amplification": (wal.bytes_written + sst_bytes_written) / user if user else 0.0,
        "levels": levels,
        "sst_files": sum(lv["files"] for lv in levels),
        "sst_bytes": live_sst,
        "memtable_bytes": sv.mem.size,
        "memtable_entries": sv.mem.count,
        "immutable_memtables": len(sv.imms),
        "flush_count": bg.flush_count,
        "flush_seconds": bg.flush_seconds,
        "compaction_count": bg.compaction_count,
        "compaction_seconds": bg.compaction_seconds,
        "stall_seconds": stall_seconds,
        "stall_count": db._stalls,
        "stall_max_seconds": bg.stall_max_seconds,
        "write_pacing": write_pacing,
        "background_cpu_seconds": dict(bg.cpu_seconds),
        "flushes_running": bg.flushes_running,
        "compactions_running": bg.compactions_running,
        "compaction_pending": bg.compaction_pending(sv.version),
        "stalls": stalls,
        "space_amplification": live_sst / last_level_bytes if last_level_bytes else 0.0,
        "wal_files_live": wal_files_live,
        "wal_bytes_live": wal_bytes_live,
        "wal_files_archived": bg.wal_files_archived,
        "wal_bytes_archived": bg.wal_bytes_archived,
        "wal_files_deleted": bg.wal_files_deleted,
        "wal_files_pruned": bg.wal_files_pruned,
        "wal_segments_created": wal.segments_created,
        "wal_syncs": wal.syncs,
        "wal_sync_seconds": wal.sync_seconds,
        "wal_sync_latency": wal.sync_latency(),
        "wal_unsynced_bytes": wal.bytes_written - wal.synced_bytes if unsynced else 0,
        "wal_unsynced_age_seconds": time.monotonic() - wal.unsynced_since if unsynced else 0.0,
        "wal_dir_syncs": wal.dir_syncs,
        "wal_groups": wal.groups,
        "wal_synced_commits": wal.synced_commits,
        "wal_linger_seconds": wal.linger_seconds,
        "group_commit_histogram": dict(zip([str(b) for b in (1, 2, 4, 8, 16, 32, 64, 128)] + ["more"],
                                           wal.group_hist)),
        "block_cache_hits": cache.hits if cache is not None else 0,
        "block_cache_misses": cache.misses if cache is not None else 0,
        "block_cache_refused": cache.refused if cache is not None else 0,
        "bloom_checked": bloom_checked,
        "bloom_useful": bloom_useful,
        "snapshots": len(db._snapshots),
        "background_error": repr(bg.error) if bg.error is not None else None,
        "fenced": repr(db._fenced) if db._fenced is not None else None,
        "info_log_errors": db._info_log.errors,
    }
