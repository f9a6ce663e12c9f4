"""The DB's instance attributes, declared once: :class:`DBState`, the root
of :class:`lsm.db.DB`'s base classes (DB -> DBRoom -> DBScan -> DBAdmin ->
DBState), so that mypy sees the state that lsm/recovery.py's ``open_db``
sets and that the mixins and helpers (lsm/background/, lsm/ingest/,
lsm/ops/) read and set.

Annotations only: a class-level ``name: Type`` with no value creates no
class attribute (only an entry in ``__annotations__``, a string here), so
an instance's attribute look-ups cost what they cost without it
(tools/put_callgrind.py, tools/read_callgrind.py: unchanged). The two
attributes with a class default, ``_presealed`` and ``_looking``, stay
with the code that sets them (lsm/db_room.py).

Which lock guards what is stated per attribute; the locks and their order
are described in lsm/db.py. "Set at open" means set by ``open_db`` before
the DB is returned and never rebound after (the object it names may have
its own lock).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import threading

    from lsm.background import Background, SuperVersion
    from lsm.base.fs import FileLock, FileSystem
    from lsm.base.infolog import InfoLog
    from lsm.manifest.version_set import VersionSet
    from lsm.memtable import MemTable
    from lsm.options import Options, Sync
    from lsm.sstable.cache import BlockCache
    from lsm.wal.writer import WalWriter


class DBState:
    """The attributes of an open DB (module docstring). Never instantiated
    alone: DB is created by ``open_db`` with ``DB.__new__``."""

    # ------------------------------------------------- set at open, then fixed
    path: str  # the data directory (absolute)
    wal_dir: str  # the WAL directory (absolute; ``path`` unless Options.wal_dir)
    _opts: Options  # the validated options of this open
    _fs: FileSystem  # all file I/O goes through it (Options.fs)
    _lock: FileLock  # the directory lock, released by close
    _vs: VersionSet  # the version set; log_and_apply under _install_mu
    _memtable_size: int  # Options.memtable_size: a live memtable this big is switched
    _cache: BlockCache | None  # the shared block cache (None: block_cache_size 0)
    _info_log: InfoLog  # the LOG file (thread-safe itself)
    _bg: Background  # flushes, compactions, installs, WAL retirement (lsm/background/)
    # The WAL writer: its live segment guarded by _write_mu, its syncs by its own condition.
    _wal: WalWriter
    recovery_report: dict[str, Any]  # what open's WAL replay did (replayed_records, dropped, fence_found)

    # ------------------------------------------------------------------ locks
    _write_mu: threading.Lock | threading.RLock  # the write lock (an RLock with background="inline")
    _write_cv: threading.Condition  # on _write_mu: stalled writers wait; installs, the fence notify
    _install_mu: threading.RLock  # version installs (manifest writes), Background.readers
    _snap_mu: threading.Lock  # _snapshots
    # Write pacing and stall counting (a leaf): _stall_seconds, _stall_causes,
    # Background.delay_next and Background.paced.
    _pace_mu: threading.Lock

    # ------------------------------------------------- the write path's state
    _last_seq: int  # newest committed seq; set under _write_mu, read lock-free (before _sv)
    _mem: MemTable  # the live memtable; rebound under _write_mu (reads use _sv.mem)
    # What reads see (memtables, version, table readers): replaced whole under
    # _write_mu, read lock-free.
    _sv: SuperVersion
    _mem_wal_paths: list[str]  # the segments of _mem's commits; _write_mu (stats copies it unlocked)
    _mem_start_seq: int  # _mem holds the commits after this seq; guarded by _write_mu
    _room_at: int  # put/delete call _make_room_locked once _mem.size reaches it; _write_mu
    _room_check_at: int  # write() calls it once the live segment reaches this size; _write_mu
    _l0_delay: bool  # writers pace themselves (_delay_write); set under _write_mu, read lock-free
    _sync: Sync  # a commit's default sync level; set with no lock (set_sync, bulk_load)

    # --------------------------------------------------------- failure state
    _closed: bool  # close or _simulate_crash ran; set under _write_mu, read lock-free
    _fenced: BaseException | None  # the I/O error that fenced the DB; set by _on_fence (no lock)
    # The error every call now raises: set by _on_fence (no lock), or by close
    # and _simulate_crash (under _write_mu); read lock-free, and again under
    # _write_mu by commits. Never cleared.
    _blocked: BaseException | None

    # ------------------------------------------------------------- snapshots
    _snapshots: dict[int, int]  # live snapshot seq -> snapshots holding it; guarded by _snap_mu

    # ------------------------------------------------------------------ stats
    # Ops (and their key and value bytes) in retired memtables and ingests,
    # less those replayed at open (DBRoom._retire_counts_locked); _write_mu.
    _keys_written: int
    _user_bytes: int
    _stalls: int  # stalls of _make_room_locked; guarded by _write_mu
    # Seconds stalled or paced, and cause -> [count, seconds]: guarded by
    # _pace_mu (_delay_write adds to them without _write_mu).
    _stall_seconds: float
    _stall_causes: dict[str, list[float]]

    if TYPE_CHECKING:
        # Methods of the subclasses that the base classes call (defined in
        # lsm/db.py and lsm/db_room.py; declared for mypy only).
        def _raise_blocked(self) -> None: ...
        def _check_usable(self) -> None: ...
        def _switch_memtable_locked(self) -> None: ...
