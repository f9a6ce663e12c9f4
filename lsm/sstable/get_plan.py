"""The tables' half of a point lookup, resolved once per super version:
for each step of :attr:`Version.read_plan` (one per level-0 file, newest
first, then one per non-empty level >= 1), the table readers' blocked bloom
filters ready to probe, so that ``DB._get`` walks the tables without a dict
lookup, an attribute load or a counter update per table (readrandom,
docs/benchmarks.md "Session 11": ~1.3k instructions less per table the key
is not in).

A plan is ``(masks, steps)``:

* ``masks``: the blocked filters' 4096 masks for the plan's common ``k``
  (:func:`~lsm.sstable.bloom.patterns`); a get takes its mask once,
  ``m = masks[h2 >> 20]``, for every table.
* ``steps``: ``(largests, smallests, n, probes)`` per read-plan step, in read
  order; the lists are the version's own (bisect ``largests``; the file at
  the bisect point ``i`` holds the key's range when ``i < n`` and
  ``smallests[i] <= key``). ``probes[i]`` is ``(holes, nw, reader)``:
  ``holes[h1 % nw] & m`` is true when the filter says the key is certainly
  absent (``holes`` are the filter's complemented words,
  :attr:`BloomFilter.holes`). A table whose filter cannot be probed so (no
  filter, a Roaring filter, a blocked one of another ``k``) has
  ``(_PASS, 1, reader)``: never rejected here, and ``nw == 1`` sends the
  lookup to :meth:`TableReader.lookup`, which probes its own filter and
  counts its own bloom statistics. (A real one-word filter of the common
  ``k`` also has ``nw == 1``: its key then passes two probes of the same
  word; correct, and rare.)

Bloom statistics (``bloom_checked``, ``bloom_useful``, summed over the
readers by lsm/ops/stats.py): a get counts its rejections in a local and
adds them to the last reader it probed (both counters), once per get; a
passed probe counts ``bloom_checked`` on its own reader. Sums are exact (in
one thread, as before), the split between readers is not.

:func:`lookup` is the reference loop, which ``DB._get`` inlines (change
both together; tests/test_get_plan.py checks them against each other and a
model). Thread-safety: a plan is immutable and built before its super
version is published; the readers' counters are updated without a lock
(approximate under concurrency, as before).
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import Counter
from typing import Any
from zlib import crc32

from crc32c import crc32c

from lsm.sstable.bloom import BloomFilter, patterns

_PASS = array("Q", [0])
"""The holes of a table probed through :meth:`TableReader.lookup`: no bit
is a hole, so ``_PASS[h1 % 1] & m`` is 0 (passes)."""

Plan = tuple[list[int], tuple[tuple[list[bytes], list[bytes], int, list[tuple[Any, int, Any]]], ...]]


def probe_plan(
    read_plan: tuple[tuple[list[bytes], list[bytes], list[int]], ...], readers: dict[int, Any]
) -> Plan:
    """The plan of ``read_plan`` (:attr:`Version.read_plan`) over
    ``readers`` (file number -> TableReader; every number of the plan)."""
    ks = Counter(
        r._bloom.k
        for _l, _s, nums in read_plan
        for r in map(readers.__getitem__, nums)
        if r._bloom is not None
    )
    k = ks.most_common(1)[0][0] if ks else 1
    steps = []
    for largest, smallest, nums in read_plan:
        probes = []
        for num in nums:
            r = readers[num]
            b: BloomFilter | None = r._bloom
            if b is not None and b.k == k:
                probes.append((b.holes, b.nw, r))
            else:
                probes.append((_PASS, 1, r))
        steps.append((largest, smallest, len(nums), probes))
    return patterns(k), tuple(steps)


def lookup(plan: Plan, key: bytes, snap: int) -> tuple[bytes, int, bytes] | None:
    """The newest entry ``(key, trailer, value)`` of ``key`` with seq <=
    ``snap`` in the plan's tables (a tombstone included), or None. What
    ``DB._get`` does after the memtables (it inlines this loop)."""
    masks, steps = plan
    if not steps:
        return None
    h1 = crc32c(key)
    h2 = crc32(key) | 1
    m = masks[h2 >> 20]
    neg = 0
    t = None
    for largest, smallest, nf, probes in steps:
        i = bisect_left(largest, key)
        if i < nf and smallest[i] <= key:
            holes, nw, t = probes[i]
            if holes[h1 % nw] & m:
                neg += 1
                continue
            if nw == 1:
                e = t.lookup(key, (snap << 8) | 0xFF, h1, h2)
            else:
                t.bloom_checked += 1
                e = t.find_entry(key, (snap << 8) | 0xFF)
            if e is not None:
                if neg:
                    t.bloom_checked += neg
                    t.bloom_useful += neg
                return e  # type: ignore[no-any-return]
    if neg:
        t.bloom_checked += neg  # type: ignore[union-attr]
        t.bloom_useful += neg  # type: ignore[union-attr]
    return None
