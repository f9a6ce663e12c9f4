"""Range tombstones: fragmenting and lookup, shared by the memtable, the
sstable reader and writer, scans and compaction. Pure data structures, no
I/O.

A *tombstone* ``(start, stop, seq)`` deletes every key ``k`` with
``start <= k < stop`` (bytewise) from the versions with a sequence number
below ``seq``: a version at ``seq`` itself or later is not covered. A reader
at snapshot ``s`` sees the tombstones with ``seq <= s``.

Tombstones as written may overlap in any way, which rules out a binary
search. :meth:`RangeDels.build` *fragments* them (RocksDB's and Pebble's
technique): cut the key space at every start and stop, so that each piece
(a *fragment*) is covered by a fixed set of tombstones, and keep for each
fragment the seqs of the tombstones covering it, newest first. Fragments
do not overlap, so one ``bisect`` finds the one covering a key::

    [c, d)@4, [g, h)@7, [a, z)@10   ->   [a, c) {10}  [c, d) {10, 4}
                                         [d, g) {10}  [g, h) {10, 7}
                                         [h, z) {10}

Neighbouring fragments that touch and have the same seqs are joined, so a
tombstone set that needs no cut stays as it was.

An *inclusive upper bound* of ``[start, stop)`` as a user key
(:func:`inclusive_end`): ``stop`` without its last byte when that byte is
0x00 (``x + b"\\x00"`` is the immediate successor of ``x``, so the bound is
exact), else ``stop`` itself (a superset by the one key ``stop``, which is
harmless: the tombstone does not cover it). Tables record this bound as
their largest key; compaction cuts output files at ``last_key + b"\\x00"``
so that neighbouring files never share a key.

Thread-safety: a :class:`RangeDels` never changes after construction.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Iterator
from itertools import pairwise

Tombstone = tuple[bytes, bytes, int]
"""``(start, stop, seq)``."""


def inclusive_end(stop: bytes) -> bytes:
    """The largest user key a tombstone ending (exclusively) at ``stop``
    may cover, as an inclusive bound (see the module docstring)."""
    return stop[:-1] if stop.endswith(b"\x00") else stop


class RangeDels:
    """A set of fragmented range tombstones: parallel lists ``starts``,
    ``ends`` (fragment ``i`` is ``[starts[i], ends[i])``, ``ends[i] <=
    starts[i+1]``) and ``seqs`` (per fragment, a tuple of the covering
    tombstones' seqs, strictly descending, never empty)."""

    __slots__ = ("ends", "seqs", "starts")

    def __init__(self, starts: list[bytes], ends: list[bytes], seqs: list[tuple[int, ...]]):
        """REQUIRES: already fragmented (use :meth:`build`; :meth:`check`
        verifies)."""
        self.starts = starts
        self.ends = ends
        self.seqs = seqs

    @classmethod
    def build(cls, tombstones: Iterable[Tombstone]) -> RangeDels:
        """Fragment ``(start, stop, seq)`` tombstones given in any order.
        Empty ones (``start >= stop``) are ignored; a seq given twice for
        overlapping pieces counts once."""
        ts = sorted(t for t in tombstones if t[0] < t[1])
        starts: list[bytes] = []
        ends: list[bytes] = []
        seqs: list[tuple[int, ...]] = []
        if not ts:
            return cls(starts, ends, seqs)
        bounds = sorted({t[0] for t in ts} | {t[1] for t in ts})
        active: list[tuple[bytes, int]] = []  # (stop, seq) of the tombstones covering the current piece
        j = 0
        n = len(ts)
        for i in range(len(bounds) - 1):
            b = bounds[i]
            if active:
                active = [a for a in active if a[0] > b]
            while j < n and ts[j][0] == b:
                active.append((ts[j][1], ts[j][2]))
                j += 1
            if not active:
                continue
            qs = tuple(sorted({a[1] for a in active}, reverse=True))
            nb = bounds[i + 1]
            if ends and ends[-1] == b and seqs[-1] == qs:
                ends[-1] = nb
            else:
                starts.append(b)
                ends.append(nb)
                seqs.append(qs)
        return cls(starts, ends, seqs)

    # ------------------------------------------------------------ queries
    def __bool__(self) -> bool:
        return bool(self.starts)

    def __len__(self) -> int:
        """Number of pieces ``(fragment, seq)``: what a table stores."""
        return sum(map(len, self.seqs))

    def __iter__(self) -> Iterator[Tombstone]:
        """Every piece as ``(start, stop, seq)``: fragments in key order,
        seqs newest first (the order of a table's range-deletion block)."""
        for s, e, qs in zip(self.starts, self.ends, self.seqs):
            for q in qs:
                yield s, e, q

    def cover(self, key: bytes, snap: int) -> int:
        """The newest seq ``<= snap`` of a tombstone covering ``key``; 0 when
        none does (sequence numbers start at 1)."""
        i = bisect_right(self.starts, key) - 1
        if i < 0 or key >= self.ends[i]:
            return 0
        for q in self.seqs[i]:
            if q <= snap:
                return q
        return 0

    def clipped(self, lo: bytes | None, hi: bytes | None) -> Iterator[Tombstone]:
        """The pieces intersected with ``[lo, hi)`` (None: unbounded), same
        order as iteration."""
        starts, ends, seqs = self.starts, self.ends, self.seqs
        i = 0 if lo is None else bisect_right(ends, lo)
        n = len(starts)
        while i < n:
            s, e = starts[i], ends[i]
            if hi is not None and s >= hi:
                return
            if lo is not None and s < lo:
                s = lo
            if hi is not None and e > hi:
                e = hi
            for q in seqs[i]:
                yield s, e, q
            i += 1

    def overlaps(self, lo: bytes | None, hi: bytes | None) -> bool:
        """Some fragment intersects ``[lo, hi)``."""
        for _ in self.clipped(lo, hi):
            return True
        return False

    @property
    def smallest(self) -> bytes:
        """REQUIRES: non-empty. The first fragment's start."""
        return self.starts[0]

    @property
    def largest(self) -> bytes:
        """REQUIRES: non-empty. Inclusive upper bound of the last fragment
        (:func:`inclusive_end`)."""
        return inclusive_end(self.ends[-1])

    def seq_range(self) -> tuple[int, int]:
        """REQUIRES: non-empty. ``(min seq, max seq)`` over every piece."""
        return min(q[-1] for q in self.seqs), max(q[0] for q in self.seqs)

    def check(self) -> None:
        """Invariant checker: fragments non-empty, ordered and disjoint;
        seqs strictly descending, non-empty. Raises ValueError."""
        starts, ends, seqs = self.starts, self.ends, self.seqs
        if not (len(starts) == len(ends) == len(seqs)):
            raise ValueError("range tombstone lists differ in length")
        prev_end = None
        for s, e, qs in zip(starts, ends, seqs):
            if not s < e:
                raise ValueError(f"range tombstone fragment [{s!r}, {e!r}) is empty")
            if prev_end is not None and s < prev_end:
                raise ValueError(f"range tombstone fragment at {s!r} overlaps the previous one")
            if not qs or any(a <= b for a, b in pairwise(qs)):
                raise ValueError(f"range tombstone fragment at {s!r}: seqs {qs} not strictly descending")
            prev_end = e

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RangeDels):
            return NotImplemented
        return (self.starts, self.ends, self.seqs) == (other.starts, other.ends, other.seqs)

    def __repr__(self) -> str:
        parts = [f"[{s!r}, {e!r}){set(q)}" for s, e, q in zip(self.starts, self.ends, self.seqs)]
        return f"RangeDels({', '.join(parts[:8])}{', ...' if len(parts) > 8 else ''})"


EMPTY = RangeDels([], [], [])


def visible_fragments(
    sets: Iterable[RangeDels], lo: bytes | None, hi: bytes | None, snap: int
) -> tuple[list[bytes], list[bytes], list[int]] | None:
    """For a scan of ``[lo, hi)`` at ``snap``: the tombstones of every set
    that are visible (seq <= snap) and intersect the range, merged and
    fragmented, reduced to the newest seq per fragment, as ``(starts, ends,
    seqs)``; None when there are none."""
    pieces: list[Tombstone] = []
    for rd in sets:
        for s, e, q in rd.clipped(lo, hi):
            if q <= snap:
                pieces.append((s, e, q))
    if not pieces:
        return None
    merged = RangeDels.build(pieces)
    starts: list[bytes] = []
    ends: list[bytes] = []
    seqs: list[int] = []
    for s, e, qs in zip(merged.starts, merged.ends, merged.seqs):
        q = qs[0]
        if ends and ends[-1] == s and seqs[-1] == q:
            ends[-1] = e
        else:
            starts.append(s)
            ends.append(e)
            seqs.append(q)
    return starts, ends, seqs


__all__ = ["EMPTY", "RangeDels", "Tombstone", "inclusive_end", "visible_fragments"]
