"""The manifest's invariant checker and input checks on the paths the
end-to-end families never take (issue 5: branch coverage of the manifest,
target 100%): ``Version.check`` must catch each kind of broken version (a
checker that passes everything proves nothing), ``VersionEdit.encode``
refuses bad fields with a typed error naming the file, and decoding a
version edit only ever raises ``CorruptionError``; ``is_edit_prefix``
answers for a cut record, a damaged one and a whole one."""

from __future__ import annotations

import pytest

from lsm.base.errors import CorruptionError
from lsm.manifest import edit as edit_mod
from lsm.manifest.edit import VersionEdit, is_edit_prefix
from lsm.manifest.version import FileMeta, Version


def fm(number: int, lo: bytes, hi: bytes, *, min_seq: int = 1, max_seq: int = 1, entries: int = 2,
       deletes: int = 0, size: int = 100) -> FileMeta:
    return FileMeta(number, size, lo, hi, min_seq, max_seq, entries, deletes)


def good() -> Version:
    return Version([(fm(3, b"a", b"z", max_seq=9),), (fm(1, b"a", b"f"), fm(2, b"g", b"m")), ()])


def test_a_good_version_passes_and_compares() -> None:
    v = good()
    v.check()
    assert v == good() and hash(v) == hash(good()) and v != Version.empty(3)
    assert (v == "not a version") is False  # __eq__ defers to the other operand
    assert repr(v) == "Version(L0:1 L1:2)" and repr(Version.empty(2)) == "Version(empty)"
    with pytest.raises(ValueError, match="at least one level"):
        Version([])


@pytest.mark.parametrize(
    "bad, message",
    [
        (fm(5, b"a", b"b", min_seq=4, max_seq=3), "min_seq > max_seq"),
        (fm(5, b"a", b"b", entries=1, deletes=2), "num_deletes outside"),
        (fm(-5, b"a", b"b"), "negative number or size"),
        (fm(5, b"a", b"b", size=-1), "negative number or size"),
    ],
)
def test_check_catches_an_inconsistent_file(bad: FileMeta, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        Version([(bad,), ()]).check()


@pytest.mark.parametrize("stale", ["_largest", "_bytes", "read_plan"])
def test_check_catches_stale_derived_indexes(stale: str) -> None:
    """The indexes a Version derives at construction (bisect keys, byte
    counts, the read plan) must match its files: a stale one is caught."""
    v = good()
    other = Version([(fm(3, b"a", b"z", max_seq=9),), (fm(4, b"a", b"e", size=7), fm(2, b"g", b"m")), ()])
    object.__setattr__(v, stale, getattr(other, stale))
    with pytest.raises(AssertionError, match="stale"):
        v.check()


def test_encode_refuses_bad_keys() -> None:
    e = VersionEdit()
    e.added.append((1, fm(7, "a", "b")))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="file 7: keys must be bytes, got str"):
        e.encode()
    e = VersionEdit()
    e.added.append((1, fm(7, b"a", b"b")))
    e.encode()  # the same file with bytes keys is fine
    with pytest.raises(TypeError, match="number: expected an int, got str"):
        bad = VersionEdit()
        bad.added.append((1, fm("7", b"a", b"b")))  # type: ignore[arg-type]
        bad.encode()


def test_encode_refuses_a_key_too_long_for_its_length_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(edit_mod, "_U32_MAX", 3)  # not 4 GiB of key in a test
    e = VersionEdit()
    e.added.append((1, fm(7, b"a", b"abcd")))
    with pytest.raises(ValueError, match="file 7: key longer than"):
        e.encode()


def test_decode_cut_inside_a_key_length_is_a_prefix_not_a_valid_edit() -> None:
    e = VersionEdit()
    e.added.append((1, fm(7, b"apple", b"melon")))
    data = e.encode()
    assert VersionEdit.decode(data).added == e.added and is_edit_prefix(data)
    smallest_len_at = data.index(b"apple") - 4
    for cut in (smallest_len_at + 2, data.index(b"melon") - 2):  # inside the smallest's, the largest's length
        with pytest.raises(CorruptionError, match="truncated ADD_FILE key length"):
            VersionEdit.decode(data[:cut])
        assert is_edit_prefix(data[:cut])
    damaged = bytearray(data)
    damaged[0] = 0xEE  # an unknown tag: damage, not a cut
    assert not is_edit_prefix(bytes(damaged))


def test_decode_turns_any_internal_error_into_corruption(monkeypatch: pytest.MonkeyPatch) -> None:
    """The decoder promises CorruptionError only: an unexpected exception
    inside it (here: building the file's metadata fails) is reported as a
    malformed edit naming the file and offset, never leaked as is."""
    e = VersionEdit()
    e.added.append((1, fm(7, b"a", b"b")))
    data = e.encode()

    def broken(*_a: object) -> FileMeta:
        raise OverflowError("boom")

    monkeypatch.setattr(edit_mod, "FileMeta", broken)
    with pytest.raises(CorruptionError, match=r"malformed version edit \(OverflowError: boom\)") as ei:
        VersionEdit.decode(data, "/db/MANIFEST-000001", 40)
    assert ei.value.path == "/db/MANIFEST-000001" and ei.value.offset >= 40
