"""Byte formats of an sstable, with no I/O: block framing (compression and
checksum), the payload of data / index / properties blocks, block handles and
the footer. Specified in docs/format/sstable.md; every constant marked "part
of the on-disk format" is frozen (a change bumps :data:`FORMAT_VERSION`, the
doc and the golden test in tests/test_sstable.py together).

Decoders raise ``ValueError`` with a reason; the reader turns it into
``CorruptionError`` naming the file and the block offset.

Block payload (data, index and properties blocks alike), little-endian::

    n         u32                     entry count
    offsets   (2n+1) x u32            absolute offsets into this payload:
                                      item i is payload[offsets[i]:offsets[i+1]],
                                      items 0..n-1 are keys, n..2n-1 values;
                                      offsets[0] == 16n+8, offsets[2n] == len
    trailers  n x u64                 seq << 8 | kind, per entry
    keys      concatenated key bytes
    values    concatenated value bytes

Decoding is a handful of C-level bulk operations per block: the offsets and
trailers arrays are read with ``array.frombytes`` and the items are cut with
one list comprehension (M3 in docs/format/sstable.md: 296 ns/entry for 35
entries of 16+100 bytes, vs 402-424 ns for ``struct.unpack_from`` tuples,
``memoryview.cast`` or ``map(slice)``).

Thread-safety: pure functions on immutable inputs.
"""

from __future__ import annotations

import sys
from array import array
from bisect import bisect_left as _bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from struct import Struct
from typing import Final

from lsm.base import compression as _compression
from lsm.base.checksum import crc as _crc
from lsm.base.checksum import mask as _mask
from lsm.base.coding import U32

# ---------------------------------------------------------------- on-disk constants
MAGIC: Final = 0x0A5453534D534C89
"""Last 8 bytes of every sstable: b"\\x89LSMSST\\n" read as a little-endian
u64. Part of the on-disk format."""

FORMAT_VERSION: Final = 2
"""Newest table format version (in the footer). Part of the on-disk format:
a reader refuses versions it does not know. Version 2 is version 1 plus a
range-deletion block, named by the ``range_dels`` property; the writer
writes version 1 (byte for byte as before) for a table without range
deletions, so only tables that need the new block are unreadable to a
version-1 reader."""

FORMAT_VERSION_1: Final = 1
"""The original layout: no range-deletion block."""

KNOWN_VERSIONS: Final = (FORMAT_VERSION_1, FORMAT_VERSION)

BLOCK_TRAILER: Final = Struct("<BII")
"""After each block's stored bytes: compression id (u8), uncompressed payload
size (u32), masked crc32c (u32) of the stored bytes followed by the first 5
trailer bytes. Part of the on-disk format."""
BLOCK_TRAILER_SIZE: Final = BLOCK_TRAILER.size  # 9
_TRAILER_HEAD: Final = Struct("<BI")

HANDLE: Final = Struct("<QQ")
"""A block handle: offset of the block's first stored byte, and the stored
size excluding the 9-byte trailer. Part of the on-disk format."""

FOOTER: Final = Struct("<QQQQQQIIQ")
"""filter handle, properties handle, index handle, format version, masked
crc32c of the preceding 52 bytes, magic. Part of the on-disk format."""
FOOTER_SIZE: Final = FOOTER.size  # 64
_FOOTER_CRC_SPAN: Final = 52

MAX_BLOCK_PAYLOAD: Final = (1 << 32) - 1
"""Largest payload a block holds (u32 offsets and sizes): one entry's key and
value together must fit."""

MAX_TRAILER: Final = (1 << 64) - 1

_LITTLE: Final = sys.byteorder == "little"
_LZ4: Final = _compression.LZ4
_U64: Final = Struct("<Q")
_U64_AT: Final = _U64.unpack_from

# Property names of the properties block (its keys). Part of the on-disk
# format; readers ignore names they do not know.
_INT_PROPS: Final = (
    (b"data_size", "data_size"),
    (b"max_seq", "max_seq"),
    (b"min_seq", "min_seq"),
    (b"num_data_blocks", None),
    (b"num_deletes", "num_deletes"),
    (b"num_entries", "num_entries"),
)
_BYTES_PROPS: Final = ((b"largest", "largest"), (b"smallest", "smallest"))
# Version 2 only (required there): the range-deletion block's handle and its
# number of tombstone pieces.
PROP_RANGE_DELS: Final = b"range_dels"
PROP_NUM_RANGE_DELS: Final = b"num_range_dels"
# Optional, any version: u64 1 when no user key has two entries in the table
# (absent otherwise, and in tables written before it existed).
PROP_DISTINCT_KEYS: Final = b"distinct_keys"


