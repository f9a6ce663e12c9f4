"""The sstable reader: open and check one table file, point lookups (range
iteration: lsm/sstable/scan.py, a base class of :class:`TableReader`;
format: docs/format/sstable.md).

``open`` verifies the footer (magic, version, crc), checks that the footer's
handles tile the file, and reads and checks the filter, properties, index
and (format version 2) range-deletion blocks (crc always verified) before
anything else is trusted. The range tombstones are kept in memory as a
:class:`~lsm.base.rangedel.RangeDels` (``range_dels``; None in a table
without any, the common case). Each data
block read then checks its handle against the file, its crc (when
``verify_checksums``), bounds its decompression by its trailer, and checks
its layout; any failure raises ``CorruptionError`` naming the file and the
block offset. Corrupt data is never returned as valid (with
``verify_checksums=False`` a damaged data block is caught only when its
layout is inconsistent).

A data block is held as a :class:`~lsm.sstable.block.BlockView`: the
checked payload with its offsets and trailers arrays (a fixed-size block:
its layout's shared offsets, trailers read from the payload), nothing cut. A point
lookup bisects the keys through the offsets (no per-entry work, M8 in
docs/format/sstable.md); iteration cuts the entries of a block in bulk as
it reaches it. Views are cached in the
:class:`~lsm.sstable.cache.BlockCache` under ``(file_number,
block_offset)``, charged their payload bytes plus the objects they own
(``_BLOCK_CHARGE``, ``_VIEW_CHARGE``), and never mutated. A point lookup
in a block stored raw in a mapped table builds no view and caches nothing:
it searches a checked copy of the block (``find_entry``, ``_raw``).

Thread-safety: a reader is shared by all threads after ``open`` (its index
and filter are immutable, ``pread`` has no file position, the cache has its
own lock). The ``bloom_*`` counters are updated without a lock: exact in one
thread, approximate under concurrency. ``close`` must not race with reads.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left
from typing import Final

from crc32c import crc32c as _crc32c

from lsm.base.checksum import _MASK_DELTA
from lsm.base.checksum import ROTATE_MUL as _ROTATE_MUL
from lsm.base.compression import _LZ4_MAX_RATIO, _lz4_decompress
from lsm.base.compression import LZ4 as _LZ4
from lsm.base.compression import NONE as _NONE
from lsm.base.compression import _lz4 as _lz4_module
from lsm.base.errors import ClosedError
from lsm.base.fs import FileSystem, ReadableFile
from lsm.base.rangedel import RangeDels
from lsm.sstable.block import BlockView, fixed_block_head
from lsm.sstable.bloom import key_hashes
from lsm.sstable.cache import BlockCache
from lsm.sstable.format import BLOCK_TRAILER, BLOCK_TRAILER_SIZE, unframe_block
from lsm.sstable.reader_check import check_table
from lsm.sstable.reader_meta import TableMeta
from lsm.sstable.scan import TableScan

__all__ = ["TableReader"]

# The common data block's path (_load_block), bound once.
_TRAILER_UNPACK: Final = BLOCK_TRAILER.unpack_from
_U32_UNPACK: Final = struct.Struct("<I").unpack_from
_LITTLE: Final = sys.byteorder == "little"
_new_view: Final = object.__new__
_U64_AT: Final = struct.Struct("<Q").unpack_from
_LZ4Error: Final = _lz4_module.LZ4BlockError

Entry = tuple[bytes, int, bytes]

_ENTRY_CHARGE: Final = 12
"""Memory of one entry of a cached :class:`BlockView` besides its payload
bytes: two u32 offsets and one u64 trailer in the arrays."""
_BLOCK_CHARGE: Final = 332
"""Memory of one cached view besides its arrays' items and payload: the view
(72), the payload bytes object's header (33), two array objects (2 x 80),
the cache's key (an int made per entry, 32) and OrderedDict slot, rounded
up."""
_VIEW_CHARGE: Final = 352
"""Memory of one cached view with no arrays of its own (a fixed-size block:
offsets shared by its layout, trailers read from the payload) besides its
payload: the view (72), the bytes header (33), the cache's key (an int made
per entry, 32), entry tuple and charge (~90) and OrderedDict slot (~55-85,
by how recently it grew): 278-296 bytes measured before the key was made
per entry (tracemalloc over 387-1,000 cached 4,100-byte blocks; 638 with
the arrays, charged 672), rounded up."""


_LAYOUTS: dict[int, tuple[bytes, array, int, int, int, int]] = {}
"""Payload size -> ``(head, offsets, trailers start, trailers end, n, key
length)`` of a fixed-size block layout (every key one length, every value
one length) that :meth:`TableReader._load_block` has checked once: a block of that size
whose first ``8n + 8`` bytes equal ``head`` (:func:`fixed_block_head`) has
exactly those offsets, so it takes the shared ``offsets`` array instead of
decoding its own. Bounded: cleared at 256 sizes. Read without a lock (a
dict get); an entry is immutable once made."""


def _learn_layout(p: bytes, o: array, n: int) -> bool:
    """Remember the layout of the checked block payload ``p`` (offsets
    ``o``, ``n`` entries) in :data:`_LAYOUTS` when it is fixed-size; False
    when it is not (the reader then stops trying: ~1.5k instructions a
    load of a variable-size block, callgrind)."""
    base = o[0]
    kl = o[1] - base
    vl = o[n + 1] - o[n]
    if kl < 0 or vl < 0 or o[n] - base != n * kl or len(p) - o[n] != n * vl:
        return False  # (lengths below zero: offsets that decrease, in a block with a good crc)
    head = fixed_block_head(n, kl, vl)
    if not p.startswith(head):
        return False
    if len(_LAYOUTS) >= 256:
        _LAYOUTS.clear()
    _LAYOUTS[len(p)] = (head, o, 8 * n + 8, base, n, kl)
    return True


class TableReader(TableScan, TableMeta):
    """An open sstable. Create with :meth:`open`. Its scan methods
    (``iter_entries``, ``iter_columns``) are in lsm/sstable/scan.py."""

    def __init__(
        self,
        f: ReadableFile,
        path: str,
        file_number: int,
        cache: BlockCache | None,
        verify_checksums: bool,
    ) -> None:
        """Use :meth:`open`. Reads and checks the table's metadata from ``f``."""
        self._file = f
        self._map = getattr(f, "map", None)
        """A MappedFile's map: a block read is a slice of it, no call."""
        self.path = path
        self.file_number = file_number
        self._cache = cache
        self._verify = verify_checksums
        self._learn = True
        """False once a block of variable-size entries was loaded: no more
        :func:`_learn_layout` attempts (a table's blocks are alike)."""
        self._raw = self._map is not None and verify_checksums
        """True while this mapped, crc-checked table may hold its data
        blocks raw (compression ``none``, or blocks LZ4 could not shrink):
        ``find_entry`` then searches a copy of the block taken from the map,
        with no view and no cache entry (a copy and a crc cost less than a
        cache hit's bookkeeping). Set False, without a lock (any thread's
        write is final and every value is safe), at the first compressed
        block or once the table shows variable-size entries."""
        self.bloom_useful = 0
        self.bloom_checked = 0
        self.range_dels: RangeDels | None = None
        """The table's range tombstones, fragmented; None when it has none."""
        self._load_meta()
        self.clean_seq = self._scan_clean_seq()
        """The smallest snapshot at which a scan may take the table's
        entries unchecked (``clean_at``, lsm/sstable/scan.py)."""

    @classmethod
    def open(
        cls,
        fs: FileSystem,
        path: str,
        *,
        file_number: int,
        cache: BlockCache | None = None,
        verify_checksums: bool = True,
        mapped: bool = False,
    ) -> TableReader:
        """Open and check the table at ``path``. Raises CorruptionError when
        it is not an intact sstable, OSError when it cannot be read.
        ``mapped``: read through a memory map (``FileSystem.open_read_mapped``,
        the ``mmap_reads`` option)."""
        f = fs.open_read_mapped(path) if mapped else fs.open_read(path)
        try:
            return cls(f, path, file_number, cache, verify_checksums)
        except BaseException:
            f.close()
            raise

    # ------------------------------------------------------------ blocks
    def _block(self, i: int, fill_cache: bool = True) -> BlockView:
        """Data block ``i``, through the cache."""
        off = self._boffs[i]
        cache = self._cache
        if cache is not None:
            ck = self._cbase + off
            b = cache.get(ck)
            if b is not None:
                return b  # type: ignore[return-value]
            b = self._load_block(off, self._bsizes[i], self._verify)
            if fill_cache:
                c = _VIEW_CHARGE if b._t is None else _BLOCK_CHARGE + _ENTRY_CHARGE * b.n
                cache.put(ck, b, len(b.p) + c)
            return b
        return self._load_block(off, self._bsizes[i], self._verify)

    def _load_block(self, off: int, n: int, verify: bool) -> BlockView:
        """Read, check and decode the block at ``off`` (``n`` bytes with its
        trailer). ``verify``: check the crc (without it, the offsets are
        checked to never decrease).

        The common block (crc checked, LZ4 or stored raw, a consistent
        layout) is done here with the shared ``masked_crc`` and
        ``decompress``: the trailer, crc, codec and the view's arrays, the
        same checks as :func:`unframe_block` and :class:`BlockView` make,
        without their nested calls (point
        reads in docs/benchmarks.md: a missed block of readrandom). Anything
        else, a failed check included, takes :meth:`_load_block_checked`,
        which decides again and raises the precise CorruptionError."""
        f = self._file
        if f.fd < 0:
            raise ClosedError(f"sstable {self.path} is closed")
        m = self._map
        s = n - BLOCK_TRAILER_SIZE
        if m is None:
            data = f.pread(off, n)
            ok = len(data) == n
            at = s
        else:
            # Mapped: the trailer is unpacked from the map itself and only
            # the crc's input is copied out (one slice instead of the
            # block, a memoryview and two views of it: ~1.5k instructions
            # less per load, callgrind).
            data = m
            ok = off + n <= len(m)
            at = off + s
        if verify and s > 0 and ok:
            # The copy first, then the trailer: read after the copy, the
            # trailer's bytes are in the CPU cache (read first, from a cold
            # block, they cost a miss of their own: ~120 ns a load, session
            # 14 in docs/benchmarks.md).
            d = data[: at + 5] if m is None else m[off : at + 5]  # stored bytes + codec + size
            cid, usize, stored = _TRAILER_UNPACK(data, at)
            # masked_crc (lsm/base/checksum.py) without its frame (~1k
            # instructions less per load).
            if ((_crc32c(d) * _ROTATE_MUL >> 15) + _MASK_DELTA) & 0xFFFFFFFF == stored and (
                cid == _LZ4 or cid == _NONE
            ):
                # The crc covers the codec and size: LZ4 is called directly
                # (no _lz4_exact frame, ~1k instructions a load), with its
                # ratio bound kept (a crafted block with a good crc must not
                # allocate gigabytes); the size is checked below.
                try:
                    if cid == _NONE:
                        p = d[:s]
                    elif usize <= _LZ4_MAX_RATIO * s:
                        p = _lz4_decompress(d[:s], usize)
                    else:
                        p = None
                except (ValueError, _LZ4Error):
                    p = None
                if p is not None and len(p) == usize and usize >= 8:
                    fx = _LAYOUTS.get(usize) if self._learn else None
                    if fx is not None and p.startswith(fx[0]):
                        # A fixed-size layout seen before: its count and
                        # offsets are these bytes exactly (one compare
                        # checks them all), its offsets array is shared.
                        b = _new_view(BlockView)
                        b.p = p
                        b.o = fx[1]
                        b._t = None  # find reads the trailers from p
                        b.n = fx[4]
                        b.k = fx[5]
                        return b
                    nb = _U32_UNPACK(p)[0]
                    base = 16 * nb + 8
                    if nb and base <= usize:
                        o = array("I")
                        o.frombytes(p[4 : 8 * nb + 8])
                        if _LITTLE and o[0] == base and o[-1] == usize:
                            t = array("Q")
                            t.frombytes(p[8 * nb + 8 : base])
                            b = _new_view(BlockView)
                            b.p = p
                            b.o = o
                            b._t = t
                            b.n = nb
                            b.k = 0
                            if self._learn:
                                self._learn = _learn_layout(p, o, nb)
                            return b
        return self._load_block_checked(off, n, verify, data if m is None else m[off : off + n])

    def _load_block_checked(self, off: int, n: int, verify: bool, data: bytes) -> BlockView:
        """:meth:`_load_block` through :func:`unframe_block` and
        :class:`BlockView`: every codec, and the error of a failed check."""
        if len(data) != n:
            raise self._corrupt(f"data block truncated ({len(data)} of {n} bytes)", off)
        try:
            b = BlockView(unframe_block(data, verify), not verify)
        except ValueError as e:
            raise self._corrupt(f"data block: {e}", off) from None
        if not b.n:
            raise self._corrupt("empty data block", off)
        return b

    # ------------------------------------------------------------ lookups
    def may_contain(self, key: bytes) -> bool:
        """False when the bloom filter rules ``key`` out (True without a
        filter). Not counted in ``bloom_*``."""
        b = self._bloom if self._bloom is not None else self._bloom_old
        return True if b is None else b.may_contain(key)

    def get(self, key: bytes, snapshot_seq: int) -> tuple[int, bytes] | None:
        """``(kind, value)`` of the newest version of ``key`` with seq <=
        ``snapshot_seq``; None when the table holds no such version (see
        :meth:`get_entry`)."""
        e = self.get_entry(key, snapshot_seq)
        return None if e is None else (e[1] & 0xFF, e[2])

    def get_entry(self, key: bytes, snapshot_seq: int) -> Entry | None:
        """The entry ``(key, trailer, value)`` of the newest version of
        ``key`` with seq <= ``snapshot_seq``, or None (a caller may need its
        seq: a range tombstone elsewhere may be newer). Reads at most one
        data block: the index's last trailers skip blocks whose versions of
        ``key`` are all newer than the snapshot."""
        h1, h2 = key_hashes(key)
        return self.lookup(key, (snapshot_seq << 8) | 0xFF, h1, h2)

    def lookup(self, key: bytes, target: int, h1: int, h2: int) -> Entry | None:
        """:meth:`get_entry` for the DB's point lookups: ``target`` is
        ``snapshot_seq << 8 | 0xFF``, ``(h1, h2)`` the key's
        :func:`~lsm.sstable.bloom.key_hashes` (computed once per get for
        every table probed). A cached block is taken from the cache's map
        here rather than through :meth:`_block` (two calls fewer per get,
        readrandom in docs/benchmarks.md). So is the bloom probe
        (:meth:`BloomFilter.may_contain_hashed`, the same two lines), and a
        missed block is loaded and cached here, not through :meth:`_block`
        (which would look it up in the cache a second time)."""
        bloom = self._bloom
        if bloom is not None:
            self.bloom_checked += 1
            mask = bloom.masks[h2 >> 20]
            if bloom.words[h1 % bloom.nw] & mask != mask:
                self.bloom_useful += 1
                return None
        elif self._bloom_old is not None:
            self.bloom_checked += 1
            if not self._bloom_old.may_contain_hashed(h1, h2):
                self.bloom_useful += 1
                return None
        return self.find_entry(key, target)

    def find_entry(self, key: bytes, target: int) -> Entry | None:
        """:meth:`lookup` after the bloom filter passed ``key`` (or without
        consulting it): the index bisect and at most one data block.
        ``DB._get`` probes a blocked filter itself and calls this directly
        (a rejected table then costs no call, ~2k instructions)."""
        ikeys = self._ikeys
        nb = len(ikeys)
        i = bisect_left(ikeys, key)
        if i < nb and ikeys[i] == key:
            itr = self._itrailers
            while i < nb and ikeys[i] == key and itr[i] > target:
                i += 1
        if i == nb:
            return None
        # Block i's last entry is at or after (key, target) in internal
        # order, block i-1's is before it: the version sought is in block i.
        p: bytes | None = None  # the payload to search (a fixed-size block's)
        b: BlockView | None = None  # the view it came from (None on the raw path)
        off = self._boffs[i]
        if self._raw:
            # A block stored raw in a mapped table: searched in a copy of
            # its bytes, crc checked, without a view or the cache (see
            # ``_raw``; ~16% fewer instructions per present get). Anything
            # else (a compressed block, a damaged one, a layout not seen
            # yet, a key of another length) takes the cache path below,
            # which decides. The handle lies inside the map: _check_index
            # tiled the data blocks from 0 to the meta blocks, and the map
            # spans the file.
            m = self._map
            at = off + self._bsizes[i] - BLOCK_TRAILER_SIZE
            try:
                # Copied before the trailer is read, as in _load_block (a
                # compressed table leaves this path at its first block).
                d = m[off : at + 5]  # type: ignore[index]  # (_raw: a map)
                cid, usize, stored = _TRAILER_UNPACK(m, at)  # type: ignore[arg-type]
            except ValueError:  # a closed map: _load_block raises ClosedError
                cid = -1
            if cid == _NONE:
                fx = _LAYOUTS.get(usize)
                if (fx is not None and usize == at - off and d.startswith(fx[0]) and len(key) == fx[5]
                        and ((_crc32c(d) * _ROTATE_MUL >> 15) + _MASK_DELTA) & 0xFFFFFFFF == stored):
                    p = d  # (the 5 trailer bytes after the payload are never searched)
                    o = fx[1]
                    n = fx[4]
                    k = fx[5]
                elif not self._learn:
                    self._raw = False  # variable-size entries: no layout to use
            elif cid >= 0:
                self._raw = False  # a compressed table (its first block tells)
        if p is None:
            cache = self._cache
            if cache is not None:
                # BlockCache.get, inlined (same lock-free protocol).
                ck = self._cbase + off
                m = cache._map
                e = m.get(ck)
                if e is not None:
                    try:
                        m.move_to_end(ck)
                    except KeyError:  # evicted meanwhile by another thread
                        pass
                    cache.hits += 1
                    v: BlockView = e[0]  # type: ignore[assignment]
                else:
                    cache.misses += 1
                    v = self._load_block(off, self._bsizes[i], self._verify)
                    c = len(v.p) + (_VIEW_CHARGE if v._t is None else _BLOCK_CHARGE + _ENTRY_CHARGE * v.n)
                    # c > 0: nothing is cached at capacity 0. When the charges
                    # would not fit, the doorkeeper decides (BlockCache.admit).
                    if c <= cache.capacity and (cache.usage + c <= cache.capacity or cache.admit(ck)):
                        # BlockCache.put, inlined (the same steps under the
                        # cache's lock; change both together): one frame less
                        # per block read from disk (~1k instructions, readrandom).
                        mu = cache._mu
                        mu.acquire()
                        try:
                            old = m.pop(ck, None)
                            if old is not None:
                                cache.usage -= old[1]
                            m[ck] = (v, c)
                            u = cache.usage + c
                            cap = cache.capacity
                            while u > cap:
                                u -= m.popitem(False)[1][1]
                            cache.usage = u
                        finally:
                            mu.release()
            else:
                v = self._load_block(off, self._bsizes[i], self._verify)
            b = v
            k = v.k
            if not k:
                return v.find(key, target)
            if len(key) != k:
                return None
            p = v.p
            o = v.o
            n = v.n
        # BlockView.find's fixed-size case, inlined (one frame less per get
        # that reaches a block, ~1k instructions; change both together):
        # every key has k bytes, so an occurrence of key in the keys is its
        # first entry exactly when it starts at a multiple of k; the
        # trailers are read from the payload.
        a = p.find(key, o[0], o[n])
        if a < 0:
            return None
        j, r = divmod(a - o[0], k)
        if not r:
            while True:
                tr = _U64_AT(p, 8 * (n + 1 + j))[0]
                if tr <= target:
                    return key, tr, p[o[n + j] : o[n + j + 1]]
                j += 1
                if j == n or not p.startswith(key, o[j]):
                    return None
        # A hit straddling two keys: the view's bisection (on the raw path,
        # the block's view through the cache).
        return (self._block(i) if b is None else b).find(key, target)

    # ------------------------------------------------------------ checks and life cycle
    def check(self) -> None:
        """Invariant checker (tests, ``lsm check``): reads every data block
        with its crc verified, bypassing the cache; the entries must be in
        strictly increasing internal order, end each block with its index
        entry, and agree with the properties. Raises CorruptionError
        (lsm/sstable/reader_check.py)."""
        check_table(self)

    @property
    def file(self) -> ReadableFile:
        """The open file (the DB attaches a finalizer that closes it when no
        super version holds this reader any more)."""
        return self._file

    def close(self) -> None:
        self._file.close()

    def __repr__(self) -> str:
        return f"TableReader({self.path!r}, entries={self.properties.num_entries})"
