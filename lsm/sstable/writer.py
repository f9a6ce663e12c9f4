"""The sstable writer: turns entries in internal order into a table file
(format: docs/format/sstable.md; byte layouts in :mod:`lsm.sstable.block` and
:mod:`lsm.sstable.format`).

File layout, in write order: data blocks, range-deletion block (format
version 2, only when range tombstones were added), filter block (absent
when the bloom filter is off or the table is empty), properties block,
index block, footer. The index holds one entry per data block: the block's last user key
and last trailer, and the block's handle.

Writes are buffered: blocks accumulate in memory and reach the file in
writes of about :data:`WRITE_CHUNK` bytes. Nothing is durable before
``finish(sync=True)`` returns.

Thread-safety: a writer is used by one thread.
"""

from __future__ import annotations

import os
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from itertools import accumulate, islice, repeat
from operator import add as _add
from operator import gt as _gt
from typing import Final

from lsm.base import compression as _compression
from lsm.base.coding import MAX_SEQ, ValueKind
from lsm.base.fs import FileSystem
from lsm.base.rangedel import RangeDels, Tombstone
from lsm.sstable.block import MAX_BLOCK_PAYLOAD, MAX_TRAILER, encode_block, fixed_block_head
from lsm.sstable.bloom import BloomBuilder
from lsm.sstable.format import (
    FORMAT_VERSION,
    FORMAT_VERSION_1,
    HANDLE,
    TableProperties,
    encode_footer,
    encode_properties,
    frame_block,
)

__all__ = ["TableProperties", "TableWriter"]

WRITE_CHUNK: Final = 256 * 1024
"""Buffered bytes that trigger a write to the file."""

_ENTRY_OVERHEAD: Final = 16
"""Payload bytes per entry besides key and value: two u32 offsets and the
u64 trailer."""

MAX_BLOCK_SIZE: Final = 1 << 30
"""Largest ``block_size`` accepted. A block is cut once its payload reaches
``block_size``, so a block exceeds MAX_BLOCK_PAYLOAD only through one entry
of more than 3 GiB: such an entry is refused."""

_LITTLE: Final = sys.byteorder == "little"
_KIND_OFFSET: Final = 0 if _LITTLE else 7
_KINDS: Final = bytes([0, 1])  # ValueKind.DELETE, ValueKind.PUT


def _checked_trailers(trailers: list[int]) -> tuple[array[int], bytes]:
    """``trailers`` as an ``array('Q')`` and their kind bytes, checked in C
    passes rather than per entry: ValueError if a trailer is not a u64 or
    a kind is unknown. The low byte of each u64 is its kind."""
    try:
        tr = array("Q", trailers)
    except OverflowError:
        raise ValueError("trailer out of range: must be a u64 (seq < 2**56)") from None
    kinds = tr.tobytes()[_KIND_OFFSET::8]
    bad = kinds.translate(None, _KINDS)
    if bad:
        raise ValueError(f"unknown value kind {bad[0]}")
    return tr, kinds


