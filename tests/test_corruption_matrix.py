"""Corruption matrix (issue 5, family 6): damaged bytes in every kind of
file, with the outcome of each case computed from the format rules and
matched exactly.

WAL (docs/format/wal.md, "Torn tail rule", "Version 2" and "Recovery
modes"). A log of 200 commits in four segments, written by the database
itself (format version 2), and the same log re-encoded as version-1
segments (old segments are still read, by the version-1 rules). Cases:
every byte of the segment header and of the first, a middle and the last
record of *each* segment (so the first, a middle and the last record of
the log, and damage in older segments as well as in the newest),
flipped (xor 0xff), zeroed and truncated at; and every record boundary
-1, 0 and +1. Each case is replayed (``lsm.wal.reader.replay`` on the
segment bytes in memory) under ``tolerate_tail``, ``absolute`` and
``point_in_time``, from ``start_seq`` 0 and, for damage in the first two
segments, from the last sequence number of the first segment (so the
first segment is never read). :func:`_expect_wal` derives the outcome
from the rules alone: which records are kept, what is cut or set aside,
or which file and offset the CorruptionError names. A sample of the cases
then goes through ``lsm.open`` and is checked by content.

SSTables, manifest and CURRENT, through the database (open, get, scans,
compact_range). A database of three tables whose versions shadow each
other, plus writes in the WAL; every byte of the footer, index, filter
and properties blocks and of the first and last data block of the middle
table is flipped, with the damage made before the open and while the
database is open, with ``paranoid_checks`` on and off; the automatic
compaction (a background thread) and a compaction in a worker process
meet a damaged block too. Every byte of the manifest is flipped and every
record cut; CURRENT is damaged byte by byte, cut and removed; tables are
truncated and removed. Checked:
a read returns the right data or raises CorruptionError naming the
damaged file, never wrong data; a compaction that meets the damage fails
closed (CorruptionError from compact_range, ``db.health ==
"background_error"``, its input files and the version unchanged) and the
rest of the database stays readable and writable.

What ``paranoid_checks=False`` keeps (lsm/sstable/reader.py): the footer
and the filter, properties and index blocks are checked whatever the
option (so damage there is found at open), and compaction always
verifies; only data-block checksums on the read path are skipped. So with
it off, a damaged data block is caught only when the damage breaks the
block's layout or its zstd frame: a changed byte inside a key or value
(stored raw, or as zstd literals) is returned as data. The test counts those reads
(the price of the option) instead of forbidding them; every other claim
holds with the option off too.

Size: ``LSM_CORRUPTION_SCALE`` (default 1) multiplies the stride-sampled
parts (the table swept while open, the WAL cases opened as a database);
the WAL matrix and the before-open table sweep with ``paranoid_checks``
on are exhaustive at every scale (with it off the meta blocks, which take
the same checked path, are sampled every 5th byte). Counts are printed
(run with ``-s``) and appended as JSON lines to ``$LSM_RELIABILITY_LOG``.
"""

from __future__ import annotations

import json
import os
import random
import struct
from dataclasses import dataclass
from itertools import pairwise

import pytest
from crc32c import crc32c

import lsm
from lsm.base import filenames
from lsm.base.checksum import mask
from lsm.base.crashfs import CrashFS
from lsm.base.errors import CorruptionError
from lsm.wal import format as wf
from lsm.wal.reader import replay
from tests.reliability_log import record

HS = wf.SEGMENT_HEADER_SIZE
MODES = ("tolerate_tail", "absolute", "point_in_time")
SCALE = max(1, int(os.environ.get("LSM_CORRUPTION_SCALE", "1")))
DB = "/db"


def _report(family: str, cases: int, violations: int, **extra: object) -> None:
    """Print a count line (``-s``) and append it to $LSM_RELIABILITY_LOG
    (tools/reliability.py builds RELIABILITY.md from these)."""
    line = {"family": family, "cases": cases, "violations": violations, **extra}
    print(f"RELIABILITY {json.dumps(line, sort_keys=True)}")
    record(family, cases=cases, violations=violations, **extra)


# ======================================================================================= WAL
# ---- the log: written by the database, parsed here independently of lsm.wal.reader ------------------


@dataclass
class Rec:
    offset: int
    end: int
    seq: int
    count: int
    synced: int = 0  # version 2: the segment was durable up to here when the record was appended


@dataclass
class Seg:
    name: str
    first: int
    data: bytes
    recs: list[Rec]

    @property
    def path(self) -> str:
        return filenames.join(DB, self.name)


@dataclass
class WalLog:
    fs: CrashFS  # the closed database, every commit in the WAL
    segs: list[Seg]
    ops: dict[int, list[tuple[bytes, bytes | None]]]  # first seq of a commit -> its ops (None: delete)
    version: int = wf.FORMAT_VERSION


_REC = struct.Struct("<IIQIQQ")
_REC_V1 = struct.Struct("<IIQIQ")
WAL_OPTS = {"background": "inline", "memtable_size": 64 << 20, "wal_segment_size": 4400, "sync": "full"}


def _parse_segment(data: bytes) -> list[Rec]:
    """The records of an undamaged segment, checked with crc32c directly."""
    assert data[:8] == wf.SEGMENT_MAGIC
    (version,) = struct.unpack_from("<I", data, 8)
    recs, off = [], HS
    while off < len(data):
        if version == 1:
            crc, length, seq, count, _ts = _REC_V1.unpack_from(data, off)
            synced, end = 0, off + _REC_V1.size + length
        else:
            crc, length, seq, count, _ts, synced = _REC.unpack_from(data, off)
            end = off + _REC.size + length
        assert mask(crc32c(data[off + 4 : end])) == crc
        recs.append(Rec(off, end, seq, count, synced))
        off = end
    return recs


