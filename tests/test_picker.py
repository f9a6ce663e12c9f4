"""Tests of the compaction picker (a pure function: no files involved)."""

from __future__ import annotations

import random

import pytest

from lsm.compaction.picker import Compaction, level_scores, pick_compaction, pick_manual
from lsm.manifest import FileMeta, Version, VersionEdit
from lsm.options import Options

OPTS = Options.from_kwargs(
    l0_compaction_trigger=4, max_bytes_for_level_base=1000, level_multiplier=10, num_levels=4
)


def fm(number: int, smallest: bytes, largest: bytes, size: int = 100, max_seq: int = 0) -> FileMeta:
    return FileMeta(number, size, smallest, largest, 0, max_seq, 1, 0)


def version_of(*files: tuple[int, FileMeta]) -> Version:
    v = Version.empty(4).apply(VersionEdit(added=list(files)))
    v.check()
    return v


def nums(files: list[FileMeta]) -> list[int]:
    return [f.number for f in files]


def l0_files(n: int, start: int = 100) -> list[tuple[int, FileMeta]]:
    return [(0, fm(start + i, b"c", b"f", max_seq=i)) for i in range(n)]


def test_scores() -> None:
    v = version_of(
        *l0_files(2),
        (1, fm(1, b"a", b"b", size=500)),
        (2, fm(2, b"a", b"b", size=20000)),
        (3, fm(3, b"a", b"b", size=7)),
    )
    assert level_scores(v, OPTS) == [0.5, 0.5, 2.0, 7 / 100000]


def test_nothing_to_do() -> None:
    assert pick_compaction(Version.empty(4), OPTS) is None
    assert pick_compaction(version_of(*l0_files(3), (1, fm(1, b"a", b"z", size=999))), OPTS) is None


def test_l0_trigger_takes_all_l0_and_overlapping_l1() -> None:
    v = version_of(
        *l0_files(4),
        (0, fm(99, b"x", b"y", max_seq=50)),
        (1, fm(1, b"a", b"b")),
        (1, fm(2, b"d", b"e")),
        (1, fm(3, b"g", b"h")),
        (1, fm(4, b"y", b"z")),
    )
    c = pick_compaction(v, OPTS)
    assert c is not None
    assert (c.level, c.output_level, c.reason) == (0, 1, "l0_files")
    assert nums(c.inputs) == nums(list(v.levels[0]))  # all of level 0, newest first
    assert nums(c.next_inputs) == [2, 3, 4]  # everything in [c, y]
    assert c.score == 5 / 4
    assert c.is_bottommost
    assert (c.smallest, c.largest) == (b"c", b"z")
    assert c.file_numbers() == {99, 100, 101, 102, 103, 2, 3, 4}


def test_size_trigger_picks_highest_scoring_level() -> None:
    v = version_of(
        *l0_files(5),  # score 1.25
        (1, fm(1, b"a", b"c", size=900)),  # score 0.9
        (2, fm(2, b"a", b"c", size=15000)),  # score 1.5
        (2, fm(3, b"d", b"f", size=16000)),
        (3, fm(4, b"e", b"g", size=1)),
    )
    c = pick_compaction(v, OPTS)
    assert c is not None and (c.level, c.output_level, c.reason) == (2, 3, "level_size")
    assert c.score == 31000 / 10000
    assert nums(c.inputs) == [2]  # overlaps nothing in level 3: the least overlap per byte
    assert c.next_inputs == [] and c.is_trivial_move
    assert c.is_bottommost  # nothing below level 3
    c3 = pick_compaction(v, OPTS, busy={2})
    assert c3 is not None and nums(c3.inputs) == [3] and nums(c3.next_inputs) == [4]
    # Once level 2's files are busy, the next level in score order (0) is picked.
    c0 = pick_compaction(v, OPTS, busy={2, 3})
    assert c0 is not None and c0.level == 0
    assert nums(c0.next_inputs) == [1]
    # Level 0 busy as well: nothing left to do.
    assert pick_compaction(v, OPTS, busy={2, 3, 100}) is None


def test_busy_files_skipped() -> None:
    v = version_of(
        (1, fm(1, b"a", b"c", size=1500)),
        (1, fm(2, b"e", b"g", size=1000)),
        (1, fm(3, b"i", b"k", size=500)),
        (2, fm(10, b"b", b"b")),
        (2, fm(11, b"f", b"f")),
    )
    # Least overlap per byte first: 3 (none), 1 (100/1500), 2 (100/1000).
    c = pick_compaction(v, OPTS)
    assert c is not None and nums(c.inputs) == [3] and c.next_inputs == []
    assert c.is_trivial_move
    assert nums(pick_compaction(v, OPTS, busy={3}).inputs) == [1]  # type: ignore[union-attr]
    # File 1 is free but its overlapping level-2 file is busy: skip to file 2.
    assert nums(pick_compaction(v, OPTS, busy={3, 10}).inputs) == [2]  # type: ignore[union-attr]
    assert pick_compaction(v, OPTS, busy={3, 10, 11}) is None
    # Level 0 is skipped when any level-1 file it overlaps is busy.
    v0 = version_of(*l0_files(4), (1, fm(1, b"a", b"d")))
    assert pick_compaction(v0, OPTS, busy={1}) is None
    assert pick_compaction(v0, OPTS, busy={101}) is None


