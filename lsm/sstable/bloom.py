"""The bloom filter of an sstable: one filter over all user keys of the
table, answering "certainly absent" or "maybe present" without reading a
data block. The byte layouts are part of the on-disk format
(docs/format/sstable.md, "Filter block"): the payload's first byte says
which of the two it is (:func:`decode_filter`), so a reader opens tables of
either.

Hash (stable across processes and platforms; Python's ``hash()`` is not)::

    h1 = crc32c(key)                          # Castagnoli, as the block crcs
    h2 = crc32(key) | 1                       # zlib's IEEE crc, forced odd

**Blocked filter** (kind 0x40, written since session 8): all k bits of a key
in one 64-bit word, so a probe is one word read and one ``w & mask ==
mask``::

    word = h1 mod num_words            # num_words odd
    mask = PATTERNS[k][h2 >> 20]       # 4096 k-bit masks

Both crcs are linear over GF(2): a word picked by Lemire's reduction from
``h1``'s top bits loaded the words of 500k sequential keys so unevenly that
they gave 6.3% false positives at 14 bits/key (random keys 0.66%). ``h1
mod num_words`` with an odd ``num_words`` depends on every bit of h1 and is
not linear, and it is the cheapest index (one ``%`` on a two-digit int:
~310 instructions against ~1,260 for a masked multiply-shift, M10).

A blocked filter needs more bits for the same accuracy (10 bits/key:
1.8-1.9%): the default is 13 bits/key, k = 5, 0.83-0.87% on sequential,
big-endian, random and short keys, where the Roaring filter gave 0.72-0.95%
at 10 (M10). The mask table costs little accuracy at 4096 entries (random
keys, 13 bits/key: 2^10 masks 1.12%, 2^12 0.86%, 2^14 0.77%, M10) and holds
~160 KB per k. The words are an ``array('Q')`` (8 bytes each); a list of
ints would index ~330 instructions cheaper but hold 44 bytes a word.

**Roaring filter** (the legacy kind, first byte = k in 1..30; read, no
longer written; :class:`RoaringBloomBuilder` still builds it for tests)::

    x_i = (h1 + i * h2) mod 2**32             for i in 0 .. k-1
    bit_i = (x_i * m) >> 32                   # in 0 .. m-1 (Lemire's reduction)

its bit positions stored as a pyroaring ``BitMap`` in the Roaring portable
serialization (https://github.com/RoaringBitmap/RoaringFormatSpec); M1 and
M2 in docs/format/sstable.md measured it.

Thread-safety: a decoded filter is immutable after construction and may be
shared; a builder belongs to one writer. :func:`patterns` fills a
module-level cache once per k (a race builds the same list twice).
"""

from __future__ import annotations

import struct
import sys
from array import array
from itertools import chain, repeat
from operator import mod as _mod
from operator import rshift as _rshift
from typing import TYPE_CHECKING, Final
from zlib import crc32 as _crc32

from crc32c import crc32c as _crc32c
from pyroaring import BitMap

KIND_BLOCKED64: Final = 0x40
"""First byte of a blocked filter payload. A Roaring filter's first byte is
its k, 1..30; every other value is an unknown kind. Part of the on-disk
format."""

BLOCKED_HEADER: Final = struct.Struct("<BBBBI")
"""Blocked filter header: kind (u8, 0x40), k (u8, bits per key's mask,
1..16), pattern bits (u8, 12), reserved (u8, 0), number of 64-bit words (u32,
>= 1). Followed by the words, u64 little-endian each. Part of the on-disk
format."""

FILTER_HEADER: Final = struct.Struct("<BI")
"""Roaring filter header: k (u8, probes per key), m (u32, bits). Followed by
the Roaring portable serialization of the set bit positions (all < m). Part
of the on-disk format."""

PATTERN_BITS: Final = 12
"""The mask of a key is ``PATTERNS[k][h2 >> (32 - PATTERN_BITS)]``."""
MAX_BLOCKED_PROBES: Final = 16
MAX_WORDS: Final = (1 << 32) - 1  # odd
MAX_PROBES: Final = 30
MIN_BITS: Final = 64
MAX_BITS: Final = (1 << 32) - 1
_LITTLE: Final = sys.byteorder == "little"
_M32: Final = 0xFFFFFFFF
_PATTERNS: dict[int, list[int]] = {}
_INVERT: Final = bytes(255 - i for i in range(256))
_PATTERNS16: dict[int, list[int]] = {}


def num_probes(bits_per_key: int) -> int:
    """k of a Roaring filter for ``bits_per_key``: ln 2 * bits_per_key (the
    optimum), clamped to 1..30, as leveldb does."""
    return min(MAX_PROBES, max(1, int(bits_per_key * 0.69)))


