"""Tests of lsm.manifest: version edit encoding, Version, VersionSet
(create, log_and_apply, recover, roll-over, torn tails, corruption, I/O
failure)."""

from __future__ import annotations

import errno
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lsm.base import filenames
from lsm.base.coding import MAX_SEQ
from lsm.base.errors import CorruptionError, InvalidDatabaseError, NeedsRecoveryError
from lsm.base.fs import FileSystem, WritableFile
from lsm.manifest import FileMeta, Tag, Version, VersionEdit, VersionSet
from lsm.manifest.version_set import HEADER_SIZE, encode_header, encode_record

# ---------------------------------------------------------------- helpers


def fm(
    number: int,
    smallest: bytes,
    largest: bytes,
    *,
    size: int = 100,
    min_seq: int = 0,
    max_seq: int = 1,
    entries: int = 1,
    deletes: int = 0,
) -> FileMeta:
    return FileMeta(number, size, smallest, largest, min_seq, max_seq, entries, deletes)


def version_of(*files: tuple[int, FileMeta], num_levels: int = 4) -> Version:
    return Version.empty(num_levels).apply(VersionEdit(added=list(files)))


def make_sst(dbdir: str, f: FileMeta) -> None:
    with open(os.path.join(dbdir, filenames.sst_name(f.number)), "wb") as fh:
        fh.write(b"\0" * f.file_size)


def read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def manifest_path(vs: VersionSet) -> str:
    return os.path.join(vs.dbname, filenames.manifest_name(vs.manifest_number))


# ---------------------------------------------------------------- strategies

keys = st.binary(max_size=12)


@st.composite
def file_metas(draw: st.DrawFn) -> FileMeta:
    a, b = sorted([draw(keys), draw(keys)])
    s1, s2 = sorted([draw(st.integers(0, MAX_SEQ)), draw(st.integers(0, MAX_SEQ))])
    entries = draw(st.integers(0, 2**64 - 1))
    return FileMeta(
        number=draw(st.integers(0, 2**64 - 1)),
        file_size=draw(st.integers(0, 2**64 - 1)),
        smallest=a,
        largest=b,
        min_seq=s1,
        max_seq=s2,
        num_entries=entries,
        num_deletes=draw(st.integers(0, entries)),
    )


edits = st.builds(
    VersionEdit,
    added=st.lists(st.tuples(st.integers(0, 255), file_metas()), max_size=4),
    removed=st.lists(st.tuples(st.integers(0, 255), st.integers(0, 2**64 - 1)), max_size=4),
    next_file_number=st.none() | st.integers(0, 2**64 - 1),
    last_seq=st.none() | st.integers(0, MAX_SEQ),
    flushed_seq=st.none() | st.integers(0, MAX_SEQ),
)


# ---------------------------------------------------------------- VersionEdit


@given(edits)
def test_edit_round_trip(edit: VersionEdit) -> None:
    assert VersionEdit.decode(edit.encode()) == edit


def _decode_or_corrupt(data: bytes) -> None:
    try:
        out = VersionEdit.decode(data, "fuzz", 1000)
    except CorruptionError as e:
        assert e.path == "fuzz"
        assert e.offset is not None and 1000 <= e.offset <= 1000 + len(data)
    else:
        assert isinstance(out, VersionEdit)
        # Whatever decodes must re-encode to something that decodes the same.
        assert VersionEdit.decode(out.encode()) == out


FUZZ = settings(max_examples=max(400, settings().max_examples), suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.binary(max_size=300))
def test_decode_fuzz_random_bytes(data: bytes) -> None:
    _decode_or_corrupt(data)


@FUZZ
@given(edits, st.data())
def test_decode_fuzz_mutated_edits(edit: VersionEdit, data: st.DataObject) -> None:
    raw = bytearray(edit.encode())
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]))
        if op == "truncate":
            raw = raw[: data.draw(st.integers(0, len(raw)))]
        elif op == "insert":
            pos = data.draw(st.integers(0, len(raw)))
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif not raw:
            continue
        else:
            pos = data.draw(st.integers(0, len(raw) - 1))
            if op == "flip":
                raw[pos] ^= 1 << data.draw(st.integers(0, 7))
            elif op == "delete":
                del raw[pos]
            else:
                raw[pos] = data.draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
    _decode_or_corrupt(bytes(raw))


