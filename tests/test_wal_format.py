"""The WAL byte format (lsm/wal/format.py, docs/format/wal.md): frozen
constants, golden bytes, what each checksum covers, and argument checks."""

from __future__ import annotations

import random
import struct

import pytest

from lsm.base import checksum
from lsm.base.coding import MAX_SEQ
from lsm.base.errors import CorruptionError
from lsm.wal import format as wf

OP = struct.Struct("<BII")


def put_body(key: bytes, value: bytes) -> bytes:
    return OP.pack(1, len(key), len(value)) + key + value


# ---- frozen numbers ------------------------------------------------------------


def test_constants_are_frozen() -> None:
    assert wf.SEGMENT_MAGIC == b"lsmWAL\x00\x00"
    assert wf.FORMAT_VERSION == 2
    assert wf.FORMAT_VERSION_1 == 1
    assert wf.KNOWN_VERSIONS == (1, 2)
    assert wf.SEGMENT_HEADER_SIZE == 24
    assert wf.RECORD_HEADER_SIZE == 36
    assert wf.RECORD_HEADER.format in ("<IIQIQQ", b"<IIQIQQ")
    assert wf.RECORD_HEADER_SIZE_V1 == 28
    assert wf.RECORD_HEADER_V1.format in ("<IIQIQ", b"<IIQIQ")
    assert wf.MAX_BODY_SIZE == 2**32 - 1


# Golden bytes: the worked example of docs/format/wal.md. If these change, the
# on-disk format changed: bump FORMAT_VERSION and update the doc.
GOLDEN_SEGMENT_HEADER_1 = bytes.fromhex("6c736d57414c0000 02000000 0100000000000000 bb1e09bb")
GOLDEN_RECORD_PUT_K_V = bytes.fromhex(
    "eaa17f14 0b000000 0100000000000000 01000000 0000000000000000 1800000000000000"
    " 01 01000000 01000000 6b 76"
)
# Version 1 (read, never written): the worked example of the version-1 section.
GOLDEN_V1_SEGMENT_HEADER_1 = bytes.fromhex("6c736d57414c0000 01000000 0100000000000000 9f7fa982")
GOLDEN_V1_RECORD_PUT_K_V = bytes.fromhex(
    "93261cb3 0b000000 0100000000000000 01000000 0000000000000000 01 01000000 01000000 6b 76"
)


def test_golden_segment_header() -> None:
    assert wf.encode_segment_header(1) == GOLDEN_SEGMENT_HEADER_1
    assert wf.encode_segment_header(1, 1) == GOLDEN_V1_SEGMENT_HEADER_1
    assert wf.decode_segment_header_version(GOLDEN_SEGMENT_HEADER_1, "p") == (2, 1)
    assert wf.decode_segment_header_version(GOLDEN_V1_SEGMENT_HEADER_1, "p") == (1, 1)
    with pytest.raises(ValueError, match="version 3"):
        wf.encode_segment_header(1, 3)


def test_golden_record() -> None:
    assert put_body(b"k", b"v") == bytes.fromhex("0101000000010000006b76")
    assert wf.encode_record(1, 1, 0, put_body(b"k", b"v"), 24) == GOLDEN_RECORD_PUT_K_V
    assert wf.encode_record_v1(1, 1, 0, put_body(b"k", b"v")) == GOLDEN_V1_RECORD_PUT_K_V


# ---- record layout and checksum coverage ------------------------------------------


@pytest.mark.parametrize("body_len", [0, 1, 27, 28, 120, 4096, 70000])
def test_record_layout(body_len: int) -> None:
    rng = random.Random(body_len)
    body = rng.randbytes(body_len)
    rec = wf.encode_record(123456789, 7, 1_700_000_000_123_456, body, 2**40 + 3)
    assert len(rec) == wf.RECORD_HEADER_SIZE + body_len
    crc, length, seq, count, ts, synced = wf.RECORD_HEADER.unpack_from(rec, 0)
    assert (length, seq, count, ts, synced) == (body_len, 123456789, 7, 1_700_000_000_123_456, 2**40 + 3)
    assert rec[wf.RECORD_HEADER_SIZE :] == body
    # The stored crc covers everything after the crc field: header tail + body.
    assert crc == checksum.masked_crc(rec[4:])
    assert checksum.unmask(crc) == checksum.crc(rec[4:])
    old = wf.encode_record_v1(123456789, 7, 1_700_000_000_123_456, body)
    assert len(old) == wf.RECORD_HEADER_SIZE_V1 + body_len
    crc, length, seq, count, ts = wf.RECORD_HEADER_V1.unpack_from(old, 0)
    assert (length, seq, count, ts) == (body_len, 123456789, 7, 1_700_000_000_123_456)
    assert crc == checksum.masked_crc(old[4:]) and old[wf.RECORD_HEADER_SIZE_V1 :] == body


def test_inlined_mask_matches_checksum_module() -> None:
    rng = random.Random(7)
    for _ in range(2000):
        body = rng.randbytes(rng.randrange(0, 64))
        rec = wf.encode_record(rng.randrange(0, MAX_SEQ), 1, rng.randrange(0, 2**64), body, rng.randrange(2**64))
        assert struct.unpack_from("<I", rec)[0] == checksum.masked_crc(rec[4:])


