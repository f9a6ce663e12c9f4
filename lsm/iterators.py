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
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import compress, groupby, islice, repeat
from operator import and_, eq, itemgetter, rshift
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


_KEEP_PUT = bytes(int(i == _PUT) for i in range(256))
"""``bytes.translate`` table: a kind byte -> 1 for PUT, 0 otherwise."""


def _resolve(
    parts: list[Columns],
    limit: int,
    rdels: tuple[Sequence[bytes], Sequence[bytes], Sequence[int]] | None,
    reverse: bool,
    clean: Sequence[bool] | None = None,
) -> Iterable[tuple[bytes, bytes]]:
    """The visible ``(key, value)`` pairs of one round of
    :func:`visible_columns`, in key order (descending when ``reverse``).

    ``parts``: every entry of the round's keys, as :data:`Columns` in
    internal order (ascending), one per source, newest source first. C-level
    passes only, per entry: a key's deciding version is the first visible
    one (``trailer <= limit``) in the newest source that has one, taken by
    building a dict from the oldest part to the newest, each part reversed
    (so a newer version overwrites an older one); its keys, sorted, are the
    round's keys. Deletions and keys under a newer range tombstone are then
    dropped through a keep-mask (one bisect pair per fragment).

    ``clean``: per part, True when its source vouches that every entry is
    a PUT visible at the snapshot of a key of its own
    (``TableReader.clean_at``): no per-entry check is made on it."""
    if len(parts) == 1:
        ks, ts, vs = parts[0]
        if rdels is None and (
            (clean is not None and clean[0])
            or (_all_puts_upto(ts, limit) and not any(map(eq, ks, islice(ks, 1, None))))
        ):
            # One source, every entry a visible PUT of a distinct key: the
            # chunk itself (a sorted level alone, a scan after compaction).
            return zip(reversed(ks), reversed(vs)) if reverse else zip(ks, vs)
    if rdels is None and (
        all(_all_puts_upto(p[1], limit) for p in parts)
        if clean is None
        else all(c or _all_puts_upto(p[1], limit) for p, c in zip(parts, clean))
    ):
        # Every entry a visible PUT (the common case): newest version wins.
        if clean is not None and clean[-1]:
            # The oldest part is clean: when it holds most of the round (a
            # level under a few newer keys), the newer ones are spliced in.
            bk, _bt, bv = parts[-1]
            n = len(bk)
            m = sum(len(p[0]) for p in parts) - n
            if m * _SPLICE_RATIO <= n:
                if len(parts) == 2 and not any(map(eq, parts[0][0], islice(parts[0][0], 1, None))):
                    sk, _st, sv = parts[0]
                else:
                    dn: dict[bytes, bytes] = {}
                    for ks, _ts, vs in reversed(parts[:-1]):
                        dn.update(zip(reversed(ks), reversed(vs)))
                    sk = sorted(dn)
                    sv = list(map(dn.__getitem__, sk))
                ok, ov = _splice(bk, bv, sk, sv)
                return zip(reversed(ok), reversed(ov)) if reverse else zip(ok, ov)
            # The oldest part's keys are distinct and ascending: entered
            # first and in order, they keep that order in the dict. When
            # the newer parts only hold keys it has (overwrites: readseq
            # after fillrandom and overwrite), no key is added, so the
            # dict's order is the round's order: no sort, no lookups.
            d = dict(zip(bk, bv))
            for ks, _ts, vs in reversed(parts[:-1]):
                d.update(zip(reversed(ks), reversed(vs)))
            if len(d) == n:
                return zip(reversed(bk), reversed(d.values())) if reverse else zip(bk, d.values())
        else:
            d = {}
            for ks, _ts, vs in reversed(parts):
                d.update(zip(reversed(ks), reversed(vs)))
        sk = sorted(d, reverse=reverse)
        return zip(sk, map(d.__getitem__, sk))
    dv: dict[bytes, bytes] = {}
    dt: dict[bytes, int] = {}
    for ks, ts, vs in reversed(parts):
        if max(ts) > limit:
            sel = list(map(limit.__ge__, ts))  # seq <= snapshot
            ks = list(compress(ks, sel))
            ts = list(compress(ts, sel))
            vs = list(compress(vs, sel))
        dv.update(zip(reversed(ks), reversed(vs)))
        dt.update(zip(reversed(ks), reversed(ts)))
    if not dv:
        return ()
    sk = sorted(dv)
    st = array("Q", map(dt.__getitem__, sk))
    keep = bytearray(st.tobytes()[_KIND_BYTE :: st.itemsize].translate(_KEEP_PUT))
    if rdels is not None:
        starts, ends, seqs = rdels
        nf = len(starts)
        f = bisect_right(ends, sk[0])  # the first fragment ending after the first key
        last = sk[-1]
        while f < nf and starts[f] <= last:
            i = bisect_left(sk, starts[f])
            j = bisect_left(sk, ends[f], i)
            if i < j:
                # Keep a key when its deciding version is at least as new
                # as the fragment: seq_f <= trailer >> 8.
                keep[i:j] = bytes(map(and_, keep[i:j], map(seqs[f].__le__, map(rshift, st[i:j], repeat(8)))))
            f += 1
    if reverse:
        sk.reverse()
        keep.reverse()
    return compress(zip(sk, map(dv.__getitem__, sk)), keep)


