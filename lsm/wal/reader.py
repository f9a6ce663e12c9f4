"""Reading the WAL: framing checks of one segment (:func:`scan_segment`) and
open-time replay of a WAL directory under a recovery mode (:func:`replay`).

Spec: docs/format/wal.md. Contracts:

* Nothing is returned that failed a check: a record is returned only when
  its checksum matches and its sequence numbers continue the log.
* Nothing on disk is changed here. :func:`replay` reports what to cut
  (``truncate``) and which whole segments to set aside
  (``dropped_segments``); ``lsm/recovery.py`` does it.
* A length field never causes an allocation or a read: a segment is read
  whole (segments are at most ``wal_segment_size`` plus one record) and a
  length that runs past the end of it is damage.
* I/O errors (``OSError``) propagate unchanged: they are not corruption.

Torn-tail rule (which damage ``tolerate_tail`` may discard), by the
segment's format version: lsm/wal/torn_tail.py decides it and states it
(docs/format/wal.md, "Torn tail rule"). In short: version-2 damage is
corruption iff an intact record after it was appended when the segment
was known durable past the damage (its ``synced`` field); version-1
damage iff an intact record follows it. Both versions: a record header
cut short by the end of the file is a tail. A record that passes its
checksum but breaks the sequence (gap, overlap, count 0) is never a tail.
``absolute`` refuses every damage, also what the rule cannot tell apart
from a torn write (see there).

Thread-safety: pure functions of their arguments; safe from any thread.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from typing import Final

from lsm.base import filenames
from lsm.base.checksum import masked_crc
from lsm.base.coding import MAX_SEQ
from lsm.base.errors import CorruptionError
from lsm.base.fs import FileSystem
from lsm.options import WAL_RECOVERY_MODES
from lsm.wal.format import (
    FORMAT_VERSION_1,
    RECORD_HEADER,
    RECORD_HEADER_V1,
    SEGMENT_HEADER_SIZE,
    decode_segment_header_version,
)
from lsm.wal.torn_tail import end_marker_why, header_tail, record_damage_why

_NONZERO: Final = re.compile(rb"[^\x00]")


@dataclass(slots=True)
class WalRecord:
    """One intact record: a committed batch of ``count`` ops with sequence
    numbers ``seq .. seq+count-1``."""

    seq: int
    count: int
    timestamp_us: int
    body: bytes
    path: str
    offset: int
    """Offset of the record header in ``path``."""
    synced: int = 0
    """Version 2: the offset up to which the segment was known durable when
    the record was appended (0 in a version-1 segment)."""

    @property
    def last_seq(self) -> int:
        return self.seq + self.count - 1


@dataclass
class Damage:
    """The first problem found in a segment."""

    path: str
    offset: int
    """Where the problem was found (a record header, a field, or the first
    offending byte)."""
    reason: str
    """What is wrong, with the numbers, e.g. ``"checksum mismatch"``."""
    is_tail: bool
    """True iff this is a torn tail (the torn-tail rule, lsm/wal/torn_tail.py:
    no intact record follows it that shows the damaged bytes were synced)."""
    detail: str = ""
    """Why it is not a tail, when it is not (empty for a tail)."""

    def describe(self) -> str:
        s = f"{self.reason} in {self.path} at offset {self.offset}"
        return f"{s} ({self.detail})" if self.detail else s


@dataclass
class SegmentScan:
    """The result of checking one segment file."""

    path: str
    first_seq: int
    """From the header; when the header is unreadable, the expected value
    (the number in the file name, or 0 when neither is known)."""
    records: list[WalRecord]
    """The intact records before the first damage, in order."""
    valid_end: int
    """Offset just past the last intact record (where appends may resume);
    0 when the segment header is unusable."""
    file_size: int
    damage: Damage | None
    """The first damage, or None when the segment is clean to the end of the
    file or to an all-zero tail."""
    version: int = 0
    """The segment's format version (0 when the header is unusable)."""

    @property
    def next_seq(self) -> int:
        """The sequence number the next record (here or in the next
        segment) must carry."""
        if self.records:
            r = self.records[-1]
            return r.seq + r.count
        return self.first_seq


