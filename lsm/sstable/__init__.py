"""SSTables: immutable sorted files of entries ``(key, trailer, value)`` in
internal order (user key ascending, then trailer = seq << 8 | kind
descending). Format: docs/format/sstable.md.

Modules, lowest first (``format`` imports ``block``; ``writer`` imports
those and ``bloom``; ``scan`` imports ``block`` and ``format``; ``reader``
imports those, ``cache`` and ``scan``; nothing imports ``writer`` or
``reader``)::

    block    the block payload (the layout every block shares): encoder,
             decoder, BlockView (lookups and scans); pure functions, no I/O
    format   byte layouts around the payloads: block framing (compression,
             crc), handles, footer, properties, format versions; pure
             functions, no I/O
    bloom    the table's bloom filter over user keys
    cache    BlockCache: LRU of decoded blocks, bounded by bytes
    writer   TableWriter, TableProperties
    scan     TableScan: the reader's scan path (iter_entries, iter_columns)
    reader   TableReader(TableScan): open and check a table, get

Depends only on :mod:`lsm.base`.
"""

from lsm.sstable.bloom import BloomFilter
from lsm.sstable.cache import BlockCache
from lsm.sstable.format import FORMAT_VERSION, MAGIC, TableProperties
from lsm.sstable.reader import TableReader
from lsm.sstable.writer import TableWriter

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "BlockCache",
    "BloomFilter",
    "TableProperties",
    "TableReader",
    "TableWriter",
]
