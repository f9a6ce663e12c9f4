"""Versions: immutable snapshots of the set of live SSTables, per level.

Invariants of a :class:`Version` (checked by :meth:`Version.check`):

* every file has ``smallest <= largest``, ``min_seq <= max_seq`` and
  ``num_deletes <= num_entries``;
* ``levels[0]`` is ordered newest first: by ``max_seq`` descending, then by
  ``number`` descending. Reads probe level 0 in this order. Level-0 files may
  overlap each other;
* ``levels[1:]`` are sorted by ``smallest`` and strictly non-overlapping in
  user keys (``prev.largest < next.smallest``): one user key lives in at most
  one file per level, so the compaction runner must never split the versions
  of one user key across two output files;
* no file number appears twice in the whole version.

A Version never changes after construction, so any thread may read one
without a lock; a new Version is made by :meth:`Version.apply`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

from lsm.base.errors import CorruptionError

if TYPE_CHECKING:
    from lsm.manifest.edit import VersionEdit


@dataclass(frozen=True, slots=True)
class FileMeta:
    """What the manifest records about one SSTable (``sst_name(number)``).

    ``smallest`` and ``largest`` are user keys, both inclusive. ``min_seq``
    and ``max_seq`` bound the sequence numbers of its entries; ``num_deletes``
    counts its tombstones (part of ``num_entries``).
    """

    number: int
    file_size: int
    smallest: bytes
    largest: bytes
    min_seq: int
    max_seq: int
    num_entries: int
    num_deletes: int


def _l0_order(f: FileMeta) -> tuple[int, int]:
    # Sort key of level 0: ascending order of this key is newest first.
    return (-f.max_seq, -f.number)


def _smallest(f: FileMeta) -> bytes:
    return f.smallest


class Version:
    """Immutable set of live SSTables per level. ``levels[0]`` is ordered
    NEWEST FIRST (by ``max_seq`` desc, then ``number`` desc: reads probe in
    this order); ``levels[1..]`` are sorted by ``smallest`` and
    non-overlapping. See the module docstring for every invariant."""

    __slots__ = ("_bytes", "_largest", "levels", "read_plan")

    levels: tuple[tuple[FileMeta, ...], ...]

    def __init__(self, levels: Iterable[Iterable[FileMeta]]):
        """REQUIRES: ``levels`` already satisfies the invariants (use
        :meth:`empty` and :meth:`apply` to build versions; :meth:`check`
        verifies)."""
        self.levels = tuple(tuple(level) for level in levels)
        if not self.levels:
            raise ValueError("a Version needs at least one level")
        # Per level: the largest keys in level order (bisect for levels >= 1).
        self._largest = tuple([f.largest for f in level] for level in self.levels)
        self._bytes = tuple(sum(f.file_size for f in level) for level in self.levels)
        self.read_plan = tuple(([f.largest], [f.smallest], [f.number]) for f in self.levels[0]) + tuple(
            (self._largest[i], [f.smallest for f in level], [f.number for f in level])
            for i, level in enumerate(self.levels)
            if i and level
        )
        """What a point lookup walks, in read order, without a call per level
        (``DB._get``): ``(largests, smallests, numbers)`` in key order (bisect
        ``largests``; the file at the bisect point holds the key's range
        when its smallest is <= the key), one per level-0 file (newest
        first, one file each) then one per non-empty level >= 1. One loop
        for both kinds keeps the bloom probe that ``DB._get`` inlines in one
        place (a bisect of a one-item list costs ~150 instructions more than
        two compares, per level-0 file)."""

    @classmethod
    def empty(cls, num_levels: int) -> Version:
        return cls(() for _ in range(num_levels))

    @property
    def num_levels(self) -> int:
        return len(self.levels)

    # ------------------------------------------------------------ derivation
    def apply(self, edit: VersionEdit) -> Version:
        """A new Version: this one with ``edit.removed`` taken out, then
        ``edit.added`` put in (so an edit may move a file between levels by
        removing and re-adding its number).

        Raises CorruptionError (without a path: the caller adds where the
        edit came from) when the edit removes a file that is not at that
        level, adds a number that is already live or added twice, names a
        level outside ``0 .. num_levels-1``, or leaves a level >= 1 with
        overlapping files.
        """
        b = VersionBuilder(self)
        b.apply(edit)
        return b.build()

    # ------------------------------------------------------------ queries
    def files_for_key(self, key: bytes) -> list[tuple[int, FileMeta]]:
        """``(level, file)`` for every file that may hold ``key``, in read
        order: each level-0 file whose range covers ``key`` (newest first),
        then at most one file per deeper level."""
        out: list[tuple[int, FileMeta]] = []
        levels = self.levels
        for f in levels[0]:
            if f.smallest <= key <= f.largest:
                out.append((0, f))
        largest = self._largest
        for level in range(1, len(levels)):
            files = levels[level]
            if not files:
                continue
            i = bisect_left(largest[level], key)
            if i < len(files) and files[i].smallest <= key:
                out.append((level, files[i]))
        return out

    def overlapping(self, level: int, start: bytes | None, stop_inclusive: bytes | None) -> list[FileMeta]:
        """Files of ``level`` whose key range intersects
        ``[start, stop_inclusive]`` (None: unbounded on that side), in level
        order."""
        files = self.levels[level]
        if level == 0:
            return [
                f
                for f in files
                if (start is None or f.largest >= start)
                and (stop_inclusive is None or f.smallest <= stop_inclusive)
            ]
        i = 0 if start is None else bisect_left(self._largest[level], start)
        out: list[FileMeta] = []
        n = len(files)
        while i < n:
            f = files[i]
            if stop_inclusive is not None and f.smallest > stop_inclusive:
                break
            out.append(f)
            i += 1
        return out

    def level_bytes(self, level: int) -> int:
        """Total ``file_size`` of ``level``'s files."""
        return self._bytes[level]

    def num_files(self, level: int) -> int:
        return len(self.levels[level])

    def all_numbers(self) -> set[int]:
        """Numbers of every live file."""
        return {f.number for level in self.levels for f in level}

    def all_files(self) -> list[tuple[int, FileMeta]]:
        """``(level, file)`` for every live file, level by level."""
        return [(i, f) for i, level in enumerate(self.levels) for f in level]

    # ------------------------------------------------------------ checking
    def check(self) -> None:
        """Verify every invariant of the module docstring; raise
        AssertionError naming the first violation."""
        seen: dict[int, int] = {}
        for level, files in enumerate(self.levels):
            for f in files:
                _check_file(level, f)
                if f.number in seen:
                    raise AssertionError(f"file {f.number} is in level {seen[f.number]} and level {level}")
                seen[f.number] = level
            for a, b in pairwise(files):
                if level == 0:
                    if _l0_order(a) >= _l0_order(b):
                        raise AssertionError(
                            f"level 0 out of order: file {a.number} (max_seq {a.max_seq}) before "
                            f"file {b.number} (max_seq {b.max_seq})"
                        )
                elif a.largest >= b.smallest:
                    raise AssertionError(
                        f"level {level}: file {a.number} [{a.smallest!r}, {a.largest!r}] overlaps or "
                        f"precedes file {b.number} [{b.smallest!r}, {b.largest!r}]"
                    )
            if self._largest[level] != [f.largest for f in files]:
                raise AssertionError(f"level {level}: stale bisect index")
            if self._bytes[level] != sum(f.file_size for f in files):
                raise AssertionError(f"level {level}: stale byte count")
        plan = [([f.largest], [f.smallest], [f.number]) for f in self.levels[0]]
        plan += [
            ([f.largest for f in lv], [f.smallest for f in lv], [f.number for f in lv])
            for lv in self.levels[1:]
            if lv
        ]
        if list(self.read_plan) != plan:
            raise AssertionError("stale read plan")

    # ------------------------------------------------------------ misc
    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return self.levels == other.levels

    def __hash__(self) -> int:
        return hash(self.levels)

    def __repr__(self) -> str:
        parts = [f"L{i}:{len(files)}" for i, files in enumerate(self.levels) if files]
        return f"Version({' '.join(parts) or 'empty'})"


