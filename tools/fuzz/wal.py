"""Fuzz targets ``wal_segment`` (``scan_segment_bytes`` of one segment)
and ``wal_replay`` (replay of up to six segments under every recovery
mode), with their seeds and the fix that recomputes the WAL's crcs."""

from __future__ import annotations

import os
import struct
from typing import Any

from fuzz.batch import batch_body, sample_batches
from fuzz.core import L, Target, check


def _masked(data: bytes | bytearray | memoryview) -> int:
    return L.checksum.masked_crc(data)


_WAL_PATH = "/w/00000000000000000005.wal"
_REC = struct.Struct("<IIQIQ")


def _wal_segment(first: int, tail: bytes = b"", *, version: int = 2, lag: int = 0) -> bytes:
    """A segment of the sample batches. Version 2 records carry ``synced``
    as a FULL writer writes it (each record's own offset), or ``lag``
    records behind it (as while a group sync runs: the rule then forgives
    damage that an older ``synced`` does not cover)."""
    wf = L.wal_format
    data = bytearray(wf.encode_segment_header(first, version))
    seq = first
    ends = [len(data)]  # ends[k]: where record k starts
    for i, ops in enumerate(sample_batches() * 2):
        ts, body = 1_700_000_000_000_000 + i, batch_body(ops)
        if version == 1:
            data += wf.encode_record_v1(seq, len(ops), ts, body)
        else:
            k = len(ends) - 1 - lag
            data += wf.encode_record(seq, len(ops), ts, body, ends[k] if k >= 0 else 0)
        ends.append(len(data))
        seq += len(ops)
    return bytes(data) + tail


def _wal_version(data: bytes) -> int:
    """The version a (maybe damaged) segment header claims: 1 or 2 (2 when unknown)."""
    return 1 if len(data) >= 12 and struct.unpack_from("<I", data, 8)[0] == 1 else 2


def _reencode(r: Any, version: int) -> bytes:
    wf = L.wal_format
    if version == 1:
        return wf.encode_record_v1(r.seq, r.count, r.timestamp_us, r.body)
    return wf.encode_record(r.seq, r.count, r.timestamp_us, r.body, r.synced)


def fix_wal(data: bytes) -> bytes:
    """Recompute the header crc and every record crc along the length chain."""
    b = bytearray(data)
    hs = L.wal_format.SEGMENT_HEADER_SIZE
    rh = L.wal_format.RECORD_HEADER_SIZE_V1 if _wal_version(data) == 1 else L.wal_format.RECORD_HEADER_SIZE
    if len(b) >= hs:
        struct.pack_into("<I", b, hs - 4, _masked(b[: hs - 4]))
    off = hs
    while off + rh <= len(b):
        (length,) = struct.unpack_from("<I", b, off + 4)
        end = off + rh + length
        if end > len(b) or not any(b[off : off + rh]):
            break
        struct.pack_into("<I", b, off, _masked(b[off + 4 : end]))
        off = end
    return bytes(b)


def _check_scan(s: Any, data: bytes, first: int | None) -> None:
    rh = L.wal_format.RECORD_HEADER_SIZE_V1 if s.version == 1 else L.wal_format.RECORD_HEADER_SIZE
    expect = s.first_seq
    end = s.valid_end
    for r in s.records:
        raw = _reencode(r, s.version)
        check(
            data[r.offset : r.offset + len(raw)] == raw,
            f"record at {r.offset} does not re-encode to its bytes",
        )
        check(r.seq == expect, f"record at {r.offset}: seq {r.seq}, expected {expect}")
        check(1 <= r.count and r.seq + r.count - 1 <= L.MAX_SEQ, f"record at {r.offset}: bad count {r.count}")
        expect = r.seq + r.count
        end = r.offset + rh + len(r.body)
    if s.records:
        check(s.valid_end == end, f"valid_end {s.valid_end}, last record ends at {end}")
        check(
            first is None or s.first_seq == first, "records returned under a header that contradicts the name"
        )
    check(0 <= s.valid_end <= len(data), f"valid_end {s.valid_end} outside the file")
    if s.damage is None:
        check(not any(data[s.valid_end :]), "clean scan with non-zero bytes after valid_end")
    else:
        check(0 <= s.damage.offset <= len(data), f"damage offset {s.damage.offset} outside the file")


