"""The bloom filter of an sstable: one filter over all user keys of the
table, answering "certainly absent" or "maybe present" without reading a
data block. The byte layout is part of the on-disk format
(docs/format/sstable.md, "Filter block"); never change it without bumping the
table format version.

Hash (stable across processes and platforms; Python's ``hash()`` is not)::

    h1 = crc32c(key)                          # Castagnoli, as the block crcs
    h2 = crc32(key) | 1                       # zlib's IEEE crc, forced odd
    x_i = (h1 + i * h2) mod 2**32             for i in 0 .. k-1
    bit_i = (x_i * m) >> 32                   # in 0 .. m-1 (Lemire's reduction)

A key is added by setting its k bits; it may be present when all k bits are
set. Two different crc polynomials (both computed in C) give the textbook
false-positive rate: 0.72-0.84% at 10 bits/key, k=6, over sequential,
random and short keys, where leveldb's single hash with a rotated delta
measured 2.0-2.2% on the same keys (docs/format/sstable.md,
"Measurements", M1).

Lemire's multiply-shift instead of ``mod m`` lets the builder compute probe
i of every key at once with big-integer arithmetic on 64-bit lanes (one
add, and, multiply and byte conversion per probe for the whole table): 566
ns/key to build, against 875-1372 ns/key for the fastest per-key or
per-probe ``map`` variants with ``mod`` (M2). Two probes share one byte
conversion (:meth:`BloomBuilder.finish`, 63k keys: 402-438 ns/key CPU
with one per probe, 348-355 with one per pair). It costs a probe of a present
key about 300 ns (1080 vs 800 ns for 6 probes, M2); absent keys stop after
about two probes either way.

The bit array is a pyroaring ``BitMap`` of the set bit positions, stored in
the Roaring portable serialization (https://github.com/RoaringBitmap/RoaringFormatSpec).
Measured against a ``bytes`` bit array (probe = ``bits[p >> 3] >> (p & 7) &
1``): ``p in bitmap`` probed present keys in 977 vs 1138 ns and absent keys
in 450 vs 559 ns; building it from an ``array('I')`` of positions is one C
call; size within 5% (M2).

Thread-safety: a :class:`BloomFilter` is immutable after construction and
may be shared; a :class:`BloomBuilder` belongs to one writer.
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Final
from zlib import crc32 as _crc32

from crc32c import crc32c as _crc32c
from pyroaring import BitMap

FILTER_HEADER: Final = struct.Struct("<BI")
"""Filter payload header: k (u8, probes per key), m (u32, bits). Followed by
the Roaring portable serialization of the set bit positions (all < m). Part
of the on-disk format."""

MAX_PROBES: Final = 30
MIN_BITS: Final = 64
MAX_BITS: Final = (1 << 32) - 1
_LITTLE: Final = sys.byteorder == "little"


def num_probes(bits_per_key: int) -> int:
    """k for ``bits_per_key``: ln 2 * bits_per_key (the optimum), clamped to
    1..30, as leveldb does."""
    return min(MAX_PROBES, max(1, int(bits_per_key * 0.69)))


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
    block's keys in one call) and builds the filter payload at the end.

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
        """The filter payload. REQUIRES: bits_per_key >= 1."""
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


class BloomFilter:
    """A decoded filter. ``may_contain`` never answers False for an added
    key."""

    __slots__ = ("_bits", "_mm", "_probes", "k", "m")

    @staticmethod
    def build(keys: list[bytes], bits_per_key: int) -> bytes:
        """The filter payload for ``keys`` (distinct, any order)."""
        b = BloomBuilder()
        b.add_keys(keys)
        return b.finish(bits_per_key, len(keys))

    def __init__(self, data: bytes) -> None:
        """Decode a filter payload. Raises ValueError on malformed data."""
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

    def may_contain(self, key: bytes) -> bool:
        """False: ``key`` was certainly not added. True: it may have been."""
        return self.may_contain_hashed(_crc32c(key), _crc32(key) | 1)

    def may_contain_hashed(self, h1: int, h2: int) -> bool:
        """:meth:`may_contain` for a key whose hashes (:func:`key_hashes`)
        are known: a point lookup hashes its key once for every table it
        probes (readrandom, docs/benchmarks.md). ``TableReader.lookup``
        inlines this loop (lsm/sstable/reader.py): change both together
        (tests/test_read_path.py checks that they agree)."""
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
