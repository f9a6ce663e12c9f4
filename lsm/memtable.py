"""The memtable: recent writes in memory, with every version kept (MVCC by
sequence number) so that snapshots and iterators see a consistent view.

Layout (chosen for the put path, see docs/architecture.md):

* ``_latest``: dict user key -> (seq, kind, value) of the newest version;
  a put is one dict store (~0.35 us) instead of one sorted insert (~2.7 us).
* ``_older``: dict user key -> list of older (seq, kind, value), oldest
  first; only keys written more than once appear.
* ``_sorted``: a sortedcontainers SortedList of the keys, brought up to date
  in bulk (``SortedList.update``) from ``_pending`` only when an ordered view
  is needed (a scan, or a flush from memory).

* ``_rdels``: the range tombstones ``(start, stop, seq)`` in commit order,
  kept apart from the point entries, and ``_runs``: the same tombstones
  fragmented (lsm/base/rangedel.py) in a few immutable *runs* of
  geometrically growing size (the logarithmic method): adding a tombstone
  adds a run of one and merges the last two runs while the newer is as
  large as the older, so a tombstone is re-fragmented O(log n) times and a
  lookup probes O(log n) runs, however reads and range deletions
  interleave. A memtable without range deletions pays nothing for them.

Thread-safety: writers are serialised by the caller (the DB write lock)
and only ever add. ``get`` runs without a lock (dict reads are atomic under
the GIL and a version, once visible, never changes). ``_sorted`` and
``_pending`` are guarded by ``self._mu``, the lock passed in by the DB (the
write lock), so merging pending keys never races with a writer's append.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from sortedcontainers import SortedList

from lsm.base.coding import ValueKind
from lsm.base.rangedel import RangeDels, Tombstone

_RANGE_DELETE = ValueKind.RANGE_DELETE

ENTRY_OVERHEAD = 16
"""Bytes charged per entry on top of key and value (seq, kind, framing)."""


class MemTable:
    __slots__ = ("_latest", "_mu", "_older", "_pending", "_rdels", "_runs", "_sorted", "count", "max_seq",
                 "min_seq", "size")

    def __init__(self, mu: threading.Lock | threading.RLock | None = None):
        self._latest: dict[bytes, tuple[int, int, bytes]] = {}
        self._older: dict[bytes, list[tuple[int, int, bytes]]] = {}
        self._sorted = SortedList()  # guarded by self._mu
        self._pending: list[bytes] = []  # guarded by self._mu
        self._mu = mu if mu is not None else threading.Lock()
        self.size = 0  # approximate bytes (keys + values + ENTRY_OVERHEAD each)
        self.min_seq = 0  # first sequence number added (0: empty)
        self.max_seq = 0
        self.count = 0  # entries (versions) added, range tombstones included
        self._rdels: list[Tombstone] = []  # (start, stop, seq), appended under the write lock
        # (lo, hi, fragments of _rdels[lo:hi]) per run, oldest first; the
        # tuple is replaced whole by the writer, so readers need no lock.
        self._runs: tuple[tuple[int, int, RangeDels], ...] = ()

    def add(self, seq: int, kind: int, key: bytes, value: bytes) -> None:
        """Add one version. REQUIRES: caller holds the DB write lock (which
        is ``self._mu``); ``seq`` greater than every seq added before."""
        latest = self._latest
        prev = latest.get(key)
        if prev is None:
            self._pending.append(key)
        else:
            older = self._older.get(key)
            if older is None:
                self._older[key] = [prev]
            else:
                older.append(prev)
        latest[key] = (seq, kind, value)
        self.size += len(key) + len(value) + ENTRY_OVERHEAD
        if not self.min_seq:
            self.min_seq = seq
        self.max_seq = seq
        self.count += 1

    def add_ops(self, seq: int, ops: list[tuple[int, bytes, bytes]]) -> None:
        """Add the ops of a batch with consecutive sequence numbers from
        ``seq``. REQUIRES: as :meth:`add`."""
        add = self.add
        for kind, key, value in ops:
            if kind == _RANGE_DELETE:
                self.add_range_del(seq, key, value)
            else:
                add(seq, kind, key, value)
            seq += 1

    def add_range_del(self, seq: int, start: bytes, stop: bytes) -> None:
        """Add a range tombstone deleting ``[start, stop)`` below ``seq``.
        REQUIRES: as :meth:`add`; ``start < stop``."""
        rdels = self._rdels
        rdels.append((start, stop, seq))
        n = len(rdels)
        runs = list(self._runs)
        lo = n - 1
        while runs and runs[-1][1] - runs[-1][0] <= n - lo:
            lo = runs.pop()[0]
        runs.append((lo, n, RangeDels.build(rdels[lo:n])))
        self._runs = tuple(runs)
        self.size += len(start) + len(stop) + ENTRY_OVERHEAD
        if not self.min_seq:
            self.min_seq = seq
        self.max_seq = seq
        self.count += 1

    @property
    def range_del_count(self) -> int:
        """Range tombstones added (0: the reads' fast path applies)."""
        return len(self._rdels)

    def range_del_list(self) -> list[Tombstone]:
        """A copy of the range tombstones ``(start, stop, seq)`` (a flush)."""
        return self._rdels[:]

    def range_del_sets(self) -> list[RangeDels]:
        """The range tombstones as a few fragmented sets (the runs)."""
        return [r[2] for r in self._runs]

    def range_del_cover(self, key: bytes, snap: int) -> int:
        """The newest seq <= ``snap`` of a range tombstone covering ``key``;
        0 when none does."""
        c = 0
        for _lo, _hi, rd in self._runs:
            c = max(c, rd.cover(key, snap))
        return c

    def get(self, key: bytes, snapshot_seq: int) -> tuple[int, int, bytes] | None:
        """The newest version of ``key`` with seq <= ``snapshot_seq`` as
        (seq, kind, value), or None when there is none."""
        e = self._latest.get(key)
        if e is None:
            return None
        if e[0] <= snapshot_seq:
            return e
        older = self._older.get(key)
        if older:
            for o in reversed(older):
                if o[0] <= snapshot_seq:
                    return o
        return None

    def __len__(self) -> int:
        return len(self._latest)

    def is_empty(self) -> bool:
        return self.count == 0

    def _sorted_locked(self) -> SortedList:
        """REQUIRES: self._mu held."""
        if self._pending:
            self._sorted.update(self._pending)
            self._pending = []
        return self._sorted

    def keys_in_range(self, start: bytes | None, stop: bytes | None) -> list[bytes]:
        """A sorted copy of the user keys with start <= key < stop."""
        with self._mu:
            sl = self._sorted_locked()
            if start is None and stop is None:
                return list(sl)
            return list(sl.irange(start, stop, inclusive=(True, False)))

    def iter_entries(
        self, start: bytes | None = None, stop: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, int, bytes]]:
        """Every version with start <= key < stop as (key, trailer, value),
        in internal order (key ascending, newest first) or exactly its
        reverse. The key list is copied at the call, so later writes do not
        disturb the iteration; versions added later have higher seqs and
        are filtered by the reader's snapshot."""
        keys = self.keys_in_range(start, stop)
        latest = self._latest
        older = self._older
        if not reverse:
            for k in keys:
                seq, kind, value = latest[k]
                yield k, (seq << 8) | kind, value
                olds = older.get(k)
                if olds:
                    for seq, kind, value in reversed(olds):
                        yield k, (seq << 8) | kind, value
        else:
            for k in reversed(keys):
                olds = older.get(k)
                if olds:
                    for seq, kind, value in list(olds):
                        yield k, (seq << 8) | kind, value
                seq, kind, value = latest[k]
                yield k, (seq << 8) | kind, value

    def check(self) -> None:
        """Invariant checker (tests): versions strictly ascending per key,
        sorted view consistent with the dict."""
        with self._mu:
            sl = self._sorted_locked()
            assert list(sl) == sorted(self._latest), "sorted keys differ from the key set"
            for k, olds in self._older.items():
                seqs = [o[0] for o in olds] + [self._latest[k][0]]
                assert seqs == sorted(set(seqs)), f"versions of {k!r} not ascending: {seqs}"
            for _seq, kind, _v in self._latest.values():
                assert kind in (ValueKind.PUT, ValueKind.DELETE)
            for start, stop, _seq in self._rdels:
                assert start < stop, f"empty range tombstone [{start!r}, {stop!r})"
            runs = self._runs
            assert [(r[0], r[1]) for r in runs] == list(zip([0] + [r[1] for r in runs[:-1]], [r[1] for r in runs]))
            assert not runs or runs[-1][1] == len(self._rdels), "runs do not cover every range tombstone"
            for lo, hi, rd in runs:
                rd.check()
                assert rd == RangeDels.build(self._rdels[lo:hi]), "a run differs from its tombstones"
