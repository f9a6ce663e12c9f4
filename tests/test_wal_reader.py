"""WAL reading and recovery (lsm/wal/reader.py): framing edge cases in the
manner of leveldb's log_test.cc, the torn-tail rule, sequence checks, the
three recovery modes, and a Hypothesis test that damage never turns into
altered data."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lsm.base import filenames
from lsm.base.coding import MAX_SEQ
from lsm.base.errors import CorruptionError
from lsm.base.fs import DEFAULT_FS
from lsm.wal import format as wf
from lsm.wal.reader import ReplayResult, WalRecord, replay, scan_segment, scan_segment_bytes

FS = DEFAULT_FS
HS = wf.SEGMENT_HEADER_SIZE
RH = wf.RECORD_HEADER_SIZE
OP = struct.Struct("<BII")


def put_body(key: bytes, value: bytes) -> bytes:
    return OP.pack(1, len(key), len(value)) + key + value


def body_for(seq: int, size: int | None = None) -> bytes:
    if size is None:
        return put_body(b"key%d" % seq, b"value%d" % seq)
    return bytes((seq * 7 + i) % 251 + 1 for i in range(size))  # no zero bytes


@dataclass
class Rec:
    seq: int
    count: int
    body: bytes
    ts: int = 0

    @property
    def last(self) -> int:
        return self.seq + self.count - 1


def chain(first: int, n: int, count: int = 1, size: int | None = None) -> list[Rec]:
    out, seq = [], first
    for _ in range(n):
        out.append(Rec(seq, count, body_for(seq, size), ts=1_700_000_000_000_000 + seq))
        seq += count
    return out


VERSION = wf.FORMAT_VERSION


@pytest.fixture(autouse=True, scope="module", params=[wf.FORMAT_VERSION, wf.FORMAT_VERSION_1])
def version(request: pytest.FixtureRequest):
    """Every test runs on version-2 segments and on version-1 ones (old
    segments are still read, by the version-1 rules). The version-2 records
    are built as a single-threaded FULL writer writes them: each record's
    ``synced`` is its own offset (everything before it was synced before
    it was appended), so the version-2 rule decides as version 1 does;
    tests/test_wal_v2.py covers records that carry older ``synced`` values."""
    global VERSION, RH
    VERSION, RH = request.param, wf.RECORD_HEADER_SIZE if request.param == 2 else wf.RECORD_HEADER_SIZE_V1
    yield request.param
    VERSION, RH = wf.FORMAT_VERSION, wf.RECORD_HEADER_SIZE


def encode(r: Rec, synced: int) -> bytes:
    if VERSION == 1:
        return wf.encode_record_v1(r.seq, r.count, r.ts, r.body)
    return wf.encode_record(r.seq, r.count, r.ts, r.body, synced)


def raw_tail(length: int, seq: int, count: int, ts: int, synced: int = 0) -> bytes:
    """The record header after its crc field, packed by hand."""
    if VERSION == 1:
        return struct.pack("<IQIQ", length, seq, count, ts)
    return struct.pack("<IQIQQ", length, seq, count, ts, synced)


def build(first_seq: int, recs: list[Rec]) -> tuple[bytes, list[int]]:
    """Segment bytes and the offset of each record."""
    data = bytearray(wf.encode_segment_header(first_seq, VERSION))
    offsets = []
    for r in recs:
        offsets.append(len(data))
        data += encode(r, len(data))
    return bytes(data), offsets


def write_seg(d: str, name_seq: int, data: bytes) -> str:
    path = filenames.join(str(d), filenames.wal_name(name_seq))
    FS.write_file(path, data, sync=False)
    return path


def seg(d: object, first: int, recs: list[Rec], *, tail: bytes = b"", header_seq: int | None = None) -> str:
    data, _ = build(first if header_seq is None else header_seq, recs)
    return write_seg(str(d), first, data + tail)


def same(got: list[WalRecord], want: list[Rec]) -> bool:
    return [(r.seq, r.count, r.timestamp_us, r.body) for r in got] == [
        (w.seq, w.count, w.ts, w.body) for w in want
    ]


def flip(data: bytes, i: int, bit: int = 0x01) -> bytes:
    b = bytearray(data)
    b[i] ^= bit
    return bytes(b)


MODES = ("tolerate_tail", "absolute", "point_in_time")


# ---- scan_segment: clean segments ---------------------------------------------------------------


def test_empty_segment(tmp_path: object) -> None:
    path = seg(tmp_path, 1, [])
    s = scan_segment(FS, path)
    assert s.first_seq == 1 and s.records == [] and s.damage is None
    assert s.valid_end == HS == s.file_size
    assert s.next_seq == 1


def test_single_record(tmp_path: object) -> None:
    recs = chain(1, 1)
    path = seg(tmp_path, 1, recs)
    s = scan_segment(FS, path)
    assert s.damage is None and same(s.records, recs)
    assert s.records[0].offset == HS and s.records[0].path == path
    assert s.valid_end == s.file_size
    assert s.next_seq == 2


def test_empty_body_record(tmp_path: object) -> None:
    recs = [Rec(1, 1, b""), Rec(2, 5, b""), Rec(7, 1, b"x")]
    path = seg(tmp_path, 1, recs)
    s = scan_segment(FS, path)
    assert s.damage is None and same(s.records, recs)
    assert s.valid_end == HS + 3 * RH + 1
    assert s.records[1].last_seq == 6


def test_many_records_with_batches(tmp_path: object) -> None:
    recs = chain(10, 1000, count=3)
    path = seg(tmp_path, 10, recs)
    s = scan_segment(FS, path)
    assert s.damage is None and same(s.records, recs)
    assert s.next_seq == 10 + 3000
    r = replay(FS, str(tmp_path), start_seq=9)
    assert same(r.records, recs) and r.last_seq == 3009 and r.truncate is None and r.dropped == []


def test_record_exactly_filling_a_page(tmp_path: object) -> None:
    # header + records end exactly at 4096: no padding, no marker, clean.
    first = Rec(1, 1, body_for(1, 100))
    rest = 4096 - HS - (RH + 100) - RH
    recs = [first, Rec(2, 1, body_for(2, rest))]
    path = seg(tmp_path, 1, recs)
    assert FS.file_size(path) == 4096
    s = scan_segment(FS, path)
    assert s.damage is None and same(s.records, recs) and s.valid_end == 4096


def test_large_record(tmp_path: object) -> None:
    recs = [Rec(1, 1, os.urandom(3 << 20)), Rec(2, 1, b"small")]
    path = seg(tmp_path, 1, recs)
    assert same(scan_segment(FS, path).records, recs)


@pytest.mark.parametrize("pad", [1, 27, 28, 29, 4096, 65536])
def test_all_zero_preallocated_tail_is_clean(tmp_path: object, pad: int) -> None:
    recs = chain(1, 5)
    path = seg(tmp_path, 1, recs, tail=bytes(pad))
    s = scan_segment(FS, path)
    assert s.damage is None and same(s.records, recs)
    assert s.valid_end == s.file_size - pad
    r = replay(FS, str(tmp_path), start_seq=0, mode="absolute")
    assert same(r.records, recs) and r.truncate is None


def test_preallocated_segment_without_records_is_clean(tmp_path: object) -> None:
    path = seg(tmp_path, 1, [], tail=bytes(1 << 16))
    s = scan_segment(FS, path)
    assert s.damage is None and s.records == [] and s.valid_end == HS


def test_scan_segment_bytes_matches_scan_segment(tmp_path: object) -> None:
    data, _ = build(1, chain(1, 3))
    path = write_seg(str(tmp_path), 1, data)
    assert scan_segment_bytes(data, path) == scan_segment(FS, path)


# ---- scan_segment: segment header ---------------------------------------------------------------


@pytest.mark.parametrize("n", range(HS))
def test_truncated_segment_header_is_torn_tail(tmp_path: object, n: int) -> None:
    path = write_seg(str(tmp_path), 5, wf.encode_segment_header(5, VERSION)[:n])
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.is_tail, s.damage
    assert "segment header" in s.damage.reason
    assert s.records == [] and s.valid_end == 0 and s.first_seq == 5
    r = replay(FS, str(tmp_path), start_seq=4)
    assert r.records == [] and r.truncate is None and r.dropped_segments == [path]
    assert r.last_seq == 4 and len(r.dropped) == 1
    with pytest.raises(CorruptionError):
        replay(FS, str(tmp_path), start_seq=4, mode="absolute")


def test_all_zero_segment_is_torn_tail(tmp_path: object) -> None:
    path = write_seg(str(tmp_path), 5, bytes(8192))
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.is_tail
    r = replay(FS, str(tmp_path), start_seq=4)
    assert r.dropped_segments == [path]


def test_short_garbage_header_is_tail(tmp_path: object) -> None:
    # A segment whose header was never synced can hold anything; with no
    # intact record after it, nothing in it was ever durable.
    path = write_seg(str(tmp_path), 5, b"garbage")
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.is_tail
    r = replay(FS, str(tmp_path), start_seq=4)
    assert r.records == [] and r.dropped_segments == [path]
    with pytest.raises(CorruptionError, match="segment header"):
        replay(FS, str(tmp_path), start_seq=4, mode="absolute")


def test_garbage_header_before_intact_records_is_not_tail(tmp_path: object) -> None:
    data, _ = build(5, chain(5, 3))
    path = write_seg(str(tmp_path), 5, b"\xee" * HS + data[HS:])
    s = scan_segment(FS, path)
    assert s.damage is not None and not s.damage.is_tail and "intact record with seq 5" in s.damage.detail


@pytest.mark.parametrize("i", range(HS))
def test_damaged_segment_header(tmp_path: object, i: int) -> None:
    data, _ = build(5, chain(5, 3))
    path = write_seg(str(tmp_path), 5, flip(data, i))
    s = scan_segment(FS, path)
    assert s.damage is not None and not s.damage.is_tail and s.records == []
    with pytest.raises(CorruptionError) as ei:
        replay(FS, str(tmp_path), start_seq=4)
    assert ei.value.path == path
    r = replay(FS, str(tmp_path), start_seq=4, mode="point_in_time")
    assert r.records == [] and r.dropped_segments == [path] and r.truncate is None


def test_unknown_version(tmp_path: object) -> None:
    prefix = struct.pack("<8sIQ", wf.SEGMENT_MAGIC, 99, 1)
    from lsm.base.checksum import masked_crc

    path = write_seg(str(tmp_path), 1, prefix + struct.pack("<I", masked_crc(prefix)))
    with pytest.raises(CorruptionError, match="version 99"):
        replay(FS, str(tmp_path), start_seq=0)
    assert scan_segment(FS, path).damage is not None


def test_segment_name_header_mismatch(tmp_path: object) -> None:
    path = seg(tmp_path, 6, [], header_seq=5)
    s = scan_segment(FS, path)
    assert s.damage is not None and "does not match its name" in s.damage.reason and not s.damage.is_tail
    with pytest.raises(CorruptionError, match="does not match its name"):
        replay(FS, str(tmp_path), start_seq=5)
    # explicit expectation overrides the name
    assert scan_segment(FS, path, expected_first_seq=5).damage is None


def test_record_seq_must_match_segment_first_seq(tmp_path: object) -> None:
    path = seg(tmp_path, 5, chain(6, 2), header_seq=5)
    s = scan_segment(FS, path)
    assert s.damage is not None and "sequence gap: expected 5, found 6" in s.damage.reason


# ---- scan_segment: torn and damaged records ------------------------------------------------------


@pytest.mark.parametrize("n", range(1, wf.RECORD_HEADER_SIZE))
def test_truncated_record_header_is_torn_tail(tmp_path: object, n: int) -> None:
    if n >= RH:
        pytest.skip("a version-1 record header is shorter")
    recs = chain(1, 3)
    data, offs = build(1, recs)
    path = write_seg(str(tmp_path), 1, data[: offs[2] + n])
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.is_tail
    assert s.damage.reason.startswith("truncated record header") and s.damage.offset == offs[2]
    assert same(s.records, recs[:2]) and s.valid_end == offs[2]
    r = replay(FS, str(tmp_path), start_seq=0)
    assert same(r.records, recs[:2]) and r.truncate == (path, offs[2]) and r.last_seq == 2
    assert len(r.dropped) == 1 and str(n) in r.dropped[0]
    with pytest.raises(CorruptionError, match="truncated record header"):
        replay(FS, str(tmp_path), start_seq=0, mode="absolute")


def test_truncated_payload_at_every_byte(tmp_path: object) -> None:
    recs = chain(1, 2) + [Rec(3, 2, body_for(3, 60))]
    data, offs = build(1, recs)
    path = filenames.join(str(tmp_path), filenames.wal_name(1))
    for cut in range(offs[2] + RH, len(data)):
        FS.write_file(path, data[:cut], sync=False)
        s = scan_segment(FS, path)
        assert s.damage is not None and s.damage.is_tail, cut
        assert s.damage.reason.startswith("truncated payload")
        assert same(s.records, recs[:2]) and s.valid_end == offs[2]
        r = replay(FS, str(tmp_path), start_seq=0)
        assert same(r.records, recs[:2]) and r.truncate == (path, offs[2])
    FS.write_file(path, data, sync=False)
    assert same(replay(FS, str(tmp_path), start_seq=0).records, recs)


def test_first_record_torn_drops_the_segment(tmp_path: object) -> None:
    # The cut would leave no record: the whole segment is set aside, never
    # truncated to a header-only file.
    data, _ = build(1, chain(1, 1))
    path = write_seg(str(tmp_path), 1, data[:-3])
    r = replay(FS, str(tmp_path), start_seq=0)
    assert r.records == [] and r.truncate is None and r.dropped_segments == [path]


def test_checksum_mismatch_in_last_record_is_tail(tmp_path: object) -> None:
    recs = chain(1, 4)
    data, offs = build(1, recs)
    path = write_seg(str(tmp_path), 1, flip(data, len(data) - 2))
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.reason == "checksum mismatch" and s.damage.is_tail
    r = replay(FS, str(tmp_path), start_seq=0)
    assert same(r.records, recs[:3]) and r.truncate == (path, offs[3])
    with pytest.raises(CorruptionError, match="checksum mismatch"):
        replay(FS, str(tmp_path), start_seq=0, mode="absolute")


def test_checksum_mismatch_in_last_record_before_zero_tail_is_tail(tmp_path: object) -> None:
    recs = chain(1, 4)
    data, _ = build(1, recs)
    path = write_seg(str(tmp_path), 1, flip(data, len(data) - 2) + bytes(4096))
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.is_tail
    assert same(replay(FS, str(tmp_path), start_seq=0).records, recs[:3])


def test_torn_write_into_preallocated_zeros_is_tail(tmp_path: object) -> None:
    # Header of the last record written, its payload only partly: zeros follow.
    recs = chain(1, 3, size=100)
    data, offs = build(1, recs)
    torn = data[: offs[2] + RH + 40] + bytes(len(data) - offs[2] - RH - 40) + bytes(1000)
    path = write_seg(str(tmp_path), 1, torn)
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.reason == "checksum mismatch" and s.damage.is_tail
    r = replay(FS, str(tmp_path), start_seq=0)
    assert same(r.records, recs[:2]) and r.truncate == (path, offs[2])


def test_checksum_mismatch_in_middle_record(tmp_path: object) -> None:
    recs = chain(1, 5)
    data, offs = build(1, recs)
    path = write_seg(str(tmp_path), 1, flip(data, offs[2] + RH + 3))
    s = scan_segment(FS, path)
    assert s.damage is not None and not s.damage.is_tail and s.damage.offset == offs[2]
    if VERSION == 1:
        assert f"intact record with seq 4 starts where the damaged one ends, at offset {offs[3]}" in s.damage.detail
    else:
        assert f"intact record with seq 4 at offset {offs[3]} was appended when the segment was durable" in (
            s.damage.detail
        )
    with pytest.raises(CorruptionError, match="checksum mismatch in the middle of the log") as ei:
        replay(FS, str(tmp_path), start_seq=0)
    assert ei.value.path == path and ei.value.offset == offs[2]
    r = replay(FS, str(tmp_path), start_seq=0, mode="point_in_time")
    assert same(r.records, recs[:2]) and r.last_seq == 2
    assert r.truncate == (path, offs[2]) and r.dropped_segments == []
    assert len(r.dropped) == 1 and "checksum mismatch" in r.dropped[0]


def test_huge_length_in_last_record_is_tail(tmp_path: object) -> None:
    recs = chain(1, 3)
    data, offs = build(1, recs)
    bad = bytearray(data)
    struct.pack_into("<I", bad, offs[2] + 4, 0xFFFFFFF0)
    path = write_seg(str(tmp_path), 1, bytes(bad))
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.is_tail
    assert "length 4294967280 runs past end of file" in s.damage.reason
    assert same(replay(FS, str(tmp_path), start_seq=0).records, recs[:2])


def test_huge_length_in_middle_record_is_not_tail(tmp_path: object) -> None:
    # The damaged record seems to reach past the end of the file, but an
    # intact record follows it: the probe must find it and fail closed.
    recs = chain(1, 4)
    data, offs = build(1, recs)
    bad = bytearray(data)
    struct.pack_into("<I", bad, offs[1] + 4, 1 << 30)
    path = write_seg(str(tmp_path), 1, bytes(bad))
    s = scan_segment(FS, path)
    assert s.damage is not None and not s.damage.is_tail
    if VERSION == 1:
        assert f"intact record with seq 3 follows at offset {offs[2]}" in s.damage.detail
    else:
        assert f"intact record with seq 3 at offset {offs[2]} was appended" in s.damage.detail
    with pytest.raises(CorruptionError, match="intact record"):
        replay(FS, str(tmp_path), start_seq=0)
    assert same(replay(FS, str(tmp_path), start_seq=0, mode="point_in_time").records, recs[:1])


def test_length_pointing_into_zero_tail_is_not_tail(tmp_path: object) -> None:
    # A middle record's length lands its end inside the preallocated zeros.
    recs = chain(1, 4, size=50)
    data, offs = build(1, recs)
    bad = bytearray(data + bytes(8192))
    struct.pack_into("<I", bad, offs[1] + 4, len(data) + 100 - offs[1] - RH)
    path = write_seg(str(tmp_path), 1, bytes(bad))
    s = scan_segment(FS, path)
    assert s.damage is not None and not s.damage.is_tail and "intact record" in s.damage.detail


def test_short_length_in_last_record_is_tail(tmp_path: object) -> None:
    # A smaller length leaves the rest of the body after the declared end,
    # but no intact record follows: indistinguishable from a torn write
    # followed by garbage, so tolerate_tail discards it (absolute refuses).
    recs = chain(1, 2, size=40)
    data, offs = build(1, recs)
    bad = bytearray(data)
    struct.pack_into("<I", bad, offs[1] + 4, 10)
    path = write_seg(str(tmp_path), 1, bytes(bad))
    r = replay(FS, str(tmp_path), start_seq=0)
    assert same(r.records, recs[:1]) and r.truncate == (path, offs[1])
    with pytest.raises(CorruptionError):
        replay(FS, str(tmp_path), start_seq=0, mode="absolute")


def test_torn_record_followed_by_garbage_is_tail(tmp_path: object) -> None:
    # What a power cut can leave in never-synced blocks: the last record
    # cut short, then random bytes to the end of the file.
    import random

    recs = chain(1, 4, size=60)
    data, offs = build(1, recs)
    rng = random.Random(5)
    for cut in range(offs[3] + 1, len(data)):
        path = write_seg(str(tmp_path), 1, data[:cut] + rng.randbytes(len(data) - cut + 200))
        r = replay(FS, str(tmp_path), start_seq=0)
        assert same(r.records, recs[:3]) and r.truncate == (path, offs[3]), cut


def test_checksum_mismatch_with_damaged_length_in_middle_is_found(tmp_path: object) -> None:
    # Length and body both damaged in a middle record: the record after it
    # is still found by its sequence number, so the open fails closed.
    recs = chain(1, 5, size=30)
    data, offs = build(1, recs)
    bad = bytearray(data)
    struct.pack_into("<I", bad, offs[1] + 4, 7)
    bad[offs[1] + RH + 2] ^= 0xFF
    write_seg(str(tmp_path), 1, bytes(bad))
    with pytest.raises(CorruptionError, match="intact record with seq 3"):
        replay(FS, str(tmp_path), start_seq=0)


def test_nonzero_garbage_after_end_marker_is_tail(tmp_path: object) -> None:
    recs = chain(1, 3)
    data, _ = build(1, recs)
    path = write_seg(str(tmp_path), 1, data + bytes(100) + b"\x07" + bytes(50))
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.is_tail
    assert s.damage.reason == "non-zero bytes after end-of-data marker"
    assert s.damage.offset == len(data) + 100 and s.valid_end == len(data)
    r = replay(FS, str(tmp_path), start_seq=0)
    assert same(r.records, recs) and r.truncate == (path, len(data))
    with pytest.raises(CorruptionError, match="end-of-data marker"):
        replay(FS, str(tmp_path), start_seq=0, mode="absolute")


def test_hole_of_zeros_before_an_intact_record_is_damage(tmp_path: object) -> None:
    # A zeroed stretch in the middle of the log: the record after it is
    # intact, so the zeros are lost data, not the end.
    recs = chain(1, 4)
    data, offs = build(1, recs)
    holed = data[: offs[2]] + bytes(offs[3] - offs[2]) + data[offs[3]:]
    path = write_seg(str(tmp_path), 1, holed)
    s = scan_segment(FS, path)
    assert s.damage is not None and not s.damage.is_tail
    assert "intact record with seq 4" in s.damage.detail
    with pytest.raises(CorruptionError, match="end-of-data marker"):
        replay(FS, str(tmp_path), start_seq=0)
    r = replay(FS, str(tmp_path), start_seq=0, mode="point_in_time")
    assert same(r.records, recs[:2]) and r.truncate == (path, offs[2])


def test_garbage_shorter_than_header_after_records_is_tail(tmp_path: object) -> None:
    recs = chain(1, 3)
    data, _ = build(1, recs)
    path = write_seg(str(tmp_path), 1, data + b"\x00\x00\x05")
    r = replay(FS, str(tmp_path), start_seq=0)
    assert same(r.records, recs) and r.truncate == (path, len(data))


def test_header_zero_but_timestamp_is_not_an_end_marker(tmp_path: object) -> None:
    # Only an all-zero header ends the data; one non-zero byte makes it a
    # (torn) record that fails its checksum.
    recs = chain(1, 2)
    data, _ = build(1, recs)
    hdr = bytearray(RH)
    hdr[27] = 1
    path = write_seg(str(tmp_path), 1, data + bytes(hdr) + bytes(100))
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.reason == "checksum mismatch" and s.damage.is_tail
    with pytest.raises(CorruptionError):
        replay(FS, str(tmp_path), start_seq=0, mode="absolute")


def test_probe_gives_up_and_fails_closed(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    # A torn last record whose partial body holds many copies of the next
    # seq's 8 bytes: each is a candidate header to check. Past the limit the
    # probe assumes an intact record may follow.
    from lsm.wal import torn_tail

    recs = [Rec(1, 1, b"a"), Rec(2, 1, struct.pack("<Q", 3) * 50)]
    data, _ = build(1, recs)
    path = write_seg(str(tmp_path), 1, data[:-1])
    assert scan_segment(FS, path).damage.is_tail  # type: ignore[union-attr]
    monkeypatch.setattr(torn_tail, "_PROBE_LIMIT", 10)
    s = scan_segment(FS, path)
    assert s.damage is not None and not s.damage.is_tail and "cannot rule out" in s.damage.detail
    with pytest.raises(CorruptionError, match="cannot rule out"):
        replay(FS, str(tmp_path), start_seq=0)


def test_damage_describe(tmp_path: object) -> None:
    recs = chain(1, 3)
    data, offs = build(1, recs)
    path = write_seg(str(tmp_path), 1, flip(data, offs[1] + RH + 1))
    s = scan_segment(FS, path)
    assert s.damage is not None
    text = s.damage.describe()
    assert text.startswith(f"checksum mismatch in {path} at offset {offs[1]} (")


def test_record_with_zero_count_is_corruption(tmp_path: object) -> None:
    from lsm.base.checksum import masked_crc

    good, _ = build(1, chain(1, 1))
    tail = raw_tail(0, 2, 0, 0)
    bad = good + struct.pack("<I", masked_crc(tail)) + tail
    write_seg(str(tmp_path), 1, bad)
    with pytest.raises(CorruptionError, match="invalid record"):
        replay(FS, str(tmp_path), start_seq=0)


def test_seq_beyond_max_is_corruption(tmp_path: object) -> None:
    from lsm.base.checksum import masked_crc

    hdr = wf.encode_segment_header(MAX_SEQ, VERSION)
    tail = raw_tail(0, MAX_SEQ, 2, 0)
    write_seg(str(tmp_path), MAX_SEQ, hdr + struct.pack("<I", masked_crc(tail)) + tail)
    s = scan_segment(FS, filenames.join(str(tmp_path), filenames.wal_name(MAX_SEQ)))
    assert s.damage is not None and "invalid record" in s.damage.reason


# ---- sequence checks ---------------------------------------------------------------------------------


def test_seq_gap_within_segment(tmp_path: object) -> None:
    recs = chain(1, 3) + chain(10, 2)
    path = seg(tmp_path, 1, recs)
    s = scan_segment(FS, path)
    assert s.damage is not None and s.damage.reason == "sequence gap: expected 4, found 10"
    assert not s.damage.is_tail  # even in the last segment: its checksum matched
    with pytest.raises(CorruptionError, match="sequence gap: expected 4, found 10"):
        replay(FS, str(tmp_path), start_seq=0)
    r = replay(FS, str(tmp_path), start_seq=0, mode="point_in_time")
    assert same(r.records, recs[:3]) and r.last_seq == 3


def test_seq_out_of_order_within_segment(tmp_path: object) -> None:
    recs = chain(1, 3) + [Rec(2, 1, b"dup")]
    seg(tmp_path, 1, recs)
    with pytest.raises(CorruptionError, match="sequence out of order: expected 4, found 2"):
        replay(FS, str(tmp_path), start_seq=0)


def test_contiguous_segments(tmp_path: object) -> None:
    a, b, c = chain(1, 3, count=2), chain(7, 4), chain(11, 1, count=5)
    seg(tmp_path, 1, a)
    seg(tmp_path, 7, b)
    seg(tmp_path, 11, c)
    r = replay(FS, str(tmp_path), start_seq=0)
    assert same(r.records, a + b + c) and r.last_seq == 15 and len(r.segments) == 3


def test_gap_across_segments(tmp_path: object) -> None:
    seg(tmp_path, 1, chain(1, 3))
    p2 = seg(tmp_path, 5, chain(5, 2))
    p3 = seg(tmp_path, 7, chain(7, 2))
    with pytest.raises(
        CorruptionError, match="sequence gap between segments: expected a segment starting at 4"
    ):
        replay(FS, str(tmp_path), start_seq=0)
    r = replay(FS, str(tmp_path), start_seq=0, mode="point_in_time")
    assert same(r.records, chain(1, 3)) and r.truncate is None and r.dropped_segments == [p2, p3]
    assert len(r.dropped) == 2


def test_overlap_across_segments(tmp_path: object) -> None:
    seg(tmp_path, 1, chain(1, 3))
    seg(tmp_path, 3, chain(3, 2))
    with pytest.raises(CorruptionError, match="sequence overlap"):
        replay(FS, str(tmp_path), start_seq=0)


def test_empty_segments_in_the_middle(tmp_path: object) -> None:
    a, b = chain(1, 3), chain(4, 2)
    seg(tmp_path, 1, a)
    seg(tmp_path, 4, [])
    seg(tmp_path, 4 + 0, [])  # same name: rewritten, still one segment
    p = seg(tmp_path, 4, [])
    assert os.listdir(str(tmp_path)).count(os.path.basename(p)) == 1
    seg(tmp_path, 5, [])  # follows an empty segment: only the record chain constrains it
    r = replay(FS, str(tmp_path), start_seq=0, mode="absolute")
    assert same(r.records, a) and len(r.segments) == 3
    seg(tmp_path, 6, b[:0])
    seg(tmp_path, 4, b)  # records 4.. in the segment named 4
    with pytest.raises(CorruptionError, match="sequence overlap"):
        replay(FS, str(tmp_path), start_seq=0)  # 5 follows 4, which now holds records 4..5


def test_records_chain_across_an_empty_segment(tmp_path: object) -> None:
    # An empty segment only constrains through the record chain.
    seg(tmp_path, 1, chain(1, 3))
    seg(tmp_path, 4, [])
    p = seg(tmp_path, 6, chain(6, 1))
    with pytest.raises(CorruptionError, match="sequence gap: expected 4, found 6") as ei:
        replay(FS, str(tmp_path), start_seq=0)
    assert ei.value.path == p and ei.value.offset == HS


def test_gap_between_start_seq_and_log(tmp_path: object) -> None:
    seg(tmp_path, 11, chain(11, 3))
    with pytest.raises(CorruptionError, match="oldest WAL segment starts at 11, expected 6 or below"):
        replay(FS, str(tmp_path), start_seq=5)
    r = replay(FS, str(tmp_path), start_seq=5, mode="point_in_time")
    assert r.records == [] and r.last_seq == 5
    assert same(replay(FS, str(tmp_path), start_seq=10).records, chain(11, 3))


def test_empty_newer_segment_is_a_gap(tmp_path: object) -> None:
    # Segments are deleted only after a flush covers them, so an oldest
    # segment named above start_seq + 1 means commits 6..10 are gone, even
    # when it holds no record (a damaged last manifest edit that had been
    # acted on looks like this).
    p = seg(tmp_path, 11, [])
    with pytest.raises(CorruptionError, match="oldest WAL segment starts at 11") as ei:
        replay(FS, str(tmp_path), start_seq=5, mode="tolerate_tail")
    assert ei.value.path == p
    r = replay(FS, str(tmp_path), start_seq=5, mode="point_in_time")
    assert r.records == [] and r.last_seq == 5 and r.dropped_segments == [p]
    assert replay(FS, str(tmp_path), start_seq=10, mode="absolute").records == []


def test_no_segments(tmp_path: object) -> None:
    for mode in MODES:
        r = replay(FS, str(tmp_path), start_seq=7, mode=mode)
        assert r == ReplayResult([], 7, [], None, [], [])


def test_other_files_are_ignored(tmp_path: object) -> None:
    seg(tmp_path, 1, chain(1, 2))
    for name in ("000001.sst", "CURRENT", "1.wal", "x.wal", "00000000000000000003.wal.dropped", "LOG"):
        FS.write_file(filenames.join(str(tmp_path), name), b"junk", sync=False)
    os.mkdir(os.path.join(str(tmp_path), "archive"))
    assert same(replay(FS, str(tmp_path), start_seq=0).records, chain(1, 2))


# ---- start_seq ---------------------------------------------------------------------------------------------


def test_start_seq_skips_old_segments_unread(tmp_path: object) -> None:
    p1 = write_seg(str(tmp_path), 1, b"garbage that is never read")
    p2 = seg(tmp_path, 11, chain(11, 10), tail=b"\x01")  # damaged, but skipped too
    c = chain(21, 5)
    p3 = seg(tmp_path, 21, c)
    r = replay(FS, str(tmp_path), start_seq=20, mode="absolute")
    assert same(r.records, c) and [s.path for s in r.segments] == [p3]
    assert p1 not in r.dropped_segments and p2 not in r.dropped_segments


def test_start_seq_inside_a_segment(tmp_path: object) -> None:
    a = chain(1, 10, count=2)  # seqs 1..20
    seg(tmp_path, 1, a)
    r = replay(FS, str(tmp_path), start_seq=8)
    assert same(r.records, a[4:]) and r.last_seq == 20
    assert replay(FS, str(tmp_path), start_seq=20).records == []
    r = replay(FS, str(tmp_path), start_seq=100)
    assert r.records == [] and r.last_seq == 100


def test_old_records_are_still_checked(tmp_path: object) -> None:
    a = chain(1, 10)
    data, offs = build(1, a)
    write_seg(str(tmp_path), 1, flip(data, offs[2] + RH))
    with pytest.raises(CorruptionError, match="checksum mismatch"):
        replay(FS, str(tmp_path), start_seq=5)
    r = replay(FS, str(tmp_path), start_seq=5, mode="point_in_time")
    assert r.records == [] and r.last_seq == 5


def test_record_straddling_start_seq(tmp_path: object) -> None:
    recs = [Rec(1, 3, b"a"), Rec(4, 3, b"b"), Rec(7, 1, b"c")]
    data, offs = build(1, recs)
    path = write_seg(str(tmp_path), 1, data)
    with pytest.raises(CorruptionError, match="straddles") as ei:
        replay(FS, str(tmp_path), start_seq=5)
    assert ei.value.offset == offs[1]
    r = replay(FS, str(tmp_path), start_seq=5, mode="point_in_time")
    assert r.records == [] and r.truncate == (path, offs[1]) and r.last_seq == 5
    assert same(replay(FS, str(tmp_path), start_seq=6).records, recs[2:])
    assert same(replay(FS, str(tmp_path), start_seq=3).records, recs[1:])


# ---- modes and segments --------------------------------------------------------------------------------


def test_torn_tail_in_older_segment_is_corruption(tmp_path: object) -> None:
    a = chain(1, 3)
    data, offs = build(1, a)
    p1 = write_seg(str(tmp_path), 1, data[:-5])
    p2 = seg(tmp_path, 3, chain(3, 2))
    with pytest.raises(CorruptionError, match="not the newest") as ei:
        replay(FS, str(tmp_path), start_seq=0)
    assert ei.value.path == p1
    with pytest.raises(CorruptionError):
        replay(FS, str(tmp_path), start_seq=0, mode="absolute")
    r = replay(FS, str(tmp_path), start_seq=0, mode="point_in_time")
    assert same(r.records, a[:2]) and r.truncate == (p1, offs[2]) and r.dropped_segments == [p2]
    assert len(r.dropped) == 2 and p2 in r.dropped[1]


def test_torn_header_in_older_segment_is_corruption(tmp_path: object) -> None:
    seg(tmp_path, 1, chain(1, 3))
    write_seg(str(tmp_path), 4, wf.encode_segment_header(4, VERSION)[:10])
    seg(tmp_path, 5, chain(5, 1))
    with pytest.raises(CorruptionError, match="not the newest"):
        replay(FS, str(tmp_path), start_seq=0)


def test_torn_tail_only_in_newest_segment(tmp_path: object) -> None:
    a, b = chain(1, 3), chain(4, 3)
    seg(tmp_path, 1, a)
    data, offs = build(4, b)
    p2 = write_seg(str(tmp_path), 4, data[:-1])
    r = replay(FS, str(tmp_path), start_seq=0)
    assert same(r.records, a + b[:2]) and r.truncate == (p2, offs[2]) and r.last_seq == 5
    assert r.dropped_segments == [] and len(r.segments) == 2


def test_newest_segment_torn_at_creation(tmp_path: object) -> None:
    a = chain(1, 3)
    seg(tmp_path, 1, a)
    p2 = write_seg(str(tmp_path), 4, b"")
    r = replay(FS, str(tmp_path), start_seq=0)
    assert same(r.records, a) and r.truncate is None and r.dropped_segments == [p2]
    with pytest.raises(CorruptionError, match="segment header"):
        replay(FS, str(tmp_path), start_seq=0, mode="absolute")


def test_unknown_mode(tmp_path: object) -> None:
    with pytest.raises(ValueError, match="wal_recovery"):
        replay(FS, str(tmp_path), start_seq=0, mode="skip_any")


def test_missing_directory_raises_oserror(tmp_path: object) -> None:
    with pytest.raises(OSError):
        replay(FS, os.path.join(str(tmp_path), "nope"), start_seq=0, mode="point_in_time")


def test_reader_changes_nothing_on_disk(tmp_path: object) -> None:
    a = chain(1, 3)
    data, _ = build(1, a)
    p = write_seg(str(tmp_path), 1, data[:-4])
    before = sorted(os.listdir(str(tmp_path)))
    for mode in ("tolerate_tail", "point_in_time"):
        replay(FS, str(tmp_path), start_seq=0, mode=mode)
    assert sorted(os.listdir(str(tmp_path))) == before and FS.read_file(p) == data[:-4]


# ---- exhaustive damage of a small log -----------------------------------------------------------------------


def _small_log() -> tuple[list[list[Rec]], list[bytes], list[list[int]]]:
    segs = [chain(1, 3, count=2, size=20), chain(7, 2, size=0) + chain(9, 1, count=3)]
    built = [build(s[0].seq, s) for s in segs]
    return segs, [b[0] for b in built], [b[1] for b in built]


def _write_log(d: str, segs: list[list[Rec]], datas: list[bytes]) -> list[str]:
    for name in os.listdir(d):
        os.unlink(os.path.join(d, name))
    return [write_seg(d, s[0].seq, data) for s, data in zip(segs, datas)]


def _record_index(offs: list[int], pos: int) -> int:
    """Index of the record holding byte ``pos`` (-1: segment header)."""
    if pos < HS:
        return -1
    return max(i for i, o in enumerate(offs) if o <= pos)


def test_every_byte_flip(tmp_path: object) -> None:
    segs, datas, offs = _small_log()
    for j in range(len(segs)):
        for pos in range(len(datas[j])):
            damaged = list(datas)
            damaged[j] = flip(datas[j], pos, 0x10)
            _write_log(str(tmp_path), segs, damaged)
            k = _record_index(offs[j], pos)
            kept = [r for s in segs[:j] for r in s] + (segs[j][:k] if k >= 0 else [])
            r = replay(FS, str(tmp_path), start_seq=0, mode="point_in_time")
            assert same(r.records, kept), (j, pos)
            last_record_of_log = j == len(segs) - 1 and k == len(segs[j]) - 1
            try:
                t = replay(FS, str(tmp_path), start_seq=0)
            except CorruptionError:
                pass
            else:
                assert last_record_of_log, (j, pos)
                assert same(t.records, kept)
            with pytest.raises(CorruptionError):
                replay(FS, str(tmp_path), start_seq=0, mode="absolute")


def test_every_truncation(tmp_path: object) -> None:
    segs, datas, offs = _small_log()
    for j in range(len(segs)):
        for cut in range(len(datas[j])):
            damaged = list(datas)
            damaged[j] = datas[j][:cut]
            _write_log(str(tmp_path), segs, damaged)
            whole = [i for i, o in enumerate(offs[j]) if o + RH + len(segs[j][i].body) <= cut]
            kept = [r for s in segs[:j] for r in s] + [segs[j][i] for i in whole]
            r = replay(FS, str(tmp_path), start_seq=0, mode="point_in_time")
            assert same(r.records, kept), (j, cut)
            if j == len(segs) - 1:
                t = replay(FS, str(tmp_path), start_seq=0)  # a cut newest segment is always a torn tail
                assert same(t.records, kept), (j, cut)
            else:
                with pytest.raises(CorruptionError):
                    replay(FS, str(tmp_path), start_seq=0)


# ---- Hypothesis: damage never becomes altered data -----------------------------------------------------------


@st.composite
def logs(draw: st.DrawFn) -> tuple[list[list[Rec]], list[int], int, int]:
    """Segments of contiguous records (some empty), their first seqs, the
    zero padding of the newest segment and a start_seq at a batch boundary."""
    seq = 1
    segs: list[list[Rec]] = []
    firsts: list[int] = []
    nsegs = draw(st.integers(1, 3))
    for i in range(nsegs):
        firsts.append(seq)
        recs = []
        # Only the newest segment may be empty: an empty segment is named
        # like its successor, so two files would share one name.
        for _ in range(draw(st.integers(0 if i == nsegs - 1 else 1, 4))):
            count = draw(st.integers(1, 3))
            recs.append(Rec(seq, count, draw(st.binary(max_size=40)), ts=draw(st.integers(0, 2**64 - 1))))
            seq += count
        segs.append(recs)
    pad = draw(st.sampled_from([0, 0, 5, 64]))
    start_seq = draw(st.sampled_from([0] + [r.last for s in segs for r in s]))
    return segs, firsts, pad, start_seq


@settings(max_examples=max(300, settings().max_examples))
@given(log=logs(), data=st.data())
def test_damage_never_returns_altered_data(
    tmp_path_factory: pytest.TempPathFactory,
    log: tuple[list[list[Rec]], list[int], int, int],
    data: st.DataObject,
) -> None:
    """One random byte change or truncation anywhere: point_in_time returns
    exactly the records before the damage; tolerate_tail and absolute return
    that same prefix or raise CorruptionError, and forgive only what they
    may. Never another exception, never altered data."""
    segs, firsts, pad, start_seq = log
    d = str(tmp_path_factory.mktemp("wal"))
    n = len(segs)
    built = [build(first, recs) for first, recs in zip(firsts, segs)]
    datas = [b for b, _ in built]
    datas[-1] += bytes(pad)
    j = data.draw(st.integers(0, n - 1), label="segment")
    kind = data.draw(st.sampled_from(["flip", "truncate"]), label="kind")
    pos = data.draw(st.integers(0, len(datas[j]) - 1), label="pos")
    damaged = list(datas)
    if kind == "flip":
        damaged[j] = flip(datas[j], pos, data.draw(st.integers(1, 255), label="xor"))
    else:
        damaged[j] = datas[j][:pos]
    for first, b in zip(firsts, damaged):
        write_seg(d, first, b)

    # Oracle. Segment j is skipped unread when the next one starts at or
    # below start_seq + 1; else the damage cuts the log at pos.
    recs_j, offs_j = segs[j], built[j][1]
    ends_j = [o + RH + len(r.body) for o, r in zip(offs_j, recs_j)]
    data_end = ends_j[-1] if ends_j else HS
    skipped = j + 1 < n and firsts[j + 1] <= start_seq + 1
    newest = j == n - 1
    before = [r for s in segs[:j] for r in s]
    if skipped or pos >= data_end:  # unread, or only the zero padding changed
        kept = [r for s in segs for r in s]
    else:
        kept = before + [r for r, e in zip(recs_j, ends_j) if e <= pos]
    want = [r for r in kept if r.last > start_seq]

    pit = replay(FS, d, start_seq=start_seq, mode="point_in_time")
    assert same(pit.records, want)
    assert pit.last_seq == (want[-1].last if want else start_seq)

    # The last record, or the header of a newest segment with no records:
    # damage there is indistinguishable from a torn write.
    in_last_record = newest and (pos >= offs_j[-1] if offs_j else True)
    for mode in ("tolerate_tail", "absolute"):
        try:
            r = replay(FS, d, start_seq=start_seq, mode=mode)
        except CorruptionError:
            assert not skipped, "damage in a segment that is never read"
            assert not (mode == "tolerate_tail" and kind == "truncate" and newest), (
                "a cut newest segment is a torn tail"
            )
            assert not (kind == "truncate" and pos >= data_end), "a cut in the zero padding is clean"
            continue
        assert same(r.records, want)
        if kind == "flip" and not skipped:
            assert mode == "tolerate_tail", "absolute forgave a changed byte"
            assert in_last_record or pos >= data_end, "tolerate_tail forgave damage before the last record"
