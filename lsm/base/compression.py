"""Block compression. Compression ids are part of the on-disk format (stored
per block in SSTables): never renumber."""

from __future__ import annotations

import threading
from typing import Final

import zstandard

NONE: Final = 0
ZSTD: Final = 1

NAMES: Final = {"none": NONE, "zstd": ZSTD}

_local = threading.local()


def _cctx(level: int) -> zstandard.ZstdCompressor:
    key = "c%d" % level
    c = getattr(_local, key, None)
    if c is None:
        c = zstandard.ZstdCompressor(level=level)
        setattr(_local, key, c)
    return c


def _dctx() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "d", None)
    if d is None:
        d = _local.d = zstandard.ZstdDecompressor()
    return d


def compress(kind: int, data: bytes, level: int = 1) -> bytes:
    """Compress ``data`` with compression ``kind``. Thread-safe (one context
    per thread)."""
    if kind == NONE:
        return data
    if kind == ZSTD:
        return _cctx(level).compress(data)
    raise ValueError(f"unknown compression id {kind}")


def decompress(kind: int, data: bytes | memoryview, max_size: int) -> bytes:
    """Decompress ``data``. Raises ``ValueError`` (callers turn it into
    CorruptionError with a location) on an unknown kind, damaged input or an
    output larger than ``max_size`` (a length field never causes a huge
    allocation)."""
    if kind == NONE:
        if len(data) > max_size:
            raise ValueError("stored block larger than its header says")
        return bytes(data)
    if kind == ZSTD:
        try:
            out = _dctx().decompress(data, max_output_size=max_size)
        except zstandard.ZstdError as e:
            raise ValueError(f"zstd: {e}") from None
        if len(out) > max_size:
            raise ValueError("decompressed block larger than its header says")
        return out
    raise ValueError(f"unknown compression id {kind}")