def test_decode_huge_key_length_is_corruption() -> None:
    raw = bytearray(VersionEdit(added=[(1, fm(5, b"a", b"b"))]).encode())
    # The smallest key's u32 length follows the tag and the 49-byte fixed part.
    raw[1 + 49 : 1 + 49 + 4] = b"\xff\xff\xff\xff"
    with pytest.raises(CorruptionError, match="runs past the record") as ei:
        VersionEdit.decode(bytes(raw), "m", 8)
    assert ei.value.offset == 8 + 50


@pytest.mark.parametrize(
    "raw,reason",
    [
        (b"\x00", "unknown version edit tag 0"),
        (b"\x63", "unknown version edit tag 99"),
        (b"\x01\x00\x00", "truncated NEXT_FILE_NUMBER"),
        (b"\x02" + (1 << 60).to_bytes(8, "little"), "exceeds 2\\*\\*56-1"),
        (b"\x01" + bytes(8) + b"\x01" + bytes(8), "duplicate NEXT_FILE_NUMBER"),
        (b"\x05\x01\x02", "truncated REMOVE_FILE"),
    ],
)
def test_decode_rejects(raw: bytes, reason: str) -> None:
    with pytest.raises(CorruptionError, match=reason):
        VersionEdit.decode(raw, "x")


def test_decode_rejects_inconsistent_file() -> None:
    good = VersionEdit(added=[(1, fm(5, b"a", b"b"))]).encode()
    bad = good.replace(b"\x01\x00\x00\x00a\x01\x00\x00\x00b", b"\x01\x00\x00\x00b\x01\x00\x00\x00a")
    with pytest.raises(CorruptionError, match="smallest key > largest key"):
        VersionEdit.decode(bad)


def test_encode_rejects_out_of_range() -> None:
    with pytest.raises(ValueError):
        VersionEdit(last_seq=MAX_SEQ + 1).encode()
    with pytest.raises(ValueError):
        VersionEdit(removed=[(256, 1)]).encode()
    with pytest.raises(ValueError):
        VersionEdit(added=[(1, fm(1, b"z", b"a"))]).encode()


def test_tags_are_frozen() -> None:
    assert {t.name: t.value for t in Tag} == {
        "NEXT_FILE_NUMBER": 1,
        "LAST_SEQ": 2,
        "FLUSHED_SEQ": 3,
        "ADD_FILE": 4,
        "REMOVE_FILE": 5,
    }


# The worked example of docs/format/manifest.md: change the doc with it.
GOLDEN_EDIT = (
    "01070000000000000002640000000000000003 5a00000000000000 05 00 0300000000000000"
    " 04 01 0500000000000000 0008000000000000 0a00000000000000 5a00000000000000"
    " 2800000000000000 0200000000000000 05000000 6170706c65 06000000 636865727279"
)
GOLDEN_FILE = "6c736d4d414e4946 01000000 c95bc72b 1eea2987 6a000000" + GOLDEN_EDIT


def test_golden_worked_example() -> None:
    edit = VersionEdit(next_file_number=7, last_seq=100, flushed_seq=90)
    edit.remove_file(0, 3)
    edit.add_file(1, fm(5, b"apple", b"cherry", size=2048, min_seq=10, max_seq=90, entries=40, deletes=2))
    assert edit.encode() == bytes.fromhex(GOLDEN_EDIT)
    assert encode_header() + encode_record(edit.encode()) == bytes.fromhex(GOLDEN_FILE)
    assert VersionEdit.decode(bytes.fromhex(GOLDEN_EDIT)) == edit


# ---------------------------------------------------------------- Version


def test_apply_and_check() -> None:
    v = version_of((0, fm(1, b"a", b"z", max_seq=5)), (1, fm(2, b"a", b"f")), (1, fm(3, b"g", b"m")))
    v.check()
    assert [f.number for f in v.levels[1]] == [2, 3]
    assert v.all_numbers() == {1, 2, 3}
    assert v.level_bytes(1) == 200 and v.level_bytes(2) == 0
    # Move file 3 from level 1 to level 2 in one edit; the old version is untouched.
    v2 = v.apply(VersionEdit(added=[(2, fm(3, b"g", b"m"))], removed=[(1, 3)]))
    v2.check()
    assert [f.number for f in v2.levels[2]] == [3] and [f.number for f in v2.levels[1]] == [2]
    assert [f.number for f in v.levels[1]] == [2, 3]
    assert v2.levels[0] is v.levels[0]  # untouched levels are shared


