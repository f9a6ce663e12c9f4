"""The memtable's model for bulk-insert tests: the same ops applied one at a
time (``MemTable.add`` / ``add_range_del``, one sequence number each), and
the comparison of a bulk-built memtable with it. Used by
tests/test_batch_columns.py (``add_batch``) and tests/test_write_path.py
(``add_ops``)."""

from __future__ import annotations

from collections.abc import Iterable

from lsm.base.coding import ValueKind
from lsm.memtable import MemTable


def add_one_at_a_time(m: MemTable, seq: int, ops: Iterable[tuple[int, bytes, bytes]]) -> int:
    """Apply ``ops`` (``(kind, key, value)``; a range deletion's value is its
    end key) to ``m`` one op at a time from sequence number ``seq``; return
    the next unused sequence number."""
    for kind, k, v in ops:
        if kind == ValueKind.RANGE_DELETE:
            m.add_range_del(seq, k, v)
        else:
            m.add(seq, kind, k, v)
        seq += 1
    return seq


def assert_same_memtable(bulk: MemTable, model: MemTable, keys: Iterable[bytes], snaps: Iterable[int]) -> None:
    """``bulk`` passes its invariant check and equals ``model``: entries,
    size and counts, range tombstones, and ``get`` of every key in ``keys``
    at every sequence number in ``snaps``."""
    bulk.check()
    assert list(bulk.iter_entries()) == list(model.iter_entries())
    assert (bulk.size, bulk.count, len(bulk), bulk.range_del_list()) == (
        model.size, model.count, len(model), model.range_del_list())
    snaps = list(snaps)
    for k in keys:
        for snap in snaps:
            assert bulk.get(k, snap) == model.get(k, snap), (k, snap)
