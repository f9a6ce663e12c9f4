"""The public API of lsm.DB against real files."""

import os
import threading

import pytest

import lsm
from tests.conftest import TINY


@pytest.fixture(params=["inline", "thread", "process"])
def mode(request):
    return request.param


def test_put_get_delete_roundtrip(tmp_path, mode):
    with lsm.open(tmp_path / "db", background=mode) as db:
        s1 = db.put(b"a", b"1")
        s2 = db.put(bytearray(b"b"), memoryview(b"2"))
        assert s2 == s1 + 1
        assert db.get(b"a") == b"1" and db[b"b"] == b"2"
        assert db.get(b"zz") is None and db.get(b"zz", b"d") == b"d"
        db.delete(b"a")
        assert b"a" not in db and b"b" in db
        with pytest.raises(KeyError):
            db[b"a"]
        with pytest.raises(KeyError):
            del db[b"nope"]
        db[b"c"] = b"3"
        del db[b"c"]
        assert db.get(b"c") is None


def test_types_are_checked(tmp_path):
    with lsm.open(tmp_path / "db", background="inline") as db:
        with pytest.raises(TypeError, match="key must be bytes.*str"):
            db.put("a", b"1")
        with pytest.raises(TypeError, match="value must be bytes.*NoneType"):
            db.put(b"a", None)
        with pytest.raises(TypeError, match="key.*int"):
            db.get(3)
        with pytest.raises(TypeError, match="WriteBatch"):
            db.write([(b"a", b"b")])
        with pytest.raises(ValueError, match="sync"):
            db.put(b"a", b"1", sync="sometimes")
        assert db.get(b"a") is None  # nothing half-written


def test_reopen_after_close_and_after_flush(tmp_path, mode):
    p = tmp_path / "db"
    with lsm.open(p, background=mode) as db:
        for i in range(1000):
            db.put(b"k%04d" % i, b"v%d" % i, sync=lsm.Sync.OFF)
        db.flush()
        for i in range(1000, 1500):
            db.put(b"k%04d" % i, b"v%d" % i, sync=lsm.Sync.OFF)
        db.delete(b"k0007")
    with lsm.open(p, background=mode) as db:
        assert db.get(b"k0000") == b"v0" and db.get(b"k1499") == b"v1499"
        assert db.get(b"k0007") is None
        assert len(list(db.keys())) == 1499
        assert db.last_seq == 1501


def test_batch_atomic_and_context_manager(tmp_path):
    with lsm.open(tmp_path / "db", background="inline") as db:
        with db.batch() as b:
            b.put(b"x", b"1")
            b.put(b"y", b"2")
            b.delete(b"x")
        assert db.get(b"x") is None and db.get(b"y") == b"2"
        with pytest.raises(RuntimeError), db.batch() as b:
            b.put(b"z", b"1")
            raise RuntimeError("abort")
        assert db.get(b"z") is None
        wb = lsm.WriteBatch()
        wb.put(b"p", b"q")
        seq = db.write(wb)
        assert seq == db.last_seq and db.get(b"p") == b"q"
        assert db.write(lsm.WriteBatch()) == seq  # empty batch writes nothing


def test_scans(tmp_path, mode):
    with lsm.open(tmp_path / "db", background=mode, **TINY) as db:
        model = {}
        for i in range(400):
            k = b"%c%03d" % (b"abc"[i % 3], i)
            db.put(k, b"v%d" % i)
            model[k] = b"v%d" % i
        for i in range(0, 400, 7):
            k = b"%c%03d" % (b"abc"[i % 3], i)
            db.delete(k)
            model.pop(k)
        db.flush()
        srt = sorted(model.items())
        assert list(db.items()) == srt
        assert list(db.items(reverse=True)) == srt[::-1]
        assert list(db.items(b"b", b"c")) == [kv for kv in srt if b"b" <= kv[0] < b"c"]
        assert list(db.items(prefix=b"c")) == [kv for kv in srt if kv[0].startswith(b"c")]
        assert list(db.keys(prefix=b"c", reverse=True)) == [k for k, _ in srt if k.startswith(b"c")][::-1]
        assert list(db.values(b"a100", b"a200")) == [v for k, v in srt if b"a100" <= k < b"a200"]
        assert list(db.items(b"c", b"a")) == []


