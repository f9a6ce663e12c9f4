"""Open-time edge cases of lsm/recovery.py (branch coverage, issue 5): what
open does with a directory that is not (yet) a database, a WAL directory
holding foreign files, a torn segment set aside twice under the same name,
and a separate WAL directory across a power cut. On CrashFS."""

from __future__ import annotations

import pytest

import lsm
from lsm.base import filenames
from lsm.base.crashfs import CrashFS

D = "/db"
OPTS = {"background": "inline"}  # CrashFS: no worker processes (they would use the real filesystem)


def test_directory_without_current():
    fs = CrashFS()
    fs.makedirs(D)
    fs.write_file(f"{D}/notes.txt", b"mine")
    with pytest.raises(lsm.InvalidDatabaseError, match="not an lsm database.*notes.txt"):
        lsm.open(D, fs=fs, **OPTS)
    fs.remove(f"{D}/notes.txt")
    fs.write_file(f"{D}/000007.sst", b"table")
    with pytest.raises(lsm.CorruptionError, match="CURRENT file is missing but table files exist"):
        lsm.open(D, fs=fs, **OPTS)
    assert fs.listdir(D) == ["000007.sst"]  # nothing removed


def test_interrupted_creation_is_created_afresh():
    """A creation cut before CURRENT was switched leaves a manifest and a
    CURRENT temp file, no data: open removes them and creates the database
    (or, without create_if_missing, says there is none, after the clean-up)."""
    fs = CrashFS()
    fs.makedirs(D)
    fs.sync_dir("/")  # the directory's own name is durable (lsm made it, or the user synced it)
    fs.write_file(f"{D}/MANIFEST-000001", b"half a manifest")
    fs.write_file(f"{D}/CURRENT.000001.tmp", b"MANIFEST-00")
    fs.write_file(f"{D}/LOG", b"the creation's log\n")
    with pytest.raises(lsm.InvalidDatabaseError, match="create_if_missing"):
        lsm.open(D, fs=fs, create_if_missing=False, **OPTS)
    assert fs.listdir(D) == ["LOG"]  # the manifest and the temp file are gone; the LOG is kept
    fs.write_file(f"{D}/MANIFEST-000001", b"half a manifest")
    db = lsm.open(D, fs=fs, **OPTS)
    db.put(b"k", b"v", sync=lsm.Sync.FULL)
    db.close()
    db = lsm.open(D, fs=fs.power_cut(mode="drop"), **OPTS)
    assert dict(db.items()) == {b"k": b"v"}
    db.close()


def test_wal_directory_with_foreign_files():
    fs = CrashFS()
    fs.makedirs("/wal")
    fs.write_file("/wal/other.txt", b"not a segment")
    with pytest.raises(lsm.InvalidDatabaseError, match="WAL directory holds files.*other.txt"):
        lsm.open(D, fs=fs, wal_dir="/wal", **OPTS)


def test_separate_wal_directory_survives_a_power_cut():
    fs = CrashFS()
    db = lsm.open(D, fs=fs, wal_dir="/wal", **OPTS)  # creates /wal durably
    db.put(b"a", b"1", sync=lsm.Sync.FULL)
    db.flush()
    db.put(b"b", b"2", sync=lsm.Sync.FULL)
    db.close()
    for _ in range(2):  # and again after the reopen's own clean-up and syncs
        fs = fs.power_cut(mode="drop")
        db = lsm.open(D, fs=fs, wal_dir="/wal", **OPTS)
        assert dict(db.items()) == {b"a": b"1", b"b": b"2"}
        assert not [n for n in fs.listdir(D) if n.endswith(".wal")]
        db.close()


