"""The block cache: an LRU map from a block's key (the table reader's
``_cbase + block_offset``: ``file_number * 2**40 + block_offset``, an int,
negative for a table of 1 TiB or more) to a decoded block (the reader's
:class:`~lsm.sstable.block.BlockView`), bounded by the approximate bytes
the entries charge.

Invariant: ``usage`` is the sum of the charges of the cached entries and,
after every ``put``, ``usage <= capacity``. An entry charged more than the
whole capacity is not cached (capacity 0 caches nothing).

Admission (``admission=True``, the database's cache): an entry that would
evict others goes in only if its key missed recently. A *doorkeeper*, one
slot per 8 KiB of capacity in sets of two (about half as many slots as
the cache holds 4 KiB blocks: the ghost queue size of 2Q, Johnson and
Shasha), remembers the hashes of the last two keys refused in each set
(set ``hash(key) % sets``); a key finding its own hash there is admitted
(:meth:`admit`). Two hot blocks of one set read in turn are both admitted
at their second miss; three would push each other out. While the charges
fit, every put is admitted. Why: under reads spread evenly over far more
blocks than fit (readrandom), an LRU cache replaces an entry on nearly
every miss, and the eviction (a cold entry, view and payload freed) costs
about as much as the block's decompression; the hit rate is the cache's
share of the blocks whatever is cached, so refusing one-off blocks keeps
it and saves most of that churn (docs/benchmarks.md, "Session 14"). A
block read again soon (a hot one) misses at most twice before it is
cached, and a sweep of one read per block cannot flush the cache. The
doorkeeper takes no lock: it is a policy, and a race only admits or
refuses one entry more.

Thread-safety: every method but ``get`` and ``admit`` takes ``self._mu``;
a cache is shared by all readers of a database. ``get`` takes no lock: its
two OrderedDict calls (``get``, ``move_to_end``) are each atomic under the
GIL (C methods on int keys run no Python code), a concurrent eviction
between them only skips the LRU bump, and ``hits``/``misses`` are exact in
one thread, approximate under concurrency (as the readers' bloom counters).
Values are never mutated by the cache, and readers treat them as immutable,
so a value may be used after its eviction.
"""

from __future__ import annotations

import threading
from array import array
from collections import OrderedDict
from collections.abc import Hashable, Sequence


class BlockCache:
    """LRU of decoded blocks, bounded by approximate bytes."""

    def __init__(self, capacity_bytes: int, admission: bool = False) -> None:
        """``admission``: refuse an entry that would evict others until its
        key has missed twice (the module docstring); the database's cache
        has it, a bare cache is a plain LRU."""
        if isinstance(capacity_bytes, bool) or not isinstance(capacity_bytes, int):
            raise TypeError(f"capacity_bytes: expected an int, got {type(capacity_bytes).__name__}")
        if capacity_bytes < 0:
            raise ValueError(f"capacity_bytes: must be >= 0, got {capacity_bytes}")
        self.capacity = capacity_bytes
        self._mu = threading.Lock()
        # key -> (value, charge), least recently used first; guarded by self._mu
        self._map: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self.usage = 0  # guarded by self._mu
        self.hits = 0  # updated without a lock by get
        self.misses = 0  # updated without a lock by get
        # The doorkeeper (admission): set i is slots 2i (the last refused
        # key's hash) and 2i+1 (the one before). No lock (a policy; see the
        # module docstring). An odd count of sets, so that the set of an
        # int key (file_number * 2**40 + offset) mixes in its file number.
        self._sets = max(32, capacity_bytes >> 14) | 1
        self._door: array[int] | None = array("q", bytes(16 * self._sets)) if admission else None
        self.refused = 0  # puts refused by admit; updated without a lock

    def admit(self, key: Hashable) -> bool:
        """Whether an entry for ``key`` that would evict others goes in:
        True when the cache has no doorkeeper, or when ``key`` is one of
        the last two refused in its set (a second miss); otherwise
        remembers ``key`` in its set (forgetting the older of the two) and
        returns False."""
        d = self._door
        if d is None:
            return True
        h = hash(key)
        s = h % self._sets * 2
        if d[s] == h or d[s + 1] == h:
            return True
        d[s + 1] = d[s]
        d[s] = h
        self.refused += 1
        return False

    def get(self, key: Hashable) -> object | None:
        """The cached value, made most recently used; None on a miss."""
        # No lock (see the module docstring): 0.56 us against 0.86 us with
        # acquire/release on a loaded 2-core machine (M6 in
        # docs/format/sstable.md); this runs on every block access.
        m = self._map
        e = m.get(key)
        if e is None:
            self.misses += 1
            return None
        try:
            m.move_to_end(key)
        except KeyError:  # evicted meanwhile by another thread's put
            pass
        self.hits += 1
        return e[0]

    def get_run(self, keys: Sequence[Hashable]) -> list[object | None] | None:
        """:meth:`get` of each key in order, or None when none of them is
        cached (each counted a miss, with no Python call per key): a long
        scan's read-ahead run of blocks (lsm/sstable/scan.py), which misses
        them all in the common case. No lock, as :meth:`get`."""
        m = self._map
        if not any(map(m.__contains__, keys)):
            self.misses += len(keys)
            return None
        return [self.get(k) for k in keys]

    def put(self, key: Hashable, value: object, charge: int) -> None:
        """Insert (or replace) ``key``, evicting least recently used entries
        until the charges fit the capacity; with a doorkeeper, only if
        :meth:`admit` lets it in when the charges would not fit."""
        if charge > self.capacity or not self.capacity:
            return
        if self.usage + charge > self.capacity and not self.admit(key):
            return
        # acquire/release, not ``with``: once per block read from disk, and
        # a ``with`` looks up and calls __enter__/__exit__ (~1,200
        # instructions more, docs/benchmarks.md "Write path profile").
        mu = self._mu
        mu.acquire()
        try:
            m = self._map
            old = m.pop(key, None)
            if old is not None:
                self.usage -= old[1]
            m[key] = (value, charge)
            self.usage += charge
            while self.usage > self.capacity:
                _k, (_v, c) = m.popitem(last=False)
                self.usage -= c
        finally:
            mu.release()

    def erase(self, key: Hashable) -> None:
        with self._mu:
            e = self._map.pop(key, None)
            if e is not None:
                self.usage -= e[1]

    def clear(self) -> None:
        with self._mu:
            self._map.clear()
            self.usage = 0

    def __len__(self) -> int:
        with self._mu:
            return len(self._map)

    def check(self) -> None:
        """Invariant checker for tests: raises AssertionError when broken."""
        with self._mu:
            total = sum(c for _v, c in self._map.values())
            if total != self.usage:
                raise AssertionError(f"cache usage {self.usage} != sum of charges {total}")
            if self.usage > self.capacity:
                raise AssertionError(f"cache usage {self.usage} > capacity {self.capacity}")
