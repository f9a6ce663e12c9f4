"""The memtable: recent writes in memory, with every version kept (MVCC by
sequence number) so that snapshots and iterators see a consistent view.

Layout (chosen for the put path, see docs/architecture.md):

* ``_latest``: dict user key -> (seq, kind, value) of the newest version;
  a put is one dict store (~0.35 us) instead of one sorted insert (~2.7 us).
* ``_older``: dict user key -> list of older (seq, kind, value), oldest
  first; only keys written more than once appear.
* ``_sorted``: a sortedcontainers SortedList of the keys, brought up to date
  in bulk (``SortedList.update``) only when an ordered view is needed (a
  scan, or a flush from memory). The keys it lacks are the last ones of
  ``_latest`` (a dict keeps insertion order and keys are never removed), so
  a put does no bookkeeping for it.

* ``_pending``: batches of puts added but not indexed yet, ``(seq, keys,
  values)`` in commit order: a batch of puts is one list append here, and
  goes into ``_latest`` (``_index``) only when something needs the dicts
  (a get or scan, a single add, ``frozen`` of a memtable that also holds
  single adds). Every version in the dicts is older than every pending
  one: each add that is not deferred indexes the pending batches first. A
  memtable filled by batches alone reaches its flush without a dict
  (``frozen`` hands the batches over as columns): fillbatch's memtable
  insert, ~35% of a batched put's CPU in the writers' process, moves to
  the flush worker.
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
the GIL and a version, once visible, never changes). ``_sorted`` is guarded
by ``self._mu``, the lock passed in by the DB (the write lock), so merging
new keys never races with a writer's insert. Indexing the pending batches
(``_index``) is guarded by ``self._index_mu``, taken by readers (without
the write lock) and by writers (under it: the order is ``_mu`` then
``_index_mu``, never the reverse); a writer appends to ``_pending`` under
the write lock only, the indexer removes each batch once it is in the
dicts. A reader checks ``_pending`` after reading its snapshot seq: a batch
its snapshot covers was appended before that seq was published, so the
reader either sees it pending (and indexes it, or waits for whoever is) or
finds it in the dicts.

Memory: ``size`` charges ``len(key) + len(value) + ENTRY_OVERHEAD`` per
version; the Python objects behind one version of a new key (dict slot, key
and value bytes objects, the version tuple, its seq int, the SortedList
slot once sorted) take about ``len(key) + len(value) + ENTRY_PY_OVERHEAD``.
docs/architecture.md, "Memory", gives the DB-wide bound.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from itertools import compress, islice, repeat
from operator import itemgetter
from operator import lshift as _lshift
from operator import or_ as _or

from sortedcontainers import SortedList

from lsm.base.coding import ValueKind
from lsm.base.rangedel import RangeDels, Tombstone
from lsm.memtable_frozen import FrozenEntries, versions

__all__ = ["ENTRY_OVERHEAD", "ENTRY_PY_OVERHEAD", "FrozenEntries", "MemTable"]

_PUT = ValueKind.PUT
_RANGE_DELETE = ValueKind.RANGE_DELETE
_first = itemgetter(0)
_second = itemgetter(1)
_third = itemgetter(2)

ENTRY_OVERHEAD = 16
"""Bytes charged per entry on top of key and value (seq, kind, framing)."""

ENTRY_PY_OVERHEAD = 240
"""Python heap bytes per entry of a new key beyond its key and value bytes,
measured on CPython 3.11 / 64-bit (tests/test_write_path.py checks the
figure with tracemalloc): two bytes objects' headers (2 x 33), the version
tuple (64) and its seq int (32), the dict slot (~40 at the dict's average
fill) and the sorted list's slot (8), rounded up."""


