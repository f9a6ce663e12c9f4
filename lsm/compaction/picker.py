"""The compaction picker: a pure function of (Version, Options), no I/O, no
clock, no hidden state. The caller (the DB's background scheduler) owns the
state it needs: the set of file numbers already being compacted (``busy``)
and, optionally, a round-robin cursor per level (``cursors``).

Rules (leveldb's leveled compaction, simplified):

* Scores. Level 0: ``file count / l0_compaction_trigger`` (level-0 files
  overlap, so reads pay per file, not per byte). Level n >= 1:
  ``level_bytes(n) / max_bytes_for_level(n)``. The last level's score is
  reported for metrics but it is never picked: it has nowhere to go.
* Choice. Levels are tried in descending score order, ties to the lower
  level; a level qualifies when its score >= 1. The first level that yields
  a compaction not touching ``busy`` wins; a level whose only choices touch
  busy files is skipped.
* Level 0 -> 1: every level-0 file (they may all overlap, and compacting a
  subset could move a newer version of a key below an older one left in
  level 0) plus every level-1 file overlapping their combined key range.
  Skipped if any of them is busy. Except: the oldest level-0 file that
  overlaps no other level-0 file and no level-1 file is picked alone, a
  trivial move (an ordered fill's flushes: no rewrite at all).
* Level n -> n+1: one file of level n plus every level-(n+1) file
  overlapping it. Candidates in order: with a cursor for level n, the first
  file whose smallest key is above the cursor, wrapping around (round robin
  over the key space); without one, the file with the least overlapping
  bytes in level n+1 per byte of its own first (RocksDB's
  kMinOverlappingRatio; ties: larger file, then lowest key): it moves the
  most bytes down per byte rewritten, and a file with no overlap at all is
  a trivial move. The first candidate whose files are all free wins.
* ``is_bottommost``: no file in a level deeper than the output level
  overlaps the compaction's whole key range (inputs and next inputs), so
  the runner may drop tombstones (and older versions) not needed by a
  snapshot. Concurrent compactions cannot break this: moving a key below the
  output level needs a busy output-level file.
* Manual (``pick_manual``): every file of ``level`` overlapping
  ``[start, stop]`` (level 0: grown until no other level-0 file overlaps the
  range) plus the overlapping files of ``level + 1``; on the last level the
  files are rewritten in place (``output_level == level``).

The runner must never split the versions of one user key across two output
files: levels >= 1 are strictly non-overlapping in user keys.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from lsm.manifest.version import FileMeta, Version
from lsm.options import Options


@dataclass
class Compaction:
    """One chosen compaction: merge ``inputs`` (from ``level``) with
    ``next_inputs`` (from ``output_level``) into new files at
    ``output_level``."""

    level: int  # input level; outputs go to output_level
    output_level: int
    inputs: list[FileMeta]  # from `level` (level 0: newest first)
    next_inputs: list[FileMeta]  # overlapping files from output_level
    is_bottommost: bool  # nothing deeper than output_level overlaps the key range
    reason: str  # "l0_files", "level_size", "manual"
    score: float

    @property
    def smallest(self) -> bytes:
        """Smallest user key of all input files."""
        return min(f.smallest for f in self.all_inputs())

    @property
    def largest(self) -> bytes:
        """Largest user key of all input files."""
        return max(f.largest for f in self.all_inputs())

    @property
    def is_trivial_move(self) -> bool:
        """One input file and nothing to merge it with: the scheduler moves
        it to ``output_level`` by an edit, without rewriting it, unless the
        two levels write tables differently (a raw level above
        ``Options.min_level_to_compress`` and a compressed one: it is
        rewritten)."""
        return len(self.inputs) == 1 and not self.next_inputs and self.level != self.output_level

    def all_inputs(self) -> list[FileMeta]:
        return self.inputs + self.next_inputs

    def file_numbers(self) -> set[int]:
        """Numbers of every input file (what the scheduler marks busy)."""
        return {f.number for f in self.inputs} | {f.number for f in self.next_inputs}

    def input_bytes(self) -> int:
        return sum(f.file_size for f in self.inputs) + sum(f.file_size for f in self.next_inputs)


def level_scores(version: Version, options: Options) -> list[float]:
    """Compaction pressure per level (>= 1: wants a compaction). Level 0:
    file count / ``l0_compaction_trigger``; level n: bytes /
    ``max_bytes_for_level(n)``. One entry per level of ``version``."""
    scores = [version.num_files(0) / options.l0_compaction_trigger]
    for level in range(1, version.num_levels):
        scores.append(version.level_bytes(level) / options.max_bytes_for_level(level))
    return scores


def pick_compaction(
    version: Version,
    options: Options,
    *,
    busy: AbstractSet[int] = frozenset(),
    cursors: Mapping[int, bytes] | None = None,
) -> Compaction | None:
    """The most urgent compaction that touches no file in ``busy``, or None
    when no level scores >= 1 (or every candidate is busy). ``cursors[n]``,
    when given, is the largest key of the last compaction picked from level
    n (round robin). See the module docstring for the rules."""
    scores = level_scores(version, options)
    last = version.num_levels - 1
    order = sorted(range(last), key=lambda lv: (-scores[lv], lv))
    for level in order:
        score = scores[level]
        if score < 1.0:
            break
        if level == 0:
            c = _pick_level0(version, busy, score)
        else:
            cursor = cursors.get(level) if cursors else None
            c = _pick_level_n(version, level, busy, score, cursor)
        if c is not None:
            return c
    return None


def pick_manual(
    version: Version, options: Options, level: int, start: bytes | None, stop: bytes | None
) -> Compaction | None:
    """Compact the files of ``level`` overlapping ``[start, stop]`` (None:
    unbounded) into ``level + 1`` (the last level: rewritten in place).
    None when the range holds no file at ``level``. Busy files are not
    considered: the caller checks ``file_numbers()`` against its own set."""
    if not (0 <= level < version.num_levels):
        raise ValueError(f"level: must be between 0 and {version.num_levels - 1}, got {level}")
    if start is not None and stop is not None and start > stop:
        return None
    inputs = version.overlapping(level, start, stop)
    if level == 0:
        inputs = _grow_level0(version, inputs)
    if not inputs:
        return None
    output_level = min(level + 1, version.num_levels - 1)
    score = level_scores(version, options)[level]
    return _build(version, level, output_level, inputs, "manual", score)


# ---------------------------------------------------------------- internals
def _pick_level0(version: Version, busy: AbstractSet[int], score: float) -> Compaction | None:
    inputs = list(version.levels[0])
    if not inputs or _touches(inputs, busy):
        return None
    # A level-0 file overlapping no other level-0 file and no level-1 file
    # moves down by an edit, oldest first (a trivial move, as leveldb's
    # one-file level-0 picks give for an ordered fill): no newer version
    # can pass below an older one, and level 1 stays non-overlapping.
    for f in reversed(inputs):
        if len(version.overlapping(0, f.smallest, f.largest)) == 1 and not version.overlapping(1, f.smallest, f.largest):
            return _build(version, 0, 1, [f], "l0_files", score)
    c = _build(version, 0, 1, inputs, "l0_files", score)
    return None if _touches(c.next_inputs, busy) else c


def _pick_level_n(
    version: Version, level: int, busy: AbstractSet[int], score: float, cursor: bytes | None
) -> Compaction | None:
    files = version.levels[level]
    if cursor is None:
        def overlap_ratio(f: FileMeta) -> tuple[float, int, bytes]:
            below = sum(g.file_size for g in version.overlapping(level + 1, f.smallest, f.largest))
            return (below / max(1, f.file_size), -f.file_size, f.smallest)

        candidates: Iterable[FileMeta] = sorted(files, key=overlap_ratio)
    else:
        i = 0
        while i < len(files) and files[i].smallest <= cursor:
            i += 1
        candidates = files[i:] + files[:i]
    for f in candidates:
        if f.number in busy:
            continue
        c = _build(version, level, level + 1, [f], "level_size", score)
        if not _touches(c.next_inputs, busy):
            return c
    return None


def _grow_level0(version: Version, inputs: list[FileMeta]) -> list[FileMeta]:
    """Grow a set of level-0 files until no other level-0 file overlaps
    their combined range (so no newer version of a key is moved below an
    older one left behind)."""
    while inputs:
        lo = min(f.smallest for f in inputs)
        hi = max(f.largest for f in inputs)
        grown = version.overlapping(0, lo, hi)
        if len(grown) == len(inputs):
            return grown
        inputs = grown
    return inputs


def _build(
    version: Version, level: int, output_level: int, inputs: list[FileMeta], reason: str, score: float
) -> Compaction:
    lo = min(f.smallest for f in inputs)
    hi = max(f.largest for f in inputs)
    next_inputs = version.overlapping(output_level, lo, hi) if output_level != level else []
    if next_inputs:
        lo = min(lo, next_inputs[0].smallest)
        hi = max(hi, next_inputs[-1].largest)
    bottommost = not any(
        version.overlapping(deeper, lo, hi) for deeper in range(output_level + 1, version.num_levels)
    )
    return Compaction(level, output_level, inputs, next_inputs, bottommost, reason, score)


def _touches(files: Iterable[FileMeta], busy: AbstractSet[int]) -> bool:
    return bool(busy) and any(f.number in busy for f in files)
