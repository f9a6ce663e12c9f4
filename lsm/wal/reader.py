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
segment's format version (docs/format/wal.md, "Torn tail rule").

Version 2. Damage at offset X (the damaged record's start; an all-zero
record header's start; 0 for the segment header) is corruption iff an
intact record found after it has ``synced > X``: it was appended after a
completed sync covered the damaged bytes. Otherwise the damage and
everything after it is a torn tail: a power cut's never-synced blocks
(holes: zeros or garbage, with later never-synced records intact after
them), none of it acknowledged at FULL. Records found after it: the one
where the damaged record's length says it ends, else one found by the
sequence-number search below; then that record's chain of intact
records, and where the chain ends in more damage, the search again after
it (``_durable_follower``).

Version 1 (old segments). Damage is a torn tail iff no intact record
follows it in the file. Damage in the record at offset X whose header
declares it ends at E is mid-log iff

  (a) an intact record (checksum matches, count >= 1, seq not below the
      expected one) starts exactly at E (damage that left the length field
      alone: body, crc, seq, count or timestamp), or
  (b) an intact record whose sequence number could follow the damaged one
      (``expected + count`` or ``header seq + count`` from the damaged
      header, or any of the next ``_NEXT_SEQ_WINDOW`` sequence numbers)
      starts anywhere after X + 28 (found with ``bytes.find`` on the
      8-byte seq field, then checked by crc; after ``_PROBE_LIMIT``
      candidates, or ``_PROBE_BYTES`` checksummed, it assumes one may
      follow and fails closed). This
      catches a record whose length field was damaged.

The same test decides non-zero bytes after an all-zero record header (a
hole in the log). Both versions: a record header cut short by the end of
the file is a tail. A damaged segment header is a tail when the file is
all zero, is a prefix of the header its name implies, or no intact record
carrying one of the segment's first ``_NEXT_SEQ_WINDOW`` sequence numbers
follows it that shows it synced (version 1: any; version 2: ``synced >
0``; unknown because the version bytes are damaged: either), but never
when the header's checksum matches (an unknown format version is a newer
writer's file, not a torn one). A record that passes its checksum but
breaks the sequence (gap, overlap, count 0) is never a tail.

What this cannot tell apart: version 1, damage to the last record of the
newest segment (nothing follows it) from a torn write; version 2, damage
at or after the ``synced`` offset of the newest intact record of the
newest segment (bytes a sync may have covered after that record was
appended) from a never-synced write. ``absolute`` refuses both.

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
from lsm.base.coding import MAX_SEQ, U64
from lsm.base.errors import CorruptionError
from lsm.base.fs import FileSystem
from lsm.options import WAL_RECOVERY_MODES
from lsm.wal.format import (
    FORMAT_VERSION_1,
    KNOWN_VERSIONS,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_HEADER_SIZE_V1,
    RECORD_HEADER_V1,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    decode_segment_header_version,
    encode_segment_header,
)

_NONZERO: Final = re.compile(rb"[^\x00]")
_U32: Final = struct.Struct("<I")
_NEXT_SEQ_WINDOW: Final = 128
"""Sequence numbers after the damaged record's expected one that the probe
searches for (covers a damaged count field of batches up to this size)."""
_PROBE_LIMIT: Final = 10_000
"""Candidate headers examined by the torn-tail probe before it gives up and
assumes an intact record may follow (fail closed)."""
_PROBE_BYTES: Final = 256 << 20
"""Bytes the probe may checksum before it gives up likewise: each candidate
costs a crc over its length field's worth, so 10 000 candidates of a large
segment could cost hundreds of GiB (tests/test_fuzz_decoders.py)."""
_PROBE_SCAN: Final = 4 << 30
"""Bytes the version-2 rule may search (``bytes.find``) after the first
search, when chains of intact records end in further damage (several
holes): each search looks for up to 128 sequence numbers to the end of the
segment. Past it the rule fails closed."""


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
    """True iff this is a torn tail (module docstring: no intact record
    follows it)."""
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
                path, e.offset or 0, f"bad segment header: {e.reason}", *_header_tail(data, expected_first_seq)
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
                if v1:
                    why = _intact_follower(data, mv, off + rh, _next_seqs(expected, 0, 0), _V1)
                else:
                    why = _durable_follower(data, mv, off, -1, off + rh, expected, _next_seqs(expected, 0, 0))
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


def _record_damage(
    data: bytes,
    mv: memoryview,
    path: str,
    off: int,
    end: int,
    reason: str,
    expected: int,
    seq: int,
    count: int,
    lay: struct.Struct,
) -> Damage:
    """Damage in the record at ``off`` whose header (unverified) declares it
    ends at ``end`` and carries ``seq``/``count``; decides the torn-tail rule
    of the module docstring for the segment's version (``lay``: its record
    header layout)."""
    rh = lay.size
    if lay is _V2:
        why = _durable_follower(
            data, mv, off, end if end + rh <= len(data) else -1, off + rh, expected, _next_seqs(expected, seq, count)
        )
        return Damage(path, off, reason, not why, why)
    if end + rh <= len(data):
        why = _intact_at(data, mv, end, expected)
        if why:
            return Damage(path, off, reason, False, why)
    why = _intact_follower(data, mv, off + rh, _next_seqs(expected, seq, count), _V1)
    if why:
        return Damage(path, off, reason, False, why)
    return Damage(path, off, reason, True)


def _next_seqs(expected: int, seq: int, count: int) -> set[int]:
    """Sequence numbers a record after a damaged one could carry."""
    out = set(range(expected + 1, expected + 1 + _NEXT_SEQ_WINDOW))
    if count:
        out.add(expected + count)
        out.add(seq + count)
    return out


def _intact_at(data: bytes, mv: memoryview, h: int, expected: int) -> str:
    """Version 1: why the bytes at ``h`` are an intact record (empty if they
    are not)."""
    crc, length, seq, count, _ts = RECORD_HEADER_V1.unpack_from(data, h)
    end = h + RECORD_HEADER_SIZE_V1 + length
    if count >= 1 and seq >= expected and end <= len(data) and masked_crc(mv[h + 4 : end]) == crc:
        return f"an intact record with seq {seq} starts where the damaged one ends, at offset {h}"
    return ""


class _Probe:
    """The budget of one torn-tail decision: candidate headers examined and
    bytes checksummed (``_PROBE_LIMIT``, ``_PROBE_BYTES``), and, once set,
    bytes searched (``scan``: the version-2 rule's repeated searches after
    further damage, ``_PROBE_SCAN``)."""

    __slots__ = ("bytes", "examined", "scan")

    def __init__(self) -> None:
        self.examined = 0
        self.bytes = _PROBE_BYTES
        self.scan: int | None = None


def _find_follower(
    data: bytes, mv: memoryview, start: int, next_seqs: set[int], lay: struct.Struct, probe: _Probe
) -> tuple[int, int] | str:
    """The first intact record (in ``lay``'s layout) found at or after
    ``start`` carrying one of ``next_seqs``: (offset, seq); an empty string
    when there is none; a non-empty string (why) when the budget ran out
    (fail closed: one may follow)."""
    size = len(data)
    rh = lay.size
    unpack_from = lay.unpack_from
    for nxt in sorted(next_seqs):
        if not 0 < nxt <= MAX_SEQ:
            continue
        pat = U64.pack(nxt)
        pos = data.find(pat, start + 8)  # the seq field is at offset 8 of a record header
        if probe.scan is not None:
            probe.scan -= (size if pos < 0 else pos) - start
            if probe.scan < 0:
                return (
                    f"the searches for records after further damage span more than {_PROBE_SCAN >> 30} GiB; "
                    "cannot rule out an intact record"
                )
        while pos >= 0:
            h = pos - 8
            if h + rh > size:
                break
            probe.examined += 1
            if probe.examined > _PROBE_LIMIT:
                return f"more than {_PROBE_LIMIT} candidate record headers follow; cannot rule out an intact record"
            fields = unpack_from(data, h)
            length, count = fields[1], fields[3]
            end = h + rh + length
            if count >= 1 and end <= size:
                probe.bytes -= length
                if probe.bytes < 0:
                    return (
                        f"candidate record headers after it span more than {_PROBE_BYTES >> 20} MiB; "
                        "cannot rule out an intact record"
                    )
                if masked_crc(mv[h + 4 : end]) == fields[0]:
                    return h, nxt
            pos = data.find(pat, pos + 1)
    return ""


def _intact_follower(data: bytes, mv: memoryview, start: int, next_seqs: set[int], lay: struct.Struct) -> str:
    """Why an intact record (in ``lay``'s layout) may start at or after
    ``start`` carrying one of ``next_seqs``: empty when none does."""
    found = _find_follower(data, mv, start, next_seqs, lay, _Probe())
    if isinstance(found, str):
        return found
    return f"an intact record with seq {found[1]} follows at offset {found[0]}"


def _intact_v2(data: bytes, mv: memoryview, h: int, min_seq: int) -> tuple[int, int, int, int] | None:
    """Version 2: (seq, count, synced, end) of the intact record at ``h``
    whose seq is at least ``min_seq``, else None."""
    if h + RECORD_HEADER_SIZE > len(data):
        return None
    crc, length, seq, count, _ts, synced = RECORD_HEADER.unpack_from(data, h)
    end = h + RECORD_HEADER_SIZE + length
    if count >= 1 and seq >= min_seq and end <= len(data) and masked_crc(mv[h + 4 : end]) == crc:
        return seq, count, synced, end
    return None


def _durable_follower(
    data: bytes, mv: memoryview, x: int, at: int, start: int, expected: int, next_seqs: set[int]
) -> str:
    """Version 2 torn-tail rule: why the damage at offset ``x`` is NOT a
    torn tail (empty when it is). It is not when an intact record after it
    was appended while the segment was known durable past ``x``
    (``synced > x``): the damaged bytes had been synced, so this is not a
    never-synced write lost in a power cut.

    The records examined: the one at ``at`` (where the damaged record's
    length says it ends; -1: none) or else the first intact one found
    after ``start`` by its sequence number (``next_seqs``), then the chain
    of intact records that follows it; where that chain ends in further
    damage, the search starts again after it (holes can be several). The
    search budget is shared; when it runs out the answer fails closed."""
    probe = _Probe()
    hit = _intact_v2(data, mv, at, expected) if at >= 0 else None
    h = at
    while True:
        if hit is None:
            found = _find_follower(data, mv, start, next_seqs, _V2, probe)
            if isinstance(found, str):
                return found
            h = found[0]
            hit = _intact_v2(data, mv, h, 0)
            assert hit is not None
        while hit is not None:
            seq, count, synced, end = hit
            if synced > x:
                return (
                    f"an intact record with seq {seq} at offset {h} was appended when the segment was durable "
                    f"up to offset {synced}, past the damage at {x}: the damaged bytes had been synced"
                )
            h = end
            hit = _intact_v2(data, mv, h, seq + count)
            if hit is not None and hit[0] != seq + count:
                hit = None
        start = h
        expected = seq + count
        next_seqs = _next_seqs(expected - 1, 0, 0)
        if probe.scan is None:
            probe.scan = _PROBE_SCAN


def _header_tail(data: bytes, first_seq: int | None) -> tuple[bool, str]:
    """(is_tail, detail) for a segment whose header failed its checks: a
    tail when it was torn at creation (see :func:`_torn_header`) or when no
    intact record of this segment follows the damaged header that shows
    the header was synced (a header never synced, then garbage or holes).
    Version 1 (or unknown): any intact record of the segment's first
    ``_NEXT_SEQ_WINDOW`` sequence numbers shows that; version 2 (or
    unknown): an intact record with ``synced > 0``."""
    if _torn_header(data, first_seq):
        return True, ""
    if len(data) >= SEGMENT_HEADER_SIZE:
        (stored,) = _U32.unpack_from(data, SEGMENT_HEADER_SIZE - 4)
        if masked_crc(memoryview(data)[: SEGMENT_HEADER_SIZE - 4]) == stored:
            return False, "the header's checksum matches: it was written whole (another format version?)"
    if not first_seq:
        return False, "the segment's name gives no first sequence number to look for"
    version = _U32.unpack_from(data, 8)[0] if len(data) >= 12 and data[:8] == SEGMENT_MAGIC else 0
    if version not in KNOWN_VERSIONS:
        version = 0  # the magic or the version is damaged: either layout may follow
    seqs = set(range(first_seq, first_seq + _NEXT_SEQ_WINDOW))
    mv = memoryview(data)
    if version != 2:
        why = _intact_follower(data, mv, 0, seqs, _V1)
        if why:
            return False, why
    if version != 1:
        why = _durable_follower(data, mv, 0, -1, 0, first_seq, seqs)
        if why:
            return False, why
    return True, "no intact record follows it" if version == 1 else "no record follows it that saw it synced"


def _torn_header(data: bytes, first_seq: int | None) -> bool:
    """Whether a segment whose header failed its checks was torn at
    creation: all zero, or a strict prefix of the header it should have
    (in either version)."""
    if data.count(0) == len(data):
        return True
    if len(data) >= SEGMENT_HEADER_SIZE or first_seq is None:
        return False
    try:
        return any(encode_segment_header(first_seq, v).startswith(data) for v in KNOWN_VERSIONS)
    except ValueError:
        return False


def _first_nonzero(data: bytes, start: int) -> int:
    """Offset of the first non-zero byte at or after ``start``, or -1."""
    if data.count(0, start) == len(data) - start:  # fast path: C count, no allocation
        return -1
    m = _NONZERO.search(data, start)
    return m.start() if m is not None else -1
