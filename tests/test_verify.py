"""db.verify() and lsm.ops.verify.verify_path(): every table block, every
live WAL segment and the manifest's claims, on real files damaged in each
place (a data block, the index, the footer, a truncation, the manifest, a
missing table, a WAL record, a manifest that lies about a table). Each
problem must name the damaged file, verify must never raise on damage and
must change nothing. Fuzz seeds print and replay with LSM_VERIFY_SEED."""

import dataclasses
import hashlib
import os
import random

import pytest

import lsm
from lsm.base import filenames
from lsm.manifest.edit import VersionEdit
from lsm.manifest.version_set import VersionSet
from lsm.ops.files import write_manifest_and_current
from lsm.ops.verify import verify_path
from lsm.sstable.format import FOOTER_SIZE, decode_footer
from tests.conftest import TINY
from tests.seeds import seed


def build(path, **kw):
    """A database with tables at several levels, sealed and live WAL."""
    opts = dict(TINY, background="inline", memtable_size=8192)
    opts.update(kw)
    db = lsm.open(path, **opts)
    for i in range(600):
        db.put(b"k%05d" % (i * 7 % 600), b"v%d" % i * 3, sync=lsm.Sync.OFF)
    db.compact_range()
    for i in range(200):
        db.put(b"k%05d" % i, b"w%d" % i, sync=lsm.Sync.OFF)
    db.delete(b"k00001")
    return db


def tables(db):
    """Paths of the live tables, deepest level first."""
    out = []
    for lv in reversed(db._sv.version.levels):
        out += [os.path.join(db.path, filenames.sst_name(f.number)) for f in lv]
    return out


def digest(d):
    out = {}
    for root, _sub, files in os.walk(d):
        for f in files:
            if f == "LOG":
                continue  # the event log may grow meanwhile; verify itself writes nothing
            with open(os.path.join(root, f), "rb") as fh:
                out[f] = hashlib.sha256(fh.read()).hexdigest()
    return out


def flip(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x5A]))


def paths(report):
    return {p.path for p in report.problems}


# ------------------------------------------------------------------ clean
def test_clean_database_reports_what_it_read(tmp_path):
    db = build(tmp_path / "db")
    before = digest(tmp_path / "db")
    r = db.verify()
    assert r.ok, str(r)
    stats = db.stats()
    assert r.tables == stats["sst_files"] > 1
    assert r.table_bytes == stats["sst_bytes"]
    assert r.table_blocks >= r.tables
    assert r.wal_segments >= 1 and r.wal_records >= 1 and r.wal_bytes > 0 and r.manifest_bytes > 0
    assert r.files_checked == r.tables + r.wal_segments + 1
    d = r.as_dict()
    assert d["ok"] is True and d["problems"] == []
    assert "OK" in str(r)
    assert digest(tmp_path / "db") == before
    db.close()
    with pytest.raises(lsm.ClosedError):
        db.verify()


def test_verify_while_writing_and_compacting(tmp_path):
    db = lsm.open(tmp_path / "db", background="thread", **TINY)
    for round_ in range(5):
        for i in range(300):
            db.put(b"k%04d" % (i * 13 % 300), b"%d" % round_, sync=lsm.Sync.OFF)
        r = db.verify()
        assert r.ok, str(r)
    db.close()


# ------------------------------------------------------------ damaged tables
def _damaged(tmp_path, damage):
    """Build a database, close it, damage one table, reopen it (the
    readers open at reopen must not see the damage: it is done after),
    and return (db, damaged path, report)."""
    db = build(tmp_path / "db")
    victim = tables(db)[0]
    damage(victim)
    before = digest(tmp_path / "db")
    r = db.verify()
    assert digest(tmp_path / "db") == before, "verify changed a file"
    return db, victim, r


def test_flipped_data_block(tmp_path):
    db, victim, r = _damaged(tmp_path, lambda p: flip(p, 3))
    assert not r.ok and victim in paths(r), str(r)
    assert any("data block" in p.reason and p.offset == 0 for p in r.problems)
    db.close()


def _index_handle(path):
    with open(path, "rb") as f:
        data = f.read()
    return decode_footer(data[-FOOTER_SIZE:])[2]


