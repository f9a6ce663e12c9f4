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

import copyreg
import io
import pickle
import threading
from array import array
from collections.abc import Iterator
from itertools import compress, islice, repeat
from operator import gt as _gt
from operator import itemgetter
from operator import lshift as _lshift
from operator import or_ as _or
from typing import SupportsIndex

from sortedcontainers import SortedList

from lsm.base.coding import ValueKind
from lsm.base.rangedel import RangeDels, Tombstone

_PUT = ValueKind.PUT
_PUTS = bytes([_PUT])
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
        latest = self._latest
        if n > 1 and nbytes is not None and (kinds is None or _RANGE_DELETE not in kinds):
            # Bulk path, C-level passes only, when every key is new (to the
            # memtable and within the batch) and no op is a range deletion:
            # ~0.4 us per op against ~0.6 us for the loop below. (Columns
            # in, not op tuples: ``zip(*ops)`` over a batch of 1000 cost
            # another ~0.35 us per op.)
            if latest.keys().isdisjoint(keys):
                # Straight into _latest (no batch dict first: ~55 ns an op
                # less). A key twice in the batch keeps its last version
                # there; its earlier ones go to _older below, before the DB
                # publishes the batch's seqs, so no reader can miss them.
                n0 = len(latest)
                latest.update(zip(keys, zip(range(seq, seq + n), repeat(_PUT) if kinds is None else kinds, values)))
                self.size += nbytes + ENTRY_OVERHEAD * n
                if len(latest) - n0 != n:
                    self._older_in_batch(seq, keys, values, kinds)
                return
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
        self.size += size

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
                self._index_batch(seq, keys, values)
                del p[0]

    def _index_batch(self, seq: int, keys: list[bytes], values: list[bytes]) -> None:
        """One pending batch of puts into the dicts (``add_batch``'s work
        for it, ``size`` excepted: charged when it was added). REQUIRES:
        ``_index_mu`` held, every earlier batch indexed."""
        latest = self._latest
        n = len(keys)
        if latest.keys().isdisjoint(keys):
            n0 = len(latest)
            latest.update(zip(keys, zip(range(seq, seq + n), repeat(_PUT), values)))
            if len(latest) - n0 != n:
                self._older_in_batch(seq, keys, values, None)
            return
        setdefault = latest.setdefault
        for key, value in zip(keys, values):
            new_v = (seq, _PUT, value)
            prev = setdefault(key, new_v)
            if prev is not new_v:
                self._push_older(key, prev)
                latest[key] = new_v
            seq += 1

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


