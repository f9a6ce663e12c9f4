"""Block compression. Compression ids are part of the on-disk format (stored
per block in SSTables): never renumber."""

from __future__ import annotations

import struct
import threading
from typing import Final

import lz4.block as _lz4
import zstandard

NONE: Final = 0
ZSTD: Final = 1
LZ4: Final = 2
"""An LZ4 block (``lz4.block``, no size prefix: the block trailer holds the
uncompressed size). Decompresses a 4 KiB data block in ~1.6 us against
zstd's ~4.2 us (each zstd block is its own frame and rebuilds its entropy
tables), for blocks ~10% larger (docs/benchmarks.md, "Point reads")."""

NAMES: Final = {"none": NONE, "zstd": ZSTD, "lz4": LZ4}

_ZSTD_MAX_RATIO: Final = 32768
"""No zstd frame decompresses to more than this many bytes per stored byte:
a block holds at most 128 KiB and the smallest block (RLE) takes 4 bytes."""
_STREAM_INPUT: Final = 256
_LZ4_MAX_RATIO: Final = 256
"""No LZ4 block decompresses to more than this many bytes per stored byte (a
match emits at most 255 bytes per length byte): a larger claimed size is
damage, refused before ``max_size`` bytes are allocated."""

_local = threading.local()
_lz4_decompress = _lz4.decompress


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
    if kind == LZ4:
        # ``level`` is zstd's. Positional (mode, acceleration, compression,
        # store_size): no keyword parsing, ~0.28 us less per block.
        return _lz4.compress(data, "default", 0, 0, False)
    raise ValueError(f"unknown compression id {kind}")


def decompress(kind: int, data: bytes | memoryview, max_size: int) -> bytes:
    """Decompress ``data``. Raises ``ValueError`` (callers turn it into
    CorruptionError with a location) on an unknown kind, damaged input or an
    output larger than ``max_size`` (a length field never causes a huge
    allocation). An LZ4 block must decompress to exactly ``max_size``
    bytes (the size is not stored in the block: the trailer's is used)."""
    if kind == LZ4:
        return _lz4_exact(data, max_size)
    if kind == NONE:
        if len(data) > max_size:
            raise ValueError("stored block larger than its header says")
        return bytes(data)
    if kind == ZSTD:
        try:
            # The frame header's content size decides what decompress()
            # allocates (max_output_size only applies when it is absent):
            # checked first, so that a damaged header cannot ask for
            # gigabytes (tests/test_fuzz_decoders.py).
            size = zstandard.frame_content_size(data)
            if size > max_size or size > _ZSTD_MAX_RATIO * len(data):
                raise ValueError(
                    f"zstd frame claims {size} bytes ({len(data)} stored, at most {max_size} expected)"
                )
            # With a content size (checked above) decompress() allocates
            # exactly that and fails on a frame that yields more, so no
            # max_output_size: its keyword parsing was ~1,500 instructions
            # of a block read (callgrind, tools/read_callgrind.py).
            out = _dctx().decompress(data) if size >= 0 else _stream(data, max_size)
        except zstandard.ZstdError as e:
            raise ValueError(f"zstd: {e}") from None
        if len(out) > max_size:
            raise ValueError("decompressed block larger than its header says")
        return out
    raise ValueError(f"unknown compression id {kind}")


def decompress_many(kind: int, frames: list[memoryview], sizes: list[int]) -> list[bytes]:
    """:func:`decompress` of several blocks of one ``kind``, each to exactly
    its ``sizes`` entry (the block trailers' uncompressed sizes). zstd's
    ``multi_decompress_to_buffer`` does them in one C call with the context
    set up once (a long scan's 4 KiB blocks: ~4-5 us each against ~7.5 us
    one by one, docs/benchmarks.md "Scan profile"). Raises ``ValueError``
    as :func:`decompress` does, without naming the frame: a caller that
    must say which block is damaged decompresses them one by one then."""
    if kind == LZ4:
        return [_lz4_exact(f, s) for f, s in zip(frames, sizes)]  # no setup to share
    if kind != ZSTD or len(frames) < 2:
        return [decompress(kind, f, s) for f, s in zip(frames, sizes)]
    for f, s in zip(frames, sizes):
        if s > _ZSTD_MAX_RATIO * len(f):
            raise ValueError(f"zstd frame of {len(f)} bytes cannot hold {s} bytes")
    try:
        sz = struct.pack(f"={len(sizes)}Q", *sizes)
        res = _dctx().multi_decompress_to_buffer(frames, decompressed_sizes=sz)  # type: ignore[arg-type]  # list invariance
    except zstandard.ZstdError as e:
        raise ValueError(f"zstd: {e}") from None
    except ValueError as e:  # e.g. an empty frame
        raise ValueError(f"zstd: {e}") from None
    return [res[i].tobytes() for i in range(len(res))]


def _lz4_exact(data: bytes | memoryview, size: int) -> bytes:
    """An LZ4 block that must decompress to exactly ``size`` bytes."""
    if size > _LZ4_MAX_RATIO * len(data):
        raise ValueError(f"lz4 block of {len(data)} bytes cannot hold {size} bytes")
    try:
        out = _lz4_decompress(data, size)  # positional: keyword parsing cost ~1,000 instructions a block
    except _lz4.LZ4BlockError as e:
        raise ValueError(f"lz4: {e}") from None
    if len(out) != size:
        raise ValueError(f"lz4 block decompressed to {len(out)} bytes, expected {size}")
    return out


def _stream(data: bytes | memoryview, max_size: int) -> bytes:
    """A zstd frame without a content size (lsm writes one in every frame):
    decompressed from input chunks of ``_STREAM_INPUT`` bytes, each of which
    yields at most ``_ZSTD_MAX_RATIO`` times as much, stopping once the
    output passes ``max_size``: memory follows the output produced, not a
    size claimed (decompress() would allocate ``max_size`` at once)."""
    dobj = _dctx().decompressobj()
    mv = memoryview(data)
    out = []
    total = 0
    for i in range(0, len(mv), _STREAM_INPUT):
        chunk = dobj.decompress(mv[i : i + _STREAM_INPUT])
        out.append(chunk)
        total += len(chunk)
        if total > max_size:
            raise ValueError("decompressed block larger than its header says")
        if dobj.eof:
            break
    if not dobj.eof:
        raise ValueError("zstd: truncated frame")
    return b"".join(out)