@pytest.mark.parametrize(
    "edit,reason",
    [
        (VersionEdit(removed=[(1, 9)]), "not in level 1"),
        (VersionEdit(removed=[(0, 2)]), "not in level 0"),
        (VersionEdit(added=[(2, fm(2, b"x", b"y"))]), "already in level 1"),
        (VersionEdit(added=[(2, fm(7, b"x", b"y")), (3, fm(7, b"x", b"y"))]), "already in level 2"),
        (VersionEdit(added=[(1, fm(7, b"f", b"g"))]), "overlapping"),
        (VersionEdit(added=[(4, fm(7, b"f", b"g"))]), "levels 0..3"),
        (VersionEdit(removed=[(9, 2)]), "levels 0..3"),
    ],
)
def test_apply_rejects(edit: VersionEdit, reason: str) -> None:
    v = version_of((0, fm(1, b"a", b"z")), (1, fm(2, b"a", b"f")))
    with pytest.raises(CorruptionError, match=reason):
        v.apply(edit)


def test_level0_order_newest_first() -> None:
    v = version_of(
        (0, fm(10, b"a", b"c", max_seq=5)),
        (0, fm(11, b"a", b"c", max_seq=9)),
        (0, fm(12, b"a", b"c", max_seq=5)),
        (0, fm(9, b"a", b"c", max_seq=20)),
    )
    v.check()
    assert [f.number for f in v.levels[0]] == [9, 11, 12, 10]


def test_check_catches_violations() -> None:
    with pytest.raises(AssertionError, match="level 0 out of order"):
        Version([(fm(1, b"a", b"b", max_seq=1), fm(2, b"a", b"b", max_seq=2)), ()]).check()
    with pytest.raises(AssertionError, match="overlaps"):
        Version([(), (fm(1, b"a", b"c"), fm(2, b"c", b"d"))]).check()
    with pytest.raises(AssertionError, match="in level 0 and level 1"):
        Version([(fm(1, b"a", b"b"),), (fm(1, b"a", b"c"),)]).check()
    with pytest.raises(AssertionError, match="smallest > largest"):
        Version([(), (fm(1, b"z", b"a"),)]).check()


def test_files_for_key_order() -> None:
    v = version_of(
        (0, fm(20, b"a", b"m", max_seq=30)),
        (0, fm(21, b"k", b"z", max_seq=40)),
        (0, fm(22, b"x", b"z", max_seq=50)),
        (1, fm(1, b"a", b"d")),
        (1, fm(2, b"j", b"n")),
        (2, fm(3, b"a", b"k")),
        (3, fm(4, b"l", b"l")),
    )
    got = [(lv, f.number) for lv, f in v.files_for_key(b"l")]
    assert got == [(0, 21), (0, 20), (1, 2), (3, 4)]
    assert [(lv, f.number) for lv, f in v.files_for_key(b"e")] == [(0, 20), (2, 3)]
    assert v.files_for_key(b"zz") == []
    assert [(lv, f.number) for lv, f in v.files_for_key(b"d")] == [(0, 20), (1, 1), (2, 3)]


def test_overlapping() -> None:
    v = version_of(
        (0, fm(20, b"a", b"c")),
        (0, fm(21, b"e", b"g")),
        (1, fm(1, b"a", b"b")),
        (1, fm(2, b"d", b"f")),
        (1, fm(3, b"h", b"k")),
    )
    nums = lambda files: [f.number for f in files]
    assert nums(v.overlapping(1, b"c", b"d")) == [2]
    assert nums(v.overlapping(1, b"b", b"h")) == [1, 2, 3]
    assert nums(v.overlapping(1, None, None)) == [1, 2, 3]
    assert nums(v.overlapping(1, b"f", None)) == [2, 3]
    assert nums(v.overlapping(1, None, b"a")) == [1]
    assert nums(v.overlapping(1, b"l", None)) == []
    assert nums(v.overlapping(1, b"g", b"g")) == []
    assert nums(v.overlapping(0, b"c", b"e")) == [20, 21] or nums(v.overlapping(0, b"c", b"e")) == [21, 20]
    assert nums(v.overlapping(0, b"d", b"d")) == []