class FrozenEntries:
    """An immutable memtable's point entries in internal order: iterate it
    for ``(key, trailer, value)`` tuples, or take :meth:`columns`.

    What a flush in a worker process receives instead of re-reading the
    WAL (docs/architecture.md, "Flush"). Pickled, a memtable whose keys
    have one version each (a fill) travels as *columns* (keys, values,
    kinds, seqs: C-level passes over the dict) and the worker sorts them
    by key (a permutation, skipped when they arrive sorted); a memtable
    with overwritten keys travels as its dicts. A memtable of pending
    batches only (``runs``: ``MemTable._pending``) travels as their columns
    joined, tagged ``"r"``: a key may appear in several batches, and the
    worker orders its versions newest first (``_versions``)."""

    __slots__ = ("_cols", "_latest", "_multi", "_n_older", "_older", "_runs", "_unordered")

    def __init__(self, latest: dict[bytes, tuple[int, int, bytes]], older: dict[bytes, list[tuple[int, int, bytes]]],
                 n_older: int, runs: list[tuple[int, list[bytes], list[bytes]]] | None = None):
        self._latest = latest
        self._older = older
        self._n_older = n_older
        self._runs = runs  # pending batches (seq, keys, values), oldest first; the dicts are then empty
        self._cols: tuple[list[bytes], list[int], list[bytes]] | None = None  # columnar state, unpickled
        self._unordered = False  # _cols holds two equal keys (a damaged job)
        self._multi = False  # _cols holds several versions of some key (internal order): no columns()

    def _run_columns(self) -> tuple[list[bytes], list[bytes], int | bytes, bytes]:
        """The pending batches as ``(keys, values, seqs, kinds)``: seqs an
        int (the first) when consecutive, else packed u64s."""
        runs = self._runs
        assert runs
        keys: list[bytes] = []
        values: list[bytes] = []
        for _s, k, v in runs:
            keys += k
            values += v
        n = len(keys)
        first = runs[0][0]
        # Each batch's seqs are consecutive and the batches ascend, so the
        # whole is consecutive exactly when the span is n.
        if runs[-1][0] + len(runs[-1][1]) - first == n:
            seqs: int | bytes = first
        else:
            seqs = array("Q", [q for s, k, _v in runs for q in range(s, s + len(k))]).tobytes()
        return keys, values, seqs, _PUTS * n

    def _from_runs(self) -> None:
        """In this process (a flush thread): the columns of the runs, as a
        worker would unpickle them."""
        if self._cols is None and self._runs:
            self._set_columns(*self._run_columns(), True)

    def __getstate__(self) -> tuple:
        if self._runs:
            # [batch, session 13] The pending batches' lists joined (C-level
            # list extends), pickled as the "c" columns are.
            keys, values, seqs, kinds = self._run_columns()
            buf = io.BytesIO()
            p = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
            p.fast = True
            p.dump((keys, values))
            del keys, values
            return ("r", buf.getvalue(), seqs, kinds)
        latest = self._latest
        if not self._older:
            # [batch, session 6] Columns, not the dict: the keys and the
            # values as two lists of bytes (pickled without a memo, see
            # below), the kinds as bytes, the seqs as below. The worker
            # unpickles them and makes the trailers in 0.28-0.36 us CPU
            # per entry where unpickling the dict's version tuples and
            # taking its columns cost 0.70-0.90; the writers' process pays
            # what it paid for the dict (1,276 against 1,304 instructions
            # per entry; 63k entries of 16 + 100 bytes,
            # tools/flush_handoff.py).
            vers = list(latest.values())
            # Each key written once: dict order is seq order, so the seqs
            # are consecutive exactly when the last minus the first is
            # n - 1 (batches and puts with no range deletion between them),
            # and then the first one stands for all.
            first = vers[0][0] if vers else 0
            seqs = first if vers and vers[-1][0] - first == len(vers) - 1 else array("Q", map(_first, vers)).tobytes()
            kinds = bytes(map(_second, vers))
            buf = io.BytesIO()
            p = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
            p.fast = True
            p.dump((list(latest), list(map(_third, vers))))
            del vers  # the lists of references go before the pickle is copied out (peak memory)
            return ("c", buf.getvalue(), seqs, kinds)
        # [put, session 5] The dicts pickled on their own, without a memo
        # (``Pickler.fast``): they hold no cycle and no object whose
        # identity matters (a value shared by several entries arrives as
        # equal copies), and the memo's bookkeeping (one entry per key,
        # version tuple and value) was ~0.85 of the ~0.95 us per entry that
        # handing a memtable to a worker process cost the writers' process
        # (68k entries of 16+100 bytes: 0.95 -> 0.11 us per entry; the
        # outer pickle then copies one bytes object). Unpickling is as
        # before (~0.6 us per entry, in the worker).
        buf = io.BytesIO()
        p = pickle.Pickler(buf, pickle.HIGHEST_PROTOCOL)
        p.fast = True
        p.dump((latest, self._older, self._n_older))
        return ("d", buf.getvalue())

    def __reduce_ex__(self, protocol: SupportsIndex) -> tuple:
        # With pickle protocol 5 the pickled columns (~8.7 MB for the
        # default memtable) travel as an out-of-band buffer
        # (``pickle.PickleBuffer``): the worker pool writes them to the
        # worker's pipe as they are, rather than copied into the job's
        # pickle first (peak memory of the hand-off halved, 19.0 -> 9.6 MB
        # for 63k entries; lsm/compaction/worker.py), and the worker reads
        # them into their own bytes object, not copied out of the job's.
        # In-band (no ``buffer_callback``) they unpickle as bytes, as before.
        state = self.__getstate__()
        if protocol.__index__() >= 5 and state[0] in ("c", "r"):
            state = (state[0], pickle.PickleBuffer(state[1]), *state[2:])
        return copyreg.__newobj__, (type(self),), state  # type: ignore[attr-defined]  # as object.__reduce_ex__

    def __setstate__(self, state: tuple) -> None:
        self._cols = None
        self._unordered = False
        self._multi = False
        self._runs = None
        if state[0] == "d":
            self._latest, self._older, self._n_older = pickle.loads(state[1])
            return
        tag, kv, seqs, kinds = state
        self._latest, self._older, self._n_older = {}, {}, 0
        keys, values = pickle.loads(kv)
        self._set_columns(keys, values, seqs, kinds, tag == "r")

    def _set_columns(self, keys: list[bytes], values: list[bytes], seqs: int | bytes, kinds: bytes,
                     versions: bool) -> None:
        """``_cols`` from columns in commit order (``versions``: a key may
        appear more than once, each time with a higher seq)."""
        n = len(keys)
        if type(seqs) is int and n and kinds.count(kinds[0]) == n:
            t0 = (seqs << 8) | kinds[0]
            trailers = list(range(t0, t0 + (n << 8), 256))
        else:
            sq = array("Q")
            if isinstance(seqs, int):
                sq.extend(range(seqs, seqs + n))
            else:
                sq.frombytes(seqs)
            trailers = list(map(_or, map(_lshift, sq, repeat(8)), kinds))
        # The one check that the keys are strictly ascending: the table
        # writer trusts it (``add_columns(ascending=True)``: a second pass,
        # ~250 instructions a key, saved). Keys out of order are sorted
        # (a permutation) and checked again: equal keys, which no memtable's
        # dict sends, mean a damaged job, refused by :meth:`columns`; from
        # pending batches (``versions``) they are versions, see _versions.
        if len(keys) > 1 and not all(map(_gt, islice(keys, 1, None), keys)):
            # Sorted from the last entry back: the sort is stable, so equal
            # keys come newest first (internal order) when they arrive in
            # commit order.
            order = sorted(range(len(keys) - 1, -1, -1), key=keys.__getitem__)
            get = itemgetter(*order)
            keys, trailers, values = list(get(keys)), list(get(trailers)), list(get(values))
            if not all(map(_gt, islice(keys, 1, None), keys)):
                if versions:
                    self._versions(keys, trailers)
                else:
                    self._unordered = True
        self._cols = (keys, trailers, values)

    def _versions(self, keys: list[bytes], trailers: list[int]) -> None:
        """Sorted columns in which some key appears more than once: each
        key's seqs must strictly descend (else a damaged job, refused);
        the columns then stand for the versions in internal order, iterated
        (:meth:`columns` gives None, as for a memtable's dicts with older
        versions)."""
        prev_k = None
        prev_t = 0
        for k, t in zip(keys, trailers):
            if k == prev_k and t >> 8 >= prev_t >> 8:
                self._unordered = True
                return
            prev_k = k
            prev_t = t
        self._multi = True

    def __len__(self) -> int:
        self._from_runs()
        if self._cols is not None:
            return len(self._cols[0])
        return len(self._latest) + self._n_older

    def columns(self) -> tuple[list[bytes], list[int], list[bytes]] | None:
        """``(keys, trailers, values)``, keys strictly ascending (checked),
        when every key has a single version (then internal order is key
        order), else None. ValueError for unpickled columns holding a key
        twice."""
        self._from_runs()
        if self._cols is not None:
            if self._unordered:
                raise ValueError("flush job: the memtable's columns hold a key twice")
            if self._multi:
                return None
            return self._cols
        if self._older:
            return None
        latest = self._latest
        keys = sorted(latest)
        if not keys:
            return [], [], []
        vers = list(map(latest.__getitem__, keys))
        # Three itemgetter passes, not zip(*vers): that makes one iterator
        # per entry (0.85 -> 0.2 us per entry of a 68k-entry memtable).
        trailers = list(map(_or, map(_lshift, map(_first, vers), repeat(8)), map(_second, vers)))
        return keys, trailers, list(map(_third, vers))

    def __iter__(self) -> Iterator[tuple[bytes, int, bytes]]:
        self._from_runs()
        if self._cols is not None:
            if self._unordered:
                raise ValueError("flush job: the memtable's columns hold a key twice")
            yield from zip(*self._cols)
            return
        latest = self._latest
        older = self._older
        for k in sorted(latest):
            seq, kind, value = latest[k]
            yield k, (seq << 8) | kind, value
            olds = older.get(k)
            if olds:
                for seq, kind, value in reversed(olds):
                    yield k, (seq << 8) | kind, value
