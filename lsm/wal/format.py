"""The bytes of a WAL segment: segment header and record framing.

Spec: docs/format/wal.md (byte diagrams, checksum coverage, worked example,
edge cases). Every number here is part of the on-disk format: never change
or renumber one; a new layout gets a new ``FORMAT_VERSION``.

Segment::

    +---------------------------- segment header (24 bytes) -------------------+
    | magic 8 "lsmWAL\\0\\0" | version u32 | first_seq u64 | masked crc32c u32   |
    +--------------------------------------------------------------------------+
    record 0 | record 1 | ... | (optional all-zero tail from preallocation)

Record (one per committed write batch), version 2::

    +---------+---------+---------+-----------+---------------+------------+------------+
    | crc u32 | len u32 | seq u64 | count u32 | timestamp u64 | synced u64 | body (len) |
    +---------+---------+---------+-----------+---------------+------------+------------+
      masked crc32c of every byte after the crc field: the 32 header bytes that
      follow it and the body. All integers little-endian. ``synced``: the
      offset in this segment up to which the segment was known durable when
      the record was appended (docs/format/wal.md, "Version 2").

Version 1 (read, never written): the same without ``synced`` (28-byte
record header).

The body is a write-batch body (``lsm/batch.py``), opaque at this layer.

This module is pure (no I/O) and thread-safe (no state).
"""

from __future__ import annotations

import struct
from typing import Final

from crc32c import crc32c as _crc32c  # direct: encode_record saves the wrapper call (see its docstring)

from lsm.base.checksum import _MASK_DELTA, masked_crc
from lsm.base.checksum import ROTATE_MUL as _ROTATE_MUL
from lsm.base.coding import MAX_SEQ
from lsm.base.errors import CorruptionError

# ---- part of the on-disk format: never change ------------------------------
SEGMENT_MAGIC: Final = b"lsmWAL\x00\x00"
"""First 8 bytes of every segment file."""

FORMAT_VERSION: Final = 2
"""Version of the segment and record layout written. The magic and the
version stay at offsets 0..12 in every future version, so a reader can
always tell an unknown version from damage."""

FORMAT_VERSION_1: Final = 1
"""The first layout (28-byte record header, no ``synced``): still read."""

KNOWN_VERSIONS: Final = (FORMAT_VERSION_1, FORMAT_VERSION)

SEGMENT_HEADER_SIZE: Final = 24
"""magic 8 + version u32 + first_seq u64 + masked crc32c u32."""

RECORD_HEADER_SIZE: Final = 36
"""Version 2: masked crc u32 + length u32 + seq u64 + count u32 + timestamp
u64 + synced u64."""

RECORD_HEADER_SIZE_V1: Final = 28
"""Version 1: masked crc u32 + length u32 + seq u64 + count u32 + timestamp u64."""

MAX_BODY_SIZE: Final = 0xFFFFFFFF
"""The length field is a u32."""
# -----------------------------------------------------------------------------

_SEGMENT_PREFIX: Final = struct.Struct("<8sIQ")  # magic, version, first_seq: the bytes the crc covers
_U32: Final = struct.Struct("<I")

RECORD_HEADER: Final = struct.Struct("<IIQIQQ")
"""Version 2: masked_crc, length, seq, count, timestamp_us, synced: for
``unpack_from`` in readers."""

RECORD_HEADER_V1: Final = struct.Struct("<IIQIQ")
"""Version 1: masked_crc, length, seq, count, timestamp_us."""

_RECORD_HEADER_TAIL: Final = struct.Struct("<IQIQQ")  # length, seq, count, timestamp, synced: what the crc covers
_RECORD_HEADER_TAIL_V1: Final = struct.Struct("<IQIQ")

# The mask of lsm.base.checksum.mask, inlined into encode_record to save a
# Python call on the put path, in four integer operations instead of six
# (checksum.ROTATE_MUL; tests/test_wal_format.py checks it against mask on
# edge and random crcs): ~600 instructions less per put (callgrind,
# docs/benchmarks.md "Write path profile").
_SEQ_LIMIT: Final = MAX_SEQ + 1
_pack_tail: Final = _RECORD_HEADER_TAIL.pack
_pack_u32: Final = _U32.pack

