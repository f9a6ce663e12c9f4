"""The DB's range scans (items, keys, values, iteration), kept out of
lsm/db.py (which keeps the write path and point reads).

:class:`DBScan` is a base class of :class:`lsm.db.DB`, never used alone:
a scan reads ``_last_seq`` and then ``_sv`` with no lock (the read rule
in lsm/db.py's docstring), so it sees every commit up to its sequence
number; its sources are chosen when the scan starts and their blocks read
as it advances.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from lsm.base.rangedel import RangeDels, visible_fragments
from lsm.batch import as_bytes
from lsm.db_admin import DBAdmin
from lsm.iterators import Columns, chain_columns, clamp_range, visible_columns

if TYPE_CHECKING:
    from lsm.background import SuperVersion

_chain_rounds = itertools.chain.from_iterable  # a forward scan's rounds of pairs, flattened in C
_first = operator.itemgetter(0)
_second = operator.itemgetter(1)


class DBScan(DBAdmin):
    """The range-scan part of :class:`lsm.db.DB` (module docstring)."""

    def items(self, start: bytes | None = None, stop: bytes | None = None, *, prefix: bytes | None = None,
              reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) pairs with start <= key < stop (and starting with
        ``prefix``), in key order or reversed; a consistent view as of the
        call."""
        return self._items(start, stop, prefix, reverse, None)

    def keys(self, start: bytes | None = None, stop: bytes | None = None, *, prefix: bytes | None = None,
             reverse: bool = False) -> Iterator[bytes]:
        return map(_first, self._items(start, stop, prefix, reverse, None))

    def values(self, start: bytes | None = None, stop: bytes | None = None, *, prefix: bytes | None = None,
               reverse: bool = False) -> Iterator[bytes]:
        return map(_second, self._items(start, stop, prefix, reverse, None))

    def __iter__(self) -> Iterator[bytes]:
        return self.keys()

    def _items(self, start: bytes | None, stop: bytes | None, prefix: bytes | None, reverse: bool,
               snap: int | None) -> Iterator[tuple[bytes, bytes]]:
        start = None if start is None else as_bytes(start, "start")
        stop = None if stop is None else as_bytes(stop, "stop")
        prefix = None if prefix is None else as_bytes(prefix, "prefix")
        self._check_usable()
        if snap is None:
            snap = self._last_seq
        sv = self._sv
        lo, hi = clamp_range(start, stop, prefix)
        return self._iterate(sv, lo, hi, reverse, snap)

    def _iterate(self, sv: SuperVersion, lo: bytes | None, hi: bytes | None, reverse: bool,
                 snap: int) -> Iterator[tuple[bytes, bytes]]:
        """The scan's iterator; its sources (the files in range, the range
        tombstones) are chosen now, their blocks read as it advances."""
        if lo is not None and hi is not None and lo >= hi:
            return iter(())
        readers = sv.readers
        version = sv.version
        last_inclusive = hi  # overlapping() takes an inclusive bound; a superset is fine
        rd_sets: list[RangeDels] | None = [] if sv.range_dels else None
        tables: list[tuple[int, list[Any]]] = []  # (level, readers) of the files in range
        for level in range(len(version.levels)):
            files = version.overlapping(level, lo, last_inclusive)
            if not files:
                continue
            rs = [readers[f.number] for f in files]
            if rd_sets is not None:
                rd_sets += [r.range_dels for r in rs if r.range_dels is not None]
            tables.append((level, rs))
        rdels = None
        if rd_sets is not None:
            for m in (sv.mem, *sv.imms):
                rd_sets += m.range_del_sets()
            rdels = visible_fragments(rd_sets, lo, hi, snap)
        # The bulk merge, both ways: blocks at a time per table source (a
        # level's tables chained: they hold disjoint key ranges), the
        # memtables read by the key range of each round; the rounds are
        # chained in C (readseq, readreverse, seekrandom:
        # docs/benchmarks.md).
        csources: list[Iterator[Columns]] = []
        clean: list[bool] = []  # per source: every entry a visible PUT of a key of its own
        for level, rs in tables:
            if level == 0:
                csources += [r.iter_columns(lo, hi, reverse=reverse) for r in rs]
                clean += [r.clean_at(snap) for r in rs]
            elif len(rs) == 1:
                csources.append(rs[0].iter_columns(lo, hi, reverse=reverse))
                clean.append(rs[0].clean_at(snap))
            else:
                csources.append(chain_columns(r.iter_columns(lo, hi, reverse=reverse)
                                              for r in (reversed(rs) if reverse else rs)))
                clean.append(all(r.clean_at(snap) for r in rs))  # a level's tables share no key
        return _chain_rounds(visible_columns(csources, snap, rdels, self._check_usable,
                                             [m.range_columns for m in (sv.mem, *sv.imms)], lo, hi, reverse,
                                             clean))
