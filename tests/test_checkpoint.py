"""db.checkpoint(): a consistent, openable copy of a live database.

Real directories (tmp_path) where links and inodes matter, CrashFS where a
link must fail or the power must go. The concurrent test records every
commit (its sequence numbers and ops) and checks that each checkpoint holds
exactly the commits up to its sequence number S, with S at or after every
commit acknowledged before the call. Seeds print and replay with
LSM_CHECKPOINT_SEED."""

import errno
import os
import random
import threading

import pytest

import lsm
import lsm.ops.checkpoint
from lsm.base import filenames
from lsm.base.crashfs import CrashFS
from lsm.base.errors import TargetNotEmptyError
from tests.conftest import TINY
from tests.seeds import seed


def items(db):
    return dict(db.items())


def open_copy(path, **kw):
    return lsm.open(path, background="inline", create_if_missing=False, **kw)


def fill(db, n, start=0, tag=b"v"):
    for i in range(start, start + n):
        db.put(b"k%05d" % i, tag + b"%d" % i, sync=lsm.Sync.OFF)


# --------------------------------------------------------------------- basics
def test_checkpoint_equals_the_source_and_links_tables(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline", **TINY)
    fill(db, 400)
    db.compact_range()
    fill(db, 50, 1000)  # some in the WAL only
    db.delete(b"k00007")
    want = items(db)
    info = db.checkpoint(tmp_path / "ck")
    assert info.seq == db.last_seq and info.path == str(tmp_path / "ck")
    assert info.tables == sum(lv["files"] for lv in db.stats()["levels"]) > 0
    assert info.tables_linked == info.tables and info.tables_copied == 0
    assert info.flushed_seq < info.seq and info.wal_segments >= 1
    names = os.listdir(tmp_path / "ck")
    for n in names:
        if filenames.parse_sst(n) is not None:
            assert os.stat(tmp_path / "ck" / n).st_ino == os.stat(tmp_path / "db" / n).st_ino
    assert filenames.ARCHIVE_DIR not in names and filenames.LOCK not in names
    db.put(b"after", b"x")  # the source goes on; the copy does not see it
    ck = open_copy(tmp_path / "ck")
    assert items(ck) == want
    assert ck.last_seq == info.seq
    assert ck.verify().ok
    ck.close()
    db.close()


def test_empty_database_and_a_fresh_one(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline")
    info = db.checkpoint(tmp_path / "ck")
    assert (info.seq, info.tables, info.flushed_seq) == (0, 0, 0)
    ck = open_copy(tmp_path / "ck")
    assert items(ck) == {} and ck.last_seq == 0
    ck.put(b"a", b"1")
    ck.close()
    db.close()


def test_destination_may_be_an_empty_directory_and_parents_are_made(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline")
    db.put(b"a", b"1")
    (tmp_path / "empty").mkdir()
    db.checkpoint(tmp_path / "empty")
    db.checkpoint(str(tmp_path / "x" / "y" / "ck"))
    for p in ("empty", "x/y/ck"):
        ck = open_copy(tmp_path / p)
        assert items(ck) == {b"a": b"1"}
        ck.close()
    db.close()


def test_separate_wal_dir_goes_into_the_checkpoint(tmp_path):
    db = lsm.open(tmp_path / "db", wal_dir=tmp_path / "wal", background="inline", memtable_size=4096)
    fill(db, 300)
    want = items(db)
    wal_before = sorted(os.listdir(tmp_path / "wal"))
    info = db.checkpoint(tmp_path / "ck")
    assert sorted(os.listdir(tmp_path / "wal")) == wal_before
    assert info.wal_segments >= 1
    assert any(filenames.parse_wal(n) is not None for n in os.listdir(tmp_path / "ck"))
    ck = open_copy(tmp_path / "ck")  # its WAL lives in itself
    assert items(ck) == want
    ck.close()
    with pytest.raises(TargetNotEmptyError, match="inside the database directory"):
        db.checkpoint(tmp_path / "wal" / "ck")
    db.close()


def test_archive_is_not_copied(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline", wal_retention_segments=100, memtable_size=4096)
    fill(db, 500)
    assert db.stats()["wal_files_archived"] > 0
    db.checkpoint(tmp_path / "ck")
    assert filenames.ARCHIVE_DIR not in os.listdir(tmp_path / "ck")
    db.close()


# -------------------------------------------------------------------- errors
def test_bad_destinations(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline")
    db.put(b"a", b"1")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_bytes(b"mine")
    with pytest.raises(TargetNotEmptyError, match=r"not empty \(it holds keep.txt\)"):
        db.checkpoint(tmp_path / "full")
    assert os.listdir(tmp_path / "full") == ["keep.txt"]
    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(TargetNotEmptyError, match="not a directory"):
        db.checkpoint(tmp_path / "file")
    for inside in (tmp_path / "db", tmp_path / "db" / "sub"):
        with pytest.raises(TargetNotEmptyError, match="inside the database directory"):
            db.checkpoint(inside)
    with pytest.raises(TypeError, match="dest_dir"):
        db.checkpoint(b"bytes")
    assert isinstance(TargetNotEmptyError("x"), lsm.Error)
    db.close()
    with pytest.raises(lsm.ClosedError):
        db.checkpoint(tmp_path / "late")
    assert not (tmp_path / "late").exists()


def test_fenced_database_refuses():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline")
    db.put(b"a", b"1")
    fs.fail("sync", path=r"\.wal$")
    with pytest.raises(lsm.NeedsRecoveryError):
        db.put(b"b", b"2")
    with pytest.raises(lsm.NeedsRecoveryError):
        db.checkpoint("/ck")
    assert not fs.exists("/ck")
    db.close()


def test_link_refused_falls_back_to_copies():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="thread", **TINY)
    fill(db, 300)
    db.flush()
    want = items(db)
    fs.fail("link", err=errno.EXDEV, persistent=True)
    info = db.checkpoint("/ck")
    assert info.tables > 0 and info.tables_linked == 0 and info.tables_copied == info.tables
    assert info.table_bytes == sum(lv["bytes"] for lv in db.stats()["levels"])
    ck = lsm.open("/ck", fs=fs, background="inline")
    assert items(ck) == want
    ck.close()
    db.close()


def test_a_failure_leaves_the_destination_empty():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", **TINY)
    fill(db, 300)
    db.flush()
    fs.fail("link", nth=2, err=errno.EIO)  # not a "cannot link here" error: raised
    with pytest.raises(OSError) as ei:
        db.checkpoint("/ck")
    assert ei.value.errno == errno.EIO
    assert fs.listdir("/ck") == []
    fs.fail("rename", path="CURRENT", err=errno.ENOSPC)  # the very last step
    with pytest.raises(OSError):
        db.checkpoint("/ck")
    assert fs.listdir("/ck") == []
    db.checkpoint("/ck")  # and then it works
    ck = lsm.open("/ck", fs=fs, background="inline")
    assert items(ck) == items(db)
    ck.close()
    db.close()


# ----------------------------------------------------------- independence
def test_checkpoint_and_source_live_apart(tmp_path):
    db = lsm.open(tmp_path / "db", background="inline", **TINY)
    fill(db, 300)
    db.flush()
    base = items(db)
    db.checkpoint(tmp_path / "ck")
    ck = open_copy(tmp_path / "ck", **TINY)
    fill(ck, 300, 0, tag=b"ck")  # overwrite everything there, compact it away
    ck.compact_range()
    fill(db, 300, 5000)
    db.compact_range()  # and replace every table here
    assert items(db) == {**base, **{b"k%05d" % i: b"v%d" % i for i in range(5000, 5300)}}
    assert items(ck) == {b"k%05d" % i: b"ck%d" % i for i in range(300)}
    assert db.verify().ok and ck.verify().ok
    ck.close()
    db.close()


def test_tables_replaced_and_wal_retired_during_the_copy(tmp_path, monkeypatch):
    """A flush and a full compaction run between the pin and the copy:
    the pinned tables are still linkable and the pinned WAL segments
    readable (unlinked, or archived), so the copy is the state at the pin."""
    for retention in (0, 100):
        d = tmp_path / f"r{retention}"
        db = lsm.open(d / "db", background="thread", wal_retention_segments=retention, **TINY)
        fill(db, 400)
        db.flush()
        fill(db, 40, 1000)  # in the live memtable and its WAL
        want = items(db)
        seq = db.last_seq
        real = lsm.ops.checkpoint.make_dir_durable

        def meddle(fs, path, db=db, real=real):
            fill(db, 200, 2000)
            db.compact_range()  # flushes (retires the pinned segments) and replaces every table
            real(fs, path)

        monkeypatch.setattr(lsm.ops.checkpoint, "make_dir_durable", meddle)
        info = db.checkpoint(d / "ck")
        monkeypatch.setattr(lsm.ops.checkpoint, "make_dir_durable", real)
        assert info.seq == seq
        ck = open_copy(d / "ck")
        assert items(ck) == want and ck.last_seq == seq
        ck.close()
        db.close()


# ------------------------------------------------------- concurrent writers
def _writer(db, rng, tid, log, mu, stop, n_keys):
    i = 0
    while not stop.is_set():
        r = rng.random()
        if r < 0.6:
            k, v = b"t%d-%04d" % (tid, rng.randrange(n_keys)), b"%d.%d" % (tid, i)
            seq = db.put(k, v, sync=rng.choice((lsm.Sync.OFF, lsm.Sync.NORMAL, lsm.Sync.FULL)))
            ops = [(seq, k, v)]
        elif r < 0.8:
            k = b"t%d-%04d" % (tid, rng.randrange(n_keys))
            seq = db.delete(k, sync=lsm.Sync.OFF)
            ops = [(seq, k, None)]
        else:
            n = rng.randrange(1, 6)
            b = lsm.WriteBatch()
            pairs = []
            for _ in range(n):
                k = b"shared-%03d" % rng.randrange(50)
                v = b"b%d.%d" % (tid, i)
                b.put(k, v)
                pairs.append((k, v))
            last = db.write(b, sync=lsm.Sync.OFF)
            ops = [(last - n + 1 + j, k, v) for j, (k, v) in enumerate(pairs)]
        with mu:
            log.extend(ops)
        i += 1


def model_at(log, seq):
    state = {}
    for s, k, v in sorted(log, key=lambda x: x[0]):
        if s > seq:
            break
        if v is None:
            state.pop(k, None)
        else:
            state[k] = v
    return state


@pytest.mark.parametrize("background", ["thread", "process"])
def test_checkpoints_under_concurrent_writers(tmp_path, background):
    rng = random.Random(seed("LSM_CHECKPOINT_SEED"))
    opts = dict(TINY, memtable_size=16384, target_file_size=8192, max_bytes_for_level_base=32768)
    db = lsm.open(tmp_path / "db", background=background, wal_retention_segments=5, **opts)
    log: list = []
    mu = threading.Lock()
    stop = threading.Event()
    threads = [threading.Thread(target=_writer, args=(db, random.Random(rng.random()), t, log, mu, stop, 300))
               for t in range(3)]
    for t in threads:
        t.start()
    taken = []
    try:
        for c in range(4):
            while True:  # let some work happen between checkpoints
                with mu:
                    if len(log) >= 400 * (c + 1):
                        break
                stop.wait(0.005)
            with mu:
                acked = max(s for s, _k, _v in log)
            info = db.checkpoint(tmp_path / f"ck{c}")
            taken.append((acked, info))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert db.verify().ok
    db.close()
    firsts = {}
    for s, _k, _v in log:
        firsts[s] = True
    for acked, info in taken:
        assert info.seq >= acked, "a commit acknowledged before the call is missing"
        ck = open_copy(info.path)
        assert ck.last_seq == info.seq
        assert items(ck) == model_at(log, info.seq), f"checkpoint {info.path} is not the state at {info.seq}"
        ck.close()
    # no batch was cut: every seq up to the last checkpoint was a commit of the log
    assert all(s in firsts for s in range(1, taken[-1][1].seq + 1))


# --------------------------------------------------------------- power cuts
def test_checkpoint_is_durable_when_it_returns():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="thread", sync="off", **TINY)
    fill(db, 300)
    db.flush()
    fill(db, 30, 1000)  # unsynced in the source: the copy is synced anyway
    want = items(db)
    db.checkpoint("/ck")
    image = fs.power_cut(mode="drop")
    db._simulate_crash()
    ck = lsm.open("/ck", fs=image, background="inline", create_if_missing=False)
    assert items(ck) == want
    ck.close()


def test_power_cut_at_every_step_of_a_checkpoint():
    """Cut the power before each mutating operation of a checkpoint: the
    destination is then either not a database (no CURRENT) or the whole
    checkpoint; the source opens with every synced commit."""
    steps = None
    n = 1
    while steps is None or n <= steps:
        fs = CrashFS()
        db = lsm.open("/db", fs=fs, background="inline", **TINY)
        fill(db, 120)
        db.flush()
        for i in range(20):
            db.put(b"w%02d" % i, b"x", sync=lsm.Sync.FULL)
        want = items(db)
        if steps is None:
            before = fs.ops
            db.checkpoint("/probe")
            steps = fs.ops - before
            assert steps > 5
            db.close()
            continue
        fs.arm_crash(n, site="checkpoint", rng=random.Random(n))
        with pytest.raises(OSError):
            db.checkpoint("/ck")
        image = fs.image
        assert image is not None
        db._simulate_crash()
        if image.exists("/ck/CURRENT"):
            ck = lsm.open("/ck", fs=image, background="inline")
            assert items(ck) == want, f"crash at step {n}"
            ck.close()
        src = lsm.open("/db", fs=image, background="inline")
        assert items(src) == want
        src.close()
        n += 1
