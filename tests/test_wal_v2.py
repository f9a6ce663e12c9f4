"""WAL format version 2 (docs/format/wal.md, "Version 2: the synced offset"):
the ``synced`` field each record carries, how the writer fills it, and the
refined torn-tail rule that tells a never-synced hole from damage to synced
bytes. tests/test_wal_reader.py runs the framing tests on both versions;
tests/test_corruption_matrix.py checks every byte against the rule; this
file holds the cases only version 2 has: records whose ``synced`` lags
behind them (as concurrent committers, or OFF/NORMAL commits, write them).
"""

from __future__ import annotations

import struct

import pytest

import lsm
from lsm.base.crashfs import CrashFS
from lsm.wal import format as wf
from lsm.wal import torn_tail
from lsm.wal.reader import replay, scan_segment_bytes

HS = wf.SEGMENT_HEADER_SIZE
RH = wf.RECORD_HEADER_SIZE
PATH = "/w/00000000000000000001.wal"


def body(seq: int) -> bytes:
    k, v = b"k%d" % seq, b"value-%d" % seq
    return struct.pack("<BII", 1, len(k), len(v)) + k + v


def segment(n: int, synced: list[int] | None = None) -> tuple[bytes, list[int]]:
    """A segment of ``n`` one-op records (seq 1..n); record i carries
    ``synced[i]`` (default: each record its own offset, as a single FULL
    writer writes them). Returns the bytes and the record offsets."""
    data = bytearray(wf.encode_segment_header(1))
    offs = []
    for i in range(n):
        offs.append(len(data))
        data += wf.encode_record(i + 1, 1, 0, body(i + 1), len(data) if synced is None else synced[i])
    return bytes(data), offs


def hole(data: bytes, start: int, end: int, fill: str = "zero") -> bytes:
    b = bytearray(data)
    b[start:end] = bytes(end - start) if fill == "zero" else bytes((i * 37 + 11) % 255 + 1 for i in range(end - start))
    return bytes(b)


class MemDir:
    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def listdir(self, _d: str) -> list[str]:
        return sorted(self.files)

    def read_file(self, path: str) -> bytes:
        return self.files[path.rsplit("/", 1)[-1]]


def test_worked_example_bytes() -> None:
    """The worked example of docs/format/wal.md, byte for byte."""
    b = struct.pack("<BII", 1, 1, 1) + b"kv"
    data = wf.encode_segment_header(1) + wf.encode_record(1, 1, 0, b, 24)
    assert data.hex() == (
        "6c736d57414c0000020000000100000000000000bb1e09bb"
        "eaa17f140b000000010000000000000001000000000000000000000018000000000000000101000000010000006b76"
    )
    s = scan_segment_bytes(data, PATH)
    assert s.version == 2 and s.damage is None and s.records[0].synced == 24


@pytest.mark.parametrize("fill", ["zero", "garbage"])
def test_hole_before_never_synced_records_is_a_torn_tail(fill: str) -> None:
    """The rule's example: records 1-3 synced (record 4 says so), records
    4..8 appended while nothing newer was synced. A hole over records 5-6
    with 7-8 intact after it: they say the segment was durable only up to
    record 4, so the hole is unsynced data lost in a power cut: a tail, cut
    at record 5 (records 7-8, never acknowledged as durable, go with it)."""
    offs = segment(8)[1]
    synced = [24, offs[1], offs[2], offs[3], offs[3], offs[3], offs[3], offs[3]]
    data, offs = segment(8, synced)
    damaged = hole(data, offs[4], offs[6], fill)
    s = scan_segment_bytes(damaged, PATH)
    assert [r.seq for r in s.records] == [1, 2, 3, 4]
    assert s.damage is not None and s.damage.is_tail, s.damage
    assert s.valid_end == offs[4]
    r = replay(MemDir({PATH[3:]: damaged}), "/w", start_seq=0)
    assert [x.seq for x in r.records] == [1, 2, 3, 4] and r.truncate == (PATH, offs[4])
    with pytest.raises(lsm.CorruptionError, match="tolerates no damage"):
        replay(MemDir({PATH[3:]: damaged}), "/w", start_seq=0, mode="absolute")
    # the same bytes as a version-1 segment: an intact record follows, so not a tail
    v1 = bytearray(wf.encode_segment_header(1, 1))
    o1 = []
    for i in range(8):
        o1.append(len(v1))
        v1 += wf.encode_record_v1(i + 1, 1, 0, body(i + 1))
    with pytest.raises(lsm.CorruptionError, match="not a torn tail"):
        replay(MemDir({PATH[3:]: hole(bytes(v1), o1[4], o1[6], fill)}), "/w", start_seq=0)


@pytest.mark.parametrize("fill", ["zero", "garbage"])
def test_hole_in_synced_bytes_is_corruption(fill: str) -> None:
    """Record 8 was appended after a sync covering records 5-6 (its synced
    is past them): damage there is not a lost unsynced write."""
    offs = segment(8)[1]
    synced = [24, offs[1], offs[2], offs[3], offs[3], offs[3], offs[3], offs[7]]
    data, offs = segment(8, synced)
    damaged = hole(data, offs[4], offs[6], fill)
    s = scan_segment_bytes(damaged, PATH)
    assert s.damage is not None and not s.damage.is_tail
    assert f"seq 8 at offset {offs[7]} was appended when the segment was durable up to offset {offs[7]}" in (
        s.damage.detail
    )
    with pytest.raises(lsm.CorruptionError, match="not a torn tail") as ei:
        replay(MemDir({PATH[3:]: damaged}), "/w", start_seq=0)
    assert offs[4] <= ei.value.offset < offs[7]  # the damaged record, or the first non-zero byte after zeros


