"""A frozen memtable's point entries for its flush (``MemTable.frozen``):
what a flush job carries to a worker process instead of re-reading the WAL
(docs/architecture.md, "Flush"), and how it pickles: columns, a pending
memtable's batches (tag ``"r"``) or the dicts. Split from lsm/memtable.py
by concept: the memtable holds and reads versions, this module hands them
to the table writer. Depends on nothing in lsm but the value kinds."""

from __future__ import annotations

import copyreg
import io
import pickle
from array import array
from collections.abc import Iterator
from itertools import islice, repeat
from operator import gt as _gt
from operator import itemgetter
from operator import lshift as _lshift
from operator import or_ as _or
from typing import SupportsIndex

from lsm.base.coding import ValueKind

_PUTS = bytes([ValueKind.PUT])
_first = itemgetter(0)
_second = itemgetter(1)
_third = itemgetter(2)


def versions(latest: dict[bytes, tuple[int, int, bytes]], older: dict[bytes, list[tuple[int, int, bytes]]],
             keys: list[bytes]) -> Iterator[tuple[bytes, int, bytes]]:
    """Every version of ``keys`` (ascending, each in ``latest``) as ``(key,
    trailer, value)`` in internal order: the newest from ``latest``, then
    its older ones from ``older`` (oldest first there), newest first."""
    for k in keys:
        seq, kind, value = latest[k]
        yield k, (seq << 8) | kind, value
        olds = older.get(k)
        if olds:
            for seq, kind, value in reversed(olds):
                yield k, (seq << 8) | kind, value


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
        yield from versions(self._latest, self._older, sorted(self._latest))