def test_flipped_index_block(tmp_path):
    db, victim, r = _damaged(tmp_path, lambda p: flip(p, _index_handle(p)[0] + _index_handle(p)[1] // 2))
    assert not r.ok and victim in paths(r), str(r)
    assert any("index" in p.reason for p in r.problems)
    db.close()


def test_flipped_footer(tmp_path):
    db, victim, r = _damaged(tmp_path, lambda p: flip(p, os.path.getsize(p) - 20))
    assert not r.ok and victim in paths(r), str(r)
    db.close()


def test_truncated_table(tmp_path):
    def cut(p):
        os.truncate(p, os.path.getsize(p) // 2)

    db, victim, r = _damaged(tmp_path, cut)
    assert victim in paths(r)
    assert any("manifest records" in p.reason for p in r.problems if p.path == victim)
    db.close()


def test_missing_table(tmp_path):
    db, victim, r = _damaged(tmp_path, os.remove)
    assert any(p.path == victim and "missing table file" in p.reason for p in r.problems), str(r)
    db.close()


def test_damage_to_one_table_does_not_stop_the_others(tmp_path):
    db = build(tmp_path / "db")
    a, b = tables(db)[:2]
    flip(a, 3)
    os.truncate(b, 10)
    r = db.verify()
    assert {a, b} <= paths(r)
    db.close()


# -------------------------------------------------------------- the manifest
def test_damaged_manifest(tmp_path):
    db = build(tmp_path / "db")
    m = os.path.join(db.path, filenames.manifest_name(db._vs.manifest_number))
    flip(m, 30)  # inside the first record (the snapshot), with intact records after it
    r = db.verify()
    assert m in paths(r), str(r)
    db.close()


def test_manifest_claims_that_are_wrong(tmp_path):
    db = build(tmp_path / "db")
    db.close()
    vs = VersionSet(lsm.Options().fs, str(tmp_path / "db"), num_levels=TINY["num_levels"])
    vs.recover()
    files = vs.current.all_files()
    lv, f = files[0]  # the first file of its level: a wider range overlaps nothing
    bad = dataclasses.replace(f, smallest=b"", num_entries=f.num_entries + 1)
    files[0] = (lv, bad)
    number = vs.next_file_number
    edit = VersionEdit(added=files, next_file_number=number + 1, last_seq=vs.last_seq, flushed_seq=vs.flushed_seq)
    write_manifest_and_current(vs.fs, str(tmp_path / "db"), number, edit, [])
    db = lsm.open(tmp_path / "db", background="inline", **TINY)
    r = db.verify()
    victim = os.path.join(db.path, filenames.sst_name(f.number))
    reasons = [p.reason for p in r.problems if p.path == victim]
    assert any("smallest b''" in x for x in reasons), str(r)
    assert any("num_entries" in x for x in reasons), str(r)
    db.close()


# ---------------------------------------------------------------------- WAL
def test_damaged_wal_record(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline", memtable_size=1 << 20)
    for i in range(100):
        db.put(b"k%03d" % i, b"v" * 30, sync=lsm.Sync.OFF)
    seg = db._wal.segment_path
    flip(seg, 24 + 28 + 5)  # the first record's body
    r = db.verify()
    assert seg in paths(r), str(r)
    db.close()


# ---------------------------------------------------- verify_path (offline)
def test_verify_path_on_a_database_that_will_not_open(tmp_path):
    db = build(tmp_path / "db")
    victim = tables(db)[0]
    db.close()
    assert verify_path(tmp_path / "db").ok
    flip(victim, os.path.getsize(victim) - 20)  # footer: the open itself fails
    with pytest.raises(lsm.CorruptionError):
        lsm.open(tmp_path / "db", background="inline", **TINY)
    before = digest(tmp_path / "db")
    r = verify_path(tmp_path / "db")
    assert victim in paths(r) and digest(tmp_path / "db") == before
    # with the manifest unreadable too, every table is still checked by itself
    cur = os.path.join(tmp_path / "db", "CURRENT")
    with open(cur, "wb") as f:
        f.write(b"garbage")
    r = verify_path(tmp_path / "db")
    assert cur in paths(r) and victim in paths(r)
    assert r.tables == len([n for n in os.listdir(tmp_path / "db") if n.endswith(".sst")])


def test_verify_path_torn_tail_is_a_note_and_open_db_is_locked(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline")
    for i in range(50):
        db.put(b"k%d" % i, b"v", sync=lsm.Sync.OFF)
    seg = db._wal.segment_path
    with pytest.raises(lsm.LockedError):
        verify_path(tmp_path / "db")
    db._simulate_crash()
    with open(seg, "ab") as f:
        f.write(b"\x07" * 10)  # a torn write
    r = verify_path(tmp_path / "db")
    assert r.ok and any("torn tail" in n for n in r.notes), str(r)


# ------------------------------------------------------------------- fuzzing
def test_random_damage_never_raises_and_names_the_file(tmp_path):
    rng = random.Random(seed("LSM_VERIFY_SEED"))
    db = build(tmp_path / "db")
    ts = tables(db)
    for _ in range(15):
        victim = rng.choice(ts)
        size = os.path.getsize(victim)
        off = rng.randrange(size)
        flip(victim, off)
        r = db.verify()
        assert victim in paths(r), f"flip at {off} of {victim} not found: {r}"
        flip(victim, off)  # repair
        assert db.verify().ok
    db.close()