def test_snapshot_sees_the_past(tmp_path, mode):
    with lsm.open(tmp_path / "db", background=mode, **TINY) as db:
        for i in range(200):
            db.put(b"k%03d" % i, b"old")
        with db.snapshot() as snap:
            for i in range(200):
                db.put(b"k%03d" % i, b"new")
            db.delete(b"k000")
            db.compact_range()
            assert snap.get(b"k000") == b"old"
            assert all(v == b"old" for v in snap.values())
            assert len(list(snap.items())) == 200
            assert db.get(b"k000") is None and db.get(b"k001") == b"new"
        with pytest.raises(lsm.ClosedError):
            snap.get(b"k001")


def test_iterator_survives_compaction_and_pins_its_files(tmp_path):
    p = tmp_path / "db"
    with lsm.open(p, background="inline", **TINY) as db:
        for i in range(300):
            db.put(b"k%03d" % i, b"v")
        db.flush()
        it = db.items()
        before = {f"{f.number:06d}.sst" for level in db._sv.version.levels for f in level}
        first = next(it)
        for i in range(300):
            db.put(b"k%03d" % i, b"w")
        db.compact_range()
        live = {f"{f.number:06d}.sst" for level in db._sv.version.levels for f in level}
        on_disk = {n for n in os.listdir(p) if n.endswith(".sst")}
        assert before - live, "compaction replaced no table"
        assert before <= on_disk, "a table the open iterator reads was deleted"
        rest = list(it)
        assert [first] + rest == [(b"k%03d" % i, b"v") for i in range(300)]
        del it
        on_disk = {n for n in os.listdir(p) if n.endswith(".sst")}
        assert on_disk == live, "replaced tables outlived the last iterator"


def test_opening_twice_is_locked(tmp_path):
    p = tmp_path / "db"
    with lsm.open(p, background="inline"), pytest.raises(lsm.LockedError, match="already open"):
        lsm.open(p)
    lsm.open(p, background="inline").close()


def test_second_process_is_locked(tmp_path):
    import subprocess
    import sys

    p = tmp_path / "db"
    with lsm.open(p, background="inline"):
        code = f"import lsm\ntry:\n    lsm.open({str(p)!r})\nexcept lsm.LockedError as e:\n    print('LOCKED', e)\n"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        assert "LOCKED" in out.stdout, out.stderr


def test_foreign_directory_is_refused(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "cat.jpg").write_bytes(b"\xff\xd8")
    with pytest.raises(lsm.InvalidDatabaseError, match="cat.jpg"):
        lsm.open(d)
    assert (d / "cat.jpg").read_bytes() == b"\xff\xd8" and sorted(os.listdir(d)) == ["cat.jpg"]
    f = tmp_path / "file"
    f.write_bytes(b"x")
    with pytest.raises(lsm.InvalidDatabaseError, match="not a directory"):
        lsm.open(f)
    with pytest.raises(lsm.InvalidDatabaseError, match="create_if_missing"):
        lsm.open(tmp_path / "nothing", create_if_missing=False)


def test_error_if_exists(tmp_path):
    lsm.open(tmp_path / "db", background="inline").close()
    with pytest.raises(lsm.InvalidDatabaseError, match="already exists"):
        lsm.open(tmp_path / "db", error_if_exists=True)