_SPLICE_RATIO = 5
"""A round's newer entries are spliced into a clean oldest part (rather
than all hashed into a dict and sorted) when they are at most a fifth of
its entries: the splice costs per newer key, the dict per entry (readseq's
rounds, one 527-entry table chunk under a memtable window, timed alone in
session 6: 135 against 160 ns per key at 100 newer keys, 64 against 142
at 20, 207 against 184 at 200)."""


def _splice(
    bk: Sequence[bytes], bv: Sequence[bytes], sk: Sequence[bytes], sv: Sequence[bytes]
) -> tuple[list[bytes], list[bytes]]:
    """The sorted keys and values of ``bk`` with ``sk`` merged in, a key in
    both taking its value from ``sv`` (the newer). REQUIRES: ``bk`` and
    ``sk`` ascending with distinct keys each. The positions are found in C
    (one ``bisect`` per newer key); the loop runs per newer key only,
    last first, so the positions of the earlier ones stay valid."""
    n = len(bk)
    pos = list(map(bisect_left, repeat(bk, len(sk)), sk))
    ok = list(bk)
    ov = list(bv)
    for i in range(len(sk) - 1, -1, -1):
        p = pos[i]
        k = sk[i]
        if p < n and bk[p] == k:
            ov[p] = sv[i]
        else:
            ok.insert(p, k)
            ov.insert(p, sv[i])
    return ok, ov


def key_successor(key: bytes) -> bytes:
    """The smallest key greater than ``key``."""
    return key + b"\x00"