assert SEGMENT_HEADER_SIZE == _SEGMENT_PREFIX.size + 4
assert RECORD_HEADER_SIZE == RECORD_HEADER.size == _RECORD_HEADER_TAIL.size + 4
assert RECORD_HEADER_SIZE_V1 == RECORD_HEADER_V1.size == _RECORD_HEADER_TAIL_V1.size + 4


def encode_record(
    seq: int, count: int, timestamp_us: int, body: bytes | bytearray | memoryview, synced: int
) -> bytes:
    """The framed (version 2) record for one committed batch of ``count``
    ops whose sequence numbers are ``seq .. seq+count-1``, appended when the
    segment was known durable up to offset ``synced`` (0 when nothing of it
    was synced yet; ``WalWriter.synced_offset`` read under the DB write
    lock). A smaller ``synced`` than the truth is always safe (the reader
    then forgives more damage as a torn tail); a larger one is not.

    Raises ValueError when ``count < 1``, the sequence numbers leave
    ``0 .. MAX_SEQ``, ``timestamp_us`` or ``synced`` does not fit a u64 or
    the body is longer than ``MAX_BODY_SIZE``.

    Hot path (one call per commit). Measured on the dev box (AMD EPYC, 2
    cores, Python 3.11.7, crc32c 2.9) with ``timeit`` over
    ``encode_record(123456, 3, 1700000000000000, b"x" * 120)``, best of 7 x
    300k calls: 0.6 us per call (empty body 0.55 us, 4 KiB body 1.2 us).
    Each crc32c call costs ~0.12 us of fixed overhead, so one call over
    ``header_tail + body`` (a concatenation the record needs anyway) beat
    chaining ``crc32c(body, crc32c(header_tail))`` (0.8 us) up to ~4 KiB
    bodies; above that both are dominated by the crc and the copy. So a
    body over 4 KiB (a batch: 116 KiB for fillbatch's 1000 puts) takes the
    chained crc and one join, one copy of the body instead of two (12.9 ->
    9.5 us per 1000-put record, CPU).
    """
    if count < 1 or seq + count > _SEQ_LIMIT:  # a negative seq fails the pack below
        raise ValueError(
            f"WAL record: bad sequence range seq={seq} count={count} (need count >= 1, seq+count-1 <= {MAX_SEQ})"
        )
    try:
        tail = _pack_tail(len(body), seq, count, timestamp_us, synced)
    except struct.error:
        raise ValueError(
            f"WAL record: a field is out of range (seq={seq}, timestamp_us={timestamp_us}, synced={synced}, "
            f"body of {len(body)} bytes, at most {MAX_BODY_SIZE})"
        ) from None
    if len(body) > 4096:
        crc = _crc32c(body, _crc32c(tail))
        return b"".join((_pack_u32(((crc * _ROTATE_MUL >> 15) + _MASK_DELTA) & 0xFFFFFFFF), tail, body))
    rest = tail + body
    return _pack_u32(((_crc32c(rest) * _ROTATE_MUL >> 15) + _MASK_DELTA) & 0xFFFFFFFF) + rest


_RECORD_TAIL_OP: Final = struct.Struct("<IQIQQBII")
"""The (version 2) record header after the crc, then the batch op header of a body
holding one op (lsm/batch.py ``OP_HEADER``: kind u8, key_len u32,
value_len u32): packed in one call by :func:`encode_op_record`."""
_pack_tail_op: Final = _RECORD_TAIL_OP.pack
_OP_HEADER_SIZE: Final = 9