def test_use_after_close(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline")
    db.put(b"a", b"b")
    db.close()
    db.close()  # idempotent
    for call in (lambda: db.put(b"a", b"c"), lambda: db.get(b"a"), lambda: list(db.items()), db.flush,
                 db.snapshot):
        with pytest.raises(lsm.ClosedError):
            call()


def test_wal_dir_separate(tmp_path):
    data, wal = tmp_path / "data", tmp_path / "wal"
    with lsm.open(data, wal_dir=wal, background="inline") as db:
        db.put(b"a", b"1")
    assert any(n.endswith(".wal") for n in os.listdir(wal))
    assert not any(n.endswith(".wal") for n in os.listdir(data))
    with lsm.open(data, wal_dir=wal, background="inline") as db:
        assert db.get(b"a") == b"1"


def test_flush_deletes_wal_and_close_leaves_no_flushed_wal(tmp_path, mode):
    p = tmp_path / "db"
    with lsm.open(p, background=mode) as db:
        for i in range(100):
            db.put(b"%d" % i, b"x" * 100, sync=lsm.Sync.OFF)
        db.flush()
        st = db.stats()
        assert st["flush_count"] >= 1 and st["wal_files_deleted"] >= 1
    wals = [n for n in os.listdir(p) if n.endswith(".wal")]
    assert len(wals) == 1
    # the remaining segment holds no record (everything is in an SSTable)
    assert os.path.getsize(p / wals[0]) <= 64


def test_stats_fields(tmp_path):
    with lsm.open(tmp_path / "db", background="inline", **TINY) as db:
        for i in range(500):
            db.put(b"k%04d" % i, b"v" * 50, sync=lsm.Sync.OFF)
        for _ in range(2):  # the second pass finds the blocks cached
            for i in range(500):
                assert db.get(b"k%04d" % i) == b"v" * 50
                assert db.get(b"k%04dx" % i) is None  # absent, inside the files' key ranges
        st = db.stats()
    for key in ("keys_written", "user_bytes_written", "wal_bytes_written", "sst_bytes_written", "levels",
                "memtable_bytes", "flush_count", "flush_seconds", "compaction_count", "compaction_seconds",
                "stall_seconds", "wal_files_live", "wal_files_deleted", "block_cache_hits",
                "block_cache_misses", "block_cache_refused", "bloom_useful", "bloom_checked"):
        assert key in st, key
    assert st["keys_written"] == 500 and st["user_bytes_written"] == 500 * 55
    assert st["wal_bytes_written"] > st["user_bytes_written"]
    assert st["flush_count"] > 0 and st["compaction_count"] > 0
    assert st["bloom_useful"] > 0 and st["block_cache_hits"] > 0


def test_concurrent_writers_full(tmp_path):
    with lsm.open(tmp_path / "db", background="thread") as db:
        def work(t):
            for i in range(200):
                db.put(b"t%d-%d" % (t, i), b"v")
        ts = [threading.Thread(target=work, args=(t,)) for t in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert len(list(db.keys())) == 1600
        st = db.stats()
        assert st["durable_seq"] == 1600
        assert st["wal_syncs"] <= 1600


def test_crash_keeps_every_commit(tmp_path, mode):
    p = tmp_path / "db"
    db = lsm.open(p, background=mode, **TINY)
    for i in range(600):
        db.put(b"k%04d" % i, b"v%d" % i, sync=lsm.Sync.OFF)
    db._simulate_crash()
    with lsm.open(p, background=mode, **TINY) as db:
        assert db.get(b"k0599") == b"v599"
        assert len(list(db.items())) == 600


def test_missing_table_fails_the_open(tmp_path):
    p = tmp_path / "db"
    with lsm.open(p, background="inline") as db:
        db.put(b"a", b"1")
        db.flush()
    sst = [n for n in os.listdir(p) if n.endswith(".sst")]
    assert len(sst) == 1
    os.unlink(p / sst[0])
    with pytest.raises(lsm.CorruptionError, match="missing table file"):
        lsm.open(p, background="inline")


def test_mid_log_damage_fails_closed_and_changes_nothing(tmp_path):
    p = tmp_path / "db"
    db = lsm.open(p, background="inline")
    # FULL: each record is appended after the one before it was synced, and says so (its synced
    # offset, WAL format version 2), so damage to a record before the last is damage to synced
    # bytes. (At OFF nothing says the damaged bytes were ever synced: a torn tail, as a power
    # cut's hole; tests/test_wal_v2.py.)
    for i in range(50):
        db.put(b"k%02d" % i, b"v" * 20, sync=lsm.Sync.FULL)
    db._simulate_crash()
    (wal,) = [n for n in os.listdir(p) if n.endswith(".wal")]
    data = bytearray((p / wal).read_bytes())
    data[24 + 10 * 68] ^= 0xFF  # inside the 11th record (each is 36 + 9 + 3 + 20 bytes)
    (p / wal).write_bytes(bytes(data))
    before = {n: (p / n).read_bytes() for n in os.listdir(p) if n != "LOCK"}
    with pytest.raises(lsm.CorruptionError, match=wal):
        lsm.open(p, background="inline")
    after = {n: (p / n).read_bytes() for n in os.listdir(p) if n != "LOCK"}
    assert after == before
    with lsm.open(p, background="inline", wal_recovery="point_in_time") as db:
        keys = list(db.keys())
        assert keys == [b"k%02d" % i for i in range(len(keys))] and 0 < len(keys) < 50