def visible_columns(
    sources: list[Iterator[Columns]],
    snapshot: int,
    rdels: tuple[list[bytes], list[bytes], list[int]] | None = None,
    check: Callable[[], None] | None = None,
    windowed: Sequence[Callable[[bytes | None, bytes | None], Columns | None]] = (),
    lo: bytes | None = None,
    hi: bytes | None = None,
    reverse: bool = False,
    clean: Sequence[bool] = (),
) -> Iterator[Iterable[tuple[bytes, bytes]]]:
    """:func:`visible` for sources of :data:`Columns`, a round at a time;
    yields each round's ``(key, value)`` pairs as an iterable, so
    ``itertools.chain.from_iterable`` over it hands out pairs with no
    Python frame per pair (a generator's ``yield from`` resumes its frame
    for every item).

    ``sources``: newest first. Forward, each yields chunks in internal
    order; ``reverse``, each yields chunks that are each in internal order
    (ascending) but come last chunk first (the table readers'
    ``iter_columns(reverse=True)``), and the pairs come in descending key
    order.

    Each round takes from every source the entries beyond the nearest
    chunk edge of the sources that have more to come (forward: keys below
    the smallest last key; reverse: above the largest first key), so a
    round holds every version of its keys, and decides them with
    :func:`_resolve` (C-level passes: no per-entry Python). ``check`` is
    called before each round (the DB raises there once it is closed or
    fenced).

    ``windowed``: sources read by key range, newer than every source in
    ``sources``, newest first (the memtables): ``f(start, stop)`` gives the
    entries of ``[start, stop)`` as one :data:`Columns` (None or empty when
    there are none). Each round asks them for its own key range only, so a
    seek copies a few memtable keys, not every key from the seek on.
    ``[lo, hi)``: the scan's range (their first and last window's bounds).

    ``clean``: per source in ``sources`` (missing: False), whether every
    entry it yields is a PUT visible at ``snapshot`` of a key of its own
    (``TableReader.clean_at`` of each of its tables): its chunks then skip
    the per-entry checks of :func:`_resolve`, and one alone is handed on as
    a ``zip`` of its columns. A clean source has no second version of a
    key to come in its next chunk, so when every source whose chunk ends
    at the bound is clean, the round takes the bound key as well (and the
    windowed sources' window reaches past it): those sources are then
    refilled without copying the entries they had left."""
    limit = (snapshot << 8) | 0xFF
    # Per source: [keys, trailers, values, position, iterator or None once
    # exhausted, refill due, clean]. Forward, the entries before the
    # position are consumed; reverse, the entries from the position on.
    bufs: list[list[Any]] = []
    for x, s in enumerate(sources):
        c = next(s, None)
        if c is not None:
            bufs.append([c[0], c[1], c[2], len(c[0]) if reverse else 0, s, False, x < len(clean) and clean[x]])
    # The windowed sources' next window: [wlo, whi).
    wlo = lo
    whi = hi
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
                c = next(b[4], None)
                if c is None:
                    b[4] = None
                elif reverse:
                    p = b[3]
                    if p == 0:
                        b[0], b[1], b[2], b[3] = c[0], c[1], c[2], len(c[0])
                    else:
                        b[0], b[1], b[2] = [*c[0], *b[0][:p]], [*c[1], *b[1][:p]], [*c[2], *b[2][:p]]
                        b[3] = len(b[0])
                else:
                    ks = b[0]
                    j = b[3]
                    if j == len(ks):
                        b[0], b[1], b[2], b[3] = c[0], c[1], c[2], 0
                    else:
                        b[0], b[1], b[2], b[3] = [*ks[j:], *c[0]], [*b[1][j:], *c[1]], [*b[2][j:], *c[2]], 0
            if (b[3] > 0) if reverse else (b[3] < len(b[0])):
                keep.append(b)
        bufs = keep
        # The bound: every entry beyond it (all, when no source has more
        # to come) is here. A source whose chunk ends at the bound keeps its
        # entries of the bound key (more versions of it may follow in its
        # next chunk) and is refilled next round.
        bound = None
        parts: list[Columns] = []
        pclean: list[bool] = []
        if reverse:
            for b in bufs:
                if b[4] is not None:
                    first = b[0][0]
                    if bound is None or first > bound:
                        bound = first
            incl = bound is not None and all(b[6] for b in bufs if b[4] is not None and b[0][0] == bound)
            for b in bufs:
                ks = b[0]
                p = b[3]
                i = 0 if bound is None else (bisect_left if incl else bisect_right)(ks, bound, 0, p)
                if i < p:
                    parts.append((ks, b[1], b[2]) if i == 0 and p == len(ks) else (ks[i:p], b[1][i:p], b[2][i:p]))
                    pclean.append(b[6])
                b[3] = i
                b[5] = b[4] is not None and (i == 0 or ks[0] == bound)
        else:
            for b in bufs:
                if b[4] is not None:
                    last = b[0][-1]
                    if bound is None or last < bound:
                        bound = last
            incl = bound is not None and all(b[6] for b in bufs if b[4] is not None and b[0][-1] == bound)
            for b in bufs:
                ks = b[0]
                p = b[3]
                n = len(ks)
                j = n if bound is None else (bisect_right if incl else bisect_left)(ks, bound, p)
                if j > p:
                    parts.append((ks, b[1], b[2]) if p == 0 and j == n else (ks[p:j], b[1][p:j], b[2][p:j]))
                    pclean.append(b[6])
                b[3] = j
                b[5] = b[4] is not None and (j == n or ks[-1] == bound)
        if not wdone:
            # This round's window: forward [wlo, bound), reverse the keys
            # above the bound, or to the end of the scan once the other
            # sources have nothing more to come.
            if reverse:
                a = lo if bound is None else bound if incl else key_successor(bound)
                z = whi
                whi = a
            else:
                a = wlo
                z = hi if bound is None else key_successor(bound) if incl else bound
                wlo = z
            if a is None or z is None or a < z:
                wparts = []
                for f in windowed:
                    c = f(a, z)
                    if c is not None and len(c[0]):
                        wparts.append(c)
                if wparts:
                    parts[:0] = wparts  # the windowed sources are the newest
                    pclean[:0] = [False] * len(wparts)
            wdone = bound is None
        if parts:
            yield _resolve(parts, limit, rdels, reverse, pclean)


def visible(
    sources: list[Iterator[Entry]],
    snapshot: int,
    reverse: bool = False,
    rdels: tuple[list[bytes], list[bytes], list[int]] | None = None,
) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every key visible at ``snapshot``, in key order (or
    reverse key order): the plain heap merge, one entry at a time (the
    reference :func:`visible_columns` is tested against). ``rdels``: the
    range tombstones visible at ``snapshot`` as ``(starts, ends, seqs)``,
    fragments in key order with the newest seq of each
    (``rangedel.visible_fragments``); None: none.

    A key's deciding version is its newest with ``seq <= snapshot``
    (the largest trailer ``<= limit``: in an LSM a newer source holds newer
    versions, so this is also the first one in source order); it is
    yielded when it is a PUT and no fragment covering the key is newer."""
    if not sources:
        return
    if len(sources) == 1:
        merged: Iterator[Entry] = sources[0]
    else:
        merged = heapq.merge(*sources, key=_KEY, reverse=reverse)
    limit = (snapshot << 8) | 0xFF
    starts, ends, seqs = rdels if rdels is not None else ((), (), ())
    for key, group in groupby(merged, _KEY):
        best = -1
        value = b""
        for _k, t, v in group:
            if best < t <= limit:
                best = t
                value = v
        if best < 0 or best & 0xFF != _PUT:
            continue
        f = bisect_right(starts, key) - 1
        if f >= 0 and key < ends[f] and (best >> 8) < seqs[f]:
            continue
        yield key, value


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
