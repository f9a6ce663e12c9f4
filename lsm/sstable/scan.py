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
(:meth:`TableScan._scan_blocks`; docs/benchmarks.md, "Scan profile").

Thread-safety: as the reader's (a reader is shared by all threads; each
iterator is used by one thread at a time).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from lsm.base.coding import MAX_SEQ
from lsm.base.errors import ClosedError
from lsm.sstable.block import BlockView, unframe_blocks

if TYPE_CHECKING:
    from lsm.base.fs import ReadableFile
    from lsm.base.rangedel import RangeDels
    from lsm.sstable.block import TableProperties
    from lsm.sstable.cache import BlockCache

__all__ = ["TableScan"]

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
        _boffs: list[int]
        _ckeys: list[tuple[int, int]]
        _bsizes: list[int]

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
        scan's later blocks never do (:meth:`_scan_blocks`)."""
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
        # The first block whose last key reaches stop may hold keys below
        # it; later blocks hold none. Blocks before the first whose last
        # key reaches start hold no key of the scan.
        i = nb - 1 if stop is None else min(bisect_left(ikeys, stop), nb - 1)
        blocks = self._scan_blocks(i, -1 if start is None else min(bisect_left(ikeys, start), nb - 1) - 1, -1, fill_cache)
        want = nchunks = 0
        while i >= 0:
            b = next(blocks)
            hi = b.n if stop is None else b.seek(stop)
            stop = None
            # last: the blocks before this one end below start
            last = start is not None and (i == 0 or ikeys[i - 1] < start)
            keys, trailers, values = b.columns(b.seek(start, 0, hi) if last and start is not None else 0, hi)
            i -= 1
            while len(keys) < want and i >= 0 and not last:
                b = next(blocks)
                last = start is not None and (i == 0 or ikeys[i - 1] < start)
                k, t, v = b.columns(b.seek(start) if last and start is not None else 0)
                keys = k + keys
                trailers = t + trailers
                values = v + values
                i -= 1
            if keys:
                yield keys, trailers, values
            if last:
                return
            nchunks += 1
            want = _chunk_want(nchunks)

    def _columns_forward(
        self, start: bytes | None, stop: bytes | None, fill_cache: bool
    ) -> Iterator[tuple[list[bytes], array[int], list[bytes]]]:
        ikeys = self._ikeys
        nb = len(ikeys)
        i = 0 if start is None else bisect_left(ikeys, start)
        # The first block whose last key reaches stop is the last to read.
        blocks = self._scan_blocks(i, nb if stop is None else min(nb, bisect_left(ikeys, stop) + 1), 1, fill_cache)
        want = nchunks = 0
        while i < nb:
            b = next(blocks)
            lo = 0 if start is None else b.seek(start)
            start = None
            # last: this block reaches stop (holds the scan's last entries)
            last = stop is not None and ikeys[i] >= stop
            keys, trailers, values = b.columns(lo, b.seek(stop, lo) if stop is not None and last else None)
            i += 1
            while len(keys) < want and i < nb and not last:
                b = next(blocks)
                last = stop is not None and ikeys[i] >= stop
                k, t, v = b.columns(0, b.seek(stop) if stop is not None and last else None)
                keys += k
                trailers += t
                values += v
                i += 1
            if keys:
                yield keys, trailers, values
            if last:
                return
            # One block per chunk for the first three (a seek's refills read
            # no more than a heap merge would), then doubling to 512 entries.
            nchunks += 1
            want = _chunk_want(nchunks)

    def _scan_blocks(self, i: int, end: int, step: int, fill_cache: bool) -> Iterator[BlockView]:
        """Data blocks ``i, i + step, ...`` (step 1 or -1) up to ``end``
        (excluded), for :meth:`iter_columns`. The first ``_SEEK_BLOCKS``
        one at a time through the cache, cached when ``fill_cache`` (a
        seek's). After that the scan is a long one: the blocks not in the
        cache are read ahead, a run of neighbours per ``pread``
        (``_READAHEAD_MAX`` at most), their crcs checked and decompressed
        together (:func:`~lsm.sstable.block.unframe_blocks`), and *not*
        cached, whatever ``fill_cache`` says: a long scan neither evicts
        the working set of point reads nor leaves a cached view per block
        for the garbage collector to traverse (readseq in
        docs/benchmarks.md, "Scan profile"); blocks already cached are
        used."""
        block = self._block
        k = 0
        while i != end and k < _SEEK_BLOCKS:
            yield block(i, fill_cache)
            i += step
            k += 1
        cache = self._cache
        ckeys = self._ckeys
        ahead = 2
        while i != end:
            j = i + step * ahead
            if (j - end) * step > 0:
                j = end
            idx = range(i, j, step)
            views: list[BlockView | None] = (
                [None] * len(idx) if cache is None else [cache.get(ckeys[x]) for x in idx]  # type: ignore[misc]
            )
            r = 0
            while r < len(idx):
                if views[r] is not None:
                    r += 1
                    continue
                s = r
                while r < len(idx) and views[r] is None:
                    r += 1
                a, z = idx[s], idx[r - 1]
                if step > 0:
                    views[s:r] = self._load_blocks(a, z + 1)
                else:
                    views[s:r] = self._load_blocks(z, a + 1)[::-1]
            yield from views  # type: ignore[misc]
            i = j
            if ahead < _READAHEAD_MAX:
                ahead <<= 1

    def _load_blocks(self, lo: int, hi: int) -> list[BlockView]:
        """Data blocks ``[lo, hi)``, read in one ``pread`` (they lie back to
        back) and checked as :meth:`_load_block` checks one; not cached. On
        any damage they are read again one by one, so that the
        ``CorruptionError`` names the block."""
        boffs = self._boffs
        bsizes = self._bsizes
        verify = self._verify
        if hi - lo > 1:
            f = self._file
            if f.fd < 0:
                raise ClosedError(f"sstable {self.path} is closed")
            sizes = bsizes[lo:hi]
            total = sum(sizes)
            data = f.pread(boffs[lo], total)
            if len(data) == total:
                try:
                    views = [BlockView(p, not verify) for p in unframe_blocks(data, sizes, verify)]
                    if all(b.n for b in views):
                        return views
                except ValueError:
                    pass
        return [self._load_block(boffs[x], bsizes[x], verify) for x in range(lo, hi)]

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