def encode_op_record(seq: int, timestamp_us: int, kind: int, key: bytes, value: bytes, synced: int) -> bytes:
    """``encode_record(seq, 1, timestamp_us, body, synced)`` for the body of a batch
    holding the one op ``(kind, key, value)``, byte for byte (a test checks
    it): the single put / delete fast path. One pack for both headers and
    one concatenation fewer: 1.6 vs 2.1 us per 16+100-byte put measured
    (``timeit``, same box, loaded). Raises ValueError as encode_record."""
    if seq >= _SEQ_LIMIT:  # a negative seq fails the pack below
        raise ValueError(f"WAL record: bad sequence number {seq} (at most {MAX_SEQ})")
    kl = len(key)
    vl = len(value)
    try:
        rest = b"".join((_pack_tail_op(kl + vl + _OP_HEADER_SIZE, seq, 1, timestamp_us, synced, kind, kl, vl), key, value))
    except struct.error:
        raise ValueError(
            f"WAL record: a field is out of range (seq={seq}, timestamp_us={timestamp_us}, synced={synced}, "
            f"key of {kl} bytes, value of {vl} bytes, at most {MAX_BODY_SIZE} in all)"
        ) from None
    return _pack_u32(((_crc32c(rest) * _ROTATE_MUL >> 15) + _MASK_DELTA) & 0xFFFFFFFF) + rest


def encode_record_v1(seq: int, count: int, timestamp_us: int, body: bytes | bytearray | memoryview) -> bytes:
    """A version-1 record (28-byte header, no ``synced``). lsm never writes
    version 1 any more: this is for tests and tools that build old
    segments."""
    if count < 1 or seq + count > _SEQ_LIMIT:
        raise ValueError(
            f"WAL record: bad sequence range seq={seq} count={count} (need count >= 1, seq+count-1 <= {MAX_SEQ})"
        )
    try:
        rest = _RECORD_HEADER_TAIL_V1.pack(len(body), seq, count, timestamp_us) + body
    except struct.error:
        raise ValueError(
            f"WAL record: a field is out of range (seq={seq}, timestamp_us={timestamp_us}, "
            f"body of {len(body)} bytes, at most {MAX_BODY_SIZE})"
        ) from None
    return _pack_u32(masked_crc(rest)) + rest


def encode_segment_header(first_seq: int, version: int = FORMAT_VERSION) -> bytes:
    """The 24-byte header of a segment whose first record will carry
    sequence number ``first_seq`` (also the number in its file name).
    ``version`` other than the current one: for tests and tools that build
    old segments."""
    if not 0 <= first_seq <= _SEQ_LIMIT:
        raise ValueError(f"WAL segment: first_seq {first_seq} out of range")
    if version not in KNOWN_VERSIONS:
        raise ValueError(f"WAL segment: unknown format version {version}")
    prefix = _SEGMENT_PREFIX.pack(SEGMENT_MAGIC, version, first_seq)
    return prefix + _U32.pack(masked_crc(prefix))


def decode_segment_header(data: bytes | bytearray | memoryview, path: str) -> int:
    """The first_seq stored in the segment header at the start of ``data``
    (see :func:`decode_segment_header_version`)."""
    return decode_segment_header_version(data, path)[1]


def decode_segment_header_version(data: bytes | bytearray | memoryview, path: str) -> tuple[int, int]:
    """(version, first_seq) stored in the segment header at the start of
    ``data``; version is one of ``KNOWN_VERSIONS``.

    Checks, in order: length, magic, version, checksum. Raises
    CorruptionError naming ``path`` and the offset of the failing field.
    """
    if len(data) < SEGMENT_HEADER_SIZE:
        raise CorruptionError(
            f"truncated segment header ({len(data)} of {SEGMENT_HEADER_SIZE} bytes)", path, len(data)
        )
    magic, version, first_seq = _SEGMENT_PREFIX.unpack_from(data, 0)
    if magic != SEGMENT_MAGIC:
        raise CorruptionError(f"bad segment magic {bytes(magic)!r} (not a WAL segment)", path, 0)
    if version not in KNOWN_VERSIONS:
        raise CorruptionError(
            f"unsupported WAL format version {version} (this reader knows {FORMAT_VERSION_1} and {FORMAT_VERSION})",
            path,
            8,
        )
    (stored,) = _U32.unpack_from(data, _SEGMENT_PREFIX.size)
    if masked_crc(memoryview(data)[: _SEGMENT_PREFIX.size]) != stored:
        raise CorruptionError("segment header checksum mismatch", path, _SEGMENT_PREFIX.size)
    if first_seq > _SEQ_LIMIT:
        raise CorruptionError(f"segment header first_seq {first_seq} out of range", path, 12)
    return int(version), int(first_seq)