class TableWriter:
    """Writes one sstable. ``add`` entries in strictly increasing internal
    order (user key ascending, then trailer descending), then ``finish``
    (or ``abandon`` to delete the partial file).

    After an exception from ``add`` or ``finish`` the writer is failed: only
    ``abandon`` remains valid.
    """

    def __init__(
        self,
        fs: FileSystem,
        path: str,
        *,
        block_size: int = 4096,
        bloom_bits_per_key: int = 13,
        compression: int = _compression.ZSTD,
        compression_level: int = 1,
    ) -> None:
        if (
            isinstance(block_size, bool)
            or not isinstance(block_size, int)
            or not (1 <= block_size <= MAX_BLOCK_SIZE)
        ):
            raise ValueError(f"block_size: must be an int in 1..{MAX_BLOCK_SIZE}, got {block_size!r}")
        if (
            isinstance(bloom_bits_per_key, bool)
            or not isinstance(bloom_bits_per_key, int)
            or not (0 <= bloom_bits_per_key <= 64)
        ):
            raise ValueError(f"bloom_bits_per_key: must be an int in 0..64, got {bloom_bits_per_key!r}")
        if compression not in (_compression.NONE, _compression.ZSTD, _compression.LZ4):
            raise ValueError(f"compression: unknown compression id {compression!r}")
        self._fs = fs
        self.path = path
        self._block_size = block_size
        self._bloom_bits = bloom_bits_per_key
        self._compression = compression
        self._level = compression_level
        self._file = fs.create(path)
        self._state = "open"  # then "finished", "failed" or "abandoned"

        self._parts: list[bytes] = []  # buffered stored bytes, not yet written
        self._buffered = 0  # bytes in self._parts
        self._offset = 0  # file offset of the next block (written + buffered)

        # Pending data block: parallel lists (cleared in place after each
        # block, so the bound appends stay valid) and its payload size.
        self._keys: list[bytes] = []
        self._trailers: list[int] = []
        self._values: list[bytes] = []
        self._kapp = self._keys.append
        self._tapp = self._trailers.append
        self._vapp = self._values.append
        self._pending = 8

        # Index: last key and trailer of each finished data block, handle.
        self._ikeys: list[bytes] = []
        self._itrailers: list[int] = []
        self._ihandles: list[bytes] = []

        self._bloom = BloomBuilder() if bloom_bits_per_key else None
        # The previous entry; initially a virtual one before every real
        # entry: (b"", 2**64) precedes (b"", t) for every valid trailer t.
        self._last_key = b""
        self._last_trailer = MAX_TRAILER + 1
        self._num_keys = 0  # distinct user keys above b""
        self._flushed_entries = 0
        self._num_deletes = 0
        self._data_size = 0
        self._smallest: bytes | None = None
        self._min_seq = -1
        self._max_seq = 0
        self._rdels: list[Tombstone] = []  # range tombstones, any order; fragmented by finish()

    # ------------------------------------------------------------ adding
    def add(self, key: bytes, trailer: int, value: bytes) -> None:
        """Append one entry. REQUIRES: ``(key, trailer)`` follows the previous
        entry in internal order (ValueError otherwise, checked here); key
        and value are bytes; trailer = seq << 8 | kind, a u64 with kind PUT
        or DELETE (checked, ValueError, when the block is cut, so possibly
        by a later ``add`` or by ``finish``)."""
        # Kept to two comparisons and plain appends: this runs once per entry
        # of every flush and compaction (M5 in docs/format/sstable.md).
        lk = self._last_key
        if key > lk:
            self._num_keys += 1
        elif key != lk or trailer >= self._last_trailer:
            self._fail_order(key, trailer)
        size = len(key) + len(value) + _ENTRY_OVERHEAD
        self._last_key = key
        self._last_trailer = trailer
        self._kapp(key)
        self._tapp(trailer)
        self._vapp(value)
        self._pending += size
        if self._pending >= self._block_size:
            self._flush_block()

    def _fail_order(self, key: bytes, trailer: int) -> None:
        if key != self._last_key:
            raise ValueError(f"key {key!r} added after {self._last_key!r}: keys must be ascending")
        raise ValueError(
            f"key {key!r}: trailer {trailer} added after {self._last_trailer}: versions must be newest first"
        )

    def add_many(self, entries: Iterable[tuple[bytes, int, bytes]]) -> None:
        """``add`` each ``(key, trailer, value)``."""
        add = self.add  # local alias: one attribute look-up for the whole loop
        for key, trailer, value in entries:
            add(key, trailer, value)

    def add_columns(self, keys: list[bytes], trailers: list[int], values: list[bytes], *,
                    ascending: bool = False) -> None:
        """Append the entries ``zip(keys, trailers, values)``: the same table,
        byte for byte, as ``add`` of each, with C-level work per entry and
        Python work per block (a flush of a memtable whose keys have one
        version each; docs/benchmarks.md, "Write path profile"). When the
        keys are not strictly
        ascending from the last key added (two versions of one key, or out
        of order), falls back to ``add`` per entry, so the errors are
        ``add``'s. ``ascending``: the caller has checked that ``keys`` are
        strictly ascending (``FrozenEntries.columns`` does), so only the
        first key is compared here. REQUIRES: equal lengths; keys and
        values bytes."""
        n = len(keys)
        if n == 0:
            return
        if self._state != "open":
            raise ValueError(f"table writer is {self._state}")
        if not (keys[0] > self._last_key and (ascending or all(map(_gt, islice(keys, 1, None), keys)))):
            self.add_many(zip(keys, trailers, values))
            return
        if _LITTLE:
            # Every key of one length and every value of one length (a fill
            # of the harness's entries): blocks are sliced from the keys and
            # the values joined once (_add_fixed). ``list.count`` of the
            # first length (23 ns a key; ``max`` of the lengths: 42).
            kl, vl = len(keys[0]), len(values[0])
            if list(map(len, keys)).count(kl) == n and list(map(len, values)).count(vl) == n:
                self._add_fixed(keys, trailers, values, b"".join(keys), b"".join(values), kl, vl)
                return
        # c[i]: payload bytes of entries 0..i-1. From entry i, add() cuts the
        # block after entries i..j-1 for the first j with
        # pending + c[j] - c[i] >= block_size (bisect: c is increasing).
        c = list(accumulate(map(_add, map(_add, map(len, keys), map(len, values)), repeat(_ENTRY_OVERHEAD)),
                            initial=0))
        bs = self._block_size
        pending = self._pending
        i = 0
        if self._keys:
            # Top up the block that add() left pending, as add() would.
            i = min(bisect_left(c, bs - pending + c[0], 1), n)
            self._keys += keys[:i]
            self._trailers += trailers[:i]
            self._values += values[:i]
            pending += c[i]
            if pending >= bs:
                self._pending = pending
                self._flush_block()
                pending = 8
        # Then whole blocks straight from the columns (a block starts empty:
        # its payload is 8 bytes before its entries), the rest pending.
        starts = []
        while i < n:
            j = bisect_left(c, bs - 8 + c[i], i + 1)
            if j > n:
                break
            starts.append(i)
            i = j
        if starts:
            self._emit_blocks(keys, trailers, values, c, starts, i)
        self._take_rest(keys, trailers, values, i, 8 + c[n] - c[i] if i < n else pending)

    def _take_rest(self, keys: list[bytes], trailers: list[int], values: list[bytes], i: int, pending: int) -> None:
        """The end of :meth:`add_columns`: entries ``i:`` become the pending
        block, of ``pending`` payload bytes."""
        if i < len(keys):
            self._keys += keys[i:]
            self._trailers += trailers[i:]
            self._values += values[i:]
        self._pending = pending
        self._num_keys += len(keys)
        self._last_key = keys[-1]
        self._last_trailer = trailers[-1]

    def _add_fixed(self, keys: list[bytes], trailers: list[int], values: list[bytes], kb: bytes, vb: bytes,
                   kl: int, vl: int) -> None:
        """:meth:`add_columns` of entries whose keys all have ``kl`` bytes
        and values ``vl``; ``kb``, ``vb``: the keys and the values joined.
        Every whole block holds the same number of entries, so the cuts are
        arithmetic and a block's payload is one join of four pieces: its
        cached head (:func:`fixed_block_head`), a slice of the trailers'
        bytes, of ``kb`` and of ``vb`` (fillbatch's flush, per entry:
        tools/flush_handoff.py). REQUIRES: keys strictly ascending from the
        last key added; a little-endian machine."""
        n = len(keys)
        es = kl + vl + _ENTRY_OVERHEAD
        bs = self._block_size
        pending = self._pending
        i = 0
        if self._keys:
            # Top up the block that add() left pending, as add() would.
            i = min(-(-(bs - pending) // es), n)
            self._keys += keys[:i]
            self._trailers += trailers[:i]
            self._values += values[:i]
            pending += i * es
            if pending >= bs:
                self._pending = pending
                self._flush_block()
                pending = 8
        per = max(1, -(-(bs - 8) // es))  # entries of a whole block
        end = i + (n - i) // per * per
        if end > i:
            self._emit_fixed(keys, trailers, kb, vb, i, end, per, kl, vl)
        self._take_rest(keys, trailers, values, end, 8 + (n - end) * es if end < n else pending)

    def _emit_fixed(self, keys: list[bytes], trailers: list[int], kb: bytes, vb: bytes, start: int, end: int,
                    per: int, kl: int, vl: int) -> None:
        """Cut, encode, frame and buffer the data blocks of ``per`` entries
        each from ``start`` to ``end`` (:meth:`_add_fixed`), as
        :meth:`_flush_block` would one by one: the same bytes, with the
        trailer checks, the seq range, the deletion count, the index and
        the bloom filter's hashes done once over all of them. REQUIRES: no
        entry pending."""
        usize = 8 + per * (kl + vl + _ENTRY_OVERHEAD)
        try:
            if usize > MAX_BLOCK_PAYLOAD:
                raise ValueError(f"entry of {vl} bytes does not fit a block")
            tr, kinds = _checked_trailers(trailers[start:end])
        except BaseException:
            self._fail()
            raise
        comp, level = self._compression, self._level
        append, pack, join, ihandles = self._append, HANDLE.pack, b"".join, self._ihandles
        head = fixed_block_head(per, kl, vl)
        trb = tr.tobytes()
        t, tstep, k, kstep, v, vstep = 0, 8 * per, start * kl, kl * per, start * vl, vl * per
        for _ in range((end - start) // per):
            try:
                stored, trailer = frame_block(join((head, trb[t : t + tstep], kb[k : k + kstep], vb[v : v + vstep])),
                                              comp, level)
            except BaseException:
                self._fail()
                raise
            ihandles.append(pack(append(stored, trailer), len(stored)))
            t += tstep
            k += kstep
            v += vstep
        # The index's keys and trailers: each block's last entry.
        self._ikeys += keys[start + per - 1 : end : per]
        self._itrailers += trailers[start + per - 1 : end : per]
        self._account(keys, tr, kinds, start, end, (end - start) * (kl + vl))

    def _emit_blocks(self, keys: list[bytes], trailers: list[int], values: list[bytes], c: list[int],
                     starts: list[int], end: int) -> None:
        """Cut, encode, frame and buffer the data blocks ``keys[s:e]``
        (with their trailers and values) for consecutive ``s, e`` of
        ``starts + [end]``, as :meth:`_flush_block` would one by one: the
        same bytes, with the trailer checks, the seq range, the deletion
        count and the bloom filter's hashes done once over all of them
        (``add_columns`` of entries of several sizes). ``c``: the running
        payload sizes of ``add_columns``. REQUIRES: no entry pending."""
        base = starts[0]
        try:
            tr, kinds = _checked_trailers(trailers[base:end])
        except BaseException:
            self._fail()
            raise
        comp, level = self._compression, self._level
        ikeys, itrailers, ihandles = self._ikeys, self._itrailers, self._ihandles
        append, pack = self._append, HANDLE.pack
        for s, e in zip(starts, [*starts[1:], end]):
            try:
                if c[e] - c[s] + 8 > MAX_BLOCK_PAYLOAD:
                    raise ValueError(f"entry of {max(map(len, values[s:e]))} bytes does not fit a block")
                payload = encode_block(keys[s:e], tr[s - base : e - base], values[s:e])
                stored, trailer = frame_block(payload, comp, level)
            except BaseException:
                self._fail()
                raise
            ikeys.append(keys[e - 1])
            itrailers.append(trailers[e - 1])
            ihandles.append(pack(append(stored, trailer), len(stored)))
        self._account(keys, tr, kinds, base, end, c[end] - c[base] - _ENTRY_OVERHEAD * (end - base))

    def _account(self, keys: list[bytes], tr: array, kinds: bytes, start: int, end: int, data: int) -> None:
        """Count the entries ``keys[start:end]`` just emitted as blocks
        (``tr``/``kinds``: their checked trailers and kinds; ``data``:
        their key and value bytes) in the table's properties, seq range,
        smallest key and bloom filter."""
        self._num_deletes += kinds.count(0)
        self._data_size += data
        lo = min(tr) >> 8
        if self._min_seq < 0 or lo < self._min_seq:
            self._min_seq = lo
        self._max_seq = max(self._max_seq, max(tr) >> 8)
        if self._smallest is None:
            self._smallest = keys[start]
        if self._bloom is not None:
            self._bloom.add_keys(keys[start:end])
        self._flushed_entries += end - start

    def add_range_del(self, start: bytes, stop: bytes, seq: int) -> None:
        """Add a range tombstone deleting ``[start, stop)`` for versions below
        ``seq``. Any order, any overlap, before ``finish``: the writer
        fragments them into the table's range-deletion block (format version
        2) and widens the table's key and seq range to cover them. An empty
        range (``start >= stop``) is ignored. ValueError on a bad seq."""
        if self._state != "open":
            raise ValueError(f"table writer is {self._state}")
        if type(start) is not bytes or type(stop) is not bytes:
            raise TypeError("range tombstone bounds must be bytes")
        if isinstance(seq, bool) or not isinstance(seq, int) or not (0 < seq <= MAX_SEQ):
            raise ValueError(f"range tombstone seq must be an int in 1..{MAX_SEQ}, got {seq!r}")
        if start < stop:
            self._rdels.append((start, stop, seq))

    @property
    def estimated_size(self) -> int:
        """Bytes of the file so far (written and buffered) plus the pending
        block's uncompressed payload."""
        return self._offset + (self._pending if self._keys else 0)

    @property
    def num_entries(self) -> int:
        return self._flushed_entries + len(self._keys)

    # ------------------------------------------------------------ blocks
    def _flush_block(self) -> None:
        """Cut the pending block: validate its trailers, encode, frame and
        buffer it, and record its index entry."""
        keys, trailers, values = self._keys, self._trailers, self._values
        try:
            if self._pending > MAX_BLOCK_PAYLOAD:
                raise ValueError(f"entry of {max(map(len, values))} bytes does not fit a block")
            tr, kinds = _checked_trailers(trailers)
            payload = encode_block(keys, tr, values)
            stored, trailer = frame_block(payload, self._compression, self._level)
        except BaseException:
            self._fail()
            raise
        self._num_deletes += kinds.count(0)
        self._data_size += len(payload) - 8 - _ENTRY_OVERHEAD * len(keys)
        lo = min(tr) >> 8
        if self._min_seq < 0 or lo < self._min_seq:
            self._min_seq = lo
        self._max_seq = max(self._max_seq, max(tr) >> 8)
        if self._smallest is None:
            self._smallest = keys[0]
        if self._bloom is not None:
            self._bloom.add_keys(keys)
        offset = self._append(stored, trailer)
        self._ikeys.append(keys[-1])
        self._itrailers.append(trailers[-1])
        self._ihandles.append(HANDLE.pack(offset, len(stored)))
        self._flushed_entries += len(keys)
        keys.clear()
        trailers.clear()
        values.clear()
        self._pending = 8

    def _append(self, stored: bytes, trailer: bytes) -> int:
        """Buffer one framed block; its offset in the file."""
        offset = self._offset
        n = len(stored) + len(trailer)
        self._parts.append(stored)
        self._parts.append(trailer)
        self._offset += n
        self._buffered += n
        if self._buffered >= WRITE_CHUNK:
            self._write_buffered()
        return offset

    def _append_meta(self, payload: bytes) -> tuple[int, int]:
        """Buffer an uncompressed meta block; its handle."""
        stored, trailer = frame_block(payload, _compression.NONE)
        return self._append(stored, trailer), len(stored)

    def _write_buffered(self) -> None:
        if self._parts:
            data = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
            self._parts = []
            self._buffered = 0
            try:
                self._file.write(data)
            except BaseException:
                self._fail()  # the file now ends in an unknown place
                raise

    # ------------------------------------------------------------ finishing
    def finish(self, sync: bool = True) -> TableProperties:
        """Write the pending block, the filter, properties and index blocks
        and the footer; fsync when ``sync``; close the file. On an exception
        the file is incomplete: call :meth:`abandon`."""
        if self._state != "open":
            raise ValueError(f"table writer is {self._state}")
        try:
            if self._keys:
                self._flush_block()
            n = self._flushed_entries
            rd_h = None
            rd = RangeDels.build(self._rdels) if self._rdels else None
            if rd:
                pieces = list(rd)
                rd_h = self._append_meta(encode_block(
                    [p[0] for p in pieces],
                    [(p[2] << 8) | ValueKind.RANGE_DELETE for p in pieces],
                    [p[1] for p in pieces],
                ))
            filter_h = (0, 0)
            # Distinct user keys (b"", which add() does not count, can only be the first).
            num_keys = self._num_keys + (1 if self._smallest == b"" else 0)
            if self._bloom is not None and n:
                filter_h = self._append_meta(self._bloom.finish(self._bloom_bits, num_keys))
            props = TableProperties(
                file_size=0,
                num_entries=n,
                num_deletes=self._num_deletes,
                smallest=self._smallest or b"",
                largest=self._last_key,
                min_seq=max(self._min_seq, 0),
                max_seq=self._max_seq,
                data_size=self._data_size,
                distinct_keys=n > 0 and num_keys == n,
            )
            if rd:
                lo, hi = rd.seq_range()
                props.num_range_dels = len(pieces)
                props.smallest = min(props.smallest, rd.smallest) if n else rd.smallest
                props.largest = max(props.largest, rd.largest) if n else rd.largest
                props.min_seq = min(props.min_seq, lo) if n else lo
                props.max_seq = max(props.max_seq, hi)
            props_h = self._append_meta(encode_properties(props, len(self._ihandles), rd_h))
            index_h = self._append_meta(encode_block(self._ikeys, self._itrailers, self._ihandles))
            footer = encode_footer(filter_h, props_h, index_h, FORMAT_VERSION if rd else FORMAT_VERSION_1)
            self._parts.append(footer)
            self._offset += len(footer)
            self._write_buffered()
            if sync:
                self._file.fsync()
            self._file.close()
        except BaseException:
            self._fail()
            raise
        self._state = "finished"
        self.add = self._refuse  # type: ignore[method-assign]
        self._release()
        props.file_size = self._offset
        return props

    def _release(self) -> None:
        """Drop the big buffers. ``self.add = self._refuse`` makes the writer
        a reference cycle, freed only by the cycle collector: without this,
        a finished writer's bloom hashes and index (~70 bytes per entry)
        would linger until the next collection."""
        self._bloom = None
        self._parts = []
        self._ikeys = []
        self._itrailers = []
        self._ihandles = []
        self._rdels = []
        self._keys.clear()
        self._trailers.clear()
        self._values.clear()

    def _fail(self) -> None:
        self._state = "failed"
        self.add = self._refuse  # type: ignore[method-assign]
        self._release()

    def _refuse(self, key: bytes, trailer: int, value: bytes) -> None:
        raise ValueError(f"table writer is {self._state}")

    def abandon(self) -> None:
        """Close and delete the file (idempotent; valid in any state, meant
        for a writer that failed or is no longer wanted)."""
        if self._state == "abandoned":
            return
        self._state = "abandoned"
        self.add = self._refuse  # type: ignore[method-assign]
        self._release()
        try:
            self._file.close()
        finally:
            try:
                self._fs.remove(self.path)
            except FileNotFoundError:
                pass

    def __repr__(self) -> str:
        return f"TableWriter({os.path.basename(self.path)!r}, entries={self.num_entries}, {self._state})"