def test_every_byte_is_covered_by_the_checksum() -> None:
    rec = wf.encode_record(42, 3, 99, b"hello world", 1000)
    stored = struct.unpack_from("<I", rec)[0]
    for i in range(4, len(rec)):
        for bit in (0x01, 0x80):
            damaged = bytearray(rec)
            damaged[i] ^= bit
            assert checksum.masked_crc(bytes(damaged[4:])) != stored, (i, bit)


def test_encode_record_accepts_buffers() -> None:
    body = put_body(b"key", b"value")
    ref = wf.encode_record(5, 1, 6, body, 7)
    assert wf.encode_record(5, 1, 6, bytearray(body), 7) == ref
    assert wf.encode_record(5, 1, 6, memoryview(body), 7) == ref
    assert type(ref) is bytes


def test_encode_record_range_checks() -> None:
    for enc in (lambda *a: wf.encode_record(*a, 0), wf.encode_record_v1):
        with pytest.raises(ValueError, match="count"):
            enc(1, 0, 0, b"")
        with pytest.raises(ValueError, match="count"):
            enc(1, -1, 0, b"")
        with pytest.raises(ValueError):
            enc(-1, 1, 0, b"")
        with pytest.raises(ValueError):
            enc(MAX_SEQ, 2, 0, b"")  # last op would be MAX_SEQ + 1
        enc(MAX_SEQ, 1, 0, b"")  # the last sequence number is fine
        with pytest.raises(ValueError, match="timestamp"):
            enc(1, 1, 2**64, b"")
        with pytest.raises(ValueError, match="timestamp"):
            enc(1, 1, -1, b"")
    with pytest.raises(ValueError, match="synced"):
        wf.encode_record(1, 1, 0, b"", -1)
    with pytest.raises(ValueError, match="synced"):
        wf.encode_record(1, 1, 0, b"", 2**64)


# ---- segment header ------------------------------------------------------------------


@pytest.mark.parametrize("first_seq", [0, 1, 2, 255, 256, 2**32, MAX_SEQ, MAX_SEQ + 1])
def test_segment_header_round_trip(first_seq: int) -> None:
    h = wf.encode_segment_header(first_seq)
    assert len(h) == wf.SEGMENT_HEADER_SIZE
    assert h[:8] == wf.SEGMENT_MAGIC
    assert struct.unpack_from("<I", h, 8)[0] == wf.FORMAT_VERSION
    assert struct.unpack_from("<Q", h, 12)[0] == first_seq
    assert struct.unpack_from("<I", h, 20)[0] == checksum.masked_crc(h[:20])
    assert wf.decode_segment_header(h, "x.wal") == first_seq
    assert wf.decode_segment_header(h + b"trailing records", "x.wal") == first_seq


def test_segment_header_range() -> None:
    with pytest.raises(ValueError):
        wf.encode_segment_header(-1)
    with pytest.raises(ValueError):
        wf.encode_segment_header(MAX_SEQ + 2)


def test_decode_segment_header_short() -> None:
    h = wf.encode_segment_header(9)
    for n in range(wf.SEGMENT_HEADER_SIZE):
        with pytest.raises(CorruptionError, match="truncated segment header") as ei:
            wf.decode_segment_header(h[:n], "/d/seg.wal")
        assert ei.value.path == "/d/seg.wal"
        assert ei.value.offset == n
        assert "/d/seg.wal" in str(ei.value)


def test_decode_segment_header_bad_magic() -> None:
    h = bytearray(wf.encode_segment_header(9))
    h[0] ^= 0x20
    with pytest.raises(CorruptionError, match="magic") as ei:
        wf.decode_segment_header(bytes(h), "p")
    assert ei.value.offset == 0


def test_decode_segment_header_unknown_version() -> None:
    # A well-formed header of a future version: reported as a version problem,
    # not as a checksum mismatch.
    prefix = struct.pack("<8sIQ", wf.SEGMENT_MAGIC, 3, 9)
    h = prefix + struct.pack("<I", checksum.masked_crc(prefix))
    with pytest.raises(CorruptionError, match="version 3") as ei:
        wf.decode_segment_header(h, "p")
    assert ei.value.offset == 8


def test_decode_segment_header_every_flip_detected() -> None:
    h = wf.encode_segment_header(123456)
    for i in range(len(h)):
        for bit in range(8):
            damaged = bytearray(h)
            damaged[i] ^= 1 << bit
            with pytest.raises(CorruptionError):
                wf.decode_segment_header(bytes(damaged), "p")


def test_decode_segment_header_first_seq_out_of_range() -> None:
    prefix = struct.pack("<8sIQ", wf.SEGMENT_MAGIC, wf.FORMAT_VERSION, 2**64 - 1)
    h = prefix + struct.pack("<I", checksum.masked_crc(prefix))
    with pytest.raises(CorruptionError, match="out of range"):
        wf.decode_segment_header(h, "p")