def test_several_holes_the_search_continues_after_each() -> None:
    """Hole, intact records that saw nothing synced past it, a second hole,
    then a record that saw the first hole's bytes synced: corruption (the
    search starts again after the second hole)."""
    n = 12
    offs = segment(n)[1]
    synced = [24] + [offs[1]] * 9 + [offs[4], offs[4]]
    data, offs = segment(n, synced)
    damaged = hole(hole(data, offs[2], offs[3]), offs[6], offs[8])
    s = scan_segment_bytes(damaged, PATH)
    assert s.damage is not None and not s.damage.is_tail and s.valid_end == offs[2]
    assert "seq 11" in s.damage.detail
    # the same with the last two records not knowing it: a tail
    synced = [24] + [offs[1]] * 11
    data, offs = segment(n, synced)
    damaged = hole(hole(data, offs[2], offs[3]), offs[6], offs[8])
    s = scan_segment_bytes(damaged, PATH)
    assert s.damage is not None and s.damage.is_tail and s.valid_end == offs[2]


def test_repeated_searches_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The searches after further damage have a byte budget and fail closed."""
    monkeypatch.setattr(torn_tail, "_PROBE_SCAN", 64)
    n = 12
    offs = segment(n)[1]
    data, offs = segment(n, [24] + [offs[1]] * 11)
    damaged = hole(hole(data, offs[2], offs[3]), offs[6], offs[8])
    s = scan_segment_bytes(damaged, PATH)
    assert s.damage is not None and not s.damage.is_tail and "cannot rule out" in s.damage.detail


def test_damaged_header() -> None:
    """A damaged header is corruption iff a record after it saw it synced."""
    offs = segment(4)[1]
    for synced, tail in (([0, 0, 0, 0], True), ([0, 0, 24, 24], False)):
        data, _ = segment(4, synced)
        s = scan_segment_bytes(hole(data, 0, 12), PATH)  # magic and version gone: either layout may follow
        assert s.damage is not None and s.damage.is_tail is tail, (synced, s.damage)
        s = scan_segment_bytes(hole(data, 16, 20, "garbage"), PATH)  # first_seq damaged: crc fails
        assert s.damage is not None and s.damage.is_tail is tail, (synced, s.damage)


def test_undetectable_case_damage_past_the_last_synced() -> None:
    """What the rule cannot see (docs/format/wal.md): damage at or after the
    newest intact record's ``synced`` offset looks like never-synced data,
    even when a sync did cover it later (after the newest record was
    appended): it is cut as a torn tail. Single FULL writer: only the last
    record is in that window (as in version 1)."""
    offs = segment(6)[1]
    data, offs = segment(6, [24, offs[1], offs[1], offs[1], offs[1], offs[1]])
    damaged = bytearray(data)
    damaged[offs[3] + RH] ^= 1  # a body byte of record 4, which record 6 says was not yet synced
    s = scan_segment_bytes(bytes(damaged), PATH)
    assert s.damage is not None and s.damage.is_tail and s.valid_end == offs[3]


def test_version_1_segment_keeps_version_1_rules() -> None:
    data = bytearray(wf.encode_segment_header(1, 1))
    offs = []
    for i in range(6):
        offs.append(len(data))
        data += wf.encode_record_v1(i + 1, 1, 0, body(i + 1))
    s = scan_segment_bytes(hole(bytes(data), offs[2], offs[3]), PATH)
    assert s.version == 1 and s.damage is not None and not s.damage.is_tail  # an intact record follows


# ---- the writer fills synced ---------------------------------------------------------------------


def _synced_of(fs: CrashFS, path: str) -> list[tuple[int, int]]:
    s = scan_segment_bytes(fs.read_file(path), path)
    assert s.damage is None and s.version == 2
    return [(r.offset, r.synced) for r in s.records]


def test_writer_synced_offset_single_full_writer() -> None:
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", sync="full")
    for i in range(5):
        db.put(b"k%d" % i, b"v")
    path = db._wal.segment_path
    assert db._wal.synced_offset == db._wal.segment_bytes
    got = _synced_of(fs, path)
    assert got[0][1] == HS  # open synced the new segment (its name): the header
    assert all(off == synced for off, synced in got[1:])
    db.close()


def test_writer_synced_offset_lags_at_off_and_resets_at_rotation() -> None:
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", sync="off", wal_segment_size=4096)
    first = db._wal.segment_path
    for i in range(3):
        db.put(b"k%d" % i, b"v")
    assert {s for _, s in _synced_of(fs, first)} == {0}  # nothing of the segment synced yet
    db.sync_wal()
    mark = db._wal.segment_bytes
    assert db._wal.synced_offset == mark
    db.put(b"x", b"y")
    assert _synced_of(fs, first)[-1][1] == mark
    for i in range(150):  # rotates: the new segment starts unsynced
        db.put(b"r%d" % i, b"v" * 20)
    seg = db._wal.segment_path
    assert seg != first
    assert _synced_of(fs, seg)[0][1] == 0
    db.close()