@dataclass
class ReplayResult:
    """What :func:`replay` found and what the caller must do about it."""

    records: list[WalRecord]
    """Records with sequence numbers above ``start_seq``, in order,
    contiguous from ``start_seq + 1``."""
    last_seq: int
    """Highest sequence number in ``records`` (``start_seq`` if none)."""
    segments: list[SegmentScan]
    """Every segment read, in order (segments skipped as wholly at or below
    ``start_seq`` are not read and not listed)."""
    truncate: tuple[str, int] | None
    """(path, offset): cut this segment to ``offset`` bytes (a torn tail
    under ``tolerate_tail``, the damage point under ``point_in_time``). Only
    when the cut keeps at least one record: a segment that would keep none
    (torn header, first record damaged) goes to ``dropped_segments``."""
    dropped: list[str]
    """Human-readable descriptions of everything dropped."""
    dropped_segments: list[str] = field(default_factory=list)
    """Paths of whole segment files to set aside (rename or remove), in
    order: a damaged segment that keeps no record, and every segment after a
    ``point_in_time`` cut. None of their records is replayed."""


def scan_segment(fs: FileSystem, path: str, *, expected_first_seq: int | None = None) -> SegmentScan:
    """Read the segment at ``path`` whole and check it: the header, that its
    first_seq equals ``expected_first_seq`` (by default the number in the
    file name, when the name is a segment name), then each record's framing,
    checksum and sequence continuity, stopping at the first damage. Raises
    only ``OSError`` (from reading)."""
    data = fs.read_file(path)
    return scan_segment_bytes(data, path, expected_first_seq=expected_first_seq)


def scan_segment_bytes(data: bytes, path: str, *, expected_first_seq: int | None = None) -> SegmentScan:
    """:func:`scan_segment` on the bytes of a segment already in memory."""
    size = len(data)
    if expected_first_seq is None:
        expected_first_seq = filenames.parse_wal(os.path.basename(path))
    try:
        version, first_seq = decode_segment_header_version(data, path)
    except CorruptionError as e:
        return SegmentScan(
            path,
            expected_first_seq or 0,
            [],
            0,
            size,
            Damage(
                path, e.offset or 0, f"bad segment header: {e.reason}", *header_tail(data, expected_first_seq)
            ),
        )
    if expected_first_seq is not None and first_seq != expected_first_seq:
        mismatch = Damage(
            path,
            12,
            f"segment header first_seq {first_seq} does not match its name ({expected_first_seq})",
            False,
        )
        return SegmentScan(path, expected_first_seq, [], 0, size, mismatch, version)

    records: list[WalRecord] = []
    append = records.append
    v1 = version == FORMAT_VERSION_1
    lay = _V1 if v1 else _V2
    unpack_from = lay.unpack_from
    mv = memoryview(data)
    rh = lay.size
    expected = first_seq
    off = SEGMENT_HEADER_SIZE
    damage: Damage | None = None
    synced = 0
    while off < size:
        if size - off < rh:
            if data.count(0, off) != size - off:
                damage = Damage(path, off, f"truncated record header ({size - off} of {rh} bytes)", True)
            break  # else: an all-zero tail shorter than a header, the end of data
        if v1:
            crc, length, seq, count, ts = unpack_from(data, off)
        else:
            crc, length, seq, count, ts, synced = unpack_from(data, off)
        if not (crc or length or seq or count or ts or synced):
            nz = _first_nonzero(data, off + rh)
            if nz >= 0:
                why = end_marker_why(data, mv, off, expected, lay)
                damage = Damage(
                    path,
                    nz,
                    "non-zero bytes after end-of-data marker",
                    not why,
                    why or f"the all-zero record header at offset {off} should end the data",
                )
            break
        end = off + rh + length
        if end > size:
            reason = (
                f"truncated payload: length {length} runs past end of file ({size - off - rh} bytes present)"
            )
            damage = _record_damage(data, mv, path, off, end, reason, expected, seq, count, lay)
            break
        if masked_crc(mv[off + 4 : end]) != crc:
            damage = _record_damage(data, mv, path, off, end, "checksum mismatch", expected, seq, count, lay)
            break
        if count < 1 or seq + count - 1 > MAX_SEQ:
            damage = Damage(
                path, off, f"invalid record: seq {seq} count {count}", False, "its checksum matches"
            )
            break
        if seq != expected:
            what = "sequence gap" if seq > expected else "sequence out of order"
            damage = Damage(
                path, off, f"{what}: expected {expected}, found {seq}", False, "its checksum matches"
            )
            break
        append(WalRecord(seq, count, ts, data[off + rh : end], path, off, synced))
        expected = seq + count
        off = end
    return SegmentScan(path, first_seq, records, off, size, damage, version)


