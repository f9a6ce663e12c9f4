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
import sys
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain as _chain
from itertools import islice
from operator import eq, itemgetter, neg
from typing import Any

from lsm.base.coding import ValueKind

_PUT = ValueKind.PUT
_KEY = itemgetter(0)

_KIND_BYTE = 0 if sys.byteorder == "little" else 7  # the kind's byte in a u64 trailer

Entry = tuple[bytes, int, bytes]
Columns = tuple[Sequence[bytes], Sequence[int], Sequence[bytes]]
"""A run of entries as parallel ``(keys, trailers, values)`` sequences, in
internal order: the unit of the bulk scan (:func:`visible_columns`)."""


def chain(sources: Iterable[Iterator[Entry]]) -> Iterator[Entry]:
    """Concatenate sources that cover disjoint, ordered key ranges."""
    for s in sources:
        yield from s


def columns(entries: Iterator[Entry], first: int = 16, most: int = 1024) -> Iterator[Columns]:
    """An entry iterator as :data:`Columns` chunks of ``first`` entries,
    doubling up to ``most`` (a seek reads few entries, a scan many)."""
    size = first
    while True:
        chunk = list(islice(entries, size))
        if not chunk:
            return
        yield tuple(zip(*chunk))  # type: ignore[misc]
        if size < most:
            size <<= 1


def chain_columns(sources: Iterable[Iterator[Columns]]) -> Iterator[Columns]:
    """Concatenate column sources that cover disjoint, ordered key ranges."""
    for s in sources:
        yield from s


def _all_puts_upto(trailers: Sequence[int], limit: int) -> bool:
    """Every trailer is a PUT with seq <= the snapshot (trailer <= limit),
    in C: the max, and the low byte of each u64 (the kind) counted."""
    if max(trailers) > limit:
        return False
    a = trailers if type(trailers) is array else array("Q", trailers)
    return a.tobytes()[_KIND_BYTE :: a.itemsize].count(_PUT) == len(a)


def visible_columns(
    sources: list[Iterator[Columns]],
    snapshot: int,
    rdels: tuple[list[bytes], list[bytes], list[int]] | None = None,
    check: Callable[[], None] | None = None,
    windowed: Sequence[Callable[[bytes | None, bytes | None], Iterable[Entry]]] = (),
    lo: bytes | None = None,
    hi: bytes | None = None,
) -> Iterator[Iterable[tuple[bytes, bytes]]]:
    """:func:`visible` (forward) for sources of :data:`Columns`, a round at
    a time; yields each round's ``(key, value)`` pairs as an iterable, so
    ``itertools.chain.from_iterable`` over it hands out pairs with no
    Python frame per pair (a generator's ``yield from`` resumes its frame
    for every item).

    Each round takes from every source the entries below the smallest last
    key of the sources that have more to come (so a round holds every
    version of its keys), merges them with one C-level sort when more than
    one source contributes, and yields ``zip(keys, values)`` when every
    entry is a visible PUT of a distinct key (the common case), else the
    list of pairs :func:`visible` would give. ``check`` is called before
    each round (the DB raises there once it is closed or fenced).

    ``windowed``: sources read by key range, ``f(start, stop)`` giving the
    entries of ``[start, stop)`` (the memtables): each round asks them for
    its own key range only, so a seek copies a few memtable keys, not every
    key from the seek on. ``[lo, hi)``: the scan's range (their first and
    last window's bounds)."""
    limit = (snapshot << 8) | 0xFF
    # Per source: [keys, trailers, values, position, iterator or None once
    # exhausted, refill due]; entries before the position are consumed.
    bufs: list[list[Any]] = []
    for s in sources:
        c = next(s, None)
        if c is not None:
            bufs.append([c[0], c[1], c[2], 0, s, False])
    starts: Sequence[bytes] = ()
    ends: Sequence[bytes] = ()
    seqs: Sequence[int] = ()
    if rdels is not None:
        starts, ends, seqs = rdels
    nf = len(starts)
    fi = 0
    wlo = lo  # start of the windowed sources' next window
    wdone = not windowed
    while bufs or not wdone:
        if check is not None:
            check()
        # Refills are due from the previous round, and done only now: a
        # seek that stops after the first round reads no further block.
        keep = []
        for b in bufs:
            if b[5]:
                b[5] = False
                ks = b[0]
                j = b[3]
                c = next(b[4], None)
                if c is None:
                    b[4] = None
                elif j == len(ks):
                    b[0], b[1], b[2], b[3] = c[0], c[1], c[2], 0
                else:
                    b[0], b[1], b[2], b[3] = [*ks[j:], *c[0]], [*b[1][j:], *c[1]], [*b[2][j:], *c[2]], 0
            if b[3] < len(b[0]):
                keep.append(b)
        bufs = keep
        bound = None
        for b in bufs:
            if b[4] is not None:
                last = b[0][-1]
                if bound is None or last < bound:
                    bound = last
        # Every entry with key < bound (all, when no source has more to
        # come) is here: take them. A source whose chunk ends at the bound
        # keeps its entries of the bound key (more versions of it may
        # follow in its next chunk) and is refilled next round.
        parts = []
        for b in bufs:
            ks = b[0]
            p = b[3]
            n = len(ks)
            j = n if bound is None else bisect_left(ks, bound, p)
            if j > p:
                if p == 0 and j == n:
                    parts.append((ks, b[1], b[2]))
                else:
                    parts.append((ks[p:j], b[1][p:j], b[2][p:j]))
            b[3] = j
            b[5] = b[4] is not None and (j == n or ks[-1] == bound)
        if not wdone:
            # This round's window: [wlo, bound), or to the end of the scan
            # once the other sources have nothing more to come.
            whi = hi if bound is None else bound
            if wlo is None or whi is None or wlo < whi:
                for f in windowed:
                    es = list(f(wlo, whi))
                    if es:
                        parts.append(tuple(zip(*es)))  # type: ignore[arg-type]
            wlo = whi
            wdone = bound is None
        if not parts:
            continue
        if len(parts) == 1:
            ks, ts, vs = parts[0]
            clean = rdels is None and _all_puts_upto(ts, limit) and not any(map(eq, ks, islice(ks, 1, None)))
        else:
            if rdels is None and all(_all_puts_upto(p[1], limit) for p in parts):
                # Every entry a visible PUT: when the keys are distinct too
                # (the dict holds them all), sorting the keys alone gives the
                # pairs (bytes compare faster than tuples).
                d = dict(zip(_chain.from_iterable(p[0] for p in parts), _chain.from_iterable(p[2] for p in parts)))
                if len(d) == sum(len(p[0]) for p in parts):
                    sk = sorted(d)
                    yield zip(sk, map(d.__getitem__, sk))
                    continue
            clean = False
            # Internal order: key ascending, then trailer descending (-t
            # ascending); timsort merges the sorted runs.
            ents = sorted(
                zip(
                    _chain.from_iterable(p[0] for p in parts),
                    map(neg, _chain.from_iterable(p[1] for p in parts)),
                    _chain.from_iterable(p[2] for p in parts),
                )
            )
            ks, nts, vs = zip(*ents)
            ts = list(map(neg, nts))
        if clean:
            yield zip(ks, vs)
            continue
        out = []
        done = None
        for key, trailer, value in zip(ks, ts, vs):
            if key == done or trailer > limit:
                continue
            done = key
            if trailer & 0xFF == _PUT:
                if nf:
                    while fi < nf and key >= ends[fi]:
                        fi += 1
                    if fi < nf and starts[fi] <= key and (trailer >> 8) < seqs[fi]:
                        continue
                out.append((key, value))
        if out:
            yield out


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
