"""The durability API, level by level, on the crash-simulating filesystem:
what each level syncs, the runtime default, the durable watermark, group
commit statistics. A power cut in ``drop`` mode keeps only what was synced,
so each promise is checked by what survives it."""

import threading
import time

import pytest

import lsm
from lsm.base.crashfs import CrashFS

S = lsm.Sync


def open_db(fs, **kw):
    kw.setdefault("background", "thread")
    return lsm.open("/db", fs=fs, **kw)


def survivors(fs):
    img = fs.power_cut(mode="drop")
    db = open_db(img)
    try:
        return dict(db.items())
    finally:
        db.close()


def test_off_does_not_sync_and_full_does():
    fs = CrashFS()
    db = open_db(fs)
    syncs = fs.counts.get("sync", 0)
    db.put(b"off", b"1", sync=S.OFF)
    assert fs.counts.get("sync", 0) == syncs
    assert b"off" not in survivors(fs)
    db.put(b"full", b"2", sync="full")
    assert fs.counts["sync"] > syncs
    # the log is ordered: the FULL commit made the earlier OFF one durable too
    assert survivors(fs) == {b"off": b"1", b"full": b"2"}
    db.close()


def test_default_level_open_and_runtime():
    fs = CrashFS()
    db = open_db(fs, sync="off")
    assert db.sync is S.OFF
    db.put(b"a", b"1")
    assert survivors(fs) == {}
    db.set_sync(S.FULL)
    assert db.sync is S.FULL
    db.put(b"b", b"2")
    assert survivors(fs) == {b"a": b"1", b"b": b"2"}
    with pytest.raises(ValueError, match="sync"):
        db.set_sync("sometimes")
    with pytest.raises(ValueError, match="sync"):
        db.put(b"c", b"3", sync=9)
    assert db.sync is S.FULL
    db.close()


def test_batch_sync_applies_to_the_whole_batch():
    fs = CrashFS()
    db = open_db(fs, sync="off")
    with db.batch(sync=S.FULL) as b:
        b.put(b"x", b"1")
        b.put(b"y", b"2")
    assert survivors(fs) == {b"x": b"1", b"y": b"2"}
    db.close()


def test_durable_watermark_and_sync_wal():
    fs = CrashFS()
    db = open_db(fs, sync="off", sync_interval=3600)
    s1 = db.put(b"a", b"1")
    assert db.durable_seq < s1
    assert db.wait_durable(0)
    assert db.sync_wal() == s1
    assert db.durable_seq >= s1
    assert survivors(fs) == {b"a": b"1"}
    with pytest.raises(ValueError, match="never written"):
        db.wait_durable(s1 + 100)
    db.close()


def test_wait_durable_uses_the_background_syncer():
    fs = CrashFS()
    db = open_db(fs, sync="off", sync_interval=0.01)
    s = db.put(b"a", b"1")
    assert db.wait_durable(s, timeout=10)
    assert db.durable_seq >= s
    assert survivors(fs) == {b"a": b"1"}
    db.close()


def test_wait_durable_times_out():
    fs = CrashFS(sync_latency=0.5)
    db = open_db(fs, sync="off", sync_interval=0.01)
    db.sync_wal()
    s = db.put(b"a", b"1")
    t0 = time.monotonic()
    assert db.wait_durable(s, timeout=0.01) is False  # the sync in flight takes 0.5 s
    assert time.monotonic() - t0 < 0.4
    assert db.wait_durable(s, timeout=10)
    db.close()


def test_normal_syncs_within_the_interval_without_being_asked():
    fs = CrashFS()
    db = open_db(fs, sync="normal", sync_interval=0.01)
    s = db.put(b"a", b"1")
    deadline = time.monotonic() + 10
    while db.durable_seq < s and time.monotonic() < deadline:
        time.sleep(0.005)
    assert db.durable_seq >= s, "the NORMAL syncer never synced"
    assert survivors(fs) == {b"a": b"1"}
    db.close()


def test_barrier_commit_is_durable_before_the_next_reaches_the_file():
    fs = CrashFS(sync_latency=0.01)
    db = open_db(fs, sync="barrier", sync_interval=3600)
    s1 = db.put(b"a", b"1")
    s2 = db.put(b"b", b"2")
    assert db.durable_seq >= s1  # the second append waited for the first's sync
    got = survivors(fs)
    assert got in ({b"a": b"1"}, {b"a": b"1", b"b": b"2"})
    assert s2 > s1
    db.close()


def test_extra_syncs_directories():
    opts = dict(memtable_size=2000, wal_segment_size=4096, background="inline")
    counts = {}
    for level in (S.FULL, S.EXTRA):
        fs = CrashFS()
        db = open_db(fs, sync=level, **opts)
        before = fs.counts.get("sync_dir", 0)
        for i in range(300):
            db.put(b"k%04d" % i, b"v" * 30)
        db.flush()
        counts[level] = (fs.counts.get("sync_dir", 0) - before, db.stats()["wal_dir_syncs"])
        db.close()
    assert counts[S.EXTRA][0] > counts[S.FULL][0]
    assert counts[S.EXTRA][1] > counts[S.FULL][1]


def test_group_commit_shares_syncs_and_counts_groups():
    fs = CrashFS(sync_latency=0.002)
    db = open_db(fs, sync="full")
    n, threads = 40, 4

    def work(t):
        for i in range(n):
            db.put(b"t%d-%d" % (t, i), b"v")

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    st = db.stats()
    hist = st["group_commit_histogram"]
    assert st["wal_synced_commits"] == n * threads
    assert sum(hist.values()) == st["wal_groups"]
    assert st["wal_groups"] <= st["wal_syncs"]
    # with 2 ms syncs and 4 writers, syncs are shared: fewer syncs than commits
    assert st["wal_groups"] < 0.7 * n * threads, st
    assert any(v for k, v in hist.items() if k not in ("1", "2")), hist
    db.close()


def test_commit_linger_option():
    fs = CrashFS()
    db = open_db(fs, sync="full", commit_linger_us=3000)
    t0 = time.perf_counter()
    db.put(b"a", b"1")
    assert time.perf_counter() - t0 >= 0.003
    assert db.stats()["wal_linger_seconds"] >= 0.003
    db.close()
    with pytest.raises(ValueError, match="commit_linger_us"):
        lsm.open("/db2", fs=CrashFS(), background="thread", commit_linger_us=-1)


def test_health_states():
    fs = CrashFS()
    db = open_db(fs)
    assert db.health == "ok" and db.stats()["health"] == "ok"
    fs.fail("sync", 1)
    with pytest.raises(lsm.NeedsRecoveryError):
        db.put(b"a", b"1")
    assert db.health == "fenced"
    db.close()
    assert db.health == "closed"