def replay(fs: FileSystem, wal_dir: str, *, start_seq: int, mode: str = "tolerate_tail") -> ReplayResult:
    """Check the WAL in ``wal_dir`` and collect the records above
    ``start_seq`` (every commit at or below it is already in SSTables).

    Segments are the ``*.wal`` files (``filenames.parse_wal``), in first_seq
    order. A segment is skipped unread when the next one starts at or below
    ``start_seq + 1`` (all its records are at or below ``start_seq``).
    Checked, in file order (the first failure is "the damage"):

    * each segment as by :func:`scan_segment` (header matches the name,
      framing, checksums, sequence continuity inside the segment);
    * a segment that follows a segment holding records starts at that
      segment's next sequence number (no gap, no overlap). After a segment
      without records only the record chain below is checked;
    * records chain across segments: each record's seq is the previous
      record's ``seq + count``; the first record read must not start above
      ``start_seq + 1`` (commits missing between the SSTables and the log);
    * no record straddles ``start_seq`` (a batch is flushed whole).

    Records at or below ``start_seq`` are checked but not returned.

    ``mode`` (the ``wal_recovery`` option):

    * ``tolerate_tail``: damage that is a torn tail (module docstring) in the
      newest segment is cut off (``truncate``, or ``dropped_segments`` when
      the segment keeps no record); any other damage raises CorruptionError.
    * ``absolute``: any damage raises CorruptionError.
    * ``point_in_time``: stops at the first damage anywhere and keeps the
      consistent prefix before it: the rest of that segment is cut off and
      every later segment goes to ``dropped_segments``. Never raises
      CorruptionError.

    Raises ValueError for an unknown mode and OSError when the directory or a
    segment cannot be read.
    """
    if mode not in WAL_RECOVERY_MODES:
        raise ValueError(f"wal_recovery: expected one of {WAL_RECOVERY_MODES}, got {mode!r}")
    segs = sorted(
        (first, filenames.join(wal_dir, name))
        for name in fs.listdir(wal_dir)
        if (first := filenames.parse_wal(name)) is not None
    )
    first = 0
    while first + 1 < len(segs) and segs[first + 1][0] <= start_seq + 1:
        first += 1  # every record of segs[first] is at or below start_seq
    result = ReplayResult([], start_seq, [], None, [])
    if segs and segs[first][0] > start_seq + 1:
        # Segments are deleted only once a flush covers them, so the oldest
        # one left starts at or below flushed + 1 (also when it is empty).
        gap = Damage(
            segs[first][1],
            0,
            f"sequence gap: the oldest WAL segment starts at {segs[first][0]}, expected {start_seq + 1} or below",
            False,
            f"commits after {start_seq} (the last one in SSTables) are missing from the log",
        )
        _stop(result, mode, gap, None, 0, [p for _, p in segs[first + 1 :]])
        return result
    append = result.records.append
    expected: int | None = None  # seq of the next record; None before the first record read
    prev: SegmentScan | None = None
    for i in range(first, len(segs)):
        name_seq, path = segs[i]
        later = [p for _, p in segs[i + 1 :]]
        if prev is not None and prev.records and name_seq != prev.next_seq:
            what = "sequence gap" if name_seq > prev.next_seq else "sequence overlap"
            boundary = Damage(
                path,
                0,
                f"{what} between segments: expected a segment starting at {prev.next_seq}, found {name_seq}",
                False,
                f"{prev.path} ends before {prev.next_seq}",
            )
            _stop(result, mode, boundary, None, 0, later)
            return result
        scan = scan_segment(fs, path, expected_first_seq=name_seq)
        result.segments.append(scan)
        for r in scan.records:
            seq = r.seq
            last = seq + r.count - 1
            damage: Damage | None = None
            if expected is None:
                if seq > start_seq + 1:
                    damage = Damage(
                        path,
                        r.offset,
                        f"sequence gap: expected {start_seq + 1}, found {seq}",
                        False,
                        f"commits after {start_seq} (the last one in SSTables) are missing from the log",
                    )
            elif seq != expected:
                what = "sequence gap" if seq > expected else "sequence overlap"
                damage = Damage(path, r.offset, f"{what}: expected {expected}, found {seq}", False)
            if damage is None and seq <= start_seq < last:
                damage = Damage(
                    path,
                    r.offset,
                    f"record {seq}..{last} straddles the flushed sequence number {start_seq}",
                    False,
                    "a batch is flushed whole or not at all",
                )
            if damage is not None:
                _stop(result, mode, damage, scan, r.offset, later)
                return result
            expected = last + 1
            if last > start_seq:
                append(r)
                result.last_seq = last
        if scan.damage is not None:
            _stop(result, mode, scan.damage, scan, scan.valid_end, later)
            return result
        prev = scan
    return result


