"""The sstable scan path: range iteration over one table
(:class:`TableScan`, a base class of
:class:`~lsm.sstable.reader.TableReader`; format:
docs/format/sstable.md).

``iter_entries`` yields entries one by one (compaction, dump, checks);
``iter_columns`` hands over ``(keys, trailers, values)`` columns, a block
or several joined, for the merging scans of lsm/iterators.py. A scan's
first ``_SEEK_BLOCKS`` blocks go through the block cache (a seek reads
little); a long scan then reads ahead, a run of neighbouring blocks per
``pread``, checked and decompressed together and not cached
(:meth:`TableScan._scan_columns`; docs/benchmarks.md, "Scan profile").

Thread-safety: as the reader's (a reader is shared by all threads; each
iterator is used by one thread at a time).
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from struct import Struct
from typing import TYPE_CHECKING, Final

from lsm.base.coding import MAX_SEQ, U32
from lsm.base.errors import ClosedError
from lsm.sstable.block import BlockView, fixed_block_head
from lsm.sstable.format import unframe_blocks

if TYPE_CHECKING:
    from lsm.base.fs import ReadableFile
    from lsm.base.rangedel import RangeDels
    from lsm.sstable.cache import BlockCache
    from lsm.sstable.format import TableProperties

__all__ = ["TableScan", "payload_columns"]

_LITTLE: Final = sys.byteorder == "little"

Entry = tuple[bytes, int, bytes]

_SEEK_BLOCKS: Final = 3
"""A scan's first blocks, read one at a time through the cache (and cached
when ``fill_cache``): what a seek reads (``_chunk_want``'s first chunks)."""
_READAHEAD_MAX: Final = 16
"""Blocks a long scan reads ahead in one ``pread`` at most (about 32 KiB
stored at 4 KiB blocks), after ``_SEEK_BLOCKS``: 2, 4, 8, then 16."""


_NEVER_CLEAN: Final = MAX_SEQ + 1
"""``clean_seq`` of a table that is clean at no snapshot."""


def _chunk_want(nchunks: int) -> int:
    """Entries a column chunk should reach after ``nchunks`` chunks: the
    first three are a block each (a seek reads little), then 32, 64, ...
    up to 512, joining whole blocks (``iter_columns``)."""
    return 0 if nchunks < 3 else min(512, 32 << (nchunks - 3))


_RUN_LAYOUTS: dict[bytes, tuple[Struct, int]] = {}
"""A fixed-size block's count and offsets (its payload's first ``8n + 8``
bytes, :func:`~lsm.sstable.block.fixed_block_head`) -> (a Struct cutting
its trailers, keys and values from offset ``8n + 8``, the payload's
size): :func:`payload_columns`' layouts. The head is the dict key, so one
lookup both checks every offset and finds the Struct. Bounded: cleared
when it reaches 256 layouts."""


def _run_layout(head: bytes, n: int) -> tuple[Struct, int] | None:
    """The :data:`_RUN_LAYOUTS` entry of a block head of ``n`` entries, None
    when its keys or values are not all of one length."""
    if not n or len(head) != 8 * n + 8:
        return None
    base = 16 * n + 8
    ko, mid, end = U32.unpack_from(head, 4)[0], U32.unpack_from(head, 4 + 4 * n)[0], U32.unpack_from(head, 4 + 8 * n)[0]
    kl, kr = divmod(mid - base, n)
    vl, vr = divmod(end - mid, n)
    if ko != base or kr or vr or kl < 0 or vl < 0 or head != fixed_block_head(n, kl, vl):
        return None
    lay = (Struct(f"<{8 * n}s" + f"{kl}s" * n + f"{vl}s" * n), end)
    if len(_RUN_LAYOUTS) >= 256:
        _RUN_LAYOUTS.clear()
    _RUN_LAYOUTS[head] = lay
    return lay


def payload_columns(payloads: list[bytes], check_offsets: bool) -> tuple[list[bytes], array[int], list[bytes]]:
    """``(keys, trailers, values)`` of every entry of several block payloads
    (a long scan's read-ahead run, :func:`~lsm.sstable.format.unframe_blocks`),
    joined in order, without a :class:`~lsm.sstable.block.BlockView` per
    block: a block of fixed-size records is recognised by its head (count
    and offsets) in one dict lookup and cut by one cached Struct, trailers
    included; any other goes through a view (the same checks,
    ``check_offsets`` as there). Raises ValueError on a malformed or empty
    block, without naming it (the caller reads the run again block by
    block to say which)."""
    keys: list[bytes] = []
    values: list[bytes] = []
    tr = array("Q")
    layouts = _RUN_LAYOUTS
    for p in payloads:
        if len(p) < 8:
            raise ValueError(f"block payload of {len(p)} bytes is too short")
        n = U32.unpack_from(p)[0]
        head = p[: 8 * n + 8]
        lay = layouts.get(head)
        if lay is None:
            lay = _run_layout(head, n)
        if lay is not None and len(p) == lay[1]:
            items = lay[0].unpack_from(p, 8 * n + 8)
            if _LITTLE:
                tr.frombytes(items[0])
            else:
                t = array("Q")
                t.frombytes(items[0])
                t.byteswap()
                tr += t
            keys += items[1 : n + 1]
            values += items[n + 1 :]
            continue
        b = BlockView(p, check_offsets)
        if not b.n:
            raise ValueError("empty data block")
        k, t, v = b.columns()
        keys += k
        tr += t
        values += v
    return keys, tr, values


class TableScan:
    """The scan methods of :class:`~lsm.sstable.reader.TableReader`, which
    sets the attributes below when it opens a table."""

    if TYPE_CHECKING:
        path: str
        clean_seq: int
        properties: TableProperties
        range_dels: RangeDels | None
        _file: ReadableFile
        _cache: BlockCache | None
        _verify: bool
        _ikeys: list[bytes]
        _boffs: array[int]
        _cbase: int
        _bsizes: array[int]

        def _block(self, i: int, fill_cache: bool = True) -> BlockView: ...
        def _load_block(self, off: int, n: int, verify: bool) -> BlockView: ...

    def _scan_clean_seq(self) -> int:
        """``clean_seq``: the table's ``max_seq`` when every entry is a PUT
        of a key of its own (the ``distinct_keys`` property, no deletion)
        and it has no range tombstone; otherwise a seq above any snapshot
        (so always for a table written before ``distinct_keys`` existed)."""
        p = self.properties
        if p.distinct_keys and not p.num_deletes and self.range_dels is None:
            return p.max_seq
        return _NEVER_CLEAN

    def clean_at(self, snapshot_seq: int) -> bool:
        """Every entry of the table is a PUT visible at ``snapshot_seq`` of
        a key of its own, and the table has no range tombstone
        (``clean_seq <= snapshot_seq``): a scan may hand its entries on as
        they are, with no per-entry version check (``clean`` of
        ``lsm.iterators.visible_columns``)."""
        return self.clean_seq <= snapshot_seq

    def iter_entries(
        self,
        start: bytes | None = None,
        stop: bytes | None = None,
        reverse: bool = False,
        *,
        fill_cache: bool = True,
    ) -> Iterator[Entry]:
        """Every entry (all versions) with ``start <= key < stop`` (None: no
        bound) as ``(key, trailer, value)``, in internal order, or exactly its
        reverse when ``reverse``. Blocks are read lazily as iteration reaches
        them; ``fill_cache=False`` keeps a long scan from evicting the cache
        (blocks already cached are still used)."""
        if start is not None and stop is not None and stop <= start:
            return iter(())
        if reverse:
            return self._iter_reverse(start, stop, fill_cache)
        return self._iter_forward(start, stop, fill_cache)

    def iter_columns(
        self,
        start: bytes | None = None,
        stop: bytes | None = None,
        *,
        reverse: bool = False,
        fill_cache: bool = True,
    ) -> Iterator[tuple[list[bytes], array[int], list[bytes]]]:
        """The entries of :meth:`iter_entries` as non-empty ``(keys,
        trailers, values)`` columns: the bulk form for merging scans. The
        first chunks are a block each (the first from ``start``: a seek
        reads little); later ones join whole blocks up to about 512
        entries, so a merging scan's per-chunk work is spread over many
        entries. ``reverse``: every chunk is still in internal order, but
        the chunks come last first (from ``stop`` down). ``fill_cache``:
        whether the first blocks (a seek's) go into the cache; a long
        scan's later blocks never do (:meth:`_scan_columns`)."""
        if start is not None and stop is not None and stop <= start:
            return iter(())
        if reverse:
            return self._columns_reverse(start, stop, fill_cache)
        return self._columns_forward(start, stop, fill_cache)

    def _columns_reverse(
        self, start: bytes | None, stop: bytes | None, fill_cache: bool
    ) -> Iterator[tuple[list[bytes], array[int], list[bytes]]]:
        ikeys = self._ikeys
        nb = len(ikeys)
        if not nb:
            return  # tombstones only: no data block (end would be -2 with a start)
        # The first block whose last key reaches stop may hold keys below
        # it; later blocks hold none. Blocks before the first whose last
        # key reaches start hold no key of the scan: the lowest block read
        # (index end + 1) is the only one that may hold keys below start.
        i = nb - 1 if stop is None else min(bisect_left(ikeys, stop), nb - 1)
        end = -1 if start is None else min(bisect_left(ikeys, start), nb - 1) - 1
        runs = self._scan_columns(i, end, -1, fill_cache)
        want = nchunks = 0
        while i != end:
            k, keys, trailers, values = next(runs)
            i -= k
            if stop is not None:
                hi = bisect_left(keys, stop)
                del keys[hi:], trailers[hi:], values[hi:]
                stop = None
            while len(keys) < want and i != end:
                k, ks, ts, vs = next(runs)
                i -= k
                keys = ks + keys
                trailers = ts + trailers
                values = vs + values
            if i == end and start is not None:
                lo = bisect_left(keys, start)
                if lo:
                    del keys[:lo], trailers[:lo], values[:lo]
            if keys:
                yield keys, trailers, values
            nchunks += 1
            want = _chunk_want(nchunks)

    def _columns_forward(
        self, start: bytes | None, stop: bytes | None, fill_cache: bool
    ) -> Iterator[tuple[list[bytes], array[int], list[bytes]]]:
        ikeys = self._ikeys
        nb = len(ikeys)
        i = 0 if start is None else bisect_left(ikeys, start)
        # The first block whose last key reaches stop is the last to read,
        # and the only one that may hold keys at or above it.
        end = nb if stop is None else min(nb, bisect_left(ikeys, stop) + 1)
        runs = self._scan_columns(i, end, 1, fill_cache)
        want = nchunks = 0
        while i < end:
            k, keys, trailers, values = next(runs)
            i += k
            if start is not None:
                lo = bisect_left(keys, start)
                if lo:
                    del keys[:lo], trailers[:lo], values[:lo]
                start = None
            while len(keys) < want and i < end:
                k, ks, ts, vs = next(runs)
                i += k
                keys += ks
                trailers += ts
                values += vs
            if i == end and stop is not None:
                hi = bisect_left(keys, stop)
                del keys[hi:], trailers[hi:], values[hi:]
            if keys:
                yield keys, trailers, values
            # One block per chunk for the first three (a seek's refills read
            # no more than a heap merge would), then doubling to 512 entries.
            nchunks += 1
            want = _chunk_want(nchunks)

    def _scan_columns(
        self, i: int, end: int, step: int, fill_cache: bool
    ) -> Iterator[tuple[int, list[bytes], array[int], list[bytes]]]:
        """``(blocks, keys, trailers, values)``: the entries of data blocks
        ``i, i + step, ...`` (step 1 or -1) up to ``end`` (excluded), for
        :meth:`iter_columns`, a block or a run of neighbours at a time,
        each in internal (ascending) order. The first ``_SEEK_BLOCKS`` one
        at a time through the cache, cached when ``fill_cache`` (a
        seek's). After that the scan is a long one: the blocks not in the
        cache are read ahead, a run of neighbours per ``pread``
        (``_READAHEAD_MAX`` at most), their crcs checked, decompressed and
        cut into columns together (:meth:`_run_columns`, no
        :class:`BlockView` per block), and *not* cached, whatever
        ``fill_cache`` says: a long scan neither evicts the working set of
        point reads nor leaves a cached view per block for the garbage
        collector to traverse (readseq in docs/benchmarks.md, "Scan
        profile"); blocks already cached are used."""
        block = self._block
        k = 0
        while i != end and k < _SEEK_BLOCKS:
            yield (1, *block(i, fill_cache).columns())
            i += step
            k += 1
        cache = self._cache
        cb = self._cbase
        boffs = self._boffs
        ahead = 2
        while i != end:
            j = i + step * ahead
            if (j - end) * step > 0:
                j = end
            lo, hi = (i, j) if step > 0 else (j + 1, i + 1)  # the run, ascending
            if cache is None:
                yield (hi - lo, *self._run_columns(lo, hi))
            else:
                # No Python call per block when none is cached (readseq: -35
                # instructions per key, tools/read_callgrind.py).
                views = cache.get_run([cb + off for off in boffs[lo:hi]])
                if views is None:
                    yield (hi - lo, *self._run_columns(lo, hi))
                else:
                    keys: list[bytes] = []
                    trailers: array[int] = array("Q")
                    values: list[bytes] = []
                    r = 0
                    while r < hi - lo:
                        v = views[r]
                        if v is not None:
                            ks, ts, vs = v.columns()  # type: ignore[attr-defined]
                            r += 1
                        else:
                            s = r
                            while r < hi - lo and views[r] is None:
                                r += 1
                            ks, ts, vs = self._run_columns(lo + s, lo + r)
                        keys += ks
                        trailers += ts
                        values += vs
                    yield hi - lo, keys, trailers, values
            i = j
            if ahead < _READAHEAD_MAX:
                ahead <<= 1

    def _run_columns(self, lo: int, hi: int) -> tuple[list[bytes], array[int], list[bytes]]:
        """The entries of data blocks ``[lo, hi)`` as columns, the blocks
        read in one ``pread`` (they lie back to back) and checked as
        :meth:`_load_block` checks one (:func:`unframe_blocks`,
        :func:`payload_columns`); not cached. On any damage they are read
        again one by one, so that the ``CorruptionError`` names the
        block."""
        boffs = self._boffs
        bsizes = self._bsizes
        verify = self._verify
        f = self._file
        if f.fd < 0:
            raise ClosedError(f"sstable {self.path} is closed")
        sizes = bsizes[lo:hi]
        total = sum(sizes)
        data = f.pread(boffs[lo], total)
        if len(data) == total:
            try:
                return payload_columns(unframe_blocks(data, sizes, verify), not verify)
            except ValueError:
                pass
        keys: list[bytes] = []
        trailers: array[int] = array("Q")
        values: list[bytes] = []
        for x in range(lo, hi):
            ks, ts, vs = self._load_block(boffs[x], bsizes[x], verify).columns()
            keys += ks
            trailers += ts
            values += vs
        return keys, trailers, values

    def _iter_forward(self, start: bytes | None, stop: bytes | None, fill: bool) -> Iterator[Entry]:
        ikeys = self._ikeys
        nb = len(ikeys)
        block = self._block
        i = 0 if start is None else bisect_left(ikeys, start)
        if i < nb and start is not None:
            # The first block may begin before start: its entries one by
            # one (a seek reads only a few of them).
            b = block(i, fill)
            j = b.seek(start)
            hi = b.n
            if stop is not None and ikeys[i] >= stop:
                hi = b.seek(stop, j)
            p = b.p
            o = b.o
            t = b.t
            n = b.n
            while j < hi:
                yield p[o[j] : o[j + 1]], t[j], p[o[n + j] : o[n + j + 1]]
                j += 1
            if hi < b.n:
                return
            i += 1
        while i < nb:
            b = block(i, fill)
            if stop is not None and ikeys[i] >= stop:
                k, t, v = b.columns(0, b.seek(stop))
                yield from zip(k, t, v)
                return
            k, t, v = b.columns()
            yield from zip(k, t, v)
            i += 1

    def _iter_reverse(self, start: bytes | None, stop: bytes | None, fill: bool) -> Iterator[Entry]:
        ikeys = self._ikeys
        nb = len(ikeys)
        block = self._block
        i = nb - 1
        if stop is not None:
            # The first block whose last key reaches stop may hold keys below
            # it; later blocks hold none.
            i = min(bisect_left(ikeys, stop), nb - 1)
        first = True
        while i >= 0:
            b = block(i, fill)
            hi = b.n
            if first:
                first = False
                if stop is not None and b.key(hi - 1) >= stop:
                    hi = b.seek(stop)
            if start is not None and b.key(0) < start:
                # The last block to visit: earlier blocks end before start.
                yield from reversed(b.entries(b.seek(start, 0, hi), hi))
                return
            yield from reversed(b.entries(0, hi))
            i -= 1