def blocked_probes(bits_per_key: int) -> int:
    """k of a blocked filter: round(0.4 * bits_per_key) clamped to 1..16 (5
    at 13 bits/key; k = 5 and 6 measured within 0.03 points of each other at
    13 and 14 bits/key, M10)."""
    return min(MAX_BLOCKED_PROBES, max(1, (2 * bits_per_key + 2) // 5))


def patterns(k: int) -> list[int]:
    """The 4096 masks of k distinct bits of a 64-bit word, as
    docs/format/sstable.md specifies them: for mask j, an LCG seeded with
    j gives bit ``s >> 58`` per step, skipping bits already taken."""
    p = _PATTERNS.get(k)
    if p is None:
        if not 1 <= k <= MAX_BLOCKED_PROBES:
            raise ValueError(f"blocked bloom filter k {k} outside 1..{MAX_BLOCKED_PROBES}")
        p = []
        for s in range(1 << PATTERN_BITS):
            mask = bits = 0
            while bits < k:
                s = (s * 0x5851F42D4C957F2D + 0x14057B7EF767814F) & 0xFFFFFFFFFFFFFFFF
                b = 1 << (s >> 58)
                if not mask & b:
                    mask |= b
                    bits += 1
            p.append(mask)
        _PATTERNS[k] = p
    return p


def _patterns16(k: int) -> list[int]:
    """``patterns(k)`` with each mask repeated ``2 ** (16 - PATTERN_BITS)``
    times: indexed by ``h2 >> 16`` it gives ``patterns(k)[h2 >> 20]`` (the
    build side's table, 512 KiB of references per k, cached)."""
    p = _PATTERNS16.get(k)
    if p is None:
        p = _PATTERNS16[k] = list(chain.from_iterable(map(repeat, patterns(k), repeat(1 << (16 - PATTERN_BITS)))))
    return p


def _lanes(values: list[int]) -> int:
    """``values`` (each < 2**64) as one integer of little-endian 64-bit lanes."""
    a = array("Q", values)
    if not _LITTLE:
        a.byteswap()
    return int.from_bytes(a.tobytes(), "little")


def key_hashes(key: bytes) -> tuple[int, int]:
    """``(h1, h2)`` of ``key`` as the filter uses them (h2 already odd), for
    :meth:`BloomFilter.may_contain_hashed`. ``DB._get`` computes the same
    two crcs inline (one call less per get): change both together."""
    return _crc32c(key), _crc32(key) | 1


class BloomBuilder:
    """Accumulates key hashes block by block (the writer hands over each data
    block's keys in one call) and builds the blocked filter payload at the
    end.

    Adding a key twice (versions of one key) sets the same bits; pass the
    number of distinct keys to :meth:`finish` so the filter is sized by them.
    """

    __slots__ = ("_h1", "_h2")

    def __init__(self) -> None:
        self._h1: list[int] = []
        self._h2: list[int] = []

    def add_keys(self, keys: list[bytes]) -> None:
        self._h1 += map(_crc32c, keys)
        self._h2 += map(_crc32, keys)

    def finish(self, bits_per_key: int, num_keys: int | None = None) -> bytes:
        """The blocked filter payload: ``ceil(keys * bits_per_key / 64) | 1``
        words (odd, so that ``h1 mod num_words`` depends on every bit of h1).
        REQUIRES: bits_per_key >= 1."""
        if bits_per_key < 1:
            raise ValueError(f"bits_per_key: must be >= 1, got {bits_per_key}")
        h1s = self._h1
        h2s = self._h2
        n = len(h1s)
        nw = min(MAX_WORDS, -(-(n if num_keys is None else num_keys) * bits_per_key // 64) | 1)
        k = blocked_probes(bits_per_key)
        words = [0] * nw
        if n:
            # Every key's mask at once: the high 16 bits of each h2 (a view
            # of the h2s as native u16 pairs) index a 65536-entry table of
            # the masks, each repeated 16 times (h2 >> 16 >> 4 == h2 >> 20),
            # C-level passes only: 47 ns a key where one big integer of
            # 64-bit lanes shifted and cut with ``to_bytes`` took 95. The
            # word (h1 mod num_words, by ``operator.mod``: 51 ns a key
            # against 67 for ``nw.__rmod__``'s slot wrapper) and the OR into
            # it are the per-key Python steps (M10).
            hi16 = memoryview(array("I", h2s)).cast("B").cast("H")[1::2] if _LITTLE else \
                map(_rshift, h2s, repeat(16))
            for i, mask in zip(map(_mod, h1s, repeat(nw)), map(_patterns16(k).__getitem__, hi16)):
                words[i] |= mask
        a = array("Q", words)
        if not _LITTLE:
            a.byteswap()
        return BLOCKED_HEADER.pack(KIND_BLOCKED64, k, PATTERN_BITS, 0, nw) + a.tobytes()


class RoaringBloomBuilder(BloomBuilder):
    """Builds the legacy Roaring filter (no longer written by tables: kept so
    tests can make tables and payloads of the old format)."""

    __slots__ = ()

    def finish(self, bits_per_key: int, num_keys: int | None = None) -> bytes:
        """The Roaring filter payload. REQUIRES: bits_per_key >= 1."""
        if bits_per_key < 1:
            raise ValueError(f"bits_per_key: must be >= 1, got {bits_per_key}")
        n = len(self._h1)
        m = min(MAX_BITS, max(MIN_BITS, (n if num_keys is None else num_keys) * bits_per_key))
        k = num_probes(bits_per_key)
        pos = array("I")
        if n:
            # Probe i of all keys at once, each key in a 64-bit lane of one
            # big integer (M2 in docs/format/sstable.md): x = h1 + i*h2 per
            # lane (no carry: < 2**37), masked to 32 bits, times m (< 2**64),
            # and the high 32 bits of each lane are the bit positions.
            #
            # Probes go in pairs: probe i's positions shifted down into the
            # low half of each lane, probe i + 1's kept in the high half,
            # so one ``to_bytes`` (the dearest step: ~24 instructions a
            # byte) gives both and no ``[1::2]`` slice is needed. Same set
            # of bits, so the same filter bytes (tests/test_bloom.py).
            low32 = int.from_bytes(b"\xff\xff\xff\xff\x00\x00\x00\x00" * n, "little")
            high32 = low32 << 32
            x = _lanes(self._h1)
            d = _lanes(self._h2) | ((low32 >> 31) & low32)  # each lane | 1
            for i in range(0, k - 1, 2):
                lo = ((x & low32) * m) >> 32 & low32
                x += d
                hi = ((x & low32) * m) & high32
                x += d
                a = array("I")
                a.frombytes((lo | hi).to_bytes(8 * n, "little"))
                if not _LITTLE:
                    a.byteswap()  # [lo, hi] per lane -> native u32s, read back as pairs either way
                pos += a
            if k & 1:
                a = array("I")
                a.frombytes(((x & low32) * m).to_bytes(8 * n, "little"))
                if not _LITTLE:
                    a.byteswap()
                pos += a[1::2]
        return FILTER_HEADER.pack(k, m) + BitMap(pos).serialize()


class _Filter:
    """What both filter kinds answer: ``may_contain_hashed(h1, h2)`` is
    theirs, ``may_contain`` hashes the key for it."""

    __slots__ = ()
    _builder: type[BloomBuilder]
    """The builder whose payload this kind decodes."""

    @classmethod
    def build(cls, keys: list[bytes], bits_per_key: int) -> bytes:
        """The filter payload of this kind for ``keys`` (distinct, any
        order)."""
        b = cls._builder()
        b.add_keys(keys)
        return b.finish(bits_per_key, len(keys))

    if TYPE_CHECKING:
        # Each kind defines it (its probe); declared here for the checker.
        def may_contain_hashed(self, h1: int, h2: int) -> bool: ...

    def may_contain(self, key: bytes) -> bool:
        """False: ``key`` was certainly not added. True: it may have been."""
        return self.may_contain_hashed(_crc32c(key), _crc32(key) | 1)


class BloomFilter(_Filter):
    """A decoded blocked filter (kind 0x40). ``may_contain`` never answers
    False for an added key.

    ``TableReader.lookup`` inlines :meth:`may_contain_hashed` (two lines,
    lsm/sstable/reader.py): change both together (tests/test_read_path.py
    checks that they agree)."""

    __slots__ = ("holes", "k", "masks", "nw", "words")
    _builder = BloomBuilder

    def __init__(self, data: bytes) -> None:
        """Decode a blocked filter payload. Raises ValueError on malformed
        data."""
        if len(data) < BLOCKED_HEADER.size:
            raise ValueError(f"blocked bloom filter of {len(data)} bytes is shorter than its header")
        kind, k, pbits, reserved, nw = BLOCKED_HEADER.unpack_from(data)
        if kind != KIND_BLOCKED64:
            raise ValueError(f"blocked bloom filter kind {kind:#04x}, expected {KIND_BLOCKED64:#04x}")
        if not 1 <= k <= MAX_BLOCKED_PROBES:
            raise ValueError(f"blocked bloom filter k {k} outside 1..{MAX_BLOCKED_PROBES}")
        if pbits != PATTERN_BITS or reserved:
            raise ValueError(
                f"blocked bloom filter pattern bits {pbits}, reserved {reserved}: expected {PATTERN_BITS}, 0"
            )
        if not nw & 1:
            raise ValueError(f"blocked bloom filter of {nw} words (must be odd)")
        if len(data) != BLOCKED_HEADER.size + 8 * nw:
            raise ValueError(
                f"blocked bloom filter of {nw} words needs {BLOCKED_HEADER.size + 8 * nw} bytes, has {len(data)}"
            )
        words = array("Q")
        words.frombytes(memoryview(data)[BLOCKED_HEADER.size :])
        holes = array("Q")
        holes.frombytes(bytes(data)[BLOCKED_HEADER.size :].translate(_INVERT))
        if not _LITTLE:
            words.byteswap()
            holes.byteswap()
        self.k = k
        self.nw = nw
        self.words = words
        self.holes = holes
        """The words' complements (``~w``): a probe is ``holes[h1 % nw] &
        mask``, true when the key is certainly absent (one ``&`` and a truth
        test instead of ``&`` and ``!=``; the table loop of ``DB._get`` through
        lsm/sstable/get_plan.py). Another ``8 * nw`` bytes per table."""
        self.masks = patterns(k)

    def may_contain_hashed(self, h1: int, h2: int) -> bool:
        """:meth:`may_contain` for a key whose hashes (:func:`key_hashes`)
        are known: a point lookup hashes its key once for every table it
        probes (readrandom, docs/benchmarks.md)."""
        mask = self.masks[h2 >> 20]
        return self.words[h1 % self.nw] & mask == mask

    def __len__(self) -> int:
        """Number of set bits."""
        return sum(map(int.bit_count, self.words))


class RoaringBloomFilter(_Filter):
    """A decoded Roaring (legacy) filter. ``may_contain`` never answers False
    for an added key."""

    __slots__ = ("_bits", "_mm", "_probes", "k", "m")
    _builder = RoaringBloomBuilder

    def __init__(self, data: bytes) -> None:
        """Decode a Roaring filter payload. Raises ValueError on malformed
        data."""
        if len(data) < FILTER_HEADER.size:
            raise ValueError(f"bloom filter of {len(data)} bytes is shorter than its header")
        k, m = FILTER_HEADER.unpack_from(data)
        if not 1 <= k <= MAX_PROBES:
            raise ValueError(f"bloom filter probe count {k} outside 1..{MAX_PROBES}")
        if m < MIN_BITS:
            raise ValueError(f"bloom filter of {m} bits (minimum {MIN_BITS})")
        try:
            bits = BitMap.deserialize(data[FILTER_HEADER.size :])
        except (ValueError, IndexError) as e:  # pyroaring: ValueError when malformed, IndexError when empty
            raise ValueError(f"bloom filter bit set: {type(e).__name__}: {e}") from None
        if bits and bits.max() >= m:
            raise ValueError(f"bloom filter sets bit {bits.max()} of {m}")
        self.k = k
        self.m = m
        self._mm = m << 32
        self._bits = bits
        self._probes = range(k)

    def may_contain_hashed(self, h1: int, h2: int) -> bool:
        """:meth:`may_contain` for a key whose hashes (:func:`key_hashes`)
        are known: a point lookup hashes its key once for every table it
        probes (readrandom, docs/benchmarks.md)."""
        # y = x_i * m, stepped by h2 * m modulo m * 2**32, so that each probe
        # is one shift and one add (1080 ns for 6 probes vs 1146 ns
        # recomputing (x * m) >> 32 and masking x, M2).
        m = self.m
        y = h1 * m
        d = h2 * m
        mm = self._mm
        bits = self._bits
        for _ in self._probes:
            if y >> 32 not in bits:
                return False
            y += d
            if y >= mm:
                y -= mm
        return True

    def __len__(self) -> int:
        """Number of set bits."""
        return len(self._bits)


def decode_filter(data: bytes) -> BloomFilter | RoaringBloomFilter:
    """Decode a filter payload of either kind, by its first byte: 0x40
    blocked, 1..30 Roaring. Raises ValueError on an unknown kind or
    malformed data (the reader turns it into a CorruptionError naming the
    file and the filter block's offset)."""
    if not data:
        raise ValueError("empty bloom filter payload")
    kind = data[0]
    if kind == KIND_BLOCKED64:
        return BloomFilter(data)
    if 1 <= kind <= MAX_PROBES:
        return RoaringBloomFilter(data)
    raise ValueError(f"unknown bloom filter kind {kind:#04x}")
