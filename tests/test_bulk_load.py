"""``with db.bulk_load():`` sync OFF in the block; on exit (normal or by an
exception) the previous default back, a flush, and the load durable. The
power is cut (CrashFS, unsynced data dropped) right after the block to
prove it."""

import errno

import pytest

import lsm
from lsm.base.crashfs import CrashFS


def load(db, n, tag=b"v"):
    for i in range(n):
        db.put(b"k%05d" % i, tag + b"%d" % i)


def test_sync_is_off_inside_and_restored_after(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline", sync="normal")
    with db.bulk_load() as same:
        assert same is db and db.sync == lsm.Sync.OFF
        syncs = db.stats()["wal_syncs"]
        load(db, 200)
        assert db.stats()["wal_syncs"] == syncs, "a write in the block synced"
    assert db.sync == lsm.Sync.NORMAL
    s = db.stats()
    assert s["memtable_entries"] == 0 and s["sst_files"] >= 1, "the load was not flushed"
    assert db.durable_seq == db.last_seq
    db.close()


def test_the_load_survives_a_power_cut_right_after():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="thread")
    with db.bulk_load():
        load(db, 500)
    image = fs.power_cut(mode="drop")
    db._simulate_crash()
    db = lsm.open("/db", fs=image, background="inline")
    assert dict(db.items()) == {b"k%05d" % i: b"v%d" % i for i in range(500)}
    db.close()


def test_an_exception_restores_flushes_and_reraises():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="thread", sync="barrier")
    with pytest.raises(KeyError, match="boom"), db.bulk_load():
        load(db, 300)
        raise KeyError("boom")
    assert db.sync == lsm.Sync.BARRIER
    image = fs.power_cut(mode="drop")  # what was written before the error is durable
    db._simulate_crash()
    db = lsm.open("/db", fs=image, background="inline")
    assert len(dict(db.items())) == 300
    db.close()


def test_a_failing_flush_on_the_error_path_is_noted():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline")
    fs.fail("create", path=r"\.sst$", err=errno.ENOSPC, persistent=True)
    with pytest.raises(ValueError, match="bad row") as ei, db.bulk_load():
        load(db, 50)
        raise ValueError("bad row")
    notes = getattr(ei.value, "__notes__", None)
    if notes is not None:  # Python >= 3.11
        assert any("flush on exit failed" in n for n in notes)
    assert db.health == "fenced" and db.sync == lsm.Sync.FULL
    db.close()


def test_a_failing_flush_after_a_clean_block_raises_it():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline")
    fs.fail("create", path=r"\.sst$", err=errno.ENOSPC, persistent=True)
    with pytest.raises(lsm.NeedsRecoveryError), db.bulk_load():
        load(db, 50)
    assert db.sync == lsm.Sync.FULL
    db.close()


def test_closed_database(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline")
    db.close()
    with pytest.raises(lsm.ClosedError), db.bulk_load():
        pass