@dataclass
class TableProperties:
    """Summary of one sstable, stored in its properties block (``file_size``
    is the size of the file, not stored)."""

    file_size: int
    num_entries: int
    """Point entries (range tombstones not included)."""
    num_deletes: int
    smallest: bytes
    """First user key (b"" in an empty table). With range tombstones: the
    smaller of the first entry's key and the first tombstone's start."""
    largest: bytes
    """Last user key (b"" in an empty table). With range tombstones: the
    larger of the last entry's key and the last tombstone's inclusive end
    (``rangedel.inclusive_end``), so the table's key range covers them."""
    min_seq: int
    """Smallest sequence number (0 in an empty table), tombstones included."""
    max_seq: int
    data_size: int
    """Uncompressed key + value bytes of all entries."""
    num_range_dels: int = 0
    """Range tombstone pieces (fragment, seq) in the range-deletion block;
    0 in a version-1 table."""
    distinct_keys: bool = False
    """Every entry has a user key of its own (no key has two versions in
    the table; range tombstones not counted). False when unknown: a table
    written before the property existed. A scan hands such a table's
    entries on without a per-entry version check when it also holds no
    deletion and nothing newer than the scan's snapshot
    (``lsm.iterators.visible_columns``, ``clean``)."""


# ---------------------------------------------------------------- block payload
def encode_block(keys: list[bytes], trailers: list[int] | array[int], values: list[bytes]) -> bytes:
    """The payload of a block holding the given parallel sequences.
    REQUIRES: equal lengths; trailers < 2**64; total size <= MAX_BLOCK_PAYLOAD."""
    n = len(keys)
    items = keys + values
    # One map over the concatenated lists (M5 in docs/format/sstable.md:
    # 152 vs 171 ns/entry chaining two maps).
    offs = array("I", accumulate(map(len, items), initial=16 * n + 8))
    tr = array("Q", trailers)  # a copy when given an array: byteswap must not touch the caller's
    if not _LITTLE:
        offs.byteswap()
        tr.byteswap()
    return b"".join([U32.pack(n), offs.tobytes(), tr.tobytes(), *items])


_HEADS: dict[tuple[int, int, int], bytes] = {}
"""(entries, key length, value length) -> :func:`fixed_block_head`.
Bounded: cleared when it reaches 256 layouts."""


def fixed_block_head(n: int, kl: int, vl: int) -> bytes:
    """The count and offsets of a block of ``n`` entries whose keys all
    have ``kl`` bytes and values ``vl`` (the first ``8n + 8`` bytes of its
    payload, as :func:`encode_block` writes them): the payload is this,
    then the trailers, the keys and the values (``TableWriter._emit_fixed``
    for a flush of fixed-size entries)."""
    head = _HEADS.get((n, kl, vl))
    if head is None:
        base = 16 * n + 8
        offs = array("I", range(base, base + n * kl + 1, kl) if kl else [base] * (n + 1))
        offs.extend(range(offs[-1] + vl, offs[-1] + n * vl + 1, vl) if vl else [offs[-1]] * n)
        if not _LITTLE:
            offs.byteswap()
        head = U32.pack(n) + offs.tobytes()
        if len(_HEADS) >= 256:
            _HEADS.clear()
        _HEADS[(n, kl, vl)] = head
    return head


def _block_arrays(p: bytes, check_offsets: bool) -> tuple[int, array, array]:
    """``(n, offsets, trailers)`` of a block payload, checked (ValueError):
    the one parse that :func:`decode_block` and :class:`BlockView` share."""
    size = len(p)
    if size < 8:
        raise ValueError(f"block payload of {size} bytes is too short")
    n = U32.unpack_from(p)[0]
    base = 16 * n + 8
    if base > size:
        raise ValueError(f"block of {size} bytes cannot hold {n} entries")
    o = array("I")
    o.frombytes(p[4 : 8 * n + 8])
    t = array("Q")
    t.frombytes(p[8 * n + 8 : base])
    if not _LITTLE:
        o.byteswap()
        t.byteswap()
    if o[0] != base or o[-1] != size:
        raise ValueError("block offsets do not span its data area")
    if check_offsets:
        ol = o.tolist()
        if ol != sorted(ol):
            raise ValueError("block offsets decrease")
    return n, o, t


