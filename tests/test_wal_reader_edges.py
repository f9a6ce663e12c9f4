"""The torn-tail decision's rarer paths (lsm/wal/reader.py, lsm/wal/torn_tail.py), one outcome
each: the checksum budget of the follower search failing closed (version 1),
a version-2 chain of intact records broken by a sequence gap (the search
resumes at the record that breaks it), and damaged segment headers whose
file name gives no usable first sequence number (no name; a number out of
range). tests/test_wal_reader.py and tests/test_wal_v2.py hold the main
cases; these close the branches they leave (issue 5, "branch coverage of
the WAL ... target 100%")."""

from __future__ import annotations

import struct

import pytest

from lsm.base import filenames
from lsm.wal import format as wf
from lsm.wal import torn_tail
from lsm.wal.reader import scan_segment_bytes

HS = wf.SEGMENT_HEADER_SIZE
PATH = "/w/00000000000000000001.wal"


def body(seq: int) -> bytes:
    k, v = b"k%d" % seq, b"value-%d" % seq
    return struct.pack("<BII", 1, len(k), len(v)) + k + v


def v1_segment(n: int) -> tuple[bytearray, list[int]]:
    data = bytearray(wf.encode_segment_header(1, 1))
    offs = []
    for i in range(n):
        offs.append(len(data))
        data += wf.encode_record_v1(i + 1, 1, 0, body(i + 1))
    return data, offs


def v2_segment(seqs: list[int], synced: list[int]) -> tuple[bytearray, list[int]]:
    data = bytearray(wf.encode_segment_header(1))
    offs = []
    for seq, s in zip(seqs, synced):
        offs.append(len(data))
        data += wf.encode_record(seq, 1, 0, body(seq), s)
    return data, offs


@pytest.mark.parametrize("budget", [None, 1])
def test_v1_follower_search_byte_budget_fails_closed(monkeypatch: pytest.MonkeyPatch, budget: int | None) -> None:
    """Version 1: record 3 is damaged and the only candidate after it
    (record 4: its seq field matches, its checksum does not) is not intact,
    so the damage is a torn tail. When checksumming the candidates would
    exceed ``_PROBE_BYTES`` the reader cannot rule out an intact record:
    not a tail (fail closed), whatever the candidates turn out to be."""
    if budget is not None:
        monkeypatch.setattr(torn_tail, "_PROBE_BYTES", budget)
    data, offs = v1_segment(4)
    data[offs[2] + wf.RECORD_HEADER_SIZE_V1] ^= 0x01  # record 3's body: checksum mismatch
    data[offs[3] + wf.RECORD_HEADER_SIZE_V1] ^= 0x01  # record 4's body too: no intact follower
    s = scan_segment_bytes(bytes(data), PATH)
    assert s.version == 1 and [r.seq for r in s.records] == [1, 2]
    assert s.damage is not None and s.damage.offset == offs[2]
    if budget is None:
        assert s.damage.is_tail, s.damage
    else:
        assert not s.damage.is_tail
        assert "candidate record headers after it span more than" in s.damage.detail
        assert "cannot rule out an intact record" in s.damage.detail


@pytest.mark.parametrize("late_synced", [False, True])
def test_v2_chain_broken_by_a_sequence_gap_search_resumes(late_synced: bool) -> None:
    """Version 2: record 3 is damaged; records 4 and 5 follow intact and saw
    nothing synced past the damage; the next intact record carries seq 7
    (a gap: it does not continue the chain). The reader searches on from it:
    if it was appended when the segment was durable past the damage, the
    damage was to synced bytes (corruption); if not, a torn tail."""
    offs = v2_segment([1, 2, 3, 4, 5, 7], [0] * 6)[1]
    x = offs[2]  # the damaged record
    synced = [HS, offs[1], offs[1], offs[1], offs[1], offs[5] if late_synced else offs[1]]
    data, offs = v2_segment([1, 2, 3, 4, 5, 7], synced)
    data[x + wf.RECORD_HEADER_SIZE] ^= 0x01  # record 3's body: checksum mismatch
    s = scan_segment_bytes(bytes(data), PATH)
    assert [r.seq for r in s.records] == [1, 2]
    assert s.damage is not None and s.damage.offset == x and s.valid_end == x
    if late_synced:
        assert not s.damage.is_tail
        assert f"seq 7 at offset {offs[5]} was appended when the segment was durable up to offset {offs[5]}" in (
            s.damage.detail
        )
    else:
        assert s.damage.is_tail, s.damage


def test_damaged_header_without_a_first_seq_in_the_name_fails_closed() -> None:
    """A segment whose header fails its checks and whose name is not a WAL
    segment name: nothing says which records to look for, so the damage is
    not called a torn tail."""
    data, _ = v2_segment([1, 2], [HS, HS])
    data[16] ^= 0xFF  # first_seq: the header checksum fails
    s = scan_segment_bytes(bytes(data), "/w/not-a-segment-name")
    assert s.records == [] and s.damage is not None and not s.damage.is_tail
    assert "gives no first sequence number" in s.damage.detail


def test_short_header_of_a_segment_named_out_of_range_is_a_tail() -> None:
    """A header torn short (garbage, not a prefix of any header) in a
    segment whose name is a sequence number past the largest one: the
    reader must not fail on building the header it expected (ValueError);
    no intact record can follow, so it is a torn tail."""
    name = "/w/" + "9" * 20 + ".wal"
    assert filenames.parse_wal(name[3:]) > wf._SEQ_LIMIT
    s = scan_segment_bytes(b"\x07garbage", name)
    assert s.records == [] and s.damage is not None and s.damage.is_tail, s.damage
    assert "bad segment header" in s.damage.reason


@pytest.mark.parametrize("follower", [False, True])
def test_damaged_v1_header_is_judged_by_v1_followers_only(follower: bool) -> None:
    """A version-1 segment whose header checksum fails while its magic and
    version survive: only the version-1 follower search applies. With an
    intact record of the segment's first sequence numbers after it, the
    header was synced, so the damage is mid-log (fail closed); with only
    garbage after it, it is a torn tail. (The version-2 search must not
    run: it would misread version-1 records.)"""
    data, offs = v1_segment(3)
    data[20] ^= 0xFF  # the header's own checksum: magic and version intact
    if not follower:
        data[offs[0]:] = b"\x5a" * (len(data) - offs[0])  # no intact record
    s = scan_segment_bytes(bytes(data), PATH)
    assert s.records == [] and s.damage is not None
    assert s.damage.is_tail is (not follower), s.damage
    if not follower:
        assert "no intact record follows it" in s.damage.detail


def test_encode_op_record_rejects_out_of_range_fields() -> None:
    """The single-op fast path refuses what encode_record refuses, with a
    ValueError naming the field (never a struct.error, never bad bytes)."""
    assert wf.encode_op_record(5, 7, 1, b"k", b"v", 24) == wf.encode_record(5, 1, 7, body_kv(b"k", b"v"), 24)
    with pytest.raises(ValueError, match="bad sequence number"):
        wf.encode_op_record(wf._SEQ_LIMIT, 0, 1, b"k", b"v", 0)
    with pytest.raises(ValueError, match="a field is out of range.*timestamp_us=-1"):
        wf.encode_op_record(5, -1, 1, b"k", b"v", 0)
    with pytest.raises(ValueError, match="synced=-3"):
        wf.encode_op_record(5, 0, 1, b"k", b"v", -3)


def body_kv(k: bytes, v: bytes) -> bytes:
    return struct.pack("<BII", 1, len(k), len(v)) + k + v