def run_wal_segment(data: bytes) -> str:
    s = L.wal_reader.scan_segment_bytes(data, _WAL_PATH)  # contract: never raises (OSError only, from I/O)
    _check_scan(s, data, 5)
    return "accepted" if s.damage is None else "rejected"


_SEP = b"\xfe--next-segment--\xfe"


class _MemDir:
    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def listdir(self, _d: str) -> list[str]:
        return sorted(self.files)

    def read_file(self, path: str) -> bytes:
        return self.files[os.path.basename(path)]


def run_wal_replay(data: bytes) -> str:
    """Segments separated by _SEP, each named after the first_seq in its
    header (when there is one): replay from two start points under every
    mode. Every mode that succeeds returns what point_in_time returns."""
    files: dict[str, bytes] = {}
    for i, seg in enumerate(data.split(_SEP)[:6]):
        first = struct.unpack_from("<Q", seg, 12)[0] if len(seg) >= 20 else i + 1
        files[L.filenames.wal_name(min(first, 10**20 - 1))] = seg
    names = sorted(files)
    firsts = [L.filenames.parse_wal(n) for n in names]
    result = "rejected"
    for start in sorted({0, max(0, firsts[0] - 1), max(0, firsts[-1] - 1)}):
        got = {}
        for mode in ("point_in_time", "tolerate_tail", "absolute"):
            try:
                r = L.wal_reader.replay(_MemDir(files), "/w", start_seq=start, mode=mode)  # type: ignore[arg-type]
            except L.CorruptionError as e:
                check(mode != "point_in_time", f"point_in_time raised {e!r}")
                check(e.path is not None and os.path.basename(e.path) in files, f"error names {e.path}")
                continue
            seqs = [(x.seq, x.count, x.body) for x in r.records]
            got[mode] = seqs
            check(seqs == got["point_in_time"], f"{mode} returned other records than point_in_time")
            expect = start + 1
            for x in r.records:
                check(x.seq == expect, f"{mode}: record {x.seq}, expected {expect}")
                seg = files[os.path.basename(x.path)]
                raw = _reencode(x, _wal_version(seg))
                check(seg[x.offset : x.offset + len(raw)] == raw, f"{mode}: record does not re-encode")
                expect = x.seq + x.count
            check(r.last_seq == expect - 1, f"{mode}: last_seq {r.last_seq}, records end at {expect - 1}")
            for p in r.dropped_segments + ([r.truncate[0]] if r.truncate else []):
                check(os.path.basename(p) in files, f"{mode}: cuts a file that does not exist: {p}")
            if r.truncate:
                check(
                    0 < r.truncate[1] <= len(files[os.path.basename(r.truncate[0])]), "truncate past the end"
                )
            if mode == "absolute":
                result = "accepted"
    return result


def fix_wal_replay(data: bytes) -> bytes:
    return _SEP.join(fix_wal(s) for s in data.split(_SEP))


def targets() -> list[Target]:
    return [
        Target(
            "wal_segment",
            run_wal_segment,
            lambda: [
                _wal_segment(5),
                _wal_segment(5, bytes(64)),
                _wal_segment(5, lag=3),
                _wal_segment(5, version=1),
                L.wal_format.encode_segment_header(5),
            ],
            fix_wal,
            "scan_segment_bytes of one segment",
        ),
        Target(
            "wal_replay",
            run_wal_replay,
            lambda: [
                _wal_segment(1) + _SEP + _wal_segment(27),
                _wal_segment(1) + _SEP + _wal_segment(27) + _SEP + L.wal_format.encode_segment_header(53),
                _wal_segment(1, version=1) + _SEP + _wal_segment(27, lag=2),
            ],
            fix_wal_replay,
            "replay of up to six segments, every mode, two start points",
        ),
    ]
