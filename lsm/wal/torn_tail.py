"""The torn-tail rule of the WAL reader: whether damage found in a segment
is a torn tail (a power cut's never-synced, never-acknowledged bytes, which
``wal_recovery="tolerate_tail"`` may discard) or corruption. The reader
(lsm/wal/reader.py) finds the damage; the functions here search what
follows it and answer why it is NOT a torn tail (an empty string when it
is): :func:`record_damage_why` (a damaged record), :func:`end_marker_why`
(non-zero bytes after an all-zero record header) and :func:`header_tail`
(a damaged segment header).

Spec: docs/format/wal.md, "Torn tail rule".

The rule, by the segment's format version:

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

import struct
from typing import Final

from lsm.base.checksum import masked_crc
from lsm.base.coding import MAX_SEQ, U64
from lsm.wal.format import (
    KNOWN_VERSIONS,
    RECORD_HEADER,
    RECORD_HEADER_SIZE,
    RECORD_HEADER_SIZE_V1,
    RECORD_HEADER_V1,
    SEGMENT_HEADER_SIZE,
    SEGMENT_MAGIC,
    encode_segment_header,
)

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
_V1: Final = RECORD_HEADER_V1
_V2: Final = RECORD_HEADER


def record_damage_why(
    data: bytes,
    mv: memoryview,
    off: int,
    end: int,
    expected: int,
    seq: int,
    count: int,
    lay: struct.Struct,
) -> str:
    """Damage in the record at ``off`` whose header (unverified) declares it
    ends at ``end`` and carries ``seq``/``count``, where the log expected
    ``expected``: why it is NOT a torn tail (empty when it is), by the rule
    of the module docstring for the segment's version (``lay``: its record
    header layout, ``RECORD_HEADER_V1`` or ``RECORD_HEADER``)."""
    rh = lay.size
    if lay is _V2:
        return _durable_follower(
            data, mv, off, end if end + rh <= len(data) else -1, off + rh, expected, _next_seqs(expected, seq, count)
        )
    if end + rh <= len(data):
        why = _intact_at(data, mv, end, expected)
        if why:
            return why
    return _intact_follower(data, mv, off + rh, _next_seqs(expected, seq, count), _V1)


def end_marker_why(data: bytes, mv: memoryview, off: int, expected: int, lay: struct.Struct) -> str:
    """Non-zero bytes after the all-zero record header at ``off`` (a hole
    in the log, or a never-written tail), where the log expected
    ``expected``: why they are NOT a torn tail (empty when they are), by
    the same rule as :func:`record_damage_why`."""
    rh = lay.size
    if lay is _V1:
        return _intact_follower(data, mv, off + rh, _next_seqs(expected, 0, 0), _V1)
    return _durable_follower(data, mv, off, -1, off + rh, expected, _next_seqs(expected, 0, 0))


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


def header_tail(data: bytes, first_seq: int | None) -> tuple[bool, str]:
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
