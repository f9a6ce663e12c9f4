"""Byte formats of an sstable around its block payloads, with no I/O:
block framing (compression and checksum), block handles, the footer, the
properties block (:class:`TableProperties`) and the format versions. The
payload layout itself, shared by every block, is :mod:`lsm.sstable.block`
(this module builds the properties block with it). Specified in
docs/format/sstable.md; every constant marked "part of the on-disk format" is
frozen (a change bumps :data:`FORMAT_VERSION`, the doc and the golden test in
tests/test_sstable.py together).

Decoders raise ``ValueError`` with a reason; the reader turns it into
``CorruptionError`` naming the file and the block offset.

Thread-safety: pure functions on immutable inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from struct import Struct
from typing import Final

from lsm.base import compression as _compression
from lsm.base.checksum import crc as _crc
from lsm.base.checksum import mask as _mask
from lsm.base.coding import U32
from lsm.sstable.block import MAX_BLOCK_PAYLOAD, decode_block, encode_block

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

_LZ4: Final = _compression.LZ4
_U64: Final = Struct("<Q")

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