class MemTable:
    __slots__ = ("_index_mu", "_latest", "_mu", "_n_older", "_older", "_pending", "_rdels", "_runs", "_sorted", "size")

    def __init__(self, mu: threading.Lock | threading.RLock | None = None):
        self._latest: dict[bytes, tuple[int, int, bytes]] = {}
        self._older: dict[bytes, list[tuple[int, int, bytes]]] = {}
        self._n_older = 0  # versions in _older
        self._sorted = SortedList()  # guarded by self._mu
        self._mu = mu if mu is not None else threading.Lock()
        # Batches of puts not indexed yet, oldest first: appended under the
        # write lock, removed by _index under _index_mu (module docstring).
        self._pending: list[tuple[int, list[bytes], list[bytes]]] = []
        self._index_mu = threading.Lock()
        self.size = 0  # approximate bytes (keys + values + ENTRY_OVERHEAD each)
        self._rdels: list[Tombstone] = []  # (start, stop, seq), appended under the write lock
        # (lo, hi, fragments of _rdels[lo:hi]) per run, oldest first; the
        # tuple is replaced whole by the writer, so readers need no lock.
        self._runs: tuple[tuple[int, int, RangeDels], ...] = ()

    def add(self, seq: int, kind: int, key: bytes, value: bytes) -> None:
        """Add one version. REQUIRES: caller holds the DB write lock (which
        is ``self._mu``); ``seq`` greater than every seq added before."""
        # Once per put: a new key costs one dict call (setdefault) and the
        # size update. An older version moves to _older before the new one
        # replaces it in _latest, so a lock-free get never misses both.
        # DB.put inlines this body (one Python call less per put): change
        # both together (tests/test_put_path.py compares them).
        if self._pending:
            self._index()  # the pending batches are older: they go in first
        new = (seq, kind, value)
        prev = self._latest.setdefault(key, new)
        if prev is not new:
            self._push_older(key, prev)
            self._latest[key] = new
        self.size += len(key) + len(value) + ENTRY_OVERHEAD

    def _push_older(self, key: bytes, prev: tuple[int, int, bytes]) -> None:
        older = self._older.get(key)
        if older is None:
            self._older[key] = [prev]
        else:
            older.append(prev)
        self._n_older += 1

    def add_ops(self, seq: int, ops: list[tuple[int, bytes, bytes]], nbytes: int | None = None) -> None:
        """Add the ops ``(kind, key, value)`` of a batch with consecutive
        sequence numbers from ``seq`` (recovery); as :meth:`add_batch`."""
        self.add_batch(seq, list(map(_second, ops)), list(map(_third, ops)), bytes(map(_first, ops)), nbytes)

    def add_batch(self, seq: int, keys: list[bytes], values: list[bytes], kinds: bytes | bytearray | None = None,
                  nbytes: int | None = None) -> None:
        """Add the ops of a batch, given as columns (``WriteBatch.columns``),
        with consecutive sequence numbers from ``seq``; ``kinds`` None when
        every op is a PUT; ``nbytes``: the keys' and values' total length,
        when the caller knows it. REQUIRES: as :meth:`add`."""
        n = len(keys)
        if n > 1 and kinds is None and nbytes is not None:
            # Puts only: deferred (``_pending``), copies of the lists kept (a
            # caller may reuse its batch). ~0.5 us per op less under the
            # write lock; the dict work happens once, at the first read of
            # this memtable, or in the flush worker.
            self._pending.append((seq, keys[:], values[:]))
            self.size += nbytes + ENTRY_OVERHEAD * n
            return
        if self._pending:
            self._index()
        charged = self._insert(seq, keys, values, kinds,
                               n > 1 and nbytes is not None and (kinds is None or _RANGE_DELETE not in kinds))
        self.size += charged if charged is not None else (nbytes or 0) + ENTRY_OVERHEAD * n  # (bulk: nbytes given)

    def _insert(self, seq: int, keys: list[bytes], values: list[bytes], kinds: bytes | bytearray | None,
                bulk: bool) -> int | None:
        """The dict work of a batch (``add_batch``, and ``_index`` for a
        pending one), ``size`` left to the caller: None when the bulk path
        took it (charge ``nbytes``), else what its point ops charge (range
        deletions charge themselves). ``bulk``: no op is a range deletion
        and the caller knows ``nbytes``. REQUIRES: as :meth:`add`."""
        latest = self._latest
        n = len(keys)
        # Bulk path, C-level passes only, when every key is new (to the
        # memtable and within the batch) and no op is a range deletion:
        # ~0.4 us per op against ~0.6 us for the loop below. (Columns in,
        # not op tuples: ``zip(*ops)`` over a batch of 1000 cost another
        # ~0.35 us per op.) Straight into _latest (no batch dict first: ~55
        # ns an op less). A key twice in the batch keeps its last version
        # there; its earlier ones go to _older below, before the DB
        # publishes the batch's seqs (or, for a pending batch, before
        # _index removes it from _pending), so no reader can miss them.
        if bulk and latest.keys().isdisjoint(keys):
            n0 = len(latest)
            latest.update(zip(keys, zip(range(seq, seq + n), repeat(_PUT) if kinds is None else kinds, values)))
            if len(latest) - n0 != n:
                self._older_in_batch(seq, keys, values, kinds)
            return None
        setdefault = latest.setdefault
        size = 0
        for kind, key, value in zip(repeat(_PUT) if kinds is None else kinds, keys, values):
            if kind == _RANGE_DELETE:
                self.add_range_del(seq, key, value)
                seq += 1
                continue
            new_v = (seq, kind, value)
            prev = setdefault(key, new_v)
            if prev is not new_v:
                self._push_older(key, prev)
                latest[key] = new_v
            size += len(key) + len(value) + ENTRY_OVERHEAD
            seq += 1
        return size

    def _index(self) -> None:
        """Put the pending batches into the dicts, oldest first, each
        removed from ``_pending`` once it is in (a concurrent indexer then
        has nothing to redo). Any thread; takes ``_index_mu`` (a writer
        holding the write lock may call it; nothing holding ``_index_mu``
        takes the write lock)."""
        with self._index_mu:
            p = self._pending
            while p:
                seq, keys, values = p[0]
                self._insert(seq, keys, values, None, True)  # (size: charged when it was added)
                del p[0]

    def _older_in_batch(self, seq: int, keys: list[bytes], values: list[bytes],
                        kinds: bytes | bytearray | None) -> None:
        """After :meth:`add_batch`'s bulk path for a batch holding some key
        more than once (each new to the memtable): ``_latest`` has each
        key's last version of the batch; the earlier ones go to ``_older``,
        oldest first, as one-at-a-time adds would leave them."""
        latest = self._latest
        for i, key, value in zip(range(seq, seq + len(keys)), keys, values):
            if latest[key][0] != i:
                self._push_older(key, (i, _PUT if kinds is None else kinds[i - seq], value))

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
        if self._pending:
            self._index()
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
        if self._pending:
            self._index()
        return len(self._latest)

    @property
    def count(self) -> int:
        """Entries (versions) added, range tombstones included. Counts the
        pending batches without indexing them (``stats`` polls it); under
        ``_index_mu`` no batch is half indexed, so the sum is exact while
        no writer adds."""
        with self._index_mu:
            return len(self._latest) + self._n_older + len(self._rdels) + sum(len(b[1]) for b in self._pending)

    def is_empty(self) -> bool:
        return not self._latest and not self._rdels and not self._pending

    def _sorted_locked(self) -> SortedList:
        """REQUIRES: self._mu held."""
        if self._pending:
            self._index()
        sl = self._sorted
        n = len(sl)
        if n < len(self._latest):
            # The keys added since the last call: the dict's tail.
            sl.update(list(islice(self._latest, n, None)))
        return sl

    def keys_in_range(self, start: bytes | None, stop: bytes | None) -> list[bytes]:
        """A sorted copy of the user keys with start <= key < stop."""
        with self._mu:
            sl = self._sorted_locked()
            if start is None and stop is None:
                return list(sl)
            # Two bisects and a slice (list slices joined in C), not
            # irange's generator: a scan's memtable windows (readseq).
            i = 0 if start is None else sl.bisect_left(start)
            j = len(sl) if stop is None else sl.bisect_left(stop)
            return sl[i:j] if i < j else []

    def range_columns(self, start: bytes | None, stop: bytes | None) -> tuple[list[bytes], list[int], list[bytes]] | None:
        """The entries of :meth:`iter_entries` (forward) as ``(keys,
        trailers, values)`` columns, None when there are none: a scan's
        window (``lsm.iterators.visible_columns``). Keys with one version
        (all of them, unless some were overwritten) are done in C-level
        passes. The versions are read before ``_older`` is consulted, and a
        writer moves a version to ``_older`` before replacing it, so a key
        overwritten meanwhile is seen in ``_older`` and taken the slow way
        (which reads ``_latest`` first too)."""
        keys = self.keys_in_range(start, stop)
        if not keys:
            return None
        vers = list(map(self._latest.__getitem__, keys))
        seqs = list(map(_first, vers))  # not zip(*vers): one iterator per entry (~0.6 us each)
        trailers = list(map(_or, map(_lshift, seqs, repeat(8)), map(_second, vers)))
        values = list(map(_third, vers))
        older = self._older
        if older:
            # The overwritten keys' older versions, spliced in after the
            # version read: those with a lower seq (a writer may have moved
            # the one read to _older meanwhile).
            for i in reversed(list(compress(range(len(keys)), map(older.__contains__, keys)))):
                seq = seqs[i]
                olds = [o for o in reversed(older[keys[i]]) if o[0] < seq]
                if olds:
                    j = i + 1
                    keys[j:j] = [keys[i]] * len(olds)
                    trailers[j:j] = [(o[0] << 8) | o[1] for o in olds]
                    values[j:j] = [o[2] for o in olds]
        return keys, trailers, values

    def iter_entries(
        self, start: bytes | None = None, stop: bytes | None = None, reverse: bool = False
    ) -> Iterator[tuple[bytes, int, bytes]]:
        """Every version with start <= key < stop as (key, trailer, value),
        in internal order (key ascending, newest first) or exactly its
        reverse. The key list is copied at the call, so later writes do not
        disturb the iteration; versions added later have higher seqs and
        are filtered by the reader's snapshot."""
        return self._entries(self.keys_in_range(start, stop), reverse)

    def _entries(self, keys: list[bytes], reverse: bool) -> Iterator[tuple[bytes, int, bytes]]:
        latest = self._latest
        older = self._older
        if not reverse:
            yield from versions(latest, older, keys)
        else:
            for k in reversed(keys):
                olds = older.get(k)
                if olds:
                    for seq, kind, value in list(olds):
                        yield k, (seq << 8) | kind, value
                seq, kind, value = latest[k]
                yield k, (seq << 8) | kind, value

    def frozen(self) -> FrozenEntries:
        """The point entries, for a flush (possibly in a worker process: the
        result pickles as the memtable's dicts, C-level work only).
        REQUIRES: no more adds (an immutable memtable).

        A memtable that holds only pending batches (filled by batches of
        puts, never read) hands them over as they are: no dict is built in
        this process. Otherwise they are indexed first."""
        with self._index_mu:
            if self._pending and not self._latest:
                return FrozenEntries({}, {}, 0, list(self._pending))
        self._index()
        return FrozenEntries(self._latest, self._older, self._n_older)

    def check(self) -> None:
        """Invariant checker (tests): versions strictly ascending per key,
        sorted view consistent with the dict."""
        with self._mu:
            sl = self._sorted_locked()
            assert not self._pending, "batches left pending after an index"
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