def test_least_overlap_per_byte_first() -> None:
    v = version_of(
        (1, fm(1, b"a", b"c", size=2000)),  # overlaps 12 + 13: 600/2000 = 0.3
        (1, fm(2, b"e", b"g", size=1000)),  # overlaps 14: 100/1000 = 0.1
        (1, fm(3, b"i", b"k", size=100)),  # overlaps 15: 100/100 = 1.0
        (1, fm(4, b"m", b"o", size=200)),  # overlaps 16: 20/200 = 0.1, smaller than file 2
        (2, fm(12, b"a", b"b", size=300)),
        (2, fm(13, b"c", b"d", size=300)),
        (2, fm(14, b"f", b"f", size=100)),
        (2, fm(15, b"j", b"j", size=100)),
        (2, fm(16, b"n", b"n", size=20)),
    )
    order = []
    busy: set[int] = set()
    while (c := pick_compaction(v, OPTS, busy=busy)) is not None:
        order.append(c.inputs[0].number)
        busy |= c.file_numbers()
    assert order == [2, 4, 1, 3]  # ratio, then the larger file on a tie


def test_round_robin_cursor() -> None:
    v = version_of(
        *((1, fm(i, bytes([97 + 2 * i]), bytes([98 + 2 * i]), size=600)) for i in range(1, 5))
    )  # files 1..4: [c,d] [e,f] [g,h] [i,j]
    order = []
    cursor: dict[int, bytes] = {}
    for _ in range(5):
        c = pick_compaction(v, OPTS, cursors=cursor)
        assert c is not None
        order.append(c.inputs[0].number)
        cursor[1] = c.largest
    assert order == [1, 2, 3, 4, 1]
    assert pick_compaction(v, OPTS, cursors={1: b"f"}).inputs[0].number == 3  # type: ignore[union-attr]
    assert pick_compaction(v, OPTS, cursors={1: b"f"}, busy={3}).inputs[0].number == 4  # type: ignore[union-attr]


def test_last_level_never_picked() -> None:
    v = version_of((3, fm(1, b"a", b"z", size=10**9)))
    assert level_scores(v, OPTS)[3] > 1
    assert pick_compaction(v, OPTS) is None


def test_bottommost_flag() -> None:
    v = version_of(
        (1, fm(1, b"a", b"c", size=2000)),
        (1, fm(2, b"m", b"o", size=1500)),
        (2, fm(3, b"b", b"d")),
        (3, fm(4, b"d", b"e")),  # overlaps the range [a, d] of file 1 + file 3
        (3, fm(5, b"x", b"z")),
    )
    c2 = pick_compaction(v, OPTS)  # file 2 first: it overlaps nothing in level 2
    assert c2 is not None and nums(c2.inputs) == [2] and not c2.next_inputs
    assert c2.is_bottommost
    c = pick_compaction(v, OPTS, busy={2})
    assert c is not None and nums(c.inputs) == [1] and nums(c.next_inputs) == [3]
    assert not c.is_bottommost  # file 4 in level 3 holds keys of the output range


def test_manual() -> None:
    v = version_of(
        (0, fm(20, b"a", b"c", max_seq=3)),
        (0, fm(21, b"b", b"h", max_seq=2)),
        (0, fm(22, b"g", b"k", max_seq=1)),
        (0, fm(23, b"x", b"z", max_seq=4)),
        (1, fm(1, b"a", b"b")),
        (1, fm(2, b"e", b"f")),
        (1, fm(3, b"j", b"l")),
        (1, fm(4, b"p", b"q")),
        (2, fm(5, b"k", b"p")),
        (3, fm(6, b"q", b"q")),
    )
    # Level 0: [a, a] touches file 20, grown over 21 (overlaps it) and 22 (overlaps 21).
    c = pick_manual(v, OPTS, 0, b"a", b"a")
    assert c is not None and c.reason == "manual" and (c.level, c.output_level) == (0, 1)
    assert sorted(nums(c.inputs)) == [20, 21, 22] and nums(c.inputs) == [20, 21, 22]
    assert nums(c.next_inputs) == [1, 2, 3]
    assert not c.is_bottommost  # file 5 in level 2 overlaps [a, l]
    # Level 1, bounded and unbounded ranges.
    c = pick_manual(v, OPTS, 1, b"f", b"o")
    assert c is not None and nums(c.inputs) == [2, 3] and nums(c.next_inputs) == [5]
    c = pick_manual(v, OPTS, 1, None, None)
    assert c is not None and nums(c.inputs) == [1, 2, 3, 4] and nums(c.next_inputs) == [5]
    assert pick_manual(v, OPTS, 1, b"m", b"o") is None
    assert pick_manual(v, OPTS, 1, b"z", b"a") is None
    # The last level compacts into itself.
    c = pick_manual(v, OPTS, 3, None, None)
    assert c is not None and (c.level, c.output_level) == (3, 3) and nums(c.inputs) == [6]
    assert c.next_inputs == [] and c.is_bottommost and not c.is_trivial_move
    with pytest.raises(ValueError):
        pick_manual(v, OPTS, 4, None, None)