def _as_version_1(data: bytes) -> bytes:
    """A version-2 segment re-encoded as version 1 (same records, no synced)."""
    first = struct.unpack_from("<Q", data, 12)[0]
    out = bytearray(wf.encode_segment_header(first, wf.FORMAT_VERSION_1))
    for r in _parse_segment(data):
        _crc, length, seq, count, ts, _synced = _REC.unpack_from(data, r.offset)
        out += wf.encode_record_v1(seq, count, ts, data[r.end - length : r.end])
    return bytes(out)


def _commit(
    db: lsm.DB, i: int, rng: random.Random, sync: lsm.Sync | None = None
) -> tuple[int, list[tuple[bytes, bytes | None]]]:
    """Commit ``i`` at ``sync``: a put, a delete, or (every fifth) a batch of 3-5 ops."""
    if i % 5 == 3:
        ops: list[tuple[bytes, bytes | None]] = [
            (b"b%03d-%d" % (i, j), rng.randbytes(rng.randint(0, 30))) for j in range(rng.randint(2, 4))
        ]
        ops.append((b"k%03d" % rng.randrange(i + 1), None))
        b = lsm.WriteBatch()
        for k, v in ops:
            b.put(k, v) if v is not None else b.delete(k)
        return db.write(b, sync=sync) - len(ops) + 1, ops
    if i % 5 == 2:
        key = b"k%03d" % rng.randrange(i + 1)
        return db.delete(key, sync=sync), [(key, None)]
    key, value = b"k%03d" % i, rng.randbytes(rng.randint(1, 60))
    return db.put(key, value, sync=sync), [(key, value)]


@pytest.fixture(scope="module", params=["v2", "v1", "v2-mixed"])
def wal_log(request: pytest.FixtureRequest) -> WalLog:
    """v2: every commit at FULL. v1: the same log re-encoded as version 1.
    v2-mixed: every fourth commit at FULL, the others at OFF, so that most
    records carry a ``synced`` that lags behind them (what concurrent
    committers or a lower sync level write): damage they do not cover is a
    torn tail under the version-2 rule, though intact records follow it."""
    version = 1 if request.param == "v1" else 2
    mixed = request.param == "v2-mixed"
    fs = CrashFS()
    rng = random.Random(20240605)
    ops = {}
    with lsm.open(DB, fs=fs, **WAL_OPTS) as db:
        for i in range(200):
            seq, o = _commit(db, i, rng, (lsm.Sync.FULL if i % 4 == 0 else lsm.Sync.OFF) if mixed else None)
            ops[seq] = o
    segs = []
    for name in sorted(n for n in fs.listdir(DB) if filenames.parse_wal(n) is not None):
        data = fs.read_file(filenames.join(DB, name))
        if version == 1:
            data = _as_version_1(data)
            fs.write_file(filenames.join(DB, name), data)
        recs = _parse_segment(data)
        if recs:  # close() may leave an empty newest segment: drop it, the log then ends in records
            segs.append(Seg(name, filenames.parse_wal(name), data, recs))  # type: ignore[arg-type]
        else:
            fs.remove(filenames.join(DB, name))
    assert len(segs) == 4 and all(len(s.recs) >= 30 for s in segs), [len(s.recs) for s in segs]
    assert [r.seq for s in segs for r in s.recs] == sorted(ops)
    for a, b in pairwise(segs):
        assert b.first == a.recs[-1].seq + a.recs[-1].count
    if mixed:
        assert sum(r.synced < r.offset for seg in segs for r in seg.recs) > 100
    elif version == 2:  # a single FULL writer: each record was appended after the one before it was synced
        # (the first one of a segment: after the header was, at open, or before anything was, after rotation)
        assert all(r.synced == r.offset or (i == 0 and r.synced == 0) for seg in segs for i, r in enumerate(seg.recs))
    return WalLog(fs, segs, ops, version)


# ---- the oracle -----------------------------------------------------------------------------------------


@dataclass
class Refused:
    path: str
    offset: int
    says: list[str]  # fragments the message must hold


@dataclass
class Opened:
    seqs: list[int]  # first seq of every record returned
    last_seq: int
    truncate: tuple[str, int] | None
    dropped_segments: list[str]


def _mutate(data: bytes, op: str, pos: int) -> bytes:
    if op == "truncate":
        return data[:pos]
    b = bytearray(data)
    b[pos] = b[pos] ^ 0xFF if op == "flip" else 0
    return bytes(b)


def _header_field(pos: int) -> int:
    """Where damage to byte ``pos`` of a segment header is reported: the
    reader checks magic (0), version (8), then the crc (20), which covers
    first_seq."""
    return 0 if pos < 8 else 8 if pos < 12 else 20