def _stop(
    result: ReplayResult,
    mode: str,
    damage: Damage,
    scan: SegmentScan | None,
    cut: int,
    later: list[str],
) -> None:
    """Apply ``mode`` to ``damage``, found in ``damage.path``, whose intact
    prefix ends at ``cut`` (``scan`` is None when the segment was not read)
    and which is followed by the segments ``later``. Raises CorruptionError,
    or records the cut in ``result``: ``truncate`` when the cut keeps at
    least one record of the segment, else the whole segment in
    ``dropped_segments``; every later segment in ``dropped_segments``.

    REQUIRES: ``result.records`` holds only records before ``cut``."""
    path = damage.path
    if mode == "absolute":
        raise CorruptionError(
            f"WAL {_explain(damage)} (wal_recovery=absolute tolerates no damage)", path, damage.offset
        )
    if mode == "tolerate_tail":
        if not damage.is_tail:
            raise CorruptionError(
                f"WAL {_explain(damage)}: not a torn tail, so wal_recovery=tolerate_tail refuses it "
                "(point_in_time would keep the log before it)",
                path,
                damage.offset,
            )
        if later:
            raise CorruptionError(
                f"WAL {damage.reason} in a segment that is not the newest ({len(later)} later segment(s) "
                "follow); wal_recovery=tolerate_tail only discards a torn tail of the newest segment",
                path,
                damage.offset,
            )
    # A torn tail of the newest segment under tolerate_tail, or point_in_time.
    if cut > SEGMENT_HEADER_SIZE:
        assert scan is not None
        result.truncate = (path, cut)
        result.dropped.append(f"{path}: {scan.file_size - cut} bytes from offset {cut} ({damage.describe()})")
    else:
        result.dropped_segments.append(path)
        result.dropped.append(f"{path}: whole segment ({damage.describe()})")
    for p in later:
        result.dropped_segments.append(p)
        result.dropped.append(f"{p}: whole segment (after the point-in-time cut in {path})")


def _explain(damage: Damage) -> str:
    where = "at the end of the log" if damage.is_tail else "in the middle of the log"
    s = f"{damage.reason} {where}"
    return f"{s} ({damage.detail})" if damage.detail else s


_V1: Final = RECORD_HEADER_V1
_V2: Final = RECORD_HEADER


def _record_damage(data: bytes, mv: memoryview, path: str, off: int, end: int, reason: str, expected: int,
                   seq: int, count: int, lay: struct.Struct) -> Damage:
    """Damage in the record at ``off`` whose header (unverified) declares it
    ends at ``end`` and carries ``seq``/``count``, classified by the
    torn-tail rule (:func:`lsm.wal.torn_tail.record_damage_why`)."""
    why = record_damage_why(data, mv, off, end, expected, seq, count, lay)
    return Damage(path, off, reason, not why, why)


def _first_nonzero(data: bytes, start: int) -> int:
    """Offset of the first non-zero byte at or after ``start``, or -1."""
    if data.count(0, start) == len(data) - start:  # fast path: C count, no allocation
        return -1
    m = _NONZERO.search(data, start)
    return m.start() if m is not None else -1
