"""The metadata half of :class:`~lsm.sstable.reader.TableReader`: reading
and checking a table's footer, properties, index, filter and range-deletion
blocks when it is opened (docs/format/sstable.md, "What the reader
checks"). A mixin: its methods run once per open, on the reader's own
attributes; the read path is in lsm/sstable/reader.py."""

from __future__ import annotations

import struct
from array import array
from typing import TYPE_CHECKING

from lsm.base.coding import ValueKind
from lsm.base.errors import CorruptionError
from lsm.base.rangedel import RangeDels
from lsm.sstable.block import decode_block
from lsm.sstable.bloom import BloomFilter, RoaringBloomFilter, decode_filter
from lsm.sstable.format import (
    BLOCK_TRAILER_SIZE,
    FOOTER_SIZE,
    FORMAT_VERSION_1,
    HANDLE,
    decode_footer_version,
    decode_properties,
    decode_range_dels_props,
    unframe_block,
)

if TYPE_CHECKING:
    from lsm.base.fs import ReadableFile

_CKEY_SPAN = 1 << 40
"""Block cache keys are ``file_number * _CKEY_SPAN + offset`` for tables
shorter than this (``_cbase`` in :meth:`TableMeta._load_meta`)."""


class TableMeta:
    """Open-time metadata of a table reader (mixed into TableReader, which
    sets ``_file``, ``path``, ``file_number`` and ``range_dels`` first).
    Sets ``format_version``, ``properties``, ``range_dels``, ``_ikeys``,
    ``_itrailers``, ``_boffs``, ``_bsizes``, ``_cbase``, ``_bloom`` and
    ``_bloom_old``; raises CorruptionError naming the file and offset."""

    # Set by TableReader.__init__ before _load_meta; declared for mypy
    # (annotations only: no class attributes).
    _file: ReadableFile
    path: str
    file_number: int
    range_dels: RangeDels | None

    def _corrupt(self, reason: str, offset: int | None) -> CorruptionError:
        return CorruptionError(reason, self.path, offset)

    def _load_meta(self) -> None:
        size = self._file.size
        if size < FOOTER_SIZE:
            raise self._corrupt(
                f"not an sstable: {size} bytes is too short for the {FOOTER_SIZE}-byte footer", 0
            )
        foot = size - FOOTER_SIZE
        data = self._file.pread(foot, FOOTER_SIZE)
        try:
            self.format_version, filter_h, props_h, index_h = decode_footer_version(data)
        except ValueError as e:
            raise self._corrupt(str(e), foot) from None
        # The meta blocks and the footer tile the end of the file, in order.
        t = BLOCK_TRAILER_SIZE
        if index_h[0] + index_h[1] + t != foot or props_h[0] + props_h[1] + t != index_h[0]:
            raise self._corrupt("footer handles do not tile the file", foot)
        if filter_h == (0, 0):
            data_end = props_h[0]
        elif filter_h[0] + filter_h[1] + t == props_h[0]:
            data_end = filter_h[0]
        else:
            raise self._corrupt("footer handles do not tile the file", foot)

        payload = self._read_meta(props_h, "properties")
        try:
            self.properties, nblocks = decode_properties(payload, size)
            rd_h = None
            if self.format_version != FORMAT_VERSION_1:
                rd_h, self.properties.num_range_dels = decode_range_dels_props(payload)
        except ValueError as e:
            raise self._corrupt(f"properties block: {e}", props_h[0]) from None
        if rd_h is not None:
            # Version 2: the range-deletion block sits between the data
            # blocks and the first meta block.
            if rd_h[0] + rd_h[1] + t != data_end:
                raise self._corrupt("range-deletion block handle does not tile the file", props_h[0])
            self._load_range_dels(rd_h)
            data_end = rd_h[0]

        payload = self._read_meta(index_h, "index")
        try:
            ikeys, itrailers, ivalues = decode_block(payload, check_offsets=True)
            handles = [HANDLE.unpack(v) for v in ivalues]
        except (ValueError, struct.error) as e:  # struct.error: a handle of the wrong size
            raise self._corrupt(f"index block: {e}", index_h[0]) from None
        self._check_index(ikeys, handles, nblocks, data_end, index_h[0])
        self._ikeys = ikeys
        self._itrailers = itrailers
        # Offsets and sizes (stored + trailer) of the data blocks, in arrays:
        # a point lookup reads one number from contiguous memory instead of
        # an int object somewhere in the heap (cache misses, readrandom in
        # docs/benchmarks.md "Session 14").
        self._boffs = array("q", [h[0] for h in handles])
        self._bsizes = array("q", [h[1] + t for h in handles])
        # Block cache keys: ``_cbase + offset``, one int (it hashes as itself;
        # a (file_number, offset) tuple was hashed on every access and was
        # one more object to fetch). ``file_number * 2**40 + offset`` for a
        # table under 1 TiB, else ``-(file_number + 1) * 2**64 + offset``
        # (negative): distinct for every (file, block).
        fn = self.file_number
        self._cbase = fn * _CKEY_SPAN if data_end < _CKEY_SPAN else -(fn + 1) * 2**64

        # A blocked filter is probed inline by lookup; a Roaring one (tables
        # written before session 8) through its method.
        self._bloom: BloomFilter | None = None
        self._bloom_old: RoaringBloomFilter | None = None
        if filter_h != (0, 0):
            payload = self._read_meta(filter_h, "filter")
            try:
                f = decode_filter(payload)
            except ValueError as e:
                raise self._corrupt(f"filter block: {e}", filter_h[0]) from None
            if isinstance(f, BloomFilter):
                self._bloom = f
            else:
                self._bloom_old = f

    def _load_range_dels(self, h: tuple[int, int]) -> None:
        """Read and check the range-deletion block: pieces ``(start, stop,
        seq)`` as a block (keys starts, values stops, trailers seq << 8 |
        RANGE_DELETE) in fragment order, seqs descending within a fragment;
        fragments non-empty and disjoint; agreeing with the properties."""
        payload = self._read_meta(h, "range-deletion")
        p = self.properties
        try:
            keys, trailers, values = decode_block(payload, check_offsets=True)
            if not keys or len(keys) != p.num_range_dels:
                raise ValueError(f"{len(keys)} pieces, properties say {p.num_range_dels}")
            starts: list[bytes] = []
            ends: list[bytes] = []
            seqs: list[tuple[int, ...]] = []
            group: list[int] = []
            for k, tr, v in zip(keys, trailers, values):
                if tr & 0xFF != ValueKind.RANGE_DELETE or tr >> 8 == 0:
                    raise ValueError(f"bad trailer {tr:#x} at {k!r}")
                if starts and k == starts[-1]:
                    if v != ends[-1] or tr >> 8 >= group[-1]:
                        raise ValueError(f"pieces of the fragment at {k!r} disagree or are out of order")
                    group.append(tr >> 8)
                    continue
                if group:
                    seqs.append(tuple(group))
                starts.append(k)
                ends.append(v)
                group = [tr >> 8]
            seqs.append(tuple(group))
            rd = RangeDels(starts, ends, seqs)
            rd.check()
            lo, hi = rd.seq_range()
            if rd.smallest < p.smallest or rd.largest > p.largest or lo < p.min_seq or hi > p.max_seq:
                raise ValueError("tombstones outside the key or seq range of the properties")
        except ValueError as e:
            raise self._corrupt(f"range-deletion block: {e}", h[0]) from None
        self.range_dels = rd

    def _read_meta(self, h: tuple[int, int], what: str) -> bytes:
        n = h[1] + BLOCK_TRAILER_SIZE
        data = self._file.pread(h[0], n)
        if len(data) != n:
            raise self._corrupt(f"{what} block truncated", h[0])
        try:
            return unframe_block(data, True)
        except ValueError as e:
            raise self._corrupt(f"{what} block: {e}", h[0]) from None

    def _check_index(
        self,
        ikeys: list[bytes],
        handles: list[tuple[int, int]],
        nblocks: int,
        data_end: int,
        index_off: int,
    ) -> None:
        """The index must list the data blocks back to back from offset 0 to
        the first meta block, in non-decreasing key order, and agree with the
        properties."""
        p = self.properties
        if len(handles) != nblocks or (nblocks == 0) != (p.num_entries == 0):
            raise self._corrupt(
                f"index lists {len(handles)} blocks, properties say {nblocks} blocks "
                f"and {p.num_entries} entries",
                index_off,
            )
        pos = 0
        for off, size in handles:
            if off != pos:
                raise self._corrupt(f"index: data block at {off}, expected {pos}", index_off)
            pos = off + size + BLOCK_TRAILER_SIZE
        if pos != data_end:
            raise self._corrupt(
                f"index: data blocks end at {pos}, meta blocks start at {data_end}", index_off
            )
        if ikeys != sorted(ikeys):
            raise self._corrupt("index keys out of order", index_off)
        largest = ikeys[-1] if ikeys else None
        rd = self.range_dels
        if rd is not None:
            largest = rd.largest if largest is None else max(largest, rd.largest)
        if largest is not None and largest != p.largest:
            raise self._corrupt("index and properties disagree on the largest key", index_off)