def test_version_queries_against_brute_force() -> None:
    rng = random.Random(1234)
    print("seed 1234")
    for _ in range(50):
        files: list[tuple[int, FileMeta]] = []
        number = 1
        for level in range(4):
            if level == 0:
                for _ in range(rng.randrange(4)):
                    a, b = sorted(bytes([rng.randrange(97, 123)]) for _ in range(2))
                    files.append((0, fm(number, a, b, max_seq=rng.randrange(100))))
                    number += 1
                continue
            bounds = sorted({bytes([rng.randrange(97, 123)]) for _ in range(rng.randrange(10))})
            for i in range(0, len(bounds) - 1, 2):
                files.append((level, fm(number, bounds[i], bounds[i + 1])))
                number += 1
        v = version_of(*files)
        v.check()
        for k in (bytes([c]) for c in range(96, 124)):
            expect = [(lv, f) for lv, f in v.all_files() if f.smallest <= k <= f.largest]
            assert v.files_for_key(k) == expect
        for _ in range(10):
            lo, hi = sorted(bytes([rng.randrange(96, 124)]) for _ in range(2))
            for level in range(4):
                expect = [f for f in v.levels[level] if not (f.largest < lo or f.smallest > hi)]
                assert v.overlapping(level, lo, hi) == expect


# ---------------------------------------------------------------- VersionSet


class FlakyFS(FileSystem):
    """Fails the next sync (file or directory) once ``fail_syncs_after``
    more syncs have succeeded; None: never."""

    def __init__(self) -> None:
        self.fail_syncs_after: int | None = None

    def _tick(self) -> None:
        if self.fail_syncs_after is not None:
            if self.fail_syncs_after == 0:
                raise OSError(errno.EIO, "injected sync failure")
            self.fail_syncs_after -= 1

    def _sync(self, f: WritableFile, data_only: bool) -> None:
        self._tick()
        super()._sync(f, data_only)

    def sync_dir(self, path: str) -> None:
        self._tick()
        super().sync_dir(path)


def new_vs(tmp_path: object, fs: FileSystem | None = None, **kw: object) -> VersionSet:
    return VersionSet(fs or FileSystem(), str(tmp_path), num_levels=4, **kw)  # type: ignore[arg-type]


def flush_edit(vs: VersionSet, smallest: bytes, largest: bytes, seq: int, level: int = 0) -> VersionEdit:
    f = fm(vs.new_file_number(), smallest, largest, size=10 + seq, min_seq=seq, max_seq=seq)
    make_sst(vs.dbname, f)
    vs.last_seq = max(vs.last_seq, seq)
    return VersionEdit(added=[(level, f)], flushed_seq=seq)


def reopen(vs: VersionSet, **kw: object) -> VersionSet:
    other = VersionSet(vs.fs, vs.dbname, num_levels=vs.num_levels, **kw)  # type: ignore[arg-type]
    other.recover()
    return other


def assert_same_state(a: VersionSet, b: VersionSet) -> None:
    assert a.current == b.current
    assert (a.next_file_number, a.last_seq, a.flushed_seq) == (b.next_file_number, b.last_seq, b.flushed_seq)


def test_create_and_recover_empty(tmp_path: object) -> None:
    vs = new_vs(tmp_path)
    vs.create()
    d = str(tmp_path)
    assert sorted(os.listdir(d)) == ["CURRENT", "MANIFEST-000001"]
    assert read(os.path.join(d, "CURRENT")) == b"MANIFEST-000001\n"
    assert vs.manifest_number == 1 and vs.next_file_number == 2
    vs.close()
    vs2 = reopen(vs)
    assert_same_state(vs, vs2)
    assert vs2.recovered_torn_tail is None
    with pytest.raises(FileExistsError):
        new_vs(tmp_path).create()


