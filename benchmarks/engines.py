"""One adapter per engine: the same small surface over lsm and its peers.

Durability is matched per workload, not per engine default:

=========  ===============================  ======================================
level      lsm                              peers
=========  ===============================  ======================================
off        ``Sync.OFF`` (write, no fsync)   rocksdict/plyvel ``sync=False``;
                                            sqlite ``synchronous=OFF``;
                                            lmdb ``MDB_NOSYNC``
normal,    ``Sync.NORMAL`` / ``BARRIER``    rocksdict/plyvel/lmdb: no such mode,
barrier                                     as ``off``; sqlite ``synchronous=NORMAL``
                                            (WAL synced at checkpoints only)
full       ``Sync.FULL`` (fdatasync per     rocksdict/plyvel ``sync=True`` (fsync
           commit, shared by concurrent     or fdatasync per write); sqlite
           committers)                      ``synchronous=FULL``; lmdb
                                            ``env.sync(True)`` after each commit
extra      ``Sync.EXTRA``                   as ``full``; sqlite ``synchronous=EXTRA``
=========  ===============================  ======================================

Every adapter opens its engine with its own defaults except: a bloom filter
of 10 bits per key and a 32 MiB block (page) cache where the engine has
them. lsm's cache default is the same; its filter default is 13 bits per
key since its filter became blocked (all bits of a key in one 64-bit
word), which matches the peers' ~1% false positives at 10 bits (0.83-0.87%,
docs/format/sstable.md M10): the filters are matched by false-positive
rate, not by bits. ``durability(level)`` returns a one-line
description that goes into each result, so a reader sees what was compared.

Adapters are not thread-safe objects; ``thread_handle()`` returns what a
second thread uses (a separate connection for sqlite, the same object for
the engines that are thread-safe).
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
from collections.abc import Callable, Iterator
from itertools import islice

from benchmarks.measure import dir_bytes

MiB = 1 << 20
BLOOM_BITS = 10
CACHE_BYTES = 32 * MiB


class EngineUnavailable(Exception):
    """The engine's package is missing or fails to import."""


class Unsupported(Exception):
    """The engine has no equivalent of this operation."""


def _is_sync(level: str) -> bool:
    return level in ("full", "extra")