def test_torn_segment_set_aside_under_a_free_name_each_time():
    """The newest segment with a torn header keeps no record: open sets it
    aside as S.wal.dropped and starts a new segment under the same name S
    (nothing was added since). When that one is torn too, the set-aside
    name must not overwrite the first: S.1.wal.dropped, then S.2..."""
    fs = CrashFS()
    db = lsm.open(D, fs=fs, **OPTS)
    db.put(b"k", b"v", sync=lsm.Sync.FULL)
    db.close()
    db = lsm.open(D, fs=fs, **OPTS)  # replays k; its live segment S holds only a header
    seg = db._wal.segment_path
    db.close()
    name = seg.rsplit("/", 1)[1]
    stem = name.removesuffix(".wal")
    want = []
    for i in range(3):
        fs.truncate(seg, 5)  # a torn header
        db = lsm.open(D, fs=fs, **OPTS)
        assert db.get(b"k") == b"v" and db._wal.segment_path == seg
        db.close()
        want.append(f"{name}.dropped" if i == 0 else f"{stem}.{i}.wal.dropped")
        assert sorted(n for n in fs.listdir(D) if n.endswith(".dropped")) == sorted(want)
        assert all(fs.file_size(f"{D}/{n}") == 5 for n in want)  # each kept as it was
    assert filenames.parse_wal(name) is not None


def test_open_removes_fence_orphans_and_temp_files_durably():
    fs = CrashFS()
    db = lsm.open(D, fs=fs, **OPTS)
    db.put(b"k", b"v", sync=lsm.Sync.FULL)
    db.flush()
    db.close()
    fs.write_file(f"{D}/FENCE", b"an earlier failure\n")
    fs.write_file(f"{D}/000999.sst", b"orphan: no manifest names it")
    fs.write_file(f"{D}/CURRENT.000998.tmp", b"MANIFEST-000998\n")
    fs.sync_dir(D)
    db = lsm.open(D, fs=fs, **OPTS)
    assert db.recovery_report["fence_found"] and db.health == "ok"
    assert db.get(b"k") == b"v"
    db.close()
    for view in (fs, fs.power_cut(mode="drop")):
        names = view.listdir(D)
        assert "FENCE" not in names and "000999.sst" not in names and "CURRENT.000998.tmp" not in names


def test_open_below_full_leaves_the_new_segment_to_the_first_full_commit():
    """Opened with a default below FULL, open does not sync the new WAL
    segment's directory entry; the first FULL commit must (else a power
    cut could lose the segment, and the acknowledged commit with it)."""
    fs = CrashFS()
    db = lsm.open(D, fs=fs, **OPTS)
    db.put(b"first", b"0")  # so that the next open's segment has a new name
    db.close()
    db = lsm.open(D, fs=fs, sync=lsm.Sync.NORMAL, **OPTS)
    db.put(b"off", b"1", sync=lsm.Sync.OFF)
    db.put(b"full", b"2", sync=lsm.Sync.FULL)
    image = fs.power_cut(mode="drop")  # right after the FULL commit returned
    db.close()
    db = lsm.open(D, fs=image, **OPTS)
    assert dict(db.items()) == {b"first": b"0", b"off": b"1", b"full": b"2"}
    db.close()


def test_open_refusals_name_the_problem():
    fs = CrashFS()
    with pytest.raises(lsm.InvalidDatabaseError, match="no database here"):
        lsm.open(D, fs=fs, create_if_missing=False, **OPTS)
    assert not fs.exists(D)  # nothing created
    fs.write_file("/file", b"x")
    with pytest.raises(lsm.InvalidDatabaseError, match="not a directory"):
        lsm.open("/file", fs=fs, **OPTS)
    db = lsm.open(D, fs=fs, **OPTS)
    with pytest.raises(lsm.LockedError, match="already open"):
        lsm.open(D, fs=fs, **OPTS)
    db.close()
    with pytest.raises(lsm.InvalidDatabaseError, match="error_if_exists"):
        lsm.open(D, fs=fs, error_if_exists=True, **OPTS)
    lsm.open(D, fs=fs, **OPTS).close()  # each refusal released the lock
