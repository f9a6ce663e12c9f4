"""External tables: SSTables built outside a database by
:class:`TableWriter` (``lsm.TableWriter``, like RocksDB's SstFileWriter),
for ``db.ingest_files`` to add later, and the checks ``ingest_files`` runs
on them (:func:`inspect_external`).

An external table is an ordinary SSTable (docs/format/sstable.md) whose
entries all carry sequence number 0: keys strictly ascending, one entry per
key, kind PUT or DELETE. ``ingest_files`` gives the entries their real
sequence number when it adds them (docs/format/ingest.md).

Thread-safety: a writer is used by one thread; independent writers may run
in parallel threads or processes (each writes its own file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from lsm.base.coding import ValueKind
from lsm.base.errors import CorruptionError
from lsm.base.fs import FileSystem
from lsm.options import Options
from lsm.sstable.reader import TableReader
from lsm.sstable.writer import TableWriter as _InternalWriter

_PUT_T = ValueKind.PUT  # trailer of a put at seq 0
_DEL_T = ValueKind.DELETE

TABLE_OPTIONS = ("block_size", "bloom_bits_per_key", "compression", "compression_level")
"""The :class:`~lsm.Options` fields a TableWriter takes as keywords."""


@dataclass(frozen=True)
class TableInfo:
    """What :meth:`TableWriter.finish` wrote (or ``inspect_external`` found)."""

    path: str
    num_entries: int
    num_deletes: int
    smallest: bytes
    largest: bytes
    file_size: int
    data_size: int
    """Key and value bytes of all entries."""


class TableWriter:
    """Build one SSTable at ``path`` outside any database, for
    ``db.ingest_files``. Add keys in strictly ascending order with
    :meth:`put` / :meth:`delete`, then :meth:`finish` (fsyncs and closes
    the file) or :meth:`abandon` (deletes it). As a context manager it
    finishes on a normal exit and abandons on an exception.

    ``options`` (an :class:`lsm.Options`) and the keywords ``block_size``,
    ``bloom_bits_per_key``, ``compression`` and ``compression_level`` set
    the table's layout (defaults: those of ``Options()``); a database reads
    tables of any layout. ``fs``: the filesystem layer (default
    ``options.fs``, the real one).

    A failed ``put`` (wrong type, key out of order) leaves the writer
    usable; a failed write to the file leaves only ``abandon``.
    """

    def __init__(self, path: str | os.PathLike[str], *, options: Options | None = None,
                 fs: FileSystem | None = None, **table_options: Any) -> None:
        for name in table_options:
            if name not in TABLE_OPTIONS:
                raise ValueError(f"TableWriter: unknown option {name!r} (table options: {', '.join(TABLE_OPTIONS)})")
        if options is not None and not isinstance(options, Options):
            raise TypeError(f"options must be an lsm.Options, not {type(options).__name__}")
        opts = Options.from_kwargs(options, **table_options)
        if fs is not None and not isinstance(fs, FileSystem):
            raise TypeError(f"fs: expected an lsm FileSystem, got {type(fs).__name__}")
        self.path = os.fspath(path)
        self._w = _InternalWriter(
            fs if fs is not None else opts.fs,
            self.path,
            block_size=opts.block_size,
            bloom_bits_per_key=opts.bloom_bits_per_key,
            compression=opts.compression_id,
            compression_level=opts.compression_level,
        )
        self._last: bytes | None = None
        self._n = 0
        self._deletes = 0
        self._info: TableInfo | None = None

    def put(self, key: bytes, value: bytes) -> None:
        """Add ``key`` -> ``value``. ``key`` must be above every key added
        before (ValueError otherwise)."""
        self._add(key, _PUT_T, value)

    def delete(self, key: bytes) -> None:
        """Add a deletion of ``key`` (it hides older values of ``key`` in
        the database the table is ingested into). Same order rule as put."""
        self._add(key, _DEL_T, b"")
        self._deletes += 1

    def put_many(self, items: Any) -> None:
        """``put`` each ``(key, value)`` of ``items``."""
        put = self.put
        for k, v in items:
            put(k, v)

    def _add(self, key: Any, trailer: int, value: Any) -> None:
        if type(key) is not bytes:
            key = _bytes(key, "key")
        if type(value) is not bytes:
            value = _bytes(value, "value")
        last = self._last
        if last is not None and key <= last:
            what = "repeats" if key == last else "is below"
            raise ValueError(
                f"TableWriter: key {key!r} (entry {self._n}) {what} the previous key {last!r}; "
                "keys must be strictly ascending"
            )
        self._w.add(key, trailer, value)
        self._last = key
        self._n += 1

    @property
    def num_entries(self) -> int:
        return self._n

    def finish(self, *, sync: bool = True) -> TableInfo:
        """Complete the file (fsynced when ``sync``) and return what it
        holds. An empty table is valid (ingest_files skips it)."""
        if self._info is not None:
            return self._info
        props = self._w.finish(sync=sync)
        self._info = TableInfo(self.path, props.num_entries, props.num_deletes, props.smallest,
                               props.largest, props.file_size, props.data_size)
        return self._info

    def abandon(self) -> None:
        """Delete the partial file (idempotent)."""
        if self._info is None:
            self._w.abandon()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abandon()

    def __repr__(self) -> str:
        return f"lsm.TableWriter({self.path!r}, entries={self._n})"


def _bytes(x: Any, what: str) -> bytes:
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"TableWriter: {what} must be bytes, bytearray or memoryview, not {type(x).__name__}")


def inspect_external(fs: FileSystem, path: str) -> TableInfo:
    """Check the table at ``path`` whole before it is ingested: footer,
    every block's checksum, entry order and the properties
    (``TableReader.check``), and that it is an external table: every entry
    at sequence number 0 with a distinct key (made by :class:`TableWriter`).
    Raises CorruptionError for a damaged file, ValueError for a table that
    is intact but not external, OSError when it cannot be read."""
    r = TableReader.open(fs, path, file_number=0, cache=None, verify_checksums=True)
    try:
        r.check()
        p = r.properties
        if p.num_entries and p.max_seq != 0:
            raise ValueError(
                f"{path}: holds sequence numbers up to {p.max_seq}; ingest_files takes tables made by "
                "lsm.TableWriter (every entry at sequence number 0), not a database's own tables"
            )
        # check() verified strictly increasing internal order; with one
        # sequence number and two kinds a repeated key could still slip in
        # as (k, PUT) then (k, DELETE): refuse it.
        last = None
        for k, _t, _v in r.iter_entries(fill_cache=False):
            if k == last:
                raise CorruptionError(f"key {k!r} appears twice in an external table", path, None)
            last = k
        if p.num_range_dels:
            raise ValueError(f"{path}: holds range tombstones; lsm.TableWriter makes tables without them")
        return TableInfo(path, p.num_entries, p.num_deletes, p.smallest, p.largest, p.file_size, p.data_size)
    finally:
        r.close()
