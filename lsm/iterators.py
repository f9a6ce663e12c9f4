"""Merging sources of internal entries into the user's view.

A source yields ``(key, trailer, value)`` in internal order (key ascending,
newest version first) or, for reverse scans, exactly the reverse. Sources
are passed newest first (memtable, immutable memtables, level-0 files newest
first, then one chain per deeper level), so for equal keys a newer source's
entries come first in a forward merge (``heapq.merge`` breaks ties by
source position).

Visibility: the first version of a key with ``seq <= snapshot`` decides;
a deletion marker hides the key.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from operator import itemgetter

from lsm.base.coding import ValueKind

_PUT = ValueKind.PUT
_KEY = itemgetter(0)

Entry = tuple[bytes, int, bytes]


def chain(sources: Iterable[Iterator[Entry]]) -> Iterator[Entry]:
    """Concatenate sources that cover disjoint, ordered key ranges."""
    for s in sources:
        yield from s


def visible(sources: list[Iterator[Entry]], snapshot: int, reverse: bool = False) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every key visible at ``snapshot``, in key order (or
    reverse key order)."""
    if not sources:
        return
    if len(sources) == 1:
        merged: Iterator[Entry] = sources[0]
    else:
        merged = heapq.merge(*sources, key=_KEY, reverse=reverse)
    if not reverse:
        done = None  # last key decided
        limit = (snapshot << 8) | 0xFF  # trailer <= limit  <=>  seq <= snapshot
        for key, trailer, value in merged:
            if key == done or trailer > limit:
                continue
            done = key
            if trailer & 0xFF == _PUT:
                yield key, value
        return
    # Reverse: versions of a key arrive oldest first and sources interleave,
    # so take the newest visible version of each key group.
    limit = (snapshot << 8) | 0xFF
    cur = None
    best_t = -1
    best_v = b""
    for key, trailer, value in merged:
        if key != cur:
            if best_t >= 0 and best_t & 0xFF == _PUT:
                yield cur, best_v  # type: ignore[misc]
            cur = key
            best_t = -1
        if best_t < trailer <= limit:
            best_t = trailer
            best_v = value
    if best_t >= 0 and best_t & 0xFF == _PUT:
        yield cur, best_v  # type: ignore[misc]


def prefix_successor(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix``
    (None: no such key, the range is unbounded above)."""
    p = bytearray(prefix)
    while p:
        if p[-1] != 0xFF:
            p[-1] += 1
            return bytes(p)
        p.pop()
    return None


def clamp_range(
    start: bytes | None, stop: bytes | None, prefix: bytes | None
) -> tuple[bytes | None, bytes | None]:
    """Intersect [start, stop) with the keys starting with ``prefix``."""
    if prefix is None:
        return start, stop
    pstop = prefix_successor(prefix)
    lo = prefix if start is None or start < prefix else start
    if pstop is None:
        hi = stop
    elif stop is None or stop > pstop:
        hi = pstop
    else:
        hi = stop
    return lo, hi
