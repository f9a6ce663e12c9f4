"""The block payload, with no I/O: the one layout that data, index,
properties and range-deletion blocks share, its encoder (:func:`encode_block`,
:func:`fixed_block_head` for fixed-size entries), its decoder
(:func:`decode_block`) and the lazy reader with the point-lookup and scan
searches (:class:`BlockView`). Specified in docs/format/sstable.md, "Block
payload"; the layout is part of the on-disk format and frozen (a change bumps
:data:`lsm.sstable.format.FORMAT_VERSION`, the doc and the golden test in
tests/test_sstable.py together). How a payload is stored in a file (framing:
compression and checksum), the footer and the properties block are in
:mod:`lsm.sstable.format`, which builds on this module (never the reverse).

Decoders raise ``ValueError`` with a reason; the reader turns it into
``CorruptionError`` naming the file and the block offset.

Block payload, little-endian::

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
from itertools import accumulate, pairwise
from struct import Struct
from typing import Final

from lsm.base.coding import U32

# ---------------------------------------------------------------- payload limits
MAX_BLOCK_PAYLOAD: Final = (1 << 32) - 1
"""Largest payload a block holds (u32 offsets and sizes): one entry's key and
value together must fit."""

MAX_TRAILER: Final = (1 << 64) - 1

_LITTLE: Final = sys.byteorder == "little"
_U64_AT: Final = Struct("<Q").unpack_from


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