def _check_file(level: int, f: FileMeta) -> None:
    if f.smallest > f.largest:
        raise AssertionError(f"level {level}: file {f.number} has smallest > largest")
    if f.min_seq > f.max_seq:
        raise AssertionError(f"level {level}: file {f.number} has min_seq > max_seq")
    if not (0 <= f.num_deletes <= f.num_entries):
        raise AssertionError(f"level {level}: file {f.number} has num_deletes outside 0..num_entries")
    if f.number < 0 or f.file_size < 0:
        raise AssertionError(f"level {level}: file {f.number} has a negative number or size")


class VersionBuilder:
    """Accumulates edits on top of a base Version, then builds one new
    Version (sorting each level once). Recovery feeds every manifest record
    through one builder."""

    __slots__ = ("_base", "_levels", "_touched", "_where")

    def __init__(self, base: Version):
        self._levels: list[dict[int, FileMeta]] = [{f.number: f for f in level} for level in base.levels]
        self._where: dict[int, int] = {f.number: i for i, level in enumerate(base.levels) for f in level}
        self._touched: list[bool] = [False] * len(base.levels)
        self._base = base

    def apply(self, edit: VersionEdit) -> None:
        """Apply one edit; raises CorruptionError (no path) on inconsistency."""
        n = len(self._levels)
        levels, where = self._levels, self._where
        for level, number in edit.removed:
            if not (0 <= level < n):
                raise CorruptionError(
                    f"version edit removes file {number} from level {level} (levels 0..{n - 1})"
                )
            if number not in levels[level]:
                raise CorruptionError(f"version edit removes file {number} which is not in level {level}")
            del levels[level][number]
            del where[number]
            self._touched[level] = True
        for level, f in edit.added:
            if not (0 <= level < n):
                raise CorruptionError(
                    f"version edit adds file {f.number} at level {level} (levels 0..{n - 1})"
                )
            if f.number in where:
                raise CorruptionError(
                    f"version edit adds file {f.number} at level {level}, but it is already in level {where[f.number]}"
                )
            levels[level][f.number] = f
            where[f.number] = level
            self._touched[level] = True

    def build(self) -> Version:
        """The resulting Version; raises CorruptionError when a level >= 1
        would hold overlapping files. Untouched levels are shared with the
        base version."""
        out: list[tuple[FileMeta, ...]] = []
        for level, files in enumerate(self._levels):
            if not self._touched[level]:
                out.append(self._base.levels[level])
                continue
            if level == 0:
                out.append(tuple(sorted(files.values(), key=_l0_order)))
                continue
            ordered = sorted(files.values(), key=_smallest)
            for a, b in pairwise(ordered):
                if a.largest >= b.smallest:
                    raise CorruptionError(
                        f"level {level} would hold overlapping files {a.number} [{a.smallest!r}, {a.largest!r}] "
                        f"and {b.number} [{b.smallest!r}, {b.largest!r}]"
                    )
            out.append(tuple(ordered))
        return Version(out)
