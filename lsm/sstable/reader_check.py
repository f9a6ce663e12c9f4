"""``TableReader.check``: the table's invariant checker (tests, ``lsm
check``), apart from the read path (lsm/sstable/reader.py)."""

from __future__ import annotations

from typing import Any

from lsm.sstable.block import MAX_TRAILER


def check_table(r: Any) -> None:
    """Read every data block of the TableReader ``r`` with its crc verified,
    bypassing the cache; its offsets must never decrease (soak 12:
    tests/test_soak12_check_offsets.py), the entries be in strictly increasing internal
    order, end each block with its index entry, and agree with the
    properties. Raises CorruptionError."""
    p = r.properties
    n = deletes = data_size = repeats = 0
    min_seq, max_seq = MAX_TRAILER, 0
    prev: tuple[bytes, int] | None = None
    for i, off in enumerate(r._boffs):
        b = r._load_block(off, r._bsizes[i], True)
        o = b.o.tolist()
        if o != sorted(o):  # (a crc-verified load trusts them; lookups search by them)
            raise r._corrupt("data block: block offsets decrease", off)
        entries = b.entries()
        keys = [e[0] for e in entries]
        if entries[-1][:2] != (r._ikeys[i], r._itrailers[i]):
            raise r._corrupt("data block's last entry differs from its index entry", off)
        for k, t, v in entries:
            if prev is not None and not (k > prev[0] or (k == prev[0] and t < prev[1])):
                raise r._corrupt(f"entries out of order at key {k!r}", off)
            kind = t & 0xFF
            if kind > 1:
                raise r._corrupt(f"unknown value kind {kind}", off)
            deletes += kind == 0
            repeats += prev is not None and k == prev[0]
            data_size += len(k) + len(v)
            min_seq = min(min_seq, t >> 8)
            max_seq = max(max_seq, t >> 8)
            prev = (k, t)
        n += len(keys)
        if i == 0:
            smallest = keys[0] if r.range_dels is None else min(keys[0], r.range_dels.smallest)
            if smallest != p.smallest:
                raise r._corrupt("first key differs from the properties' smallest", off)
    rd = r.range_dels
    if rd is not None:
        lo, hi = rd.seq_range()
        min_seq, max_seq = min(min_seq, lo), max(max_seq, hi)
        if not n and rd.smallest != p.smallest:
            raise r._corrupt("first tombstone differs from the properties' smallest", None)
    if (n or rd is not None) and (min_seq, max_seq) != (p.min_seq, p.max_seq):
        raise r._corrupt("sequence range differs from the properties", None)
    if (n, deletes, data_size) != (p.num_entries, p.num_deletes, p.data_size):
        raise r._corrupt("entry counts differ from the properties", None)
    if p.distinct_keys and repeats:
        raise r._corrupt("a key has two entries, but the properties say distinct_keys", None)
