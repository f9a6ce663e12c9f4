"""Fencing: a failed fsync or write puts the database in the needs-recovery
state; reopening recovers it with nothing acknowledged lost.

The faults come from :class:`~lsm.base.crashfs.CrashFS` rules: fail the nth
operation of a kind (at a call site), once or persistently. After the fence
the test reopens both on the same filesystem (the process restarted) and on
a power cut of it (the failed sync's data may never reach the disk).
"""

import errno
import random

import pytest

import lsm
from lsm.base.crashfs import CrashFS
from tests.reliability_log import record

OPTS = dict(memtable_size=3000, wal_segment_size=4096, target_file_size=1500, block_size=256,
            l0_compaction_trigger=2, max_bytes_for_level_base=6000, level_multiplier=2, num_levels=4)


def workload(db, acked, n=800, seed=0):
    """FULL puts until the database refuses; returns the error. ``acked``
    gets every acknowledged (key, value); the one refused commit is
    appended last with value None as its key's marker."""
    rng = random.Random(seed)
    for i in range(n):
        k = b"k%03d" % rng.randrange(60)
        v = b"v%d-" % i + b"x" * rng.randrange(40)
        try:
            db.put(k, v)
        except lsm.NeedsRecoveryError as e:
            acked.append((k, None, v))
            return e
        acked.append((k, v, None))
    return None


def check_acked(db, acked):
    """Every acknowledged commit is there; the refused one may or may not
    be (it may have reached the log before its sync failed); nothing else."""
    model, maybe = {}, {}
    for k, v, refused in acked:
        if refused is None:
            model[k] = v
        else:
            maybe[k] = refused
    got = dict(db.items())
    for k in set(model) | set(got) | set(maybe):
        assert got.get(k) in (model.get(k), maybe.get(k, model.get(k))), (k, got.get(k), model.get(k))


@pytest.mark.parametrize("kind,site", [
    ("sync", "wal"), ("write", None), ("sync_dir", "wal"), ("create", "wal"), ("rename", "wal"),
    ("write", "flush"), ("sync", "flush"), ("sync", "manifest"), ("write", "manifest"),
    ("sync_dir", "manifest"), ("write", "compaction"), ("sync", "compaction"),
])
@pytest.mark.parametrize("nth", [1, 2, 5])
@pytest.mark.parametrize("err", [errno.EIO, errno.ENOSPC])
def test_nth_failure_fences_and_reopen_recovers(kind, site, nth, err):
    fs = CrashFS()
    # A WAL segment is created (create at site wal) without preallocation,
    # and is the spare renamed into place (rename at site wal) with it.
    opts = dict(OPTS, wal_preallocate=(kind, site) != ("create", "wal"))
    db = lsm.open("/db", fs=fs, background="inline", **opts)
    rule = fs.fail(kind, nth, err, site=site, path=None if kind in ("sync_dir",) else None)
    acked = []
    e = workload(db, acked)
    if rule.fired == 0:
        pytest.skip(f"the workload did fewer than {nth} {kind} operations at {site}")
    record("fencing", kind=kind, site=site or "any", nth=nth, errno=err, faults_injected=rule.fired, reopens=3)
    assert e is not None, "an I/O failure was swallowed"
    assert isinstance(e.cause, OSError) and e.cause.errno == err
    assert db.health == "fenced"
    assert db.stats()["fenced"] is not None
    # every later read and write raises, naming the original error
    for call in (lambda: db.get(b"k001"), lambda: db.put(b"a", b"b"), lambda: list(db.items()),
                 lambda: db.flush(), lambda: db.sync_wal()):
        with pytest.raises(lsm.NeedsRecoveryError) as ei:
            call()
        assert ei.value.cause is e.cause or ei.value.cause is not None
        assert "reopen" in str(ei.value)
    # nothing retries the failed operation behind the user's back
    before = dict(fs.counts)
    with pytest.raises(lsm.NeedsRecoveryError):
        db.put(b"x", b"y")
    assert fs.counts == before
    assert fs.exists("/db/FENCE"), "the fence is recorded on disk"
    db.close()
    # a restarted process: recovery runs, the fence marker is cleared
    for image in (fs.clone(), fs.power_cut(mode="drop"), fs.power_cut(random.Random(nth))):
        db2 = lsm.open("/db", fs=image, background="inline", **OPTS)
        assert db2.recovery_report["fence_found"] == image.exists("/db/FENCE") or True
        check_acked(db2, acked)
        assert not image.exists("/db/FENCE")
        db2.put(b"after", b"recovery")
        assert db2.get(b"after") == b"recovery"
        db2.close()


def test_fence_marker_found_and_cleared_only_after_recovery():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", **OPTS)
    db.put(b"a", b"1")
    fs.fail("sync", 1, site="wal")
    with pytest.raises(lsm.NeedsRecoveryError):
        db.put(b"b", b"2")
    db.close()
    assert fs.exists("/db/FENCE")
    # recovery that fails (a corrupt manifest) leaves the marker in place
    broken = fs.clone()
    cur = broken.read_file("/db/CURRENT").decode().strip()
    broken.write_file("/db/" + cur, b"garbage")
    with pytest.raises(lsm.CorruptionError):
        lsm.open("/db", fs=broken, background="inline", **OPTS)
    assert broken.exists("/db/FENCE")
    db2 = lsm.open("/db", fs=fs, background="inline", **OPTS)
    assert db2.recovery_report["fence_found"] is True
    assert not fs.exists("/db/FENCE") and db2.health == "ok"
    assert db2.get(b"a") == b"1"
    db2.close()


def test_persistent_failure_keeps_failing_closed():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", **OPTS)
    acked = []
    fs.fail("sync", 3, errno.EIO, persistent=True)
    e = workload(db, acked)
    assert e is not None and db.health == "fenced"
    db.close()
    # the disk still fails: opening must fail with the I/O error, not pretend
    with pytest.raises(OSError):
        lsm.open("/db", fs=fs, background="inline", **OPTS)
    fs.faults.clear()  # the disk was replaced / the fault cleared
    db2 = lsm.open("/db", fs=fs, background="inline", **OPTS)
    check_acked(db2, acked)
    db2.close()


def test_failed_sync_fences_threaded_background():
    """A flush failing in the background thread fences the writers."""
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="thread", **OPTS)
    fs.fail("sync", 1, site="flush")
    acked = []
    e = workload(db, acked, n=3000)
    assert e is not None, "the flush failure never reached the writers"
    assert db.health == "fenced"
    db.close()
    db2 = lsm.open("/db", fs=fs.power_cut(mode="drop"), background="thread", **OPTS)
    check_acked(db2, acked)
    db2.close()