def decode_block(p: bytes, check_offsets: bool = False) -> tuple[list[bytes], list[int], list[bytes]]:
    """``(keys, trailers, values)`` of a block payload. Raises ValueError when
    the layout is inconsistent. ``check_offsets`` also verifies that the
    offsets never decrease (for payloads whose checksum was not verified)."""
    n, o, t = _block_arrays(p, check_offsets)
    # The fastest decoder measured (M3): one comprehension slicing the
    # payload bytes between successive offsets (pairwise and zip(o, o[1:])
    # measured equal).
    items = [p[a:b] for a, b in pairwise(o)]
    return items[:n], t.tolist(), items[n:]


_FIXED: dict[tuple[int, int, int], tuple[array, Struct]] = {}
"""(entries, key length, value length) -> (the offsets array of such a
block, a Struct unpacking its keys and values): :meth:`BlockView.columns`'
fixed-size fast path. Bounded: cleared when it reaches 256 layouts."""


def _fixed_layout(n: int, kl: int, vl: int) -> tuple[array, Struct]:
    a = 16 * n + 8
    v = a + n * kl
    o = array("I", [a + i * kl for i in range(n + 1)] + [v + i * vl for i in range(1, n + 1)])
    c = (o, Struct(f"{kl}s" * n + f"{vl}s" * n))
    if len(_FIXED) >= 256:
        _FIXED.clear()
    _FIXED[(n, kl, vl)] = c
    return c


