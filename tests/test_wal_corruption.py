"""WAL damage seen through the whole database: lsm.open under each
``wal_recovery`` mode after a byte flip or a truncation in every region of
a WAL segment (segment header fields; record header fields crc, length,
seq, count, timestamp; record body; first, middle and last record; a
middle segment and the newest segment), plus missing, reordered and
duplicated segments.

The framing rules themselves are unit-tested in tests/test_wal_reader.py;
here we check what open does with them (docs/format/wal.md, "Recovery
modes"):

* a refused open raises CorruptionError naming the file and the offset and
  leaves every byte of the directory as it was;
* an accepted open holds exactly the commits before the damage (checked by
  content), reports what it dropped (``db.recovery_report``), cuts or sets
  aside the damaged part on disk, accepts new writes, and opens again
  cleanly afterwards, even under ``absolute``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass

import pytest

import lsm
from lsm.base import filenames
from lsm.base.fs import DEFAULT_FS
from lsm.wal import format as wf
from lsm.wal.reader import scan_segment

HS = wf.SEGMENT_HEADER_SIZE
RH = wf.RECORD_HEADER_SIZE
MODES = ("tolerate_tail", "absolute", "point_in_time")
OPTS = {"background": "inline", "memtable_size": 64 << 20, "wal_segment_size": 4096, "sync": lsm.Sync.FULL}
"""Nothing is flushed (every commit stays in the WAL); a segment holds about
seven commits."""


# ---- the fixture: a closed database whose commits are all in the WAL ---------------------------------------


@dataclass
class Commit:
    seq: int  # first sequence number
    ops: list[tuple[bytes, bytes | None]]  # (key, value); None: delete

    @property
    def count(self) -> int:
        return len(self.ops)


@dataclass
class Seg:
    name: str
    first_seq: int
    size: int
    offsets: list[int]  # of each record
    commits: list[int]  # index into Log.commits of each record


@dataclass
class Log:
    root: str
    commits: list[Commit]
    segs: list[Seg]


def _value(tag: str, n: int) -> bytes:
    # unique per op, no zero bytes (zeros could pass for an end-of-data marker)
    return (tag.encode() + b"|") * (n // (len(tag) + 1) + 1)


def _commit(db: lsm.DB, i: int, tag: str) -> Commit:
    """Commit number ``i``: a put, a delete or a batch (every fourth)."""
    if i % 4 == 3:
        ops: list[tuple[bytes, bytes | None]] = [
            (b"k%03d" % (i % 13), _value(f"{tag}{i}a", 150)),
            (b"k%03d" % ((i * 7) % 13), None),
            (b"b%03d" % i, _value(f"{tag}{i}c", 200)),
        ]
        b = lsm.WriteBatch()
        for k, v in ops:
            b.put(k, v) if v is not None else b.delete(k)
        seq = db.write(b) - len(ops) + 1
    elif i % 4 == 2:
        ops = [(b"k%03d" % ((i * 5) % 13), None)]
        seq = db.delete(ops[0][0])
    else:
        ops = [(b"k%03d" % (i % 13), _value(f"{tag}{i}", 500))]
        seq = db.put(ops[0][0], ops[0][1])  # type: ignore[arg-type]
    return Commit(seq, ops)


def _model(commits: list[Commit]) -> dict[bytes, bytes]:
    m: dict[bytes, bytes] = {}
    for c in commits:
        for k, v in c.ops:
            if v is None:
                m.pop(k, None)
            else:
                m[k] = v
    return m


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    root = str(tmp_path_factory.mktemp("walfix") / "db")
    commits = []
    with lsm.open(root, **OPTS) as db:
        i = 0
        while True:
            commits.append(_commit(db, i, "c"))
            i += 1
            names = [n for n in os.listdir(root) if filenames.parse_wal(n) is not None]
            # four full segments and at least four records in the fifth (newest)
            if len(names) == 5 and db._wal.segment_records >= 4:
                break
    by_seq = {c.seq: n for n, c in enumerate(commits)}
    segs = []
    for name in sorted(n for n in os.listdir(root) if filenames.parse_wal(n) is not None):
        s = scan_segment(DEFAULT_FS, os.path.join(root, name))
        assert s.damage is None and s.records
        assert [r.count for r in s.records] == [commits[by_seq[r.seq]].count for r in s.records]
        data = DEFAULT_FS.read_file(s.path)
        for r in s.records:
            assert any(data[r.offset : r.offset + 4])  # a header cut after its crc does not read as zeros
        segs.append(Seg(name, s.first_seq, s.file_size, [r.offset for r in s.records],
                        [by_seq[r.seq] for r in s.records]))
    assert [c for s in segs for c in s.commits] == list(range(len(commits)))
    assert len(segs) == 5 and all(len(s.offsets) >= 3 for s in segs)
    return Log(root, commits, segs)


def _copy(log: Log, tmp_path) -> str:
    d = str(tmp_path / "db")
    shutil.copytree(log.root, d)
    return d


def _hashes(d: str) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(d):
        for n in files:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, d)] = hashlib.sha256(f.read()).hexdigest()
    return out


def _flip(path: str, off: int, bit: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ bit]))


# ---- what each damage must do -------------------------------------------------------------------------------


@dataclass
class Refused:
    path: str
    offset: int


@dataclass
class Opened:
    kept: int  # commits kept: log.commits[:kept]
    truncated: tuple[str, int] | None  # (segment path, new size)
    set_aside: list[str]  # segment paths renamed to *.dropped


# Record regions: (name, offset of the field in the record, byte flipped, bit). The length flip
# sets bit 24: the record then runs past the end of the file (a torn-looking length).
RECORD_REGIONS = [
    ("crc", 0, 0, 0x01),
    ("len", 4, 7, 0x01),
    ("seq", 8, 8, 0x01),
    ("count", 16, 16, 0x01),
    ("timestamp", 20, 20, 0x01),
    ("body", 28, None, 0x01),  # None: the middle byte of the body
]
# Segment header regions: (name, offset, where a flip is reported).
HEADER_REGIONS = [("magic", 0, 0), ("version", 8, 8), ("first_seq", 12, 20), ("header_crc", 20, 20)]


def _cases() -> list[tuple[str, str, str, str]]:
    out = []
    for seg in ("middle", "newest"):
        for region, _o, _r in HEADER_REGIONS:
            for op in ("flip", "truncate"):
                out.append((seg, "header", region, op))
        for rec in ("first", "mid", "last"):
            for region, *_ in RECORD_REGIONS:
                for op in ("flip", "truncate"):
                    out.append((seg, rec, region, op))
    return out


def _where(log: Log, d: str, seg: str, rec: str, region: str) -> tuple[int, int, int, int]:
    """(segment index, record index or -1 for the header, offset of the
    region, offset where damage there is reported)."""
    i = 2 if seg == "middle" else len(log.segs) - 1
    s = log.segs[i]
    if rec == "header":
        _n, off, reported = next(h for h in HEADER_REGIONS if h[0] == region)
        return i, -1, off, reported
    j = {"first": 0, "mid": len(s.offsets) // 2, "last": len(s.offsets) - 1}[rec]
    x = s.offsets[j]
    _n, field, _b, _bit = next(r for r in RECORD_REGIONS if r[0] == region)
    if region == "body":
        end = s.offsets[j + 1] if j + 1 < len(s.offsets) else s.size
        field = RH + (end - x - RH) // 2
    return i, j, x + field, x


def _expect(log: Log, d: str, seg: str, rec: str, region: str, op: str, mode: str) -> Refused | Opened:
    i, j, off, reported = _where(log, d, seg, rec, region)
    segs = log.segs

    def path(k: int) -> str:
        return os.path.join(d, segs[k].name)

    newest = i == len(segs) - 1
    before_seg = segs[i].commits[0]  # commits in earlier segments
    later = [path(k) for k in range(i + 1, len(segs))]

    if op == "truncate" and rec == "header":
        reported = off  # "truncated segment header (n of 24 bytes)" at offset n
    if op == "truncate" and rec != "header" and off == reported:
        # A cut exactly at a record boundary: this segment is clean but shorter.
        kept = segs[i].commits[j]
        if newest:
            return Opened(kept, None, [])  # nothing to detect, in any mode
        if mode != "point_in_time":
            # The next segment does not continue the log: reported at its start (a gap between
            # segments), or at its first record when this segment kept no record.
            return Refused(path(i + 1), HS if j == 0 else 0)
        return Opened(kept, None, later)

    kept = before_seg if j < 0 else segs[i].commits[j]
    cut_keeps_records = j > 0
    truncated = (path(i), segs[i].offsets[j]) if cut_keeps_records else None
    set_aside = [] if cut_keeps_records else [path(i)]
    if mode == "absolute":
        return Refused(path(i), reported)
    if mode == "point_in_time":
        return Opened(kept, truncated, set_aside + later)
    # tolerate_tail: a torn tail of the newest segment only. A truncation of the newest segment
    # is always one; a flip only in its last record (no intact record follows it).
    if newest and (op == "truncate" or (j == len(segs[i].offsets) - 1)):
        return Opened(kept, truncated, set_aside)
    return Refused(path(i), reported)


def _damage(log: Log, d: str, seg: str, rec: str, region: str, op: str) -> None:
    i, _j, off, _rep = _where(log, d, seg, rec, region)
    p = os.path.join(d, log.segs[i].name)
    if op == "truncate":
        os.truncate(p, off)
        return
    if rec != "header":
        _n, field, byte, bit = next(r for r in RECORD_REGIONS if r[0] == region)
        if byte is not None:
            off = off - field + byte
        _flip(p, off, bit)
    else:
        _flip(p, off)


# ---- the checks ---------------------------------------------------------------------------------------------


def _check_refused(d: str, mode: str, want: Refused) -> None:
    before = _hashes(d)
    with pytest.raises(lsm.CorruptionError) as ei:
        lsm.open(d, **OPTS, wal_recovery=mode)
    e = ei.value
    assert (e.path, e.offset) == (want.path, want.offset), str(e)
    assert want.path in str(e) and f"offset {want.offset}" in str(e)
    assert _hashes(d) == before, "a refused open changed the directory"


def _check_opened(log: Log, d: str, mode: str, want: Opened, tag: str) -> None:
    commits = log.commits[: want.kept]
    with lsm.open(d, **OPTS, wal_recovery=mode) as db:
        assert dict(db.items()) == _model(commits)
        assert db.last_seq == (commits[-1].seq + commits[-1].count - 1 if commits else 0)
        dropped = [entry.split(": ", 1)[0] for entry in db.recovery_report["dropped"]]
        want_dropped = ([want.truncated[0]] if want.truncated else []) + want.set_aside
        assert dropped == want_dropped, db.recovery_report["dropped"]
        if want.truncated:
            assert os.path.getsize(want.truncated[0]) == want.truncated[1]
        fresh = os.path.join(d, filenames.wal_name(db.last_seq + 1))  # the segment open started
        for p in want.set_aside:
            assert os.path.exists(p + ".dropped") and (p == fresh or not os.path.exists(p))
        # the repaired log takes new commits
        more = [_commit(db, n, tag) for n in range(6)]
    # ... and opens again, even under absolute (no damage is left) and with the set-aside files present
    for again in ("absolute", "tolerate_tail"):
        with lsm.open(d, **OPTS, wal_recovery=again) as db:
            assert dict(db.items()) == _model(commits + more)
            assert db.recovery_report["dropped"] == []
            more.append(_commit(db, len(more), tag))


@pytest.mark.parametrize("seg,rec,region,op", _cases(), ids=["-".join(c) for c in _cases()])
def test_damage_in_every_region(log: Log, tmp_path, seg: str, rec: str, region: str, op: str) -> None:
    for mode in MODES:
        d = _copy(log, tmp_path / mode)
        _damage(log, d, seg, rec, region, op)
        want = _expect(log, d, seg, rec, region, op, mode)
        if isinstance(want, Refused):
            _check_refused(d, mode, want)
        else:
            _check_opened(log, d, mode, want, f"new-{mode}-")


def test_undamaged_log_opens_in_every_mode(log: Log, tmp_path) -> None:
    for mode in MODES:
        d = _copy(log, tmp_path / mode)
        _check_opened(log, d, mode, Opened(len(log.commits), None, []), "n")


# ---- missing, reordered and duplicated segments -----------------------------------------------------------


def test_missing_middle_segment(log: Log, tmp_path) -> None:
    for mode in MODES:
        d = _copy(log, tmp_path / mode)
        os.remove(os.path.join(d, log.segs[2].name))
        nxt = os.path.join(d, log.segs[3].name)
        if mode == "point_in_time":
            later = [os.path.join(d, s.name) for s in log.segs[3:]]
            _check_opened(log, d, mode, Opened(log.segs[2].commits[0], None, later), "m")
        else:
            _check_refused(d, mode, Refused(nxt, 0))


def test_missing_first_segment(log: Log, tmp_path) -> None:
    """Commits 1.. are missing between the (empty) tables and the log."""
    for mode in MODES:
        d = _copy(log, tmp_path / mode)
        os.remove(os.path.join(d, log.segs[0].name))
        nxt = os.path.join(d, log.segs[1].name)
        if mode == "point_in_time":
            later = [os.path.join(d, s.name) for s in log.segs[1:]]
            _check_opened(log, d, mode, Opened(0, None, later), "f")
        else:
            _check_refused(d, mode, Refused(nxt, 0))


def test_swapped_segment_names(log: Log, tmp_path) -> None:
    """Two middle segments exchange names: each header contradicts its name."""
    for mode in MODES:
        d = _copy(log, tmp_path / mode)
        a, b = (os.path.join(d, log.segs[k].name) for k in (1, 2))
        os.rename(a, a + ".x")
        os.rename(b, a)
        os.rename(a + ".x", b)
        if mode == "point_in_time":
            later = [os.path.join(d, s.name) for s in log.segs[1:]]
            _check_opened(log, d, mode, Opened(log.segs[1].commits[0], None, later), "s")
        else:
            _check_refused(d, mode, Refused(a, 12))


def _reframe(log: Log, d: str, k: int, first_rec: int, new_first: int) -> str:
    """A segment named ``new_first`` holding segment k's records from
    ``first_rec`` on (copied bytes under a new header)."""
    s = log.segs[k]
    data = DEFAULT_FS.read_file(os.path.join(d, s.name))
    p = os.path.join(d, filenames.wal_name(new_first))
    DEFAULT_FS.write_file(p, wf.encode_segment_header(new_first) + data[s.offsets[first_rec] :], sync=False)
    return p


def test_duplicated_records_in_an_overlapping_segment(log: Log, tmp_path) -> None:
    """A copy of segment 1's records from its second on, as a segment of its
    own: it overlaps segment 1, so the log stops after segment 1."""
    for mode in MODES:
        d = _copy(log, tmp_path / mode)
        s = log.segs[1]
        second = log.commits[s.commits[1]].seq
        dup = _reframe(log, d, 1, 1, second)
        if mode == "point_in_time":
            later = [dup] + [os.path.join(d, x.name) for x in log.segs[2:]]
            _check_opened(log, d, mode, Opened(log.segs[2].commits[0], None, later), "o")
        else:
            _check_refused(d, mode, Refused(dup, 0))


def test_old_segment_copied_after_the_newest(log: Log, tmp_path) -> None:
    """Segment 1's records again in a segment named to follow the newest one:
    its first record breaks the sequence (intact, so never a torn tail)."""
    last = log.commits[-1]
    nxt = last.seq + last.count
    for mode in MODES:
        d = _copy(log, tmp_path / mode)
        dup = _reframe(log, d, 1, 0, nxt)
        if mode == "point_in_time":
            _check_opened(log, d, mode, Opened(len(log.commits), None, [dup]), "a")
        else:
            _check_refused(d, mode, Refused(dup, HS))


def test_second_lossy_recovery_keeps_the_first_set_aside_segment(tmp_path) -> None:
    """Regression: point_in_time sets a damaged newest segment aside as
    ``S.wal.dropped``; open then starts a new segment with the same name
    ``S.wal``. If that one is damaged too, a second point_in_time open used
    to rename it onto ``S.wal.dropped``, destroying the only copy of what
    the first recovery dropped."""
    d = str(tmp_path / "db")
    with lsm.open(d, **OPTS) as db:
        for i in range(3):
            db.put(b"k%d" % i, b"first")
    seg = os.path.join(d, filenames.wal_name(1))
    first = DEFAULT_FS.read_file(seg)
    _flip(seg, 0)
    with lsm.open(d, **OPTS, wal_recovery="point_in_time") as db:
        assert db.last_seq == 0 and db.recovery_report["dropped"]
        db.put(b"k", b"second")
    _flip(seg, 0)
    with lsm.open(d, **OPTS, wal_recovery="point_in_time") as db:
        assert db.last_seq == 0 and db.recovery_report["dropped"]
    aside = sorted(n for n in os.listdir(d) if n.endswith(".wal.dropped"))
    assert len(aside) == 2, aside
    contents = {DEFAULT_FS.read_file(os.path.join(d, n))[1:] for n in aside}
    assert first[1:] in contents  # the first set-aside segment, byte for byte (magic flipped)
    with lsm.open(d, **OPTS, wal_recovery="absolute") as db:  # the set-aside files are ignored
        assert dict(db.items()) == {}


@pytest.mark.parametrize("damage", ["missing-first-segment", "header-only-middle-segment"])
def test_point_in_time_then_flush_in_the_worker(log: Log, tmp_path, damage: str) -> None:
    """Regression: when point_in_time set aside a segment whose records were
    intact (the damage was in the record chain: a gap before it), open still
    listed it among the memtable's WAL segments; the first flush in the
    worker process, which re-reads them, failed on the missing file and
    fenced the database."""
    d = _copy(log, tmp_path)
    if damage == "missing-first-segment":
        os.remove(os.path.join(d, log.segs[0].name))
        kept = 0
    else:
        os.truncate(os.path.join(d, log.segs[2].name), HS)
        kept = log.segs[2].commits[0]
    opts = {**OPTS, "background": "process"}
    with lsm.open(d, **opts, wal_recovery="point_in_time") as db:
        assert db.recovery_report["dropped"]
        more = [_commit(db, n, "w") for n in range(5)]
        db.flush()
        assert db.health == "ok"
    with lsm.open(d, **opts, wal_recovery="absolute") as db:
        assert dict(db.items()) == _model(log.commits[:kept] + more)
