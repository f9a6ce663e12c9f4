"""The info log: a human-readable ``LOG`` file in the database directory,
like leveldb's and RocksDB's LOG. One timestamped entry per event: what an
open found and did (options, manifest, WAL replay, anything dropped, a
fence marker), flushes, compactions, write stalls, fences, close.

It is for people, not for recovery: nothing reads it back, it is not part
of the on-disk format, and its wording may change between releases.

Contracts:

* Every byte goes through the :class:`~lsm.base.fs.FileSystem` layer
  (``open_append`` / ``create`` / ``rename``), labelled ``io_site("log")`` so
  that fault rules aimed at the WAL, a flush or the manifest never hit it.
  Lines are written with one write(2) each and never synced: a power cut
  may lose the last ones.
* It never fails or fences the database. An error writing it is counted
  (:attr:`InfoLog.errors`, ``stats()["info_log_errors"]``) and swallowed
  (``logging.Handler.handleError``, overridden to stay quiet); the next
  entry tries again, reopening the file.
* Entries logged before :meth:`InfoLog.start` are held in memory. Open
  calls ``start`` only once it has succeeded, so a failed open leaves the
  directory exactly as it found it.
* Rotation: an entry that would take the file past ``max_size`` bytes
  first renames it to ``LOG.old`` (replacing the previous one) and starts
  a new ``LOG``. At most about ``2 * max_size`` bytes are kept.

Each database has its own :class:`logging.Logger`, deliberately not
registered with ``logging.getLogger`` (so it goes away with the database)
and not propagating to the root logger (an application's console handler
would otherwise print every flush: a propagated record skips the
ancestors' levels).

Entry format::

    2026/11/21-21:30:39.123456 [lsm-flush] INFO flush: ...
        continuation lines of a multi-line entry are indented

Thread-safety: logging's handler lock serialises entries; every method may
be called from any thread.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import importlib.metadata
import logging
import os
import threading
import time
from datetime import datetime
from typing import Any, Final

from lsm.base import filenames
from lsm.base.fs import FileSystem, WritableFile, io_site

LOG_OLD: Final = "LOG.old"
"""The rotated info log (the previous ``LOG``)."""

LEVELS: Final = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                 "error": logging.ERROR}
"""Names accepted by the ``info_log_level`` option."""

_MAX_HELD: Final = 1000
"""Entries held before :meth:`InfoLog.start` (later ones are dropped)."""


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        t = datetime.fromtimestamp(record.created).strftime("%Y/%m/%d-%H:%M:%S.%f")
        msg = record.getMessage().replace("\n", "\n    ")
        return f"{t} [{record.threadName}] {record.levelname} {msg}"


class LogFileHandler(logging.Handler):
    """Appends formatted entries to ``path`` through ``fs`` (see the module
    docstring for the contracts)."""

    def __init__(self, fs: FileSystem, path: str, max_size: int):
        super().__init__()
        self.fs = fs
        self.path = path
        self.max_size = max_size
        self.errors = 0
        self._file: WritableFile | None = None
        self._held: list[bytes] | None = []  # None once started
        self._closed = False
        self.setFormatter(_Formatter())

    def start(self) -> None:
        """Open the file and write the entries held so far."""
        self.acquire()
        try:
            held, self._held = self._held, None
            for data in held or ():
                try:
                    with io_site("log"):
                        self._write(data)
                except Exception:  # noqa: BLE001 - the LOG never fails the database
                    self.errors += 1
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + "\n").encode("utf-8", "backslashreplace")
            if self._held is not None:
                if len(self._held) < _MAX_HELD:
                    self._held.append(data)
                return
            if self._closed:
                return
            with io_site("log"):
                self._write(data)
        except Exception:  # noqa: BLE001 - the LOG never fails the database
            self.handleError(record)

    def handleError(self, record: logging.LogRecord) -> None:
        """Count and swallow (the default prints a traceback to stderr)."""
        self.errors += 1

    def _write(self, data: bytes) -> None:
        f = self._file
        if f is None:
            f = self._file = self._open()
        if f.size and f.size + len(data) > self.max_size:
            f = self._file = self._rotate()
        try:
            f.write(data)
        except BaseException:
            self._drop_file()  # reopen at the real end next time
            raise

    def _open(self) -> WritableFile:
        fs = self.fs
        if fs.exists(self.path):
            return fs.open_append(self.path)
        return fs.create(self.path)

    def _rotate(self) -> WritableFile:
        self._drop_file()
        fs = self.fs
        fs.rename(self.path, filenames.join(os.path.dirname(self.path), LOG_OLD))
        return fs.create(self.path)

    def _drop_file(self) -> None:
        f, self._file = self._file, None
        if f is not None:
            try:
                f.close()
            except OSError:
                pass

    def close(self) -> None:
        self.acquire()
        try:
            self._closed = True
            self._held = None
            self._drop_file()
        finally:
            self.release()
        super().close()


class InfoLog:
    """The info log of one database (see the module docstring). ``enabled``
    False makes every call a no-op that touches no file."""

    def __init__(self, fs: FileSystem, dbpath: str, *, enabled: bool = True, level: str = "info",
                 max_size: int = 1 << 20):
        self.t_created = time.perf_counter()
        # Not logging.getLogger: that registry keeps every logger forever (one per database opened).
        logger = logging.Logger(f"lsm.db:{dbpath}", LEVELS.get(level, logging.INFO))  # noqa: LOG001
        logger.propagate = False
        self.logger = logger
        self.handler: LogFileHandler | None = None
        if enabled:
            self.handler = LogFileHandler(fs, filenames.join(dbpath, filenames.LOG), max_size)
            logger.addHandler(self.handler)
        else:
            logger.disabled = True
        self.debug = logger.debug
        self.info = logger.info
        self.warning = logger.warning
        self.error = logger.error

    @classmethod
    def from_options(cls, fs: FileSystem, dbpath: str, opts: Any) -> InfoLog:
        """The info log ``opts`` (an :class:`lsm.Options`) asks for."""
        return cls(fs, dbpath, enabled=opts.info_log, level=opts.info_log_level, max_size=opts.info_log_max_size)

    @property
    def errors(self) -> int:
        """Entries that could not be written (each swallowed)."""
        return self.handler.errors if self.handler is not None else 0

    def start(self) -> None:
        """The database opened: write the held entries; from now on every
        entry is written when logged."""
        if self.handler is not None:
            self.handler.start()

    def close(self) -> None:
        if self.handler is not None:
            self.logger.removeHandler(self.handler)
            self.handler.close()
        self.logger.disabled = True

    # ------------------------------------------------------------- events
    def opened(self, *, path: str, created: bool, options: Any, manifest: str, tables: int,
               last_seq: int, flushed_seq: int, torn_manifest_tail: int | None, replayed_records: int,
               replayed_segments: int, first_replayed: int | None, dropped: list[str],
               truncated: tuple[str, int] | None, set_aside: list[str], fence_found: bool,
               memtable_entries: int) -> None:
        """The entries of a successful open (called at its end, before
        :meth:`start`)."""
        self.info("open: %s %s (lsm %s, pid %d)\n%s", "created" if created else "opening", path, _version(),
                  os.getpid(), describe_options(options))
        if not created:
            self.info("recovery: %s: %d tables holding the commits up to seq %d", manifest, tables, flushed_seq)
        if torn_manifest_tail is not None:
            self.warning("recovery: dropped the torn final record of %s at offset %d (an edit never "
                         "acknowledged)", manifest, torn_manifest_tail)
        if fence_found:
            self.warning("recovery: FENCE marker found: the last process fenced the database after an "
                         "I/O failure (its LOG says which); recovering to the last durable state")
        if replayed_records:
            self.info("recovery: replayed %d WAL records (seq %d..%d) from %d segments into the memtable "
                      "(%d entries)", replayed_records, first_replayed, last_seq, replayed_segments,
                      memtable_entries)
        else:
            self.info("recovery: no WAL records to replay")
        if truncated is not None:
            self.warning("recovery: cut the torn tail of %s at offset %d", *truncated)
        for what in dropped:
            self.warning("recovery: dropped %s", what)
        for seg in set_aside:
            self.warning("recovery: set aside %s (renamed to *.wal.dropped, not replayed)", seg)
        self.info("open: done in %.3f s, last seq %d", time.perf_counter() - self.t_created, last_seq)

    def flushed(self, first_seq: int, last_seq: int, entries: int, mem_bytes: int, outputs: Any, seconds: float,
                l0_files: int) -> None:
        """A memtable flush was installed; ``outputs``: ``(number,
        TableProperties)`` pairs."""
        self.info("flush: memtable seq %d..%d (%d entries, %s) -> level 0: %s in %.3f s; level 0 has %d files",
                  first_seq, last_seq, entries, human_bytes(mem_bytes),
                  describe_tables((n, p.file_size) for n, p in outputs), seconds, l0_files)

    def compacted(self, c: Any, result: Any, seconds: float) -> None:
        """A compaction was installed: ``c`` the picker's Compaction,
        ``result`` the job's JobResult (None for a trivial move)."""
        if not self.logger.isEnabledFor(logging.INFO):
            return
        why = f"{c.reason}, score {c.score:.2f}" if c.reason != "manual" else "manual"
        if result is None:
            f = c.inputs[0]
            self.info("compaction (%s): moved %s (%s) from level %d to level %d (trivial move)", why,
                      filenames.sst_name(f.number), human_bytes(f.file_size), c.level, c.output_level)
            return
        ins = describe_tables((f.number, f.file_size) for f in c.inputs)
        if c.output_level != c.level:
            ins = f"level {c.level}: {ins}; level {c.output_level}: " + describe_tables(
                (f.number, f.file_size) for f in c.next_inputs)
        else:
            ins = f"level {c.level}: {ins}"
        written = sum(p.file_size for _n, p in result.outputs)
        self.info("compaction (%s): %s -> level %d: %s; read %s, wrote %s, entries %d -> %d%s in %.3f s", why, ins,
                  c.output_level, describe_tables((n, p.file_size) for n, p in result.outputs),
                  human_bytes(result.bytes_read), human_bytes(written), result.entries_in, result.entries_out,
                  ", bottommost" if c.is_bottommost else "", seconds)

    def stalled(self, cause: str, seconds: float, l0_files: int, imms: int, opts: Any) -> None:
        """Writers waited ``seconds`` for room (``cause``: ``memtables`` or
        ``l0_stop``, as in ``stats()["stalls"]``)."""
        if cause == "l0_stop":
            why = f"level 0 has {l0_files} files (l0_stop_trigger {opts.l0_stop_trigger}), waiting for compaction"
        else:
            why = (f"the memtable is full and {imms} immutable memtables wait for their flush "
                   f"(max_immutable_memtables {opts.max_immutable_memtables})")
        self.warning("stall: a writer waited %.3f s: %s", seconds, why)

    def l0_slowdown(self, on: bool, l0_files: int, trigger: int) -> None:
        """Level 0 reached (or left) ``l0_slowdown_trigger``: writes are
        paced (``delayed_write_rate``, halved per file more) while it is on."""
        if on:
            self.warning("stall: level 0 has %d files (l0_slowdown_trigger %d): writes are paced "
                         "until compaction catches up", l0_files, trigger)
        else:
            self.info("stall: level 0 down to %d files: write slowdown off", l0_files)

    def fenced(self, err: BaseException) -> None:
        self.error("FENCED: an I/O operation failed (%r) on thread %s; every call now raises "
                   "NeedsRecoveryError; fix the cause, then close and reopen the database to recover",
                   err, threading.current_thread().name)


@functools.lru_cache(maxsize=1)
def _version() -> str:
    try:
        return importlib.metadata.version("lsm-engine")
    except Exception:  # noqa: BLE001 - not installed as a distribution
        return "unknown"


def describe_options(opts: Any) -> str:
    """``name = value`` lines for each field of a dataclass (the options)."""
    if not dataclasses.is_dataclass(opts):
        return repr(opts)
    lines = []
    for f in dataclasses.fields(opts):
        v = getattr(opts, f.name)
        if f.name == "fs":
            v = type(v).__name__
        elif isinstance(v, enum.Enum):  # Sync
            v = v.name
        lines.append(f"{f.name} = {v}")
    return "\n".join(lines)


def describe_tables(items: Any) -> str:
    """``000012.sst (4.0 KiB)`` for each ``(number, size)``, comma-separated."""
    out = [f"{filenames.sst_name(n)} ({human_bytes(size)})" for n, size in items]
    return ", ".join(out) if out else "none"


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