def test_log_and_apply_then_recover(tmp_path: object) -> None:
    vs = new_vs(tmp_path)
    vs.create()
    size0 = os.path.getsize(manifest_path(vs))
    e1 = flush_edit(vs, b"a", b"m", 10)
    v1 = vs.log_and_apply(e1)
    assert e1.next_file_number == vs.next_file_number and e1.last_seq == 10
    assert vs.current is v1 and vs.flushed_seq == 10
    vs.log_and_apply(flush_edit(vs, b"c", b"z", 20))
    # Compact both level-0 files into one level-1 file.
    out = fm(vs.new_file_number(), b"a", b"z", size=55, min_seq=10, max_seq=20, entries=3, deletes=1)
    make_sst(vs.dbname, out)
    vs.log_and_apply(VersionEdit(added=[(1, out)], removed=[(0, f.number) for f in vs.current.levels[0]]))
    vs.log_and_apply(flush_edit(vs, b"b", b"b", 30))
    vs.current.check()
    assert vs.manifest_number == 1 and os.path.getsize(manifest_path(vs)) > size0  # appended, no roll-over
    vs.close()
    vs2 = reopen(vs)
    assert_same_state(vs, vs2)
    assert [f.number for f in vs2.current.levels[1]] == [out.number]
    # The first edit after recovery starts a new manifest.
    vs2.log_and_apply(flush_edit(vs2, b"q", b"r", 40))
    assert vs2.manifest_number > 1
    assert vs2.obsolete_manifests() == ["MANIFEST-000001"]
    assert (
        read(os.path.join(vs.dbname, "CURRENT"))
        == (filenames.manifest_name(vs2.manifest_number) + "\n").encode()
    )
    assert not [n for n in os.listdir(vs.dbname) if n.endswith(".tmp")]
    vs3 = reopen(vs2)
    assert_same_state(vs2, vs3)
    vs2.close()


def test_roll_over(tmp_path: object) -> None:
    vs = new_vs(tmp_path, manifest_max_size=300)
    vs.create()
    seen = {vs.manifest_number}
    for i in range(1, 30):
        vs.log_and_apply(flush_edit(vs, b"k%02d" % i, b"k%02d" % i, i, level=1))
        seen.add(vs.manifest_number)
        assert os.path.getsize(manifest_path(vs)) < 300 + 2000
    assert len(seen) > 3
    obsolete = vs.obsolete_manifests()
    assert filenames.manifest_name(vs.manifest_number) not in obsolete
    assert set(obsolete) == {filenames.manifest_name(n) for n in seen - {vs.manifest_number}}
    for name in obsolete:
        os.unlink(os.path.join(vs.dbname, name))
    assert_same_state(vs, reopen(vs))
    assert vs.next_file_number > max(seen)
    vs.close()


def _build_db(tmp_path: object, n: int = 5) -> tuple[VersionSet, list[int], list[Version]]:
    """A manifest with a snapshot and ``n`` appended edits; returns the
    record offsets and the version after each record."""
    vs = new_vs(tmp_path)
    vs.create()
    offsets = [HEADER_SIZE]
    versions = [vs.current]
    for i in range(n):
        offsets.append(os.path.getsize(manifest_path(vs)))
        vs.log_and_apply(flush_edit(vs, b"a", b"z", 10 * (i + 1)))
        versions.append(vs.current)
    vs.close()
    return vs, offsets, versions


def test_torn_last_record_tolerated(tmp_path: object) -> None:
    vs, offsets, versions = _build_db(tmp_path)
    path = manifest_path(vs)
    data = read(path)
    last = offsets[-1]
    for cut in range(last + 1, len(data)):
        with open(path, "wb") as fh:
            fh.write(data[:cut])
        vs2 = reopen(vs)
        assert vs2.current == versions[-2], cut
        assert vs2.recovered_torn_tail == last
        assert vs2.last_seq == 40
    # A zero-filled tail (size grew, data lost) counts as torn too.
    with open(path, "wb") as fh:
        fh.write(data[:last] + bytes(len(data) - last))
    assert reopen(vs).current == versions[-2]
    # The first edit after recovering from a torn tail goes to a new manifest.
    with open(path, "wb") as fh:
        fh.write(data[:-3])
    vs3 = reopen(vs)
    vs3.log_and_apply(flush_edit(vs3, b"b", b"c", 99))
    assert vs3.manifest_number != vs.manifest_number
    assert read(path) == data[:-3]
    assert_same_state(vs3, reopen(vs3))
    vs3.close()