def _expect_wal(log: WalLog, j: int, op: str, pos: int, start_seq: int, mode: str) -> Refused | Opened:
    """The outcome of damage ``op`` at ``pos`` of segment ``j``, from the
    rules of docs/format/wal.md alone."""
    segs = log.segs
    n = len(segs)
    RH = wf.RECORD_HEADER_SIZE if log.version == wf.FORMAT_VERSION else wf.RECORD_HEADER_SIZE_V1
    first = 0  # segments before it are skipped unread: the next one starts at or below start_seq + 1
    while first + 1 < n and segs[first + 1].first <= start_seq + 1:
        first += 1
    s = segs[j]
    new = _mutate(s.data, op, pos)
    before = [r for seg in segs[first:j] for r in seg.recs]

    def opened(recs: list[Rec], truncate: tuple[str, int] | None, dropped: list[str]) -> Opened:
        seqs = [r.seq for r in recs if r.seq + r.count - 1 > start_seq]
        last = max([r.seq + r.count - 1 for r in recs] + [start_seq])
        return Opened(seqs, last, truncate, dropped)

    if new == s.data or j < first:  # zeroing a zero byte, or a segment never read
        return opened([r for seg in segs[first:] for r in seg.recs], None, [])

    # The first damage in segment j: (offset, torn tail?, reason), and k records before it intact.
    damage: tuple[int, bool, str] | None
    if pos < HS:
        k = 0
        if op == "truncate":  # a prefix of the header its name implies: torn at creation
            damage = (pos, True, "truncated segment header")
        elif log.version == 1:  # the probe finds the segment's first record after it: not torn
            damage = (_header_field(pos), False, "bad segment header")
        else:  # ... and its chain: not torn iff a record saw the header synced
            damage = (_header_field(pos), not any(r.synced > 0 for r in s.recs), "bad segment header")
    elif op == "truncate":
        k = sum(1 for r in s.recs if r.end <= pos)
        part = new[s.recs[k].offset :]
        if len(part) < RH and not any(part):
            damage = None  # an all-zero stub shorter than a header ends the data: clean
        else:  # cut short by the end of the file: nothing can follow it
            damage = (
                s.recs[k].offset,
                True,
                "truncated record header" if len(part) < RH else "truncated payload",
            )
    else:
        k = next(i for i, r in enumerate(s.recs) if r.offset <= pos < r.end)
        r = s.recs[k]
        reason = "checksum mismatch"
        if 4 <= pos - r.offset < 8:
            (length,) = struct.unpack_from("<I", new, r.offset + 4)
            if r.offset + RH + length > len(new):
                reason = "truncated payload"
        # Version 1: not a tail iff an intact record follows in the file: record k+1 does (found where
        # the damaged one ends, or by its seq: every batch here has < 128 ops). Version 2: not a tail
        # iff one of the records that follow (record k+1 and its chain) has synced > the damage offset.
        if log.version == 1:
            damage = (r.offset, k == len(s.recs) - 1, reason)
        else:
            damage = (r.offset, not any(x.synced > r.offset for x in s.recs[k + 1 :]), reason)

    kept = before + s.recs[:k]
    later = [seg.path for seg in segs[j + 1 :]]
    if damage is None:
        # Segment j is clean but ends after k records.
        if j == n - 1:
            return opened(kept, None, [])
        nxt = segs[j + 1]
        if k:  # the next segment is not named after the last record here
            off, says = 0, "sequence gap between segments"
        else:  # no record here: the next segment's first record breaks the chain
            off, says = HS, "sequence gap: expected"
        if mode == "point_in_time":
            return opened(kept, None, later)
        return Refused(nxt.path, off, [says])

    off, tail, reason = damage
    cut = (s.path, s.recs[k].offset) if k else None  # keeps >= 1 record: truncate, else set aside whole
    aside = [] if k else [s.path]
    if mode == "absolute":
        return Refused(s.path, off, [reason, "tolerates no damage"])
    if mode == "point_in_time":
        return opened(kept, cut, aside + later)
    if not tail:
        return Refused(s.path, off, [reason, "not a torn tail"])
    if later:
        return Refused(s.path, off, [reason, "not the newest"])
    return opened(kept, cut, aside)


class _MemDir:
    """The two FileSystem calls replay makes, over segment bytes in memory."""

    def __init__(self, files: dict[str, bytes]):
        self.files = files

    def listdir(self, _d: str) -> list[str]:
        return sorted(self.files)

    def read_file(self, path: str) -> bytes:
        return self.files[os.path.basename(path)]


def _actual_wal(files: dict[str, bytes], start_seq: int, mode: str) -> Refused | Opened:
    try:
        r = replay(_MemDir(files), DB, start_seq=start_seq, mode=mode)  # type: ignore[arg-type]
    except CorruptionError as e:
        assert e.path is not None and e.offset is not None
        assert f"{e.path} at offset {e.offset}" in str(e), str(e)
        return Refused(e.path, e.offset, [str(e)])
    return Opened([x.seq for x in r.records], r.last_seq, r.truncate, r.dropped_segments)


def _matches(want: Refused | Opened, got: Refused | Opened) -> bool:
    if isinstance(want, Opened):
        return want == got
    return (
        isinstance(got, Refused)
        and (got.path, got.offset) == (want.path, want.offset)
        and all(s in got.says[0] for s in want.says)
    )


