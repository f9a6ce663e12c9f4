"""crc32c checksums (Castagnoli), computed in C by the ``crc32c`` package on
whole buffers. Stored checksums are masked as in leveldb, so that a checksum
of data that itself contains checksums stays well distributed."""

from __future__ import annotations

from typing import Final

from crc32c import crc32c as _crc32c

_MASK_DELTA: Final = 0xA282EAD8
ROTATE_MUL: Final = 0x100000001
"""``(c * ROTATE_MUL >> 15) & 0xFFFFFFFF`` is the 32-bit ``c`` rotated right
by 15 bits (the low word of ``c`` beside itself, shifted): the mask's
rotation in one multiply and one shift, for the paths that inline it."""


def crc(data: bytes | bytearray | memoryview, init: int = 0) -> int:
    """Unmasked crc32c of ``data`` continuing from ``init``."""
    return _crc32c(data, init)


def mask(c: int) -> int:
    """Mask a crc for storage (rotate right 15 bits, add a constant)."""
    return ((((c >> 15) | (c << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(m: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (m - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF


def masked_crc(data: bytes | bytearray | memoryview) -> int:
    """Masked crc32c of ``data``: the value stored on disk."""
    return ((_crc32c(data) * ROTATE_MUL >> 15) + _MASK_DELTA) & 0xFFFFFFFF
