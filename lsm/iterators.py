"""Merging sources of internal entries into the user's view.

A source yields ``(key, trailer, value)`` in internal order (key ascending,
newest version first) or, for reverse scans, exactly the reverse. Sources
are passed newest first (memtable, immutable memtables, level-0 files newest
first, then one chain per deeper level), so for equal keys a newer source's
entries come first in a forward merge (``heapq.merge`` breaks ties by
source position).

Visibility: the first version of a key with ``seq <= snapshot`` decides;
a deletion marker hides the key, and so does a range tombstone visible at
the snapshot that covers the key with a seq above that version's (the
``rdels`` argument of :func:`visible`: every source's tombstones for the
scanned range, merged, one seq per fragment; see lsm/base/rangedel.py).
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


def visible(
    sources: list[Iterator[Entry]],
    snapshot: int,
    reverse: bool = False,
    rdels: tuple[list[bytes], list[bytes], list[int]] | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every key visible at ``snapshot``, in key order (or
    reverse key order). ``rdels``: the range tombstones visible at
    ``snapshot`` as ``(starts, ends, seqs)``, fragments in key order with
    the newest seq of each (``rangedel.visible_fragments``); None: none."""
    if not sources:
        return
    if len(sources) == 1:
        merged: Iterator[Entry] = sources[0]
    else:
        merged = heapq.merge(*sources, key=_KEY, reverse=reverse)
    if rdels is not None:
        yield from _visible_rdels(merged, snapshot, reverse, rdels)
        return
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


def _visible_rdels(
    merged: Iterator[Entry], snapshot: int, reverse: bool, rdels: tuple[list[bytes], list[bytes], list[int]]
) -> Iterator[tuple[bytes, bytes]]:
    """:func:`visible` with range tombstones: a key's deciding version is
    also hidden when the fragment covering the key has a newer seq. The
    fragment cursor moves with the keys, one step per fragment."""
    starts, ends, seqs = rdels
    nf = len(starts)
    limit = (snapshot << 8) | 0xFF
    if not reverse:
        fi = 0
        done = None
        for key, trailer, value in merged:
            if key == done or trailer > limit:
                continue
            done = key
            if trailer & 0xFF == _PUT:
                while fi < nf and key >= ends[fi]:
                    fi += 1
                if fi < nf and starts[fi] <= key and (trailer >> 8) < seqs[fi]:
                    continue
                yield key, value
        return
    fi = nf - 1
    cur = None
    best_t = -1
    best_v = b""
    for key, trailer, value in merged:
        if key != cur:
            if best_t >= 0 and best_t & 0xFF == _PUT:
                while fi >= 0 and cur < starts[fi]:  # type: ignore[operator]
                    fi -= 1
                if not (fi >= 0 and cur < ends[fi] and (best_t >> 8) < seqs[fi]):  # type: ignore[operator]
                    yield cur, best_v  # type: ignore[misc]
            cur = key
            best_t = -1
        if best_t < trailer <= limit:
            best_t = trailer
            best_v = value
    if best_t >= 0 and best_t & 0xFF == _PUT:
        while fi >= 0 and cur < starts[fi]:  # type: ignore[operator]
            fi -= 1
        if not (fi >= 0 and cur < ends[fi] and (best_t >> 8) < seqs[fi]):  # type: ignore[operator]
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