def test_corrupt_middle_record(tmp_path: object) -> None:
    vs, offsets, _ = _build_db(tmp_path)
    path = manifest_path(vs)
    data = bytearray(read(path))
    target = offsets[2]
    data[target + 12] ^= 0x40
    with open(path, "wb") as fh:
        fh.write(data)
    with pytest.raises(CorruptionError, match="checksum mismatch") as ei:
        reopen(vs)
    assert ei.value.path == path and ei.value.offset == target


def test_damage_anywhere_never_silent(tmp_path: object) -> None:
    """Flip each byte of the manifest: recovery either fails with
    CorruptionError or (damage confined to the final record) yields the
    state before that record."""
    vs, offsets, versions = _build_db(tmp_path, n=3)
    path = manifest_path(vs)
    data = read(path)
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0xFF
        with open(path, "wb") as fh:
            fh.write(bad)
        try:
            got = reopen(vs).current
        except (CorruptionError, InvalidDatabaseError) as e:
            assert getattr(e, "path", path) in (path, None)
            continue
        # Only a corrupted length of the last record can look like a torn tail.
        assert i >= offsets[-1] and got == versions[-2], i


def test_oversized_length_is_corruption_not_torn(tmp_path: object) -> None:
    vs, offsets, _ = _build_db(tmp_path)
    path = manifest_path(vs)
    data = bytearray(read(path))
    data[offsets[2] + 4 : offsets[2] + 8] = b"\xff\xff\xff\xff"
    with open(path, "wb") as fh:
        fh.write(data)
    with pytest.raises(CorruptionError, match="exceeds the limit") as ei:
        reopen(vs)
    assert ei.value.offset == offsets[2]


def test_missing_sst(tmp_path: object) -> None:
    vs, _, versions = _build_db(tmp_path)
    victim = versions[-1].levels[0][2].number
    sst = os.path.join(vs.dbname, filenames.sst_name(victim))
    os.unlink(sst)
    with pytest.raises(CorruptionError, match="missing table file referenced by the manifest") as ei:
        reopen(vs)
    assert ei.value.path == sst


def test_sst_size_mismatch(tmp_path: object) -> None:
    vs, _, versions = _build_db(tmp_path)
    sst = os.path.join(vs.dbname, filenames.sst_name(versions[-1].levels[0][0].number))
    with open(sst, "ab") as fh:
        fh.write(b"x")
    with pytest.raises(CorruptionError, match="manifest records") as ei:
        reopen(vs)
    assert ei.value.path == sst


def test_current_problems(tmp_path: object) -> None:
    vs, _, _ = _build_db(tmp_path, n=1)
    current = os.path.join(vs.dbname, "CURRENT")
    os.unlink(current)
    with pytest.raises(CorruptionError, match="CURRENT file is missing") as ei:
        reopen(vs)
    assert ei.value.path == current
    for garbage in (
        b"",
        b"MANIFEST-000001",
        b"MANIFEST-1\n",
        b"garbage\n",
        b"MANIFEST-000001\nx\n",
        b"\xff\n",
    ):
        with open(current, "wb") as fh:
            fh.write(garbage)
        with pytest.raises(CorruptionError, match="garbled CURRENT") as ei:
            reopen(vs)
        assert ei.value.path == current
    with open(current, "wb") as fh:
        fh.write(b"MANIFEST-000077\n")
    with pytest.raises(CorruptionError, match="missing manifest") as ei:
        reopen(vs)
    assert ei.value.path == os.path.join(vs.dbname, "MANIFEST-000077")


def test_manifest_header_problems(tmp_path: object) -> None:
    vs, _, _ = _build_db(tmp_path, n=1)
    path = manifest_path(vs)
    data = read(path)
    for bad, err, reason in (
        (data[:10], CorruptionError, "header truncated"),
        (b"X" + data[1:], CorruptionError, "bad manifest magic"),
        (data[:8] + b"\x01\x00\x00\x01" + data[12:], CorruptionError, "header checksum"),
        (data[:HEADER_SIZE], CorruptionError, "no complete record"),
    ):
        with open(path, "wb") as fh:
            fh.write(bad)
        with pytest.raises(err, match=reason):
            reopen(vs)
    newer = b"lsmMANIF\x02\x00\x00\x00"
    from lsm.base.checksum import crc, mask

    with open(path, "wb") as fh:
        fh.write(newer + mask(crc(newer)).to_bytes(4, "little") + data[HEADER_SIZE:])
    with pytest.raises(InvalidDatabaseError, match="format version 2"):
        reopen(vs)


