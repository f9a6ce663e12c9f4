"""Options of a database and of one write. Every tunable is documented here,
where it is defined: meaning, unit, default and trade-off.

``Options.validate()`` rejects nonsense with a ``ValueError`` naming the
option; ``Options.from_kwargs`` rejects unknown names the same way.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from lsm.base import compression, infolog
from lsm.base.fs import DEFAULT_FS, FileSystem


class Sync(enum.IntEnum):
    """How hard a commit leans on the disk before it returns. Ordered: a
    higher level promises everything a lower one does. Stored nowhere on
    disk (a per-write choice), but the numbers are public API."""

    OFF = 0
    """write(2) to the WAL, no fsync. A killed process loses nothing; a power
    failure may lose recent commits."""
    NORMAL = 1
    """write(2); a background syncer fdatasyncs every ``sync_interval`` and
    at flush/close. A power failure loses at most about that window."""
    BARRIER = 2
    """Ordered: commit N's sync completes before commit N+1's bytes reach the
    file. A power failure keeps a prefix of the commits."""
    FULL = 3
    """fdatasync covering this commit before it returns, shared with
    concurrent committers (group commit). Nothing acknowledged is lost."""
    EXTRA = 4
    """FULL plus directory fsyncs when files are created, renamed or
    deleted."""

    @classmethod
    def coerce(cls, value: Any, name: str = "sync") -> Sync:
        """Accept a Sync, its int value or its name (any case)."""
        if isinstance(value, Sync):
            return value
        if isinstance(value, str):
            try:
                return cls[value.upper()]
            except KeyError:
                pass
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        raise ValueError(
            f"{name}: expected one of {', '.join(s.name for s in cls)}, got {value!r}"
        )


WAL_RECOVERY_MODES = ("tolerate_tail", "absolute", "point_in_time")
BACKGROUND_MODES = ("process", "thread", "inline")

KiB = 1024
MiB = 1024 * 1024


@dataclass
class Options:
    """Every tunable of a database. Pass to ``lsm.open(path, options=...)`` or
    as keyword arguments to ``lsm.open``."""

    # ---------------------------------------------------------------- behaviour
    sync: Sync = Sync.FULL
    """Default durability level of a commit (see :class:`Sync`); per-write
    ``sync=`` overrides it and ``db.set_sync`` changes it at runtime."""

    wal_dir: str | None = None
    """Directory of the WAL segments; None puts them in the data directory.
    Point it at a fast disk: FULL commits wait on its fdatasync."""

    create_if_missing: bool = True
    """Create the database when the directory holds none."""

    error_if_exists: bool = False
    """Refuse to open a directory that already holds a database."""

    wal_recovery: str = "tolerate_tail"
    """What replay does with damage in the WAL: ``tolerate_tail`` discards a
    torn tail of the newest segment and fails on anything else;
    ``absolute`` fails on any damage; ``point_in_time`` keeps the consistent
    prefix before the first damage."""

    paranoid_checks: bool = True
    """Verify block checksums on every read (cheap: crc32c in C)."""

    wal_retention_segments: int = 0
    """Archived WAL segments to keep, at least (the newest, by first
    sequence number). With either retention option non-zero, a sealed
    segment whose commits are all in SSTables is not deleted after its
    flush but moved to ``<wal_dir>/archive/`` (for audit and point-in-time
    restore; layout in docs/format/wal.md). 0: the count keeps nothing.
    Pruning (after each archive and at open) deletes an archived segment
    only when no retention option keeps it. With both options 0 segments
    are deleted after flush and an existing archive is left alone. Cost:
    the archive's disk space (about one memtable's worth of WAL per
    flush)."""

    wal_retention_seconds: float = 0.0
    """Seconds an archived WAL segment is kept, at least, counted from the
    moment it was archived (recorded in its archive name, so copying or
    touching the file does not change it; a clock step backwards keeps
    segments longer). 0: age keeps nothing. Combined with
    ``wal_retention_segments`` a segment is kept when either keeps it. Age
    is checked when pruning runs (after each archive and at open), so an
    idle database deletes expired segments only at its next flush or
    open."""

    info_log: bool = True
    """Keep a human-readable event log, ``LOG`` in the database directory,
    as leveldb and RocksDB do: each open (options, what recovery replayed,
    cut or dropped, a fence marker found), flush and compaction (inputs,
    outputs, bytes, seconds), write stall (cause, seconds) and fence (the
    error). For people, not for recovery: never synced, and an error
    writing it is counted in ``stats()["info_log_errors"]`` and otherwise
    ignored (it never fails the database). Cost: a few hundred bytes per
    flush or compaction, one write(2) each. False: no ``LOG`` is written."""

    info_log_level: str = "info"
    """Least severity written to ``LOG``: ``debug``, ``info`` (default),
    ``warning`` (only what recovery dropped, stalls, fences and failures)
    or ``error`` (fences and failures)."""

    info_log_max_size: int = 1 * MiB
    """Bytes at which ``LOG`` is renamed to ``LOG.old`` (replacing it) and
    a new ``LOG`` started, so at most about twice this is kept."""

    # -------------------------------------------------------------- performance
    memtable_size: int = 8 * MiB
    """Bytes of keys+values (plus 16 bytes per entry) a memtable takes before
    it becomes immutable and is flushed. Larger: fewer, larger level-0
    files and less write amplification, more memory and longer recovery.
    Default measured (docs/benchmarks.md, "Compaction and write stalls"):
    1M random puts then 1M overwrites, 2-core machine, alternating runs,
    4 MiB -> 8 MiB: half the flushes, compactions per workload 3 and 8 ->
    1 and 1; settled SSTable write amp 1.8-2.7 -> 1.2-2.4; seconds
    writers spent paced per workload 12-44 -> 1-24; overwrite 13-17k ->
    16-26k puts/s; peak RSS +14-20 MB. Up to ``max_immutable_memtables + 1`` memtables
    are in memory at once (Python objects: about 2.5x their charged
    bytes)."""

    max_immutable_memtables: int = 2
    """Immutable memtables waiting to be flushed before writers stop. With
    every slot taken, writes are paced at the rate flushes drain (see
    ``delayed_write_rate``), so the stop is rarely reached."""

    max_background_flushes: int = 2
    """Flushes run at once with ``background="process"`` (each in a worker
    process of its own; tables installed in commit order whatever order
    they finish in); the other modes run one. A fill whose writers outrun
    one flush worker (batches of puts) goes at the pace of two."""

    wal_segment_size: int = 64 * MiB
    """A WAL segment is sealed when it reaches this many bytes (or when its
    memtable becomes immutable)."""

    wal_preallocate: bool = True
    """Prepare each WAL segment ahead of need: a zero-filled, fdatasync'd
    file of about the WAL bytes one memtable produces (``1.25 *
    memtable_size`` rounded up to 4 KiB, at most ``wal_segment_size``;
    ``wal_preallocate_bytes``), written by a background thread once the
    live segment is half full or about to fill (lsm/wal/spare.py, "When";
    by the rotation itself with ``background="inline"``; at open for the
    first segment) and renamed into place at rotation, then written in place. A
    commit's fdatasync then writes data blocks only, no file-size metadata.
    Measured on the dev box (ext4 on a shared virtual disk, load average
    ~15 from other runs, so wide ranges), 3000 single-thread FULL puts of
    100-byte values, alternating on and off three times each: p50 200-217
    us on vs 238-318 us off, 975-1306 vs 665-960 commits/s (about 1.35x; the
    disk's own ratio, ``limits.prealloc_fdatasync`` vs
    ``limits.append_fdatasync``, is ~1.4x on a quiet run: issue 7). Costs
    one extra write of those zeros per memtable (bandwidth, not commit
    latency), and the spare file's space. Past the preallocated size a
    segment just grows. False: segments grow by appending."""

    wal_mmap_writes: bool = True
    """Write a preallocated WAL segment through a shared memory map of it
    (``FileSystem.open_overwrite_mapped``) instead of one write(2) per
    record; past the preallocated size, and without ``wal_preallocate``,
    records are written with write(2). A store into the map is in the page
    cache when it returns, as a write(2) is (an OFF commit survives a kill
    -9), and the fdatasync of a sync makes it durable. It costs ~0.2 us
    instead of ~0.95 us per record and, unlike write(2), does not release
    the GIL: beside threads busy in Python, a write(2) waited up to the
    interpreter's switch interval to take it back (readwhilewriting's
    writer: docs/benchmarks.md, "Mapped WAL segment"). The trade-off, as
    for ``mmap_reads``: a disk read error on the segment's page, or a
    copy-on-write filesystem (btrfs, ZFS) out of space, is a SIGBUS (the
    process dies; recovery then is that of a kill -9, and no commit that
    returned from a sync is lost) instead of a ``NeedsRecoveryError``; set
    False on such filesystems or hardware you do not trust. Layers that
    hook writes (CrashFS, fault injectors) always write through their
    hooks."""

    max_total_wal_size: int = 0
    """Bytes of live WAL (the segments recovery still needs: those of the
    live and the immutable memtables) past which the next write switches
    the live memtable so that its flush releases them. It is checked only
    when no older segment is already waiting for its flush (that flush
    releases bytes first; forcing more switches would only make tiny
    tables), and never makes a writer wait. Smaller: shorter recovery and
    less WAL on disk when writes overwrite few keys or carry small values;
    more, smaller flushes. 0 (default): automatic, ``4 * memtable_size *
    (max_immutable_memtables + 1)``: a WAL record costs at most about 2.3
    times what it charges its memtable, so memtables no larger than
    ``memtable_size`` never reach the automatic limit: it is a backstop.
    Otherwise at least 4096."""

    sync_interval: float = 0.1
    """Seconds between background fdatasyncs at ``Sync.NORMAL``."""

    commit_linger_us: int = 0
    """Microseconds a group-commit leader waits for more committers before
    it syncs. 0 (default): adaptive: a leader waits only while several
    threads commit (the last sync covered n > 1 commits), until n commits
    are written or about one sync's duration (at most 2 ms) has passed; a
    lone committer never waits. Measured with 8 FULL threads: 3.8 -> 7.7
    commits per sync (docs/durability.md, "Group commit"). A fixed value
    trades each commit's latency for fewer syncs."""

    block_size: int = 4 * KiB
    """Target uncompressed size of an SSTable data block, in bytes. Smaller:
    faster point reads from cold blocks; larger: better compression and
    scans."""

    block_cache_size: int = 32 * MiB
    """Bytes of decoded blocks kept in memory: an LRU that, once full, admits
    a block read from disk on its second recent miss (a doorkeeper of 8
    bytes per 8 KiB of this size; lsm/sstable/cache.py): under reads spread
    evenly over more blocks than fit, the hit rate is the same and most
    evictions are saved. ``stats()["block_cache_refused"]`` counts the
    blocks left out."""

    mmap_reads: bool = True
    """Read SSTable data blocks through a read-only memory map of each table
    (``FileSystem.open_read_mapped``) instead of one ``pread`` per block: a
    block missing the cache costs ~0.3 us to read instead of ~2.2 us
    (docs/benchmarks.md, "Point reads"). The trade-off: a disk error while
    reading a mapped page is a SIGBUS (the process dies) instead of an
    ``OSError``; set False on hardware you do not trust. Layers that hook
    reads (CrashFS, fault injectors) always read through their hooks."""

    bloom_bits_per_key: int = 13
    """Bloom filter bits per key (13: about 0.85% false positives, 10: about
    1.7%, with the blocked filter tables write, docs/format/sstable.md M10).
    0 disables the filter."""

    compression: str = "lz4"
    """Data block compression: ``lz4``, ``zstd`` or ``none`` (each block
    says which it uses: tables of any of them open whatever this says).
    ``lz4``: a cold block costs a point read ~1.6 us to decompress against
    zstd's ~4.2 us, for tables ~10% larger (docs/benchmarks.md, "Point
    reads"); ``zstd``: smaller tables (with ``compression_level``);
    ``none``: ~1.95x larger tables, and with ``mmap_reads`` a point read
    searches a block where it lies, with no decompression and no block
    cache: 37.6k instructions per present get against 44.5k through the
    cache (docs/benchmarks.md, "Session 12 levers"). Blocks that LZ4 cannot
    shrink by an eighth are stored raw and read so too."""

    compression_level: int = 1
    """zstd level (1 is fast and already halves typical values)."""

    min_level_to_compress: int = 2
    """The first level whose tables are compressed with ``compression``;
    flushes (level 0) and compactions into the levels above it write raw
    blocks (db_bench's ``--min_level_to_compress``; RocksDB's
    ``compression_per_level`` with ``none`` first). 0 compresses every table.
    With the default 2, levels 0 and 1, a small part of the data rewritten
    most often, skip LZ4 in flushes and level-0 compactions, and a point
    read that finds its key there searches the block where it lies (see
    ``none`` above); the bulk of the data, below, stays compressed, and so
    does everything after ``compact_range``. A file does not cross this
    level by a trivial move: it is rewritten. The cost: a
    database smaller than level 1's target (``max_bytes_for_level_base``) is
    stored uncompressed. Measured in docs/benchmarks.md ("Session 15 levers")."""

    target_file_size: int = 4 * MiB
    """Target size of an SSTable written by compaction, in bytes. Barely
    matters for write amplification (tools/compaction_sim.py, random fill,
    settled SSTable write amp at 1M / 10M keys: 2 MiB 2.42 / 6.95, 4 MiB
    2.38 / 6.79, 8 MiB 2.27 / 7.03); smaller files make finer-grained
    level-n compactions, larger ones fewer files to open."""

    l0_compaction_trigger: int = 4
    """Level-0 file count that triggers a compaction into level 1. Higher
    batches more level-0 bytes per rewrite of level 1 (tools/compaction_sim.py:
    8 gives settled write amp 1.47 instead of 2.38 at 1M keys) but every
    point read probes every level-0 file, so 4 is kept for reads; at 1M
    keys 4 already meets the write-amp target (<= 5) with room."""

    l0_slowdown_trigger: int = 12
    """Level-0 file count at which writes are paced: at
    ``l0_slowdown_trigger + k`` files writers go at most
    ``delayed_write_rate / 2**k`` bytes per second."""

    delayed_write_rate: int = 8 * MiB
    """Bytes per second (memtable bytes: key + value + 16 per entry) writers
    may go at when level 0 reaches ``l0_slowdown_trigger``; each level-0 file
    more halves it. Writes are also paced when every immutable memtable
    slot is taken: at the rate flushes drain (one memtable per recent flush
    duration; this option before the first flush is timed), so that a
    writer seldom meets a full memtable and a hard stall
    (``Background.delayed_write_rate`` in lsm/background/). 8 MiB/s is
    about the rate of one unsynced Python writer, so the first file past the trigger barely slows it and
    the eighth (``l0_stop_trigger`` by default) brings it to 32 KiB/s.
    Replaced a fixed 1 ms sleep per write past the trigger, a cliff (to
    under 1,000 puts/s) that made up 38-50 s of the 50-60 s of stalls of
    1M overwrites (docs/benchmarks.md, "Compaction and write stalls")."""

    l0_stop_trigger: int = 20
    """Level-0 file count at which writes wait for compaction."""

    max_bytes_for_level_base: int = 32 * MiB
    """Target size of level 1 in bytes; level N+1 is ``level_multiplier``
    times level N. About the level-0 batch a compaction takes (4 files of
    a compressed 8 MiB memtable, ~20 MiB): a level 1 much larger than the
    batch makes each level-0 compaction rewrite more of it per byte moved
    down. tools/compaction_sim.py, random fill, settled write amp at 1M /
    10M keys: 16 MiB 2.38 / 6.83, 32 MiB 2.38 / 6.79 (4 MiB memtables)."""

    level_multiplier: int = 10
    """Size ratio between adjacent levels. tools/compaction_sim.py,
    random fill, settled write amp at 1M / 10M keys: 8: 2.38 / 6.48,
    10: 2.38 / 6.79; 10 keeps fewer levels for reads."""

    num_levels: int = 7
    """Number of levels (0 .. num_levels-1)."""

    background: str = "process"
    """Where flush and compaction run: ``process`` (a worker process, so the
    writers keep the GIL: see docs/architecture.md for the measurement),
    ``thread`` (a thread of this process; needed when ``fs`` is a custom
    in-memory layer: ``lsm.open`` refuses ``process`` with one), or
    ``inline`` (in the calling thread, deterministic; for tests)."""

    fs: FileSystem = field(default=DEFAULT_FS, repr=False, compare=False)
    """The filesystem layer (tests pass a fault-injecting or crash-simulating
    one)."""

    def validate(self) -> Options:
        """Check every option; return self. Raises ValueError naming the
        option, TypeError for a wrong type."""
        self.sync = Sync.coerce(self.sync)
        _int_range(self, "memtable_size", 1024, 1 << 40)
        _int_range(self, "max_immutable_memtables", 1, 64)
        _int_range(self, "max_background_flushes", 1, 16)
        _int_range(self, "wal_segment_size", 4096, 1 << 40)
        _int_range(self, "commit_linger_us", 0, 1_000_000)
        _int_range(self, "block_size", 1, 1 << 30)
        _int_range(self, "block_cache_size", 0, 1 << 44)
        _int_range(self, "bloom_bits_per_key", 0, 64)
        _int_range(self, "compression_level", -7, 22)
        _int_range(self, "min_level_to_compress", 0, 20)
        _int_range(self, "target_file_size", 1, 1 << 40)
        _int_range(self, "l0_compaction_trigger", 1, 1000)
        _int_range(self, "l0_slowdown_trigger", 1, 10000)
        _int_range(self, "l0_stop_trigger", 1, 10000)
        _int_range(self, "delayed_write_rate", 1024, 1 << 40)
        _int_range(self, "max_bytes_for_level_base", 1, 1 << 50)
        _int_range(self, "level_multiplier", 2, 1000)
        _int_range(self, "num_levels", 2, 20)
        if isinstance(self.sync_interval, bool) or not isinstance(self.sync_interval, (int, float)):
            raise TypeError(f"sync_interval: expected seconds as a number, got {type(self.sync_interval).__name__}")
        if not (0.001 <= self.sync_interval <= 3600):
            raise ValueError(f"sync_interval: must be between 0.001 and 3600 seconds, got {self.sync_interval!r}")
        _int_range(self, "wal_retention_segments", 0, 1 << 31)
        _int_range(self, "max_total_wal_size", 0, 1 << 50)
        if 0 < self.max_total_wal_size < 4096:
            raise ValueError(
                f"max_total_wal_size: must be 0 (automatic) or at least 4096 bytes, got {self.max_total_wal_size}"
            )
        v = self.wal_retention_seconds
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise TypeError(f"wal_retention_seconds: expected seconds as a number, got {type(v).__name__}")
        if not v >= 0:  # also refuses NaN
            raise ValueError(f"wal_retention_seconds: must be >= 0 seconds, got {v!r}")
        if self.l0_slowdown_trigger < self.l0_compaction_trigger:
            raise ValueError("l0_slowdown_trigger: must be >= l0_compaction_trigger")
        if self.l0_stop_trigger < self.l0_slowdown_trigger:
            raise ValueError("l0_stop_trigger: must be >= l0_slowdown_trigger")
        if self.compression not in compression.NAMES:
            raise ValueError(f"compression: expected one of {sorted(compression.NAMES)}, got {self.compression!r}")
        if self.wal_recovery not in WAL_RECOVERY_MODES:
            raise ValueError(f"wal_recovery: expected one of {WAL_RECOVERY_MODES}, got {self.wal_recovery!r}")
        if self.background not in BACKGROUND_MODES:
            raise ValueError(f"background: expected one of {BACKGROUND_MODES}, got {self.background!r}")
        if self.wal_dir is not None and not isinstance(self.wal_dir, str):
            import os

            if isinstance(self.wal_dir, os.PathLike):
                self.wal_dir = os.fspath(self.wal_dir)
            else:
                raise TypeError(f"wal_dir: expected a path, got {type(self.wal_dir).__name__}")
        if isinstance(self.info_log_level, str):
            self.info_log_level = self.info_log_level.lower()
        if self.info_log_level not in infolog.LEVELS:
            raise ValueError(f"info_log_level: expected one of {tuple(infolog.LEVELS)}, got {self.info_log_level!r}")
        _int_range(self, "info_log_max_size", 4096, 1 << 40)
        for name in ("create_if_missing", "error_if_exists", "paranoid_checks", "info_log", "wal_preallocate", "mmap_reads",
                     "wal_mmap_writes"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected bool, got {type(getattr(self, name)).__name__}")
        if not isinstance(self.fs, FileSystem):
            raise TypeError(f"fs: expected an lsm FileSystem, got {type(self.fs).__name__}")
        return self

    def validate_open(self) -> Options:
        """Check what only opening a database needs (``lsm.open``; other
        users of Options, such as ``lsm.restore``, run no background work);
        return self. REQUIRES: :meth:`validate` passed. Raises ValueError
        naming the options."""
        if self.background == "process" and self.fs.in_memory:
            raise ValueError(
                f"background='process' cannot be used with fs={type(self.fs).__name__}(), an in-memory "
                "filesystem: the worker process would not see its files (the first flush would fail); "
                "pass background='thread' or 'inline'"
            )
        return self

    @property
    def compression_id(self) -> int:
        return compression.NAMES[self.compression]

    @property
    def wal_archive(self) -> bool:
        """True when flushed WAL segments are archived, not deleted."""
        return bool(self.wal_retention_segments or self.wal_retention_seconds)

    @property
    def wal_preallocate_bytes(self) -> int:
        """Size of a preallocated WAL segment (0: ``wal_preallocate`` off)."""
        if not self.wal_preallocate:
            return 0
        n = (self.memtable_size * 5 + 3) // 4
        return min(self.wal_segment_size, (n + 4095) // 4096 * 4096)

    @property
    def total_wal_limit(self) -> int:
        """``max_total_wal_size`` with 0 resolved to the automatic limit."""
        if self.max_total_wal_size:
            return self.max_total_wal_size
        return 4 * self.memtable_size * (self.max_immutable_memtables + 1)

    def max_bytes_for_level(self, level: int) -> int:
        """Target size of ``level`` (>= 1) in bytes."""
        return self.max_bytes_for_level_base * self.level_multiplier ** max(0, level - 1)

    @classmethod
    def from_kwargs(cls, base: Options | None = None, **kwargs: Any) -> Options:
        """A copy of ``base`` (or the defaults) with ``kwargs`` applied;
        unknown names raise ValueError."""
        names = {f.name for f in dataclasses.fields(cls)}
        for k in kwargs:
            if k not in names:
                raise ValueError(f"unknown option {k!r}")
        opts = dataclasses.replace(base, **kwargs) if base is not None else cls(**kwargs)
        return opts.validate()


def _int_range(opts: Options, name: str, lo: int, hi: int) -> None:
    v = getattr(opts, name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}")
    if not (lo <= v <= hi):
        raise ValueError(f"{name}: must be between {lo} and {hi}, got {v}")