def test_picker_is_pure_and_consistent_on_random_versions() -> None:
    """On random versions: the pick is deterministic, never touches busy
    files, never takes the last level as input, next_inputs are exactly the
    overlapping files of the output level, and bottommost is exact."""
    seed = 4321
    print("seed", seed)
    rng = random.Random(seed)
    opts = Options.from_kwargs(
        l0_compaction_trigger=2, max_bytes_for_level_base=300, level_multiplier=3, num_levels=4
    )
    for _ in range(200):
        files: list[tuple[int, FileMeta]] = []
        number = 1
        for level in range(4):
            if level == 0:
                for _ in range(rng.randrange(5)):
                    a, b = sorted(bytes([rng.randrange(97, 123)]) for _ in range(2))
                    files.append((0, fm(number, a, b, max_seq=rng.randrange(50))))
                    number += 1
                continue
            bounds = sorted({bytes([rng.randrange(97, 123)]) for _ in range(rng.randrange(12))})
            for i in range(0, len(bounds) - 1, 2):
                files.append((level, fm(number, bounds[i], bounds[i + 1], size=rng.randrange(1, 400))))
                number += 1
        v = version_of(*files)
        busy = {n for n in range(1, number) if rng.random() < 0.2}
        c = pick_compaction(v, opts, busy=busy)
        assert c == pick_compaction(v, opts, busy=busy)
        scores = level_scores(v, opts)
        if c is None:
            continue
        _check_compaction(v, c)
        assert not (c.file_numbers() & busy)
        assert c.level < 3 and c.output_level == c.level + 1
        assert scores[c.level] >= 1 and c.score == scores[c.level]
        if c.level == 0:
            movable = [f for f in v.levels[0] if len(v.overlapping(0, f.smallest, f.largest)) == 1
                       and not v.overlapping(1, f.smallest, f.largest)]
            if movable:  # the oldest one alone: a trivial move
                assert nums(c.inputs) == nums(movable[-1:]) and c.is_trivial_move
            else:
                assert nums(c.inputs) == nums(list(v.levels[0]))
        else:
            assert len(c.inputs) == 1


def _check_compaction(v: Version, c: Compaction) -> None:
    lo = min(f.smallest for f in c.inputs)
    hi = max(f.largest for f in c.inputs)
    expect_next = [f for f in v.levels[c.output_level] if not (f.largest < lo or f.smallest > hi)]
    assert c.next_inputs == expect_next
    lo, hi = c.smallest, c.largest
    deeper = [
        f
        for lv in range(c.output_level + 1, v.num_levels)
        for f in v.levels[lv]
        if not (f.largest < lo or f.smallest > hi)
    ]
    assert c.is_bottommost == (not deeper)
    # Applying the compaction's removal and a covering output keeps the version valid.
    out = FileMeta(10**6, 1, lo, hi, 0, 0, 1, 0)
    edit = VersionEdit(
        added=[(c.output_level, out)],
        removed=[(c.level, f.number) for f in c.inputs] + [(c.output_level, f.number) for f in c.next_inputs],
    )
    v.apply(edit).check()


def test_level0_file_overlapping_nothing_is_moved_alone() -> None:
    """An ordered fill's level-0 files (disjoint ranges, nothing below them)
    go down one by one, oldest first, as trivial moves; a level-0 file
    overlapping another one or a level-1 file is compacted with all of
    level 0 as before."""
    opts = Options.from_kwargs(l0_compaction_trigger=2)
    # Level 0 newest first: 3 [e, f], 2 [c, d], 1 [a, b]; level 1 empty.
    v = version_of((0, fm(3, b"e", b"f", max_seq=3)), (0, fm(2, b"c", b"d", max_seq=2)), (0, fm(1, b"a", b"b", max_seq=1)))
    c = pick_compaction(v, opts)
    assert c is not None and nums(c.inputs) == [1] and c.is_trivial_move and c.output_level == 1
    # File 1 overlaps a level-1 file: file 2 is the oldest movable one.
    v = version_of((0, fm(3, b"e", b"f", max_seq=3)), (0, fm(2, b"c", b"d", max_seq=2)),
                   (0, fm(1, b"a", b"b", max_seq=1)), (1, fm(4, b"b", b"b")))
    c = pick_compaction(v, opts)
    assert c is not None and nums(c.inputs) == [2] and c.is_trivial_move
    # Every level-0 file overlaps another one: all of level 0, merged.
    v = version_of((0, fm(3, b"a", b"f", max_seq=3)), (0, fm(2, b"c", b"d", max_seq=2)), (0, fm(1, b"e", b"g", max_seq=1)))
    c = pick_compaction(v, opts)
    assert c is not None and nums(c.inputs) == [3, 2, 1] and not c.is_trivial_move