class Adapter:
    """Common surface. ``path`` is a directory the adapter owns; ``wal_dir``
    (or None) likewise. Each ``*er`` method returns a callable bound for
    speed, to be called in the timed loop."""

    name = "?"
    version = "?"
    supports_wal_dir = False

    def __init__(self, path: str, wal_dir: str | None, options: dict) -> None:
        self.path = path
        self.wal_dir = wal_dir
        self.options = options
        self.notes: list[str] = []
        os.makedirs(path, exist_ok=True)
        if wal_dir:
            os.makedirs(wal_dir, exist_ok=True)
        self.open()

    # -- lifecycle
    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def reopen(self) -> None:
        self.close()
        self.open()

    def destroy(self) -> None:
        """Close, delete every file, and open an empty database."""
        self.close()
        for d in (self.path, self.wal_dir):
            if d:
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d, exist_ok=True)
        self.open()

    def thread_handle(self) -> Adapter:
        return self

    def release_handle(self, handle: Adapter) -> None:
        pass

    # -- operations
    def putter(self, level: str) -> Callable[[bytes, bytes], object]:
        raise NotImplementedError

    def batch_writer(self, level: str) -> Callable[[list], object]:
        raise NotImplementedError

    def deleter(self, level: str) -> Callable[[bytes], object]:
        raise NotImplementedError

    def getter(self) -> Callable[[bytes], bytes | None]:
        raise NotImplementedError

    def scan(self, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
        raise NotImplementedError

    def seeker(self, count: int) -> Callable[[bytes], int]:
        """A callable that seeks to the first key >= its argument and reads
        up to ``count`` entries; returns how many it read."""
        raise NotImplementedError

    def compact(self) -> None:
        raise Unsupported(f"{self.name} has no full compaction")

    def ingest(self, pairs) -> None:
        raise Unsupported(f"{self.name}: no ingest in this harness")

    # -- figures
    def stats(self) -> dict | None:
        """Engine counters (lsm only), or None."""
        return None

    def disk_bytes(self) -> int:
        return dir_bytes(self.path, self.wal_dir)

    def background_busy(self) -> bool | None:
        """Whether a compaction is running now, or None when the engine
        does not say (benchmarks/bgsample.py)."""
        return None

    def background_pending(self) -> bool | None:
        """Whether flushes or compactions are running or wanted, or None
        when the engine does not say (``--settle``)."""
        return None

    def durability(self, level: str) -> str:
        raise NotImplementedError


# ---------------------------------------------------------------------- lsm


class LsmAdapter(Adapter):
    name = "lsm"
    supports_wal_dir = True

    def open(self) -> None:
        try:
            import lsm
        except Exception as exc:  # any import failure means "not available"
            raise EngineUnavailable(f"import lsm failed: {exc!r}") from exc
        if not callable(getattr(lsm, "open", None)) or not hasattr(lsm, "Sync"):
            raise EngineUnavailable("lsm engine not available yet (lsm.open or lsm.Sync missing)")
        self._lsm = lsm
        self.version = _version("lsm-engine", lsm)
        self.db = lsm.open(self.path, wal_dir=self.wal_dir, sync=lsm.Sync.OFF, **self.options)
        if not hasattr(self, "ingest_supported"):
            self.ingest_supported = callable(getattr(self.db, "ingest", None))

    def close(self) -> None:
        self.db.close()

    def _sync(self, level: str):
        return self._lsm.Sync[level.upper()]

    def putter(self, level):
        # The bare bound method at the level the database was opened with
        # (OFF), as for every peer at its default no-sync level: a wrapper
        # (a partial with a keyword costs ~1,500 instructions per call, a
        # lambda one Python frame) would be timed as the engine's.
        if level == "off":
            return self.db.put
        return functools.partial(self.db.put, sync=self._sync(level))

    def batch_writer(self, level):
        batch, sync = self.db.batch, self._sync(level)

        def write(pairs):
            with batch(sync=sync) as b:
                put = b.put
                for k, v in pairs:
                    put(k, v)

        return write

    def deleter(self, level):
        return functools.partial(self.db.delete, sync=self._sync(level))

    def getter(self):
        return self.db.get

    def scan(self, reverse):
        return iter(self.db.items(reverse=reverse))

    def seeker(self, count):
        items = self.db.items

        def seek(key):
            n = 0
            for _ in islice(items(start=key), count):
                n += 1
            return n

        return seek

    def compact(self):
        self.db.compact_range()

    def ingest(self, pairs):
        if not self.ingest_supported:
            raise Unsupported("lsm: db.ingest does not exist")
        self.db.ingest(pairs)

    def stats(self):
        return self.db.stats()

    def disk_bytes(self):
        stats = self.db.stats()
        if isinstance(stats, dict) and isinstance(stats.get("disk_bytes"), int):
            return stats["disk_bytes"]
        return super().disk_bytes()

    def background_busy(self):
        n = self.db.stats().get("compactions_running")
        return None if n is None else n > 0

    def background_pending(self):
        s = self.db.stats()
        if "compaction_pending" not in s:
            return None
        return bool(s["compaction_pending"] or s.get("flushes_running") or s.get("immutable_memtables"))

    def durability(self, level):
        return f"lsm Sync.{level.upper()}"


# ---------------------------------------------------------------- rocksdict


class RocksdictAdapter(Adapter):
    name = "rocksdict"
    supports_wal_dir = True

    def open(self) -> None:
        try:
            import rocksdict
        except Exception as exc:
            raise EngineUnavailable(f"import rocksdict failed: {exc!r}") from exc
        self._r = rocksdict
        self.version = _version("rocksdict", rocksdict)
        opts = rocksdict.Options(raw_mode=True)
        opts.create_if_missing(True)
        table = rocksdict.BlockBasedOptions()
        table.set_bloom_filter(BLOOM_BITS, False)
        table.set_block_cache(rocksdict.Cache(CACHE_BYTES))
        opts.set_block_based_table_factory(table)
        if self.wal_dir:
            opts.set_wal_dir(self.wal_dir)
        self.db = rocksdict.Rdict(self.path, opts)

    def close(self) -> None:
        self.db.close()

    def background_pending(self):
        # RocksDB's own signals: a compaction its picker wants (a level over
        # its score), or a flush or compaction under way.
        p = getattr(self.db, "property_int_value", None)
        if p is None or p("rocksdb.compaction-pending") is None:
            return None  # an older rocksdict or RocksDB without the properties
        return bool(
            p("rocksdb.compaction-pending")
            or p("rocksdb.num-running-compactions")
            or p("rocksdb.num-running-flushes")
            or p("rocksdb.mem-table-flush-pending")
        )

    def _wo(self, level):
        wo = self._r.WriteOptions()
        wo.sync = _is_sync(level)
        return wo

    def putter(self, level):
        if not _is_sync(level):
            return self.db.put  # default WriteOptions: sync=False (see LsmAdapter.putter)
        put, wo = self.db.put, self._wo(level)
        return lambda k, v: put(k, v, wo)

    def batch_writer(self, level):
        r, write, wo = self._r, self.db.write, self._wo(level)

        def write_batch(pairs):
            b = r.WriteBatch(raw_mode=True)
            put = b.put
            for k, v in pairs:
                put(k, v)
            write(b, wo)

        return write_batch

    def deleter(self, level):
        delete, wo = self.db.delete, self._wo(level)
        return lambda k: delete(k, wo)

    def getter(self):
        return self.db.get

    def scan(self, reverse):
        return iter(self.db.items(backwards=reverse))

    def seeker(self, count):
        new_iter = self.db.iter

        def seek(key):
            it = new_iter()
            it.seek(key)
            n = 0
            while n < count and it.valid():
                it.key()
                it.value()
                it.next()
                n += 1
            return n

        return seek

    def compact(self):
        self.db.compact_range(None, None)

    ingest_supported = True

    def ingest(self, pairs):
        """SstFileWriter + ingest_external_file (move_files). RocksDB has no
        external sort: the pairs are sorted in memory first (timed)."""
        r = self._r
        path = self.path.rstrip(os.sep) + "-ingest.sst"
        w = r.SstFileWriter(options=r.Options(raw_mode=True))
        w.open(path)
        for k, v in sorted(pairs):
            w[k] = v
        w.finish()
        opts = r.IngestExternalFileOptions()
        opts.set_move_files(True)
        try:
            self.db.ingest_external_file([path], opts)
        finally:
            if os.path.exists(path):
                os.remove(path)

    def durability(self, level):
        return f"WriteOptions.sync={_is_sync(level)}"


# ------------------------------------------------------------------- plyvel


class PlyvelAdapter(Adapter):
    name = "plyvel"

    def open(self) -> None:
        try:
            import plyvel
        except Exception as exc:
            raise EngineUnavailable(f"import plyvel failed: {exc!r}") from exc
        self.version = _version("plyvel", plyvel)
        self.db = plyvel.DB(
            self.path, create_if_missing=True, bloom_filter_bits=BLOOM_BITS, lru_cache_size=CACHE_BYTES
        )

    def close(self) -> None:
        self.db.close()

    def background_pending(self):
        # LevelDB has no "pending" property: its own compaction rule
        # (VersionSet::Finalize) applied to "leveldb.stats": level 0 at
        # kL0_CompactionTrigger (4) files, level L >= 1 over 10^L MiB.
        stats = self.db.get_property(b"leveldb.stats")
        if stats is None:
            return None
        for line in stats.decode().splitlines():
            f = line.split()
            if len(f) < 3 or not f[0].isdigit():
                continue
            level, files, mb = int(f[0]), int(f[1]), float(f[2])
            if (level == 0 and files >= 4) or (level >= 1 and mb > 10.0**level):
                return True
        return False

    def putter(self, level):
        if not _is_sync(level):
            return self.db.put  # sync=False is its default (see LsmAdapter.putter)
        return functools.partial(self.db.put, sync=_is_sync(level))

    def batch_writer(self, level):
        write_batch, sync = self.db.write_batch, _is_sync(level)

        def write(pairs):
            wb = write_batch(sync=sync)
            put = wb.put
            for k, v in pairs:
                put(k, v)
            wb.write()

        return write

    def deleter(self, level):
        return functools.partial(self.db.delete, sync=_is_sync(level))

    def getter(self):
        return self.db.get

    def scan(self, reverse):
        return iter(self.db.iterator(reverse=reverse))

    def seeker(self, count):
        iterator = self.db.iterator

        def seek(key):
            it = iterator(start=key)
            n = 0
            for _ in islice(it, count):
                n += 1
            it.close()
            return n

        return seek

    def compact(self):
        self.db.compact_range()

    def durability(self, level):
        return f"sync={_is_sync(level)}"


# ------------------------------------------------------------------ sqlite3


_SQLITE_SYNC = {"off": "OFF", "normal": "NORMAL", "barrier": "NORMAL", "full": "FULL", "extra": "EXTRA"}


class _SqliteConn:
    """One sqlite3 connection with the operations; one per thread."""

    PUT = "INSERT OR REPLACE INTO kv (k, v) VALUES (?, ?)"

    def __init__(self, file: str) -> None:
        import sqlite3

        self.conn = sqlite3.connect(file, isolation_level=None, check_same_thread=False, timeout=600)
        ex = self.conn.execute
        ex("PRAGMA journal_mode=WAL")
        ex(f"PRAGMA cache_size=-{CACHE_BYTES // 1024}")
        ex("CREATE TABLE IF NOT EXISTS kv (k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID")
        self._level = None

    def _set_level(self, level):
        if level != self._level:
            self.conn.execute(f"PRAGMA synchronous={_SQLITE_SYNC[level]}")
            self._level = level

    def close(self):
        self.conn.close()

    def putter(self, level):
        self._set_level(level)
        ex, sql = self.conn.execute, self.PUT
        return lambda k, v: ex(sql, (k, v))

    def batch_writer(self, level):
        self._set_level(level)
        conn, sql = self.conn, self.PUT

        def write(pairs):
            conn.execute("BEGIN")
            conn.executemany(sql, pairs)
            conn.execute("COMMIT")

        return write

    def deleter(self, level):
        self._set_level(level)
        ex = self.conn.execute
        return lambda k: ex("DELETE FROM kv WHERE k = ?", (k,))

    def getter(self):
        ex = self.conn.execute

        def get(k):
            row = ex("SELECT v FROM kv WHERE k = ?", (k,)).fetchone()
            return None if row is None else row[0]

        return get

    def scan(self, reverse):
        order = "DESC" if reverse else "ASC"
        return iter(self.conn.execute(f"SELECT k, v FROM kv ORDER BY k {order}"))

    def seeker(self, count):
        ex = self.conn.execute
        sql = "SELECT k, v FROM kv WHERE k >= ? ORDER BY k LIMIT ?"
        return lambda k: len(ex(sql, (k, count)).fetchall())


class SqliteAdapter(Adapter):
    name = "sqlite3"

    def open(self) -> None:
        import sqlite3

        self.version = f"sqlite {sqlite3.sqlite_version}"
        self._file = os.path.join(self.path, "bench.sqlite")
        self._main = _SqliteConn(self._file)
        self._handles: list[_SqliteConn] = []

    def background_pending(self):
        return False  # no background work: every write is done when it returns

    def close(self) -> None:
        for h in self._handles:
            h.close()
        self._handles.clear()
        self._main.close()

    def thread_handle(self):
        h = _SqliteConn(self._file)
        self._handles.append(h)
        return h

    def release_handle(self, handle):
        handle.close()
        self._handles.remove(handle)

    def putter(self, level):
        return self._main.putter(level)

    def batch_writer(self, level):
        return self._main.batch_writer(level)

    def deleter(self, level):
        return self._main.deleter(level)

    def getter(self):
        return self._main.getter()

    def scan(self, reverse):
        return self._main.scan(reverse)

    def seeker(self, count):
        return self._main.seeker(count)

    def compact(self):
        self._main.conn.execute("VACUUM")
        self._main.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def durability(self, level):
        return f"journal_mode=WAL, synchronous={_SQLITE_SYNC[level]}, one transaction per commit"


# --------------------------------------------------------------------- lmdb


class LmdbAdapter(Adapter):
    name = "lmdb"
    MAP_SIZE = 1 << 38  # 256 GiB of address space; the file grows only as used

    def open(self) -> None:
        try:
            import lmdb
        except Exception as exc:
            raise EngineUnavailable(f"import lmdb failed: {exc!r}") from exc
        self.version = _version("lmdb", lmdb)
        # NOSYNC: commits write(2) but do not fsync; durable levels call
        # env.sync(True) after each commit, which is what a synced commit does.
        self.env = lmdb.open(
            self.path, map_size=self.MAP_SIZE, sync=False, metasync=False, max_readers=256, max_spare_txns=64
        )

    def close(self) -> None:
        self.env.close()

    def putter(self, level):
        begin, sync = self.env.begin, self.env.sync

        if _is_sync(level):

            def put(k, v):
                with begin(write=True) as txn:
                    txn.put(k, v)
                sync(True)
        else:

            def put(k, v):
                with begin(write=True) as txn:
                    txn.put(k, v)

        return put

    def batch_writer(self, level):
        begin, sync, durable = self.env.begin, self.env.sync, _is_sync(level)

        def write(pairs):
            with begin(write=True) as txn:
                txn.cursor().putmulti(pairs)
            if durable:
                sync(True)

        return write

    def deleter(self, level):
        begin, sync, durable = self.env.begin, self.env.sync, _is_sync(level)

        def delete(k):
            with begin(write=True) as txn:
                txn.delete(k)
            if durable:
                sync(True)

        return delete

    def getter(self):
        begin = self.env.begin

        def get(k):
            with begin() as txn:
                return txn.get(k)

        return get

    def scan(self, reverse):
        def gen():
            with self.env.begin() as txn:
                cur = txn.cursor()
                if reverse:
                    cur.last()
                    yield from cur.iterprev()
                else:
                    cur.first()
                    yield from cur.iternext()

        return gen()

    def seeker(self, count):
        begin = self.env.begin

        def seek(key):
            with begin() as txn:
                cur = txn.cursor()
                if not cur.set_range(key):
                    return 0
                n = 0
                for _ in islice(cur.iternext(), count):
                    n += 1
                return n

        return seek

    def durability(self, level):
        if _is_sync(level):
            return "MDB_NOSYNC + env.sync(force) after each commit"
        return "MDB_NOSYNC (no fsync)"


ADAPTERS: dict[str, type[Adapter]] = {
    "lsm": LsmAdapter,
    "rocksdict": RocksdictAdapter,
    "plyvel": PlyvelAdapter,
    "sqlite3": SqliteAdapter,
    "lmdb": LmdbAdapter,
}


def _version(dist: str, module) -> str:
    for attr in ("__version__", "version"):
        v = getattr(module, attr, None)
        if isinstance(v, str):
            return v
        if callable(v):
            with contextlib.suppress(Exception):
                return str(v())
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # noqa: BLE001 - no version to be found
        return "unknown"