def test_too_few_levels_on_reopen(tmp_path: object) -> None:
    vs = new_vs(tmp_path)
    vs.create()
    vs.log_and_apply(flush_edit(vs, b"a", b"b", 1, level=3))
    vs.close()
    with pytest.raises(ValueError, match="num_levels"):
        VersionSet(vs.fs, vs.dbname, num_levels=3).recover()


def test_log_and_apply_validates(tmp_path: object) -> None:
    vs = new_vs(tmp_path)
    vs.create()
    vs.log_and_apply(flush_edit(vs, b"a", b"b", 5))
    with pytest.raises(ValueError, match="last_seq"):
        vs.log_and_apply(VersionEdit(last_seq=1))
    with pytest.raises(ValueError, match="flushed_seq"):
        vs.log_and_apply(VersionEdit(flushed_seq=2))
    with pytest.raises(ValueError, match="above last_seq"):
        vs.log_and_apply(VersionEdit(flushed_seq=6))
    with pytest.raises(ValueError, match="new_file_number"):
        vs.log_and_apply(VersionEdit(added=[(1, fm(1000, b"a", b"b"))]))
    with pytest.raises(CorruptionError, match="not in level 1"):
        vs.log_and_apply(VersionEdit(removed=[(1, 2)]))
    before = vs.current
    vs.log_and_apply(VersionEdit(last_seq=7))  # still usable
    assert vs.current == before and vs.last_seq == 7
    vs.close()


def test_sync_failure_fences(tmp_path: object) -> None:
    fs = FlakyFS()
    vs = new_vs(tmp_path, fs)
    vs.create()
    vs.log_and_apply(flush_edit(vs, b"a", b"b", 5))
    before = vs.current
    fs.fail_syncs_after = 0
    with pytest.raises(OSError) as ei:
        vs.log_and_apply(flush_edit(vs, b"c", b"d", 6))
    assert ei.value.errno == errno.EIO
    assert vs.current is before and vs.flushed_seq == 5
    assert vs.broken is ei.value
    assert vs.obsolete_manifests() == []  # which manifest is live is unknown until reopen
    fs.fail_syncs_after = None
    with pytest.raises(NeedsRecoveryError) as ni:
        vs.log_and_apply(VersionEdit())
    assert ni.value.cause is ei.value
    assert vs.current is before
    vs.close()


@pytest.mark.parametrize("max_size", [1 << 20, 1])
def test_every_sync_failure_recovers_to_before_or_after(tmp_path: object, max_size: int) -> None:
    """Fail the k-th sync of one log_and_apply (append or roll-over), for
    every k: the VersionSet fences and reopening yields the state before or
    after the edit, never anything else."""
    for k in range(8):
        d = os.path.join(str(tmp_path), f"db{k}")
        fs = FlakyFS()
        vs = VersionSet(fs, d, num_levels=4, manifest_max_size=max_size)
        vs.create()
        vs.log_and_apply(flush_edit(vs, b"a", b"b", 5))
        before = vs.current
        edit = flush_edit(vs, b"c", b"d", 6)
        fs.fail_syncs_after = k
        try:
            vs.log_and_apply(edit)
        except OSError:
            assert vs.current is before
            with pytest.raises(NeedsRecoveryError):
                vs.log_and_apply(VersionEdit())
            after = None
        else:
            after = vs.current
            assert k >= 1  # at least one sync per edit
        fs.fail_syncs_after = None
        vs.close()
        got = reopen(vs).current
        assert got in (before, before.apply(VersionEdit(added=edit.added)))
        if after is not None:
            assert got == after
            break
    else:
        pytest.fail("no k let the edit succeed")


def test_create_failure_is_raised(tmp_path: object) -> None:
    fs = FlakyFS()
    fs.fail_syncs_after = 0
    vs = new_vs(tmp_path, fs)
    with pytest.raises(OSError):
        vs.create()
    assert not os.path.exists(os.path.join(str(tmp_path), "CURRENT"))