class BlockView:
    """A block payload read lazily: only the offsets and trailers arrays are
    decoded (two ``frombytes``); keys and values are cut from the payload
    when asked for. A point lookup bisects the keys through the offsets
    (about log2(n) slices) instead of cutting all 2n items: on a 4 KiB block
    of 31 entries, 1.5 us against 33 us for :func:`decode_block` plus 11 us
    to build the entry tuples (M8 in docs/format/sstable.md). Scans cut a
    run of entries with two list comprehensions.

    Checks as :func:`decode_block` (raises ValueError). Immutable; any
    thread may use it. A fixed-size view made by the reader (``k`` set)
    has no trailers array (``_t`` None): :meth:`find` reads a trailer from
    ``p``, and a cached view is ~300 bytes smaller (point reads in
    docs/benchmarks.md)."""

    __slots__ = ("_t", "k", "n", "o", "p")

    def __init__(self, p: bytes, check_offsets: bool = False) -> None:
        n, o, t = _block_arrays(p, check_offsets)
        self.p = p
        self.o = o
        self._t: array | None = t
        self.n = n
        """Entry count."""
        self.k = 0
        """The length of every key when the reader recognised the block as
        fixed-size on load (``_LAYOUTS`` in lsm/sstable/reader.py), else 0:
        :meth:`find` then turns a hit's position into its entry index by
        one division instead of a bisection of the offsets."""

    def __len__(self) -> int:
        return self.n

    @property
    def t(self) -> array:
        """The trailers: ``_t``, or when None a new array from ``p`` (not kept: the cache charged none)."""
        t = self._t
        if t is None:
            n = self.n
            t = array("Q")
            t.frombytes(self.p[8 * n + 8 : 16 * n + 8])  # only made on little-endian hosts
        return t

    def key(self, i: int) -> bytes:
        o = self.o
        return self.p[o[i] : o[i + 1]]

    def seek(self, key: bytes, lo: int = 0, hi: int | None = None) -> int:
        """The index of the first entry of ``[lo, hi)`` whose key is >=
        ``key`` (``bisect_left`` over the keys), ``hi`` when none."""
        p = self.p
        o = self.o
        if hi is None:
            hi = self.n
        while lo < hi:
            mid = (lo + hi) >> 1
            if p[o[mid] : o[mid + 1]] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def find(self, key: bytes, target: int) -> tuple[bytes, int, bytes] | None:
        """The first entry ``(key, trailer, value)`` of ``key`` with trailer
        <= ``target`` (versions are newest first), or None.

        The keys lie back to back in ``p[o[0]:o[n]]``, in order, so the
        first occurrence of ``key`` there is its first entry when it starts
        at an entry's offset and spans exactly one key; two C calls find it
        (``bytes.find``, then ``bisect`` of that position in the offsets),
        against a Python loop of about log2(n) slices (callgrind, a present
        key in a 31-entry block: ~11.5k against ~17.1k instructions per
        call, docs/benchmarks.md "Point reads"). No
        occurrence at all means the key is absent. An occurrence that
        straddles two keys, or is a prefix of a longer key, falls back to
        the bisection (:meth:`_find_bisect`), so adversarial keys cost what
        they did before, never a scan of every position."""
        p = self.p
        o = self.o
        n = self.n
        k = self.k
        if k:
            # Fixed-size keys: a key of another length is in no entry, and
            # an occurrence is an entry's key exactly when it starts at a
            # multiple of k (~1.5k instructions less than the bisection;
            # TableReader.find_entry inlines this case: change both).
            if len(key) != k:
                return None
            a = p.find(key, o[0], o[n])
            if a < 0:
                return None
            j, r = divmod(a - o[0], k)
            if r:
                return self._find_bisect(key, target)
        elif key:
            a = p.find(key, o[0], o[n])
            if a < 0:
                return None
            j = _bisect_left(o, a, 0, n)
            if o[j] != a or o[j + 1] - a != len(key):
                return self._find_bisect(key, target)
        else:
            return self._find_bisect(key, target)
        # Entry j holds key: walk its versions, newest first (its trailer at 8(n+1+j) in p).
        t = self._t
        lk = len(key)
        while True:
            tr = t[j] if t is not None else _U64_AT(p, 8 * (n + 1 + j))[0]
            if tr <= target:
                return key, tr, p[o[n + j] : o[n + j + 1]]
            j += 1
            if j == n or o[j + 1] - o[j] != lk or not p.startswith(key, o[j]):
                return None

    def _find_bisect(self, key: bytes, target: int) -> tuple[bytes, int, bytes] | None:
        """:meth:`find` by bisecting the keys through the offsets."""
        p = self.p
        o = self.o
        n = self.n
        lo = 0
        hi = n
        while lo < hi:
            mid = (lo + hi) >> 1
            if p[o[mid] : o[mid + 1]] < key:
                lo = mid + 1
            else:
                hi = mid
        t = self.t
        lk = len(key)
        while lo < n:
            a = o[lo]
            if o[lo + 1] - a != lk or not p.startswith(key, a):
                return None
            tr = t[lo]
            if tr <= target:
                return key, tr, p[o[n + lo] : o[n + lo + 1]]
            lo += 1
        return None

    def columns(self, lo: int = 0, hi: int | None = None) -> tuple[list[bytes], array[int], list[bytes]]:
        """``(keys, trailers, values)`` of entries ``[lo, hi)``."""
        p = self.p
        o = self.o
        n = self.n
        if hi is None:
            hi = n
        if hi - lo > 4:
            # Every key one length and every value one length (fixed-size
            # records, the common case): the offsets array is then a
            # function of (n, key length, value length), checked in one
            # array compare, and one cached Struct cuts all 2n items in C
            # (readseq in docs/benchmarks.md: ~3x faster than the slices).
            a = o[0]
            kl, kr = divmod(o[n] - a, n)
            vl, vr = divmod(o[2 * n] - o[n], n)
            if not (kr or vr):
                ck = (n, kl, vl)
                c = _FIXED.get(ck)
                if c is None:
                    c = _fixed_layout(n, kl, vl)
                if o == c[0]:
                    items = c[1].unpack_from(p, a)
                    return list(items[lo:hi]), self.t[lo:hi], list(items[n + lo : n + hi])
        ko = o[lo : hi + 1]
        vo = o[n + lo : n + hi + 1]
        return (
            [p[a:b] for a, b in pairwise(ko)],
            self.t[lo:hi],
            [p[a:b] for a, b in pairwise(vo)],
        )

    def entries(self, lo: int = 0, hi: int | None = None) -> list[tuple[bytes, int, bytes]]:
        """The entries ``[lo, hi)`` as ``(key, trailer, value)`` tuples."""
        k, t, v = self.columns(lo, hi)
        return list(zip(k, t, v))


