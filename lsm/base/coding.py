"""Binary coding helpers shared by every on-disk format.

All integers on disk are little-endian. Precompiled ``struct.Struct`` objects
are used everywhere: one C call per field group instead of per-byte Python.
"""

from __future__ import annotations

import struct
from typing import Final

U8: Final = struct.Struct("<B")
U16: Final = struct.Struct("<H")
U32: Final = struct.Struct("<I")
U64: Final = struct.Struct("<Q")
U32U32: Final = struct.Struct("<II")
U64U64: Final = struct.Struct("<QQ")

MAX_SEQ: Final = (1 << 56) - 1
"""Sequence numbers fit in 56 bits, so (seq << 8 | kind) fits in a u64."""


class ValueKind:
    """Kind of an entry. Part of the on-disk format (WAL batches, SSTables):
    never renumber; a retired value stays as a commented gap."""

    DELETE: Final = 0
    PUT: Final = 1
    RANGE_DELETE: Final = 2
    """A range tombstone: deletes every key in [start, stop) written before
    it. In a WAL batch body its op carries start as the key and stop as the
    value; in an sstable it lives only in the range-deletion block, never in
    a data block (docs/format/wal.md, docs/format/sstable.md)."""


def pack_trailer(seq: int, kind: int) -> int:
    """The 64-bit trailer of an internal key: sequence number and kind."""
    return (seq << 8) | kind
