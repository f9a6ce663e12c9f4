"""WriteBatch: an ordered list of puts, deletes and range deletions
committed atomically (one WAL record, consecutive sequence numbers).

Body encoding (part of the on-disk format: it is the body of a WAL record,
see docs/format/wal.md)::

    op := kind u8 | key_len u32 | value_len u32 | key | value
    body := op*            (kind: 1 PUT, 0 DELETE, 2 RANGE_DELETE;
                            value_len 0 for DELETE; a RANGE_DELETE's key is
                            its start and its value its stop, start < stop)

A batch keeps its ops as columns: the keys, the values (``b""`` for a
DELETE; a RANGE_DELETE's key is its start and its value its stop) and, only
once a non-PUT op is added, a kinds column. So ``put`` is two list appends,
and committing encodes the body in C-level passes (the op headers, three
slice assignments, one ``join``) and hands the columns to the memtable as they
are (``MemTable.add_batch``). Per op of a 1000-put batch this measured
~0.2 us to build and ~0.1 us to encode, against ~0.55 us to build (a pack,
an extend and a tuple per put) and ~0.15 us to join the incremental body;
docs/benchmarks.md, "Batch write profile".
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from itertools import repeat
from typing import Any, Final, Literal, overload

from lsm.base.coding import ValueKind
from lsm.base.errors import ClosedError, CorruptionError

OP_HEADER: Final = struct.Struct("<BII")
_PUT: Final = ValueKind.PUT
_DELETE: Final = ValueKind.DELETE
_RANGE_DELETE: Final = ValueKind.RANGE_DELETE


def as_bytes(x: Any, what: str) -> bytes:
    """``x`` as bytes (bytes, bytearray and memoryview accepted); anything
    else raises TypeError naming ``what`` and the type."""
    if type(x) is bytes:
        return x
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    raise TypeError(f"{what} must be bytes, bytearray or memoryview, not {type(x).__name__}")


_pack_op: Final = OP_HEADER.pack
_PUTS: Final = bytes([_PUT])


class _SealedKeys(list):
    """The keys of a committed ``db.batch()`` batch: ``put`` appends to it
    and gets ClosedError, so put needs no sealed check of its own."""

    __slots__ = ()

    def append(self, key: bytes) -> None:
        raise ClosedError("this batch was already committed")


def encode_put(key: bytes, value: bytes) -> bytes:
    """The body of a batch holding one put (the single-put fast path)."""
    return OP_HEADER.pack(_PUT, len(key), len(value)) + key + value


def encode_delete(key: bytes) -> bytes:
    return OP_HEADER.pack(_DELETE, len(key), 0) + key


def check_range(start: bytes, stop: bytes) -> bool:
    """Validate a range deletion's bounds: False for an empty range
    (``start == stop``: nothing to delete, the op is dropped), True for a
    real one; ValueError for an inverted range (``start > stop``, almost
    always swapped arguments; RocksDB refuses it too)."""
    if start < stop:
        return True
    if start == stop:
        return False
    raise ValueError(f"delete_range: start {start!r} is after stop {stop!r} (the range is [start, stop))")


def decode_body(body: bytes, count: int, path: str = "?", offset: int = 0) -> list[tuple[int, bytes, bytes]]:
    """The ops of a batch body as (kind, key, value). Raises CorruptionError
    when the body does not hold exactly ``count`` well-formed ops (the
    checks of :func:`decode_columns`)."""
    keys, values, kinds, _nbytes = decode_columns(body, count, path, offset)
    return list(zip(repeat(_PUT) if kinds is None else kinds, keys, values))


def decode_columns(body: bytes, count: int, path: str = "?",
                   offset: int = 0) -> tuple[list[bytes], list[bytes], bytearray | None, int]:
    """The ops of a batch body as columns ``(keys, values, kinds, nbytes)``,
    as ``WriteBatch.columns`` holds them (a DELETE's value ``b""``, a
    RANGE_DELETE's key its start and value its stop); ``kinds`` None when
    every op is a PUT; ``nbytes`` the keys' and values' total length.
    Raises CorruptionError naming ``path`` and ``offset`` (the record's)
    when the body does not hold exactly ``count`` well-formed ops."""
    hsize = OP_HEADER.size
    end = len(body)
    if count > 1 and end >= hsize:
        # Puts whose keys and values all have one length (what
        # WriteBatch.body writes with one shared header): when the body is
        # count strides long and every header equals the first (nine
        # strided byte slices compared, C-level), parsing op after op would
        # find exactly these ops, so slice them by stride. Callgrind, a
        # 1000-put batch of 16-byte keys and 100-byte values: 2,240
        # instructions an op against ~4,100 for the loop below (and for
        # decode_body's former loop of op tuples); WAL replay,
        # tools/replay_lab.py.
        head = body[:hsize]
        kind, klen, vlen = OP_HEADER.unpack(head)
        stride = hsize + klen + vlen
        if kind == _PUT and stride * count == end and all(
                body[j::stride] == head[j : j + 1] * count for j in range(hsize)):
            # (Starts as count-long ranges: with an empty value, or an
            # empty key and value, the last start is ``end`` itself.)
            return ([body[i : i + klen] for i in range(hsize, hsize + end, stride)],
                    [body[i : i + vlen] for i in range(hsize + klen, hsize + klen + end, stride)],
                    None, end - hsize * count)
    keys: list[bytes] = []
    values: list[bytes] = []
    kinds = bytearray()
    add_key, add_value, add_kind = keys.append, values.append, kinds.append
    unpack = OP_HEADER.unpack_from
    put = _PUT
    pos = 0
    try:
        while pos < end:
            kind, klen, vlen = unpack(body, pos)
            pos += hsize
            kend = pos + klen
            vend = kend + vlen
            if vend > end:
                raise CorruptionError("batch op extends past the end of its record", path, offset)
            if kind != put:
                if kind == _DELETE:
                    if vlen:
                        raise CorruptionError("batch delete op carries a value", path, offset)
                elif kind == _RANGE_DELETE:
                    if not body[pos:kend] < body[kend:vend]:
                        raise CorruptionError("batch range deletion op with start >= stop", path, offset)
                else:
                    raise CorruptionError(f"unknown batch op kind {kind}", path, offset)
            add_kind(kind)
            add_key(body[pos:kend])
            add_value(body[kend:vend])
            pos = vend
    except struct.error:
        raise CorruptionError("truncated batch op header", path, offset) from None
    n = len(keys)
    if n != count:
        raise CorruptionError(f"batch holds {n} ops but its record says {count}", path, offset)
    return keys, values, None if kinds.count(_PUT) == n else kinds, end - hsize * n


class WriteBatch:
    """Puts, deletes and range deletions applied atomically by
    ``db.write(batch)``.

    Not thread-safe: one thread builds a batch. Ops apply in the order added
    (a later put of the same key wins; a range deletion hides the versions
    added before it, not those added after it).
    """

    __slots__ = ("_keys", "_kinds", "_range_dels", "_sealed", "_values")

    def __init__(self) -> None:
        self._keys: list[bytes] = []
        self._values: list[bytes] = []  # b"" for a DELETE, the stop of a RANGE_DELETE
        # One kind per op, or None while every op is a PUT (put keeps no
        # kind at all: the puts after the last non-PUT op get theirs in
        # _kinds_column, so it may be shorter than _keys until read).
        self._kinds: bytearray | None = None
        self._sealed = False
        self._range_dels = 0  # RANGE_DELETE ops in the batch

    def put(self, key: bytes, value: bytes) -> None:
        # Once per op of every batch: two type checks and two appends,
        # nothing else. A committed batch's keys list refuses appends
        # (_SealedKeys: ClosedError), and a kinds column, once another op
        # kind made one, is padded with PUTs only when read
        # (``_kinds_column``), so put checks neither (~20-25 ns a put of
        # ~140 with the harness's loop).
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        if type(value) is not bytes:
            value = as_bytes(value, "value")
        self._keys.append(key)
        self._values.append(value)

    def _add_other(self, kind: int, key: bytes, value: bytes) -> None:
        kinds = self._kinds_column(True)
        kinds.append(kind)
        self._keys.append(key)
        self._values.append(value)

    @overload
    def _kinds_column(self, make: Literal[True]) -> bytearray: ...
    @overload
    def _kinds_column(self, make: bool = False) -> bytearray | None: ...

    def _kinds_column(self, make: bool = False) -> bytearray | None:
        """The kinds column brought up to date: the puts added since the
        last non-PUT op get their PUT kind here, not in ``put``. None while
        every op is a PUT (unless ``make``)."""
        kinds = self._kinds
        if kinds is None:
            if not make:
                return None
            kinds = self._kinds = bytearray()
        missing = len(self._keys) - len(kinds)
        if missing:
            kinds += _PUTS * missing
        return kinds

    def _seal(self) -> None:
        """Refuse every later op (ClosedError): a ``db.batch()`` block's
        batch once it committed. ``clear`` unseals."""
        self._sealed = True
        self._keys = _SealedKeys(self._keys)

    def delete(self, key: bytes) -> None:
        if self._sealed:
            raise ClosedError("this batch was already committed")
        if type(key) is not bytes:
            key = as_bytes(key, "key")
        self._add_other(_DELETE, key, b"")

    def delete_range(self, start: bytes, stop: bytes) -> None:
        """Delete every key ``k`` with ``start <= k < stop`` (as written
        before this op): one op, whatever the number of keys. An empty range
        (``start == stop``) adds nothing; ``start > stop`` raises ValueError."""
        if self._sealed:
            raise ClosedError("this batch was already committed")
        start = as_bytes(start, "start")
        stop = as_bytes(stop, "stop")
        if not check_range(start, stop):
            return
        self._add_other(_RANGE_DELETE, start, stop)
        self._range_dels += 1

    @property
    def has_range_dels(self) -> bool:
        return self._range_dels > 0

    def clear(self) -> None:
        self._keys = []
        self._values = []
        self._kinds = None
        self._sealed = False
        self._range_dels = 0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def byte_size(self) -> int:
        """User bytes (keys + values) in the batch."""
        return sum(map(len, self._keys)) + sum(map(len, self._values))

    def columns(self) -> tuple[list[bytes], list[bytes], bytearray | None]:
        """``(keys, values, kinds)``, the batch's own lists (not copies:
        read only); ``kinds`` None when every op is a PUT."""
        return self._keys, self._values, self._kinds_column()

    def ops(self) -> list[tuple[int, bytes, bytes]]:
        """The ops as (kind, key, value), in order (a new list)."""
        kinds = self._kinds_column()
        return list(zip(repeat(_PUT) if kinds is None else kinds, self._keys, self._values))

    def body(self) -> bytes:
        keys = self._keys
        values = self._values
        kinds = self._kinds_column()
        n = len(keys)
        if not n:
            return b""
        # Op after op (header, key, value) by three slice assignments and
        # one join, in C. Puts whose keys and values all have one length
        # (the common case) share one header object. Callgrind, per op of
        # a 1000-put batch: 730 instructions, where a zip/chain over mapped
        # packs took 1,880 (tuples and a pack per op).
        klens = list(map(len, keys))
        vlens = list(map(len, values))
        parts: list[bytes] = [b""] * (3 * n)
        if kinds is None and klens.count(klens[0]) == n and vlens.count(vlens[0]) == n:
            parts[0::3] = [_pack_op(_PUT, klens[0], vlens[0])] * n
        else:
            parts[0::3] = list(map(_pack_op, repeat(_PUT) if kinds is None else kinds, klens, vlens))
        parts[1::3] = keys
        parts[2::3] = values
        return b"".join(parts)

    def encode(self) -> tuple[bytes, int]:
        """``(body, user_bytes)``: the body and its keys' and values' total
        length (the body less one op header per op)."""
        body = self.body()
        return body, len(body) - OP_HEADER.size * len(self._keys)

    def __iter__(self) -> Iterator[tuple[int, bytes, bytes]]:
        return iter(self.ops())

    def __repr__(self) -> str:
        return f"WriteBatch({len(self._keys)} ops, {self.byte_size} bytes)"