# ---------------------------------------------------------------- framing
def frame_block(payload: bytes, compression: int, level: int = 1) -> tuple[bytes, bytes]:
    """``(stored, trailer)``: what the writer appends for ``payload``. The
    payload is compressed when that saves at least 1/8 (as leveldb does),
    otherwise stored raw with compression id NONE."""
    usize = len(payload)
    if usize > MAX_BLOCK_PAYLOAD:
        raise ValueError(f"block payload of {usize} bytes exceeds {MAX_BLOCK_PAYLOAD}")
    stored = payload
    cid = _compression.NONE
    if compression != _compression.NONE:
        c = _compression.compress(compression, payload, level)
        if len(c) <= usize - (usize >> 3):
            stored = c
            cid = compression
    head = _TRAILER_HEAD.pack(cid, usize)
    return stored, head + U32.pack(_mask(_crc(head, _crc(stored))))


def unframe_block(data: bytes, verify: bool) -> bytes:
    """The payload of a block read as ``stored + trailer`` (its handle's size
    plus 9 bytes). Checks the crc when ``verify``; decompression is bounded by
    the trailer's uncompressed size. Raises ValueError."""
    n = len(data) - BLOCK_TRAILER_SIZE
    if n < 0:
        raise ValueError("block shorter than its trailer")
    cid, usize, stored_crc = BLOCK_TRAILER.unpack_from(data, n)
    if verify:
        mv = memoryview(data)
        if _mask(_crc(mv[: n + 5])) != stored_crc:
            raise ValueError("block checksum mismatch")
    if cid == _compression.NONE:
        if usize != n:
            raise ValueError(f"uncompressed block of {n} bytes claims {usize}")
        return data[:n]
    out = _compression.decompress(cid, memoryview(data)[:n], usize)
    if len(out) != usize:
        raise ValueError(f"block decompressed to {len(out)} bytes, trailer says {usize}")
    return out


def unframe_blocks(data: bytes, sizes: Sequence[int], verify: bool) -> list[bytes]:
    """:func:`unframe_block` of consecutive blocks read in one piece:
    ``data`` is their ``stored + trailer`` bytes back to back, ``sizes``
    each one's length (its handle's size plus 9). The crcs are checked
    block by block, LZ4 blocks decompressed as they come (no setup to
    share) and zstd ones together
    (:func:`~lsm.base.compression.decompress_many`). Raises ValueError
    without naming the block: the caller reads them one by one to say
    which (a long scan's readahead, scan.py)."""
    mv = memoryview(data)
    out: list[bytes | None] = []
    frames: list[memoryview] = []
    usizes: list[int] = []
    at: list[int] = []
    kind = _compression.NONE
    pos = 0
    for size in sizes:
        n = size - BLOCK_TRAILER_SIZE
        if n < 0:
            raise ValueError("block shorter than its trailer")
        cid, usize, stored_crc = BLOCK_TRAILER.unpack_from(data, pos + n)
        if verify and _mask(_crc(mv[pos : pos + n + 5])) != stored_crc:
            raise ValueError("block checksum mismatch")
        if cid == _compression.NONE:
            if usize != n:
                raise ValueError(f"uncompressed block of {n} bytes claims {usize}")
            out.append(data[pos : pos + n])
        elif cid == _LZ4:
            out.append(_compression.decompress(cid, mv[pos : pos + n], usize))  # exactly usize; no setup to share
        else:
            if frames and cid != kind:
                raise ValueError("blocks of two compressions in one read")  # not written by lsm
            kind = cid
            at.append(len(out))
            out.append(None)
            frames.append(mv[pos : pos + n])
            usizes.append(usize)
        pos += size
    if pos != len(data):
        raise ValueError(f"blocks of {pos} bytes in a read of {len(data)}")
    if frames:
        for i, p in zip(at, _compression.decompress_many(kind, frames, usizes)):
            out[i] = p
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------- footer
def encode_footer(
    filter_h: tuple[int, int],
    props_h: tuple[int, int],
    index_h: tuple[int, int],
    version: int = FORMAT_VERSION_1,
) -> bytes:
    head = FOOTER.pack(*filter_h, *props_h, *index_h, version, 0, MAGIC)[:_FOOTER_CRC_SPAN]
    return head + U32.pack(_mask(_crc(head))) + _U64.pack(MAGIC)