def _wal_cases(log: WalLog) -> list[tuple[int, str, int]]:
    """(segment, op, position): every byte of each segment's header and of
    its first, middle and last record; every record boundary -1, 0, +1 and
    the last byte of each segment."""
    out = set()
    for j, s in enumerate(log.segs):
        positions = set(range(HS))
        for r in (s.recs[0], s.recs[len(s.recs) // 2], s.recs[-1]):
            positions.update(range(r.offset, r.end))
        for r in s.recs:
            positions.update((r.offset - 1, r.offset, r.offset + 1))
        positions.add(len(s.data) - 1)
        for pos in positions:
            for op in ("flip", "zero", "truncate"):
                out.add((j, op, pos))
    return sorted(out)


def test_wal_matrix(wal_log: WalLog) -> None:
    log = wal_log
    pristine = {s.name: s.data for s in log.segs}
    late_start = log.segs[0].recs[-1].seq + log.segs[0].recs[-1].count - 1  # segment 0 is never read
    cases = checked = 0
    outcomes: dict[str, int] = {}
    bad: list[str] = []
    for j, op, pos in _wal_cases(log):
        cases += 1
        s = log.segs[j]
        files = dict(pristine)
        files[s.name] = _mutate(s.data, op, pos)
        for start_seq in (0, late_start) if j <= 1 else (0,):
            for mode in MODES:
                want = _expect_wal(log, j, op, pos, start_seq, mode)
                got = _actual_wal(files, start_seq, mode)
                checked += 1
                kind = f"{mode}:{'refused' if isinstance(want, Refused) else 'opened'}"
                outcomes[kind] = outcomes.get(kind, 0) + 1
                if not _matches(want, got):
                    bad.append(
                        f"segment {j} {op} at {pos}, start_seq {start_seq}, {mode}:\n  want {want}\n  got  {got}"
                    )
    _report(
        "corruption_wal",
        cases,
        len(bad),
        checks=checked,
        outcomes=outcomes,
        records=sum(len(s.recs) for s in log.segs),
    )
    assert not bad, f"{len(bad)} of {checked} outcomes differ from the rules; first:\n" + "\n".join(bad[:5])


def _model(log: WalLog, seqs: list[int]) -> dict[bytes, bytes]:
    m: dict[bytes, bytes] = {}
    for seq in seqs:
        for k, v in log.ops[seq]:
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
    return m


def test_wal_matrix_sample_through_open(wal_log: WalLog) -> None:
    """A sample of the matrix through lsm.open: a refused open names the
    file and offset the oracle says and changes nothing; an accepted one
    holds exactly the kept commits, and reopens under ``absolute``."""
    log = wal_log
    all_cases = _wal_cases(log)
    rng = random.Random(5)
    last = len(log.segs) - 1
    picked = {
        (last, "truncate", log.segs[last].recs[-1].offset + 3),  # torn tail of the newest segment
        (last, "flip", log.segs[last].recs[-1].end - 1),  # damaged last record
        (last, "flip", log.segs[last].recs[-2].offset + 9),  # damaged record before an intact one
        (1, "truncate", log.segs[1].recs[-1].offset),  # older segment cut at a boundary
        (1, "flip", log.segs[1].recs[-1].offset + 30),  # older segment's last record damaged
        (2, "zero", 4),  # header magic of a middle segment
        (0, "truncate", 10),  # first segment torn in its header
    }
    picked.update(rng.sample(all_cases, 8 * SCALE))
    checked = 0
    for j, op, pos in sorted(picked):
        s = log.segs[j]
        for mode in MODES:
            want = _expect_wal(log, j, op, pos, 0, mode)
            fs = log.fs.clone()
            fs.write_file(s.path, _mutate(s.data, op, pos))
            where = f"segment {j} {op} at {pos}, {mode}: want {want}"
            if isinstance(want, Refused):
                before = fs.tree()
                with pytest.raises(CorruptionError) as ei:
                    lsm.open(DB, fs=fs, wal_recovery=mode, **WAL_OPTS)
                assert (ei.value.path, ei.value.offset) == (want.path, want.offset), (
                    f"{where}\n  got {ei.value}"
                )
                assert fs.tree() == before, where
            else:
                with lsm.open(DB, fs=fs, wal_recovery=mode, **WAL_OPTS) as db:
                    assert dict(db.items()) == _model(log, want.seqs), where
                    assert db.last_seq == want.last_seq, where
                with lsm.open(DB, fs=fs, wal_recovery="absolute", **WAL_OPTS) as db:
                    assert dict(db.items()) == _model(log, want.seqs), where
            checked += 1
    _report("corruption_wal_open", len(picked), 0, checks=checked)


# ============================================================================== SSTables, manifest, CURRENT
TABLE_OPTS = {
    "background": "inline",
    "block_size": 128,
    "memtable_size": 64 << 20,
    # the preallocated WAL spare is min(segment, 1.25 x memtable): 64 MiB of
    # zeros written into CrashFS at every open, ~0.65 s CPU per case; 1 MiB
    # keeps preallocation on at ~0.01 s
    "wal_segment_size": 1 << 20,
    "l0_compaction_trigger": 8,
    "l0_slowdown_trigger": 16,
    "l0_stop_trigger": 24,
    # every level compressed: level-0 tables hold the compressed blocks
    # damaged here, and compact_range moves a table down by edits alone
    "min_level_to_compress": 0,
}
ABSENT = [b"", b"a", b"k0005", b"k080", b"k999", b"zzz"]


@dataclass
class TableDB:
    fs: CrashFS  # closed database: L0 = [C, B], bottom level = [A], recent writes in the WAL only
    model: dict[bytes, bytes]
    numbers: dict[str, int]
    strict: set[bytes]  # keys answered by the memtable or table C: reading them never touches B
    manifest: str
    records: list[tuple[int, int]]  # (offset, end) of each manifest record

    def table(self, name: str) -> str:
        return filenames.join(DB, filenames.sst_name(self.numbers[name]))


@pytest.fixture(scope="module")
def table_db() -> TableDB:
    """Three flushes whose versions shadow each other, so that a read that
    skipped a damaged table would find an older value: A (80 keys, then
    compacted to the bottom level), B (even keys rewritten, every seventh
    deleted), C (every fifth rewritten), and four writes left in the WAL."""
    fs = CrashFS()
    rng = random.Random(77)
    model: dict[bytes, bytes] = {}
    strict: set[bytes] = set()
    numbers: dict[str, int] = {}

    def live(db: lsm.DB) -> set[int]:
        return {f.number for level in db._vs.current.levels for f in level}

    with lsm.open(DB, fs=fs, **TABLE_OPTS) as db:
        for i in range(80):  # half incompressible (stored raw), half compressible (zstd)
            k, v = b"k%03d" % i, rng.randbytes(rng.randint(10, 40)) if i % 2 else b"v1-%03d|" % i * 5
            db.put(k, v)
            model[k] = v
        db.flush()
        db.compact_range()
        (numbers["A"],) = live(db)
        for i in range(0, 80, 2):
            k, v = b"k%03d" % i, b"v2-%03d|" % i * 3 if i % 4 else rng.randbytes(25)
            db.put(k, v)
            model[k] = v
        for i in range(0, 80, 7):
            db.delete(b"k%03d" % i)
            model.pop(b"k%03d" % i)
        db.flush()
        (numbers["B"],) = live(db) - {numbers["A"]}
        for i in range(0, 80, 5):
            db.put(b"k%03d" % i, b"v3-%d" % i)
            model[b"k%03d" % i] = b"v3-%d" % i
            strict.add(b"k%03d" % i)
        db.flush()
        (numbers["C"],) = live(db) - {numbers["A"], numbers["B"]}
        for k in (b"k001", b"k003", b"k050", b"zz"):
            db.put(k, b"v4")
            model[k] = b"v4"
            strict.add(k)
        assert [f.number for f in db._vs.current.levels[0]] == [numbers["C"], numbers["B"]]
        manifest = filenames.join(DB, filenames.manifest_name(db._vs.manifest_number))
    data = fs.read_file(manifest)
    records, off = [], 16
    while off < len(data):
        _crc, length = struct.unpack_from("<II", data, off)
        records.append((off, off + 8 + length))
        off += 8 + length
    assert off == len(data) and len(records) >= 4
    return TableDB(fs, model, numbers, strict, manifest, records)


def _table_regions(data: bytes) -> dict[str, tuple[int, int]]:
    """[lo, hi) of the footer, each meta block and the first and last data
    block (stored bytes and trailer) of an undamaged table."""
    from lsm.sstable.block import decode_block
    from lsm.sstable.format import BLOCK_TRAILER_SIZE, FOOTER_SIZE, HANDLE, decode_footer, unframe_block

    t = BLOCK_TRAILER_SIZE
    filt, props, index = decode_footer(data[-FOOTER_SIZE:])
    handles = [
        HANDLE.unpack(v)
        for v in decode_block(unframe_block(data[index[0] : index[0] + index[1] + t], True))[2]
    ]
    assert len(handles) >= 4 and filt != (0, 0)
    return {
        "footer": (len(data) - FOOTER_SIZE, len(data)),
        "index": (index[0], index[0] + index[1] + t),
        "filter": (filt[0], filt[0] + filt[1] + t),
        "properties": (props[0], props[0] + props[1] + t),
        "first data block": (handles[0][0], handles[0][0] + handles[0][1] + t),
        "last data block": (handles[-1][0], handles[-1][0] + handles[-1][1] + t),
    }


class Tally:
    """Counts per outcome, and the violations (each a description)."""

    def __init__(self) -> None:
        self.cases = 0
        self.counts: dict[str, int] = {}
        self.bad: list[str] = []

    def add(self, what: str, n: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + n

    def check(self, ok: bool, what: str) -> None:
        if not ok:
            self.bad.append(what)

    def report(self, family: str) -> None:
        _report(family, self.cases, len(self.bad), outcomes=dict(sorted(self.counts.items())))
        assert not self.bad, f"{len(self.bad)} violations; first:\n" + "\n".join(self.bad[:8])


def _sst_files(fs: CrashFS) -> dict[str, int]:
    return {p: n for p, n in fs.tree().items() if p.endswith(".sst")}


def _reads(db: lsm.DB, tdb: TableDB, damaged: str, t: Tally, where: str, *, trusted: bool) -> int:
    """Every get and a scan each way: the right data or CorruptionError
    naming ``damaged``. Keys in ``tdb.strict`` must read right. A wrong
    value is a violation when ``trusted`` (checksums verified), else
    counted as ``unverified wrong read``. Returns the number of errors."""
    errors = 0

    def wrong(what: str) -> None:
        if trusted:
            t.bad.append(f"{where}: wrong data from {what}")
        else:
            t.add("unverified wrong read")

    for k in sorted(tdb.model) + ABSENT:
        try:
            v = db.get(k)
        except CorruptionError as e:
            t.check(e.path == damaged and k not in tdb.strict, f"{where}: get({k!r}) raised {e}")
            errors += 1
            continue
        if v != tdb.model.get(k):
            wrong(f"get({k!r})")
    for reverse in (False, True):
        want = sorted(tdb.model.items(), reverse=reverse)
        got = []
        try:
            for item in db.items(reverse=reverse):
                got.append(item)  # noqa: PERF402 - keeps what came before an error
        except CorruptionError as e:
            t.check(e.path == damaged, f"{where}: scan raised {e}")
            errors += 1
            if got != want[: len(got)]:
                wrong("a scan before its error")
            continue
        if got != want:
            wrong("a scan")
    return errors


def _compaction_fails_closed(
    db: lsm.DB,
    fs: CrashFS,
    tdb: TableDB,
    damaged: str,
    offset: int | None,
    t: Tally,
    where: str,
    *,
    trusted: bool,
) -> None:
    """compact_range meets the damage: CorruptionError naming it, health
    ``background_error``, the version and every table file unchanged, and
    the rest of the database readable and writable."""
    db.flush()  # the writes in the WAL become table D: compact_range then only compacts
    version, files = db._vs.current, _sst_files(fs)
    try:
        db.compact_range()
    except CorruptionError as e:
        t.check(
            e.path == damaged and (offset is None or e.offset == offset),
            f"{where}: compaction raised {e}, expected {damaged} at offset {offset}",
        )
        t.add("compaction failed closed")
    else:
        t.bad.append(f"{where}: compaction accepted a damaged input")
        return
    t.check(db.health == "background_error", f"{where}: health {db.health!r} after a failed compaction")
    t.check(db._vs.current == version, f"{where}: a failed compaction changed the version")
    t.check(_sst_files(fs) == files, f"{where}: table files changed: {files} -> {_sst_files(fs)}")
    for k in tdb.strict:
        try:
            t.check(db.get(k) == tdb.model.get(k), f"{where}: {k!r} wrong after the failed compaction")
        except CorruptionError as e:
            t.bad.append(f"{where}: {k!r} unreadable after the failed compaction: {e}")
    _reads(db, tdb, damaged, t, where + " (after compaction)", trusted=trusted)
    db.put(b"after", b"x")
    t.check(db.get(b"after") == b"x", f"{where}: write after the failed compaction lost")


def _damaged_table_case(
    tdb: TableDB,
    t: Tally,
    bad: bytes,
    *,
    region: str,
    offset: int | None,
    paranoid: bool,
    when: str,
    where: str,
) -> None:
    """Table B replaced by ``bad`` before the open (``when="before"``) or
    under the open database (``"while open"``)."""
    fs = tdb.fs.clone()
    path = tdb.table("B")
    opts = {**TABLE_OPTS, "paranoid_checks": paranoid}
    meta = "data block" not in region  # checked at open whatever paranoid_checks says
    t.cases += 1
    if when == "before":
        fs.write_file(path, bad)
        files = _sst_files(fs)
        try:
            db = lsm.open(DB, fs=fs, **opts)
        except CorruptionError as e:
            t.check(
                meta and e.path == path and (offset is None or e.offset == offset),
                f"{where}: open raised {e}, expected {path} at offset {offset}",
            )
            t.check(_sst_files(fs) == files, f"{where}: a refused open changed the table files")
            t.add("open refused")
            return
        t.check(not meta, f"{where}: open accepted damage in the {region}")
    else:
        db = lsm.open(DB, fs=fs, **opts)
        fs.write_file(path, bad)  # same inode: the open reader sees the new bytes (bit rot under it)
    try:
        trusted = paranoid or meta
        errors = _reads(db, tdb, path, t, where, trusted=trusted)
        if when == "before" and paranoid:
            t.check(errors > 0, f"{where}: damage in the {region} went unnoticed by every read")
        t.add("read errors", errors)
        _compaction_fails_closed(db, fs, tdb, path, offset, t, where, trusted=trusted)
    finally:
        db.close()


def _flip(data: bytes, pos: int) -> bytes:
    b = bytearray(data)
    b[pos] ^= (0x01, 0x10, 0x80, 0xFF)[pos % 4]
    return bytes(b)


@pytest.mark.parametrize("paranoid", [True, False], ids=["paranoid", "unverified"])
def test_table_damage_before_open(table_db: TableDB, paranoid: bool) -> None:
    """Every byte of the footer, index, filter and properties blocks and of
    the first and last data blocks of table B, damaged on disk before open.
    Meta-block damage fails the open naming B and the block; data-block
    damage is met by reads (error or right data) and by compaction (fails
    closed). With paranoid_checks off the meta blocks are still checked;
    only the read path's data-block checksums are skipped (the meta-block
    sweep is then sampled: it takes the same path)."""
    tdb = table_db
    data = tdb.fs.read_file(tdb.table("B"))
    t = Tally()
    for region, (lo, hi) in _table_regions(data).items():
        step = 1 if paranoid or "data block" in region else 5
        for pos in range(lo, hi, step):
            _damaged_table_case(
                tdb,
                t,
                _flip(data, pos),
                region=region,
                offset=lo,
                paranoid=paranoid,
                when="before",
                where=f"{region} byte {pos}",
            )
    t.report(f"corruption_sst_before_open_{'paranoid' if paranoid else 'unverified'}")


def test_table_damage_while_open(table_db: TableDB) -> None:
    """Bytes of the same regions (every 7th / LSM_CORRUPTION_SCALE)
    damaged under an open database (paranoid_checks on and off):
    reads answer from what open verified or fail, and the compaction
    that reads the table anew fails closed."""
    tdb = table_db
    data = tdb.fs.read_file(tdb.table("B"))
    t = Tally()
    stride = max(1, 7 // SCALE)
    for region, (lo, hi) in _table_regions(data).items():
        for i, pos in enumerate(range(lo, hi, stride)):
            _damaged_table_case(
                tdb,
                t,
                _flip(data, pos),
                region=region,
                offset=lo,
                paranoid=i % 2 == 0,
                when="while open",
                where=f"{region} byte {pos} while open",
            )
    t.report("corruption_sst_while_open")


def test_truncated_and_missing_table(table_db: TableDB) -> None:
    tdb = table_db
    path = tdb.table("B")
    data = tdb.fs.read_file(path)
    regions = _table_regions(data)
    t = Tally()
    cuts = sorted(
        {0, 1, regions["first data block"][1], regions["filter"][0], regions["footer"][0], len(data) - 1}
    )
    for cut in cuts:
        # Before open: the manifest records every table's size.
        fs = tdb.fs.clone()
        fs.write_file(path, data[:cut])
        t.cases += 1
        with pytest.raises(CorruptionError, match="manifest records") as ei:
            lsm.open(DB, fs=fs, **TABLE_OPTS)
        t.check(ei.value.path == path, f"truncated to {cut}: {ei.value}")
        t.check(fs.read_file(path) == data[:cut], f"truncated to {cut}: a refused open changed the file")
        # While open: reads past the end fail, compaction fails closed.
        _damaged_table_case(
            tdb,
            t,
            data[:cut],
            region="data block (truncated)",
            offset=None,
            paranoid=True,
            when="while open",
            where=f"truncated to {cut} while open",
        )
    fs = tdb.fs.clone()
    fs.remove(path)
    t.cases += 1
    with pytest.raises(CorruptionError, match="missing table file") as ei:
        lsm.open(DB, fs=fs, **TABLE_OPTS)
    assert ei.value.path == path
    t.report("corruption_sst_truncated_missing")


def _open_outcome(
    tdb: TableDB, fs: CrashFS, t: Tally, where: str, *, refuse: tuple[str, int | None] | None
) -> None:
    """Open after manifest or CURRENT damage. ``refuse``: the (path,
    offset) the CorruptionError must name (offset None: any; path "WAL":
    a sequence gap in the log, the mark of a dropped flush edit); None:
    the open must succeed and hold exactly the model. A refused open never
    removes a table file."""
    files = _sst_files(fs)
    t.cases += 1
    try:
        db = lsm.open(DB, fs=fs, **TABLE_OPTS)
    except CorruptionError as e:
        if refuse is None:
            t.bad.append(f"{where}: open raised {e}")
        elif refuse[0] == "WAL":
            t.check(str(e.path).endswith(".wal") and "sequence gap" in str(e), f"{where}: open raised {e}")
        else:
            t.check(
                e.path == refuse[0] and refuse[1] in (None, e.offset),
                f"{where}: open raised {e}, expected {refuse}",
            )
        t.check(_sst_files(fs) == files, f"{where}: a refused open changed the table files")
        t.add("open refused" + (" (WAL gap)" if refuse and refuse[0] == "WAL" else ""))
        return
    try:
        t.check(refuse is None, f"{where}: open accepted it, expected CorruptionError at {refuse}")
        t.check(dict(db.items()) == tdb.model, f"{where}: opened with the wrong contents")
        t.add("opened with the right contents")
    finally:
        db.close()


@pytest.mark.parametrize("variant", ["as-written", "final-no-op-edit"])
def test_manifest_every_byte(table_db: TableDB, variant: str) -> None:
    """Every byte of the manifest flipped, and cuts inside every record.

    The header, or any record but the last: CorruptionError naming the
    manifest and the header (0) or the record's offset (an intact record
    follows, so the damage is not a torn write). The last record may be a
    torn write and is dropped: as written, it is the flush of table C, whose
    WAL segments were deleted after it, so the open fails closed on the gap
    in the log; with a final no-op edit appended (written, never acted
    on), dropping it loses nothing and the open holds exactly the data.
    Cuts: the state before the cut, judged the same way. Never wrong data,
    never a table file removed."""
    tdb = table_db
    data = tdb.fs.read_file(tdb.manifest)
    records = list(tdb.records)
    if variant == "final-no-op-edit":
        from lsm.manifest.edit import VersionEdit
        from lsm.manifest.version_set import VersionSet, encode_record

        vs = VersionSet(tdb.fs.clone(), DB)
        vs.recover()
        extra = encode_record(
            VersionEdit(next_file_number=vs.next_file_number, last_seq=vs.last_seq).encode()
        )
        records.append((len(data), len(data) + len(extra)))
        data += extra
    base = tdb.fs.clone()
    base.write_file(tdb.manifest, data)
    last = records[-1][0]
    dropped_last = None if variant == "final-no-op-edit" else ("WAL", None)
    t = Tally()
    _open_outcome(tdb, base.clone(), t, "undamaged", refuse=None)
    for pos in range(len(data)):
        fs = base.clone()
        fs.write_file(tdb.manifest, _flip(data, pos))
        if pos >= last:
            refuse = dropped_last
        else:
            refuse = (tdb.manifest, 0 if pos < 16 else next(o for o, e in records if o <= pos < e))
        _open_outcome(tdb, fs, t, f"manifest byte {pos}", refuse=refuse)
    for i, (off, end) in enumerate(records):
        for cut in sorted({off + 3, off + 8, (off + 8 + end) // 2, end - 1}):
            fs = base.clone()
            fs.write_file(tdb.manifest, data[:cut])
            # Before the snapshot record: no complete record. Else the state before record i.
            refuse = (
                (tdb.manifest, 16) if i == 0 else dropped_last if i == len(records) - 1 else ("WAL", None)
            )
            _open_outcome(tdb, fs, t, f"manifest cut at {cut}", refuse=refuse)
    for cut, why in ((0, 0), (10, 0), (16, 16)):  # header truncated; no complete record
        fs = base.clone()
        fs.write_file(tdb.manifest, data[:cut])
        _open_outcome(tdb, fs, t, f"manifest cut at {cut}", refuse=(tdb.manifest, why))
    fs = base.clone()
    fs.remove(tdb.manifest)
    _open_outcome(tdb, fs, t, "manifest missing", refuse=(tdb.manifest, None))
    t.report(f"corruption_manifest_{variant}")


def _current_names(data: bytes) -> str | None:
    """The manifest a CURRENT file names, by the grammar of
    docs/format/manifest.md ("MANIFEST-%06d\\n", ASCII), or None when it is
    garbled."""
    if not data.endswith(b"\n") or not data.startswith(b"MANIFEST-"):
        return None
    digits = data[9:-1]
    if not digits.isdigit() or not digits.isascii() or len(digits) > 20:
        return None
    name = data[:-1].decode("ascii")
    return name if filenames.manifest_name(int(digits)) == name else None


def test_current_damage(table_db: TableDB) -> None:
    """CURRENT: every byte flipped (two ways), cut at every length,
    extended, replaced by a long number, and removed. Garbled: the error
    names CURRENT; naming another manifest: the error names that one."""
    tdb = table_db
    cur = filenames.join(DB, filenames.CURRENT)
    data = tdb.fs.read_file(cur)
    variants = []
    for pos in range(len(data)):
        for bit in (0x01, 0xFF):
            b = bytearray(data)
            b[pos] ^= bit
            variants.append((f"CURRENT byte {pos} ^ {bit:#x}", bytes(b)))
    variants += [(f"CURRENT cut at {n}", data[:n]) for n in range(len(data))]
    variants += [
        ("CURRENT + newline", data + b"\n"),
        ("CURRENT + junk", data + b"junk"),
        ("CURRENT names a 7-digit number", b"MANIFEST-1000001\n"),
        ("CURRENT names a 5000-digit number", b"MANIFEST-" + b"1" * 5000 + b"\n"),
        ("CURRENT of NULs", bytes(len(data))),
    ]
    t = Tally()
    for where, content in variants:
        fs = tdb.fs.clone()
        fs.write_file(cur, content)
        name = _current_names(content)
        if name is not None and filenames.join(DB, name) == tdb.manifest:
            t.check(content == data, f"{where}: another content names the live manifest")
            _open_outcome(tdb, fs, t, where, refuse=None)
        else:
            _open_outcome(tdb, fs, t, where, refuse=(filenames.join(DB, name) if name else cur, None))
    fs = tdb.fs.clone()
    fs.remove(cur)
    _open_outcome(tdb, fs, t, "CURRENT missing", refuse=(cur, None))
    t.report("corruption_current")


def _first_data_block(data: bytes) -> int:
    lo, _hi = _table_regions(data)["first data block"]
    return lo


def test_background_compaction_fails_closed(table_db: TableDB) -> None:
    """The automatic compaction (a background thread) meets a damaged data
    block of B: no exception reaches the caller; ``db.health`` turns
    ``"background_error"``, the version and the table files stay, and the
    keys that do not need B read right; new writes still work."""
    tdb = table_db
    fs = tdb.fs.clone()
    path = tdb.table("B")
    data = fs.read_file(path)
    fs.write_file(path, _flip(data, _first_data_block(data) + 3))
    files = _sst_files(fs)
    import time

    with lsm.open(DB, fs=fs, **{**TABLE_OPTS, "background": "thread", "l0_compaction_trigger": 2}) as db:
        version = db._vs.current
        deadline = time.monotonic() + 60
        while db.health == "ok" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert db.health == "background_error"
        err = db._bg.error
        assert isinstance(err, CorruptionError) and err.path == path
        assert db.stats()["background_error"] is not None
        assert db._vs.current == version and _sst_files(fs) == files
        for k in tdb.strict:
            assert db.get(k) == tdb.model[k]
        db.put(b"after", b"x")
        assert db.get(b"after") == b"x"
    _report("corruption_sst_background_thread", 1, 0)


def test_compaction_in_worker_process_fails_closed(tmp_path) -> None:
    """The same through a worker process (the default background mode) on a
    real directory: the CorruptionError crosses the process boundary with
    its path and offset, and the inputs stay."""
    d = tmp_path / "db"
    opts = {**TABLE_OPTS, "background": "process"}
    with lsm.open(d, **opts) as db:
        for round_ in range(2):
            for i in range(60):
                db.put(b"k%03d" % i, b"round%d-%03d|" % (round_, i) * 4)
            db.flush()
        tables = sorted(p for p in os.listdir(d) if p.endswith(".sst"))
    assert len(tables) == 2
    victim = str(d / tables[0])
    with open(victim, "rb") as f:
        data = f.read()
    off = _first_data_block(data)
    with open(victim, "wb") as f:
        f.write(_flip(data, off + 5))
    before = {p: os.path.getsize(d / p) for p in tables}
    with lsm.open(d, **opts) as db:
        with pytest.raises(CorruptionError) as ei:
            db.compact_range()
        assert (ei.value.path, ei.value.offset) == (victim, off)
        assert db.health == "background_error"
        assert {p: os.path.getsize(d / p) for p in os.listdir(d) if p.endswith(".sst")} == before
        assert db.get(b"k059") == b"round1-059|" * 4  # in the newer, undamaged table
    _report("corruption_sst_worker_process", 1, 0)