def decode_footer_version(data: bytes) -> tuple[int, tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(version, filter, properties, index)`` of a 64-byte footer. Raises
    ValueError: magic first (a foreign file), then version, then crc."""
    if len(data) != FOOTER_SIZE:
        raise ValueError("short footer")
    f_off, f_size, p_off, p_size, i_off, i_size, version, stored_crc, magic = FOOTER.unpack(data)
    if magic != MAGIC:
        raise ValueError(f"not an sstable: bad magic {magic:#018x}")
    if version not in KNOWN_VERSIONS:
        raise ValueError(
            f"unknown sstable format version {version} (this reader knows {', '.join(map(str, KNOWN_VERSIONS))})"
        )
    if _mask(_crc(data[:_FOOTER_CRC_SPAN])) != stored_crc:
        raise ValueError("footer checksum mismatch")
    return version, (f_off, f_size), (p_off, p_size), (i_off, i_size)


def decode_footer(data: bytes) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """``(filter, properties, index)`` handles of a 64-byte footer (see
    :func:`decode_footer_version`)."""
    return decode_footer_version(data)[1:]  # type: ignore[return-value]


# ---------------------------------------------------------------- properties
def encode_properties(
    props: TableProperties, num_data_blocks: int, range_dels_h: tuple[int, int] | None = None
) -> bytes:
    """Properties payload: a block whose keys are property names (sorted),
    trailers 0, values u64 or raw bytes. ``range_dels_h``: the handle of the
    range-deletion block (version 2 only)."""
    items = [
        (name, _U64.pack(getattr(props, attr) if attr else num_data_blocks)) for name, attr in _INT_PROPS
    ]
    items += [(name, getattr(props, attr)) for name, attr in _BYTES_PROPS]
    if range_dels_h is not None:
        items.append((PROP_RANGE_DELS, HANDLE.pack(*range_dels_h)))
        items.append((PROP_NUM_RANGE_DELS, _U64.pack(props.num_range_dels)))
    if props.distinct_keys:
        items.append((PROP_DISTINCT_KEYS, _U64.pack(1)))
    items.sort()
    return encode_block([k for k, _ in items], [0] * len(items), [v for _, v in items])


def decode_range_dels_props(payload: bytes) -> tuple[tuple[int, int], int]:
    """Version 2: ``(range-deletion block handle, num_range_dels)`` from a
    properties payload. Raises ValueError when missing or malformed."""
    keys, _trailers, values = decode_block(payload, check_offsets=True)
    d = dict(zip(keys, values))
    h = d.get(PROP_RANGE_DELS)
    if h is None or len(h) != HANDLE.size:
        raise ValueError("property range_dels missing or not a block handle")
    n = d.get(PROP_NUM_RANGE_DELS)
    if n is None or len(n) != 8:
        raise ValueError("property num_range_dels missing or not a u64")
    return HANDLE.unpack(h), _U64.unpack(n)[0]


def decode_properties(payload: bytes, file_size: int) -> tuple[TableProperties, int]:
    """``(properties, num_data_blocks)``. Raises ValueError on a missing or
    malformed property. ``num_range_dels`` is left 0 (version 2 reads it
    with :func:`decode_range_dels_props`)."""
    keys, _trailers, values = decode_block(payload, check_offsets=True)
    d = dict(zip(keys, values))
    fields: dict[str, int | bytes] = {"file_size": file_size}
    nblocks = 0
    for name, attr in _INT_PROPS:
        v = d.get(name)
        if v is None or len(v) != 8:
            raise ValueError(f"property {name.decode()} missing or not a u64")
        x = _U64.unpack(v)[0]
        if attr is None:
            nblocks = x
        else:
            fields[attr] = x
    for name, attr in _BYTES_PROPS:
        v = d.get(name)
        if v is None:
            raise ValueError(f"property {name.decode()} missing")
        fields[attr] = v
    v = d.get(PROP_DISTINCT_KEYS)
    if v is not None:
        if len(v) != 8 or _U64.unpack(v)[0] > 1:
            raise ValueError("property distinct_keys is not a u64 0 or 1")
        fields["distinct_keys"] = v[0] == 1
    return TableProperties(**fields), nblocks  # type: ignore[arg-type]
