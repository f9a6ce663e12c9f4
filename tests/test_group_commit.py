"""Group commit (lsm/wal/writer.py ``sync_to`` and its sync gates): many
threads at mixed sync levels, with segment rotations (a tiny memtable), the
background syncer and, in some rounds, a sync that fails. Every thread must
finish (no committer left waiting on a gate nobody will open), every
FULL/EXTRA commit acknowledged must be durable when it returns, and after a
failed sync nothing more is acknowledged.

Seeds: LSM_CRASH_SEED (printed); rounds: LSM_GROUP_ROUNDS (default 6)."""

from __future__ import annotations

import errno
import os
import random
import threading

import pytest

import lsm
from lsm.base.crashfs import CrashFS

SEED = int(os.environ.get("LSM_CRASH_SEED", random.randrange(1 << 30)))
ROUNDS = int(os.environ.get("LSM_GROUP_ROUNDS", "6"))
LEVELS = ("off", "normal", "barrier", "full", "extra")


def _round(seed: int, fail_sync: bool) -> tuple[int, int]:
    rng = random.Random(seed)
    fs = CrashFS(sync_latency=0.002 if fail_sync else 0.0002)
    db = lsm.open("/db", fs=fs, background="thread", memtable_size=8 << 10, sync="off")
    if fail_sync:
        fs.fail("sync", nth=rng.randint(3, 40), err=errno.EIO, path=r"\.wal$")
    acked: list[tuple[int, int]] = []  # (seq, level) of FULL/EXTRA commits, when they returned
    violations: list[str] = []
    refused = [0]
    mu = threading.Lock()

    def writer(t: int) -> None:
        r = random.Random(seed * 31 + t)
        for i in range(150):
            level = r.choice(LEVELS)
            try:
                seq = db.put(b"%02d%06d" % (t, i), b"v" * r.randrange(120), sync=level)
            except lsm.NeedsRecoveryError:
                with mu:
                    refused[0] += 1
                return
            if level in ("full", "extra"):
                durable = db.durable_seq
                with mu:
                    acked.append((seq, durable))
                    if durable < seq:
                        violations.append(f"FULL commit {seq} returned with durable_seq {durable}")

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive(), f"a committer hung (seed {seed}, fail_sync={fail_sync})"
    assert not violations, f"{violations[:3]} (seed {seed})"
    if fail_sync and refused[0]:
        with pytest.raises(lsm.NeedsRecoveryError):
            db.put(b"after", b"fence")
        db._simulate_crash()
    else:
        db.close()
    return len(acked), refused[0]


@pytest.mark.parametrize("fail_sync", [False, True], ids=["healthy", "failing-sync"])
def test_group_commit_mixed_levels_never_hangs(fail_sync):
    print(f"group commit: LSM_CRASH_SEED={SEED}")
    total = 0
    for rnd in range(ROUNDS):
        acked, _refused = _round(SEED + rnd * 7919 + fail_sync, fail_sync)
        total += acked
    assert total > 0


def test_sync_groups_form_under_concurrency():
    """With a disk that takes time to sync, 8 FULL committers share syncs:
    fewer syncs than commits (the point of group commit)."""
    fs = CrashFS(sync_latency=0.002)
    db = lsm.open("/db", fs=fs, background="thread", sync="full")

    def writer(t: int) -> None:
        for i in range(40):
            db.put(b"%02d%06d" % (t, i), b"v")

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    st = db.stats()
    assert st["wal_synced_commits"] == 320
    assert st["wal_syncs"] < 320 * 0.6, st["wal_syncs"]
    db.close()


# ---------------------------------------------------------------- staged records
# FULL/EXTRA records are staged under the DB write lock and the sync leader
# writes its whole group in one write(2) (lsm/wal/writer.py, "Staged
# records"). The tests below pin what that must keep true.


class _BlockingFS(CrashFS):
    """CrashFS whose WAL segment syncs can be held: ``hold()`` makes the
    next one wait (``entered`` is set) until ``release()``. Counts writes to
    WAL segments."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self._held = False
        self.entered = threading.Event()
        self._go = threading.Event()
        self.wal_writes = 0

    def hold(self) -> None:
        self.entered.clear()
        self._go.clear()
        self._held = True

    def release(self) -> None:
        self._go.set()

    def _write_some(self, f, data):
        if f.path.endswith(".wal"):
            self.wal_writes += 1
        return super()._write_some(f, data)

    def _sync(self, f, data_only):
        if self._held and f.path.endswith(".wal"):
            self._held = False
            self.entered.set()
            assert self._go.wait(30), "a held WAL sync was never released"
        super()._sync(f, data_only)


def _wait_for(cond, what: str) -> None:
    """Wait (at most 30 s) for ``cond()``: ordering, not a timing assertion."""
    ev = threading.Event()
    for _ in range(30000):
        if cond():
            return
        ev.wait(0.001)
    raise AssertionError(f"timed out waiting for {what}")


def _stage_behind_held_sync(fs, db):
    """Thread A's FULL put leads a sync that is held; B's and C's FULL puts
    are then staged (their records not in the file) behind it. Returns the
    three threads and their results (seq or exception), keyed a/b/c."""
    results: dict[str, object] = {}

    def put(name: str) -> None:
        try:
            results[name] = db.put(name.encode() * 4, b"value-" + name.encode(), sync="full")
        except BaseException as e:  # noqa: BLE001 - checked by the caller
            results[name] = e

    fs.hold()
    ta = threading.Thread(target=put, args=("a",), daemon=True)
    ta.start()
    assert fs.entered.wait(30)
    wal = db._wal
    ts = [ta]
    for name in ("b", "c"):
        t = threading.Thread(target=put, args=(name,), daemon=True)
        t.start()
        ts.append(t)
        n = {"b": 1, "c": 2}[name]
        _wait_for(lambda n=n: len(wal._staged) == n, f"{name}'s record staged")
    return ts, results


def _wal_bytes(fs, db) -> bytes:
    return fs.read_file(db._wal.segment_path)


def test_staged_records_wait_for_the_leader_and_go_in_one_write():
    fs = _BlockingFS()
    db = lsm.open("/db", fs=fs, background="thread", sync="full")
    writes0 = fs.wal_writes
    ts, results = _stage_behind_held_sync(fs, db)
    data = _wal_bytes(fs, db)
    assert b"aaaa" in data and b"bbbb" not in data and b"cccc" not in data  # staged: not in the OS yet
    assert fs.wal_writes == writes0 + 1
    fs.release()
    for t in ts:
        t.join(30)
        assert not t.is_alive()
    assert all(isinstance(results[k], int) for k in "abc"), results
    assert fs.wal_writes == writes0 + 2, "b's and c's records were not written together"
    data = _wal_bytes(fs, db)
    assert data.index(b"aaaa") < data.index(b"bbbb") < data.index(b"cccc")
    assert db.durable_seq >= max(results[k] for k in "abc")
    db.close()


@pytest.mark.parametrize("level", ["off", "normal", "barrier"])
def test_non_full_commit_writes_staged_records_first(level):
    """A commit below FULL must reach the OS when it returns, after the
    staged records before it (sequence order in the file)."""
    fs = _BlockingFS()
    db = lsm.open("/db", fs=fs, background="thread", sync="full")
    ts, results = _stage_behind_held_sync(fs, db)
    seq_d = db.put(b"dddd", b"value-d", sync=level)
    data = _wal_bytes(fs, db)
    assert b"bbbb" in data and b"cccc" in data and b"dddd" in data, "staged records not written first"
    assert data.index(b"aaaa") < data.index(b"bbbb") < data.index(b"cccc") < data.index(b"dddd")
    assert seq_d > max(results.get(k, 0) or 0 for k in "abc" if isinstance(results.get(k), int)) if results else True
    fs.release()
    for t in ts:
        t.join(30)
        assert not t.is_alive()
    assert all(isinstance(results[k], int) for k in "abc"), results
    assert results["a"] < results["b"] < results["c"] < seq_d
    db._simulate_crash()  # a kill -9: the OS keeps everything written
    db = lsm.open("/db", fs=fs, background="thread")
    assert [db.get(k * 4) for k in (b"a", b"b", b"c", b"d")] == [b"value-a", b"value-b", b"value-c", b"value-d"]
    db.close()


def test_checkpoint_includes_staged_records():
    """A checkpoint pins the live segment under the write lock: staged
    records must be in the file by then (the copy must reach last_seq)."""
    fs = _BlockingFS()
    db = lsm.open("/db", fs=fs, background="thread", sync="full")
    ts, results = _stage_behind_held_sync(fs, db)
    info = db.checkpoint("/ckpt")
    fs.release()
    for t in ts:
        t.join(30)
        assert not t.is_alive()
    assert info.seq >= results["c"]
    db.close()
    ck = lsm.open("/ckpt", fs=fs, background="thread")
    assert ck.get(b"cccc") == b"value-c"
    ck.close()


def test_failed_group_write_fences_every_waiter():
    """The leader's write of a staged group fails: every committer of that
    group gets NeedsRecoveryError (none is acknowledged), nothing is
    retried, and later commits are refused."""
    fs = _BlockingFS()
    db = lsm.open("/db", fs=fs, background="thread", sync="full")
    ts, results = _stage_behind_held_sync(fs, db)
    fs.fail("write", nth=1, err=errno.EIO, path=r"\.wal$")
    fs.release()
    for t in ts:
        t.join(30)
        assert not t.is_alive(), "a committer of the failed group hangs"
    assert isinstance(results["a"], int)  # its own sync succeeded
    assert isinstance(results["b"], lsm.NeedsRecoveryError), results
    assert isinstance(results["c"], lsm.NeedsRecoveryError), results
    assert db.durable_seq < results["a"] + 1
    with pytest.raises(lsm.NeedsRecoveryError):
        db.put(b"eeee", b"after", sync="off")
    assert b"bbbb" not in _wal_bytes(fs, db)
    db._simulate_crash()


def test_power_cut_keeps_groups_whole_and_in_order():
    """8 FULL writers; power cuts taken while they run. Every image must
    open, hold every commit acknowledged before its cut, and hold a prefix
    of the commits in sequence order (no later commit without an earlier
    one). Also: far fewer WAL writes than commits (groups share one)."""
    seed = SEED
    print(f"staged power cut: LSM_CRASH_SEED={seed}")
    rng = random.Random(seed)
    fs = _BlockingFS(sync_latency=0.0005)
    db = lsm.open("/db", fs=fs, background="thread", sync="full", memtable_size=64 << 10)
    seq_of: dict[bytes, int] = {}  # key -> seq (put's result: every put returns before the images are checked)
    local = threading.local()
    acked: list[int] = []
    images: list[tuple[CrashFS, set[int]]] = []
    done = threading.Event()
    writes0 = fs.wal_writes

    def writer(t: int) -> None:
        for i in range(60):
            local.key = b"%02d%06d" % (t, i)
            seq = seq_of[local.key] = db.put(local.key, local.key * 3)
            acked.append(seq)

    def cutter() -> None:
        r = random.Random(seed + 1)
        while not done.is_set() and len(images) < 6:
            before = set(acked)
            images.append((fs.power_cut(random.Random(r.random())), before))
            done.wait(0.003)

    threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(8)]
    cut = threading.Thread(target=cutter, daemon=True)
    for t in threads:
        t.start()
    cut.start()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    done.set()
    cut.join(60)
    commits = len(acked)
    assert fs.wal_writes - writes0 < commits * 0.8, (fs.wal_writes - writes0, commits)
    db.close()
    key_of = {s: k for k, s in seq_of.items()}
    images.append((fs.power_cut(random.Random(rng.random())), set(acked)))
    for n, (img, before) in enumerate(images):
        d = lsm.open("/db", fs=img, background="inline")
        got = {k for k, _v in d.items()}
        seqs = sorted(seq_of[k] for k in got)
        assert seqs == list(range(1, len(seqs) + 1)), f"image {n}: not a prefix of the commits (seed {seed})"
        missing = sorted(s for s in before if key_of[s] not in got)
        assert not missing, f"image {n}: acknowledged commits lost: {missing[:5]} (seed {seed})"
        for k in got:
            assert d.get(k) == k * 3
        d.close()


# ---------------------------------------------------------------- fenced leader
# A sync leader that finds the writer fenced once it holds _io_mu (a write
# failed while it lingered or waited there) neither writes nor syncs, and
# its commit raises (lsm/wal/writer.py, sync_to; tests/test_wal_writer_edges.py
# has the torn-write and lingering versions).


class _CountingLock:
    """A lock that sets ``blocked`` when an acquire has to wait."""

    def __init__(self):
        self._lock = threading.Lock()
        self.blocked = threading.Event()

    def acquire(self, blocking=True, timeout=-1):
        if self._lock.acquire(False):
            return True
        self.blocked.set()
        return self._lock.acquire(blocking, timeout)

    def release(self):
        self._lock.release()

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc):
        self.release()


def test_leader_fenced_while_waiting_for_io_neither_writes_nor_syncs():
    from lsm.base.fs import makedirs_durable
    from lsm.wal.format import encode_record
    from lsm.wal.writer import WalWriter

    fs = _BlockingFS()
    makedirs_durable(fs, "/w")
    fences = []
    w = WalWriter(fs, "/w", segment_size=1 << 20, sync_interval=3600.0, on_fence=fences.append)
    w.start_segment_locked(1)
    w.append_locked(encode_record(1, 1, 0, b"r1", w.synced_offset), 1, 1, lsm.Sync.FULL)
    w.commit_wait(1, lsm.Sync.FULL)  # durable; the directory entry too
    syncs, writes = w.syncs, fs.wal_writes
    w.append_locked(encode_record(2, 1, 0, b"r2", w.synced_offset), 2, 1, lsm.Sync.FULL)  # staged
    w._io_mu = spy = _CountingLock()
    spy.acquire()  # as an OFF commit writing the staged record would hold it
    out: dict[str, object] = {}

    def lead():
        try:
            w.commit_wait(2, lsm.Sync.FULL)
            out["result"] = "returned"
        except BaseException as e:  # noqa: BLE001 - checked below
            out["result"] = e

    t = threading.Thread(target=lead, daemon=True)
    t.start()
    assert spy.blocked.wait(30), "the leader never waited for _io_mu"
    err = OSError(errno.ENOSPC, "that write failed")
    w._fence(err)  # what the failed write does, under _io_mu
    spy.release()
    t.join(30)
    assert not t.is_alive(), "the fenced leader hangs"
    assert isinstance(out["result"], lsm.NeedsRecoveryError), out
    assert w.syncs == syncs and fs.wal_writes == writes, "a fenced leader wrote or synced"
    assert w.durable_seq == 1 and w.fenced is err and fences[0] is err
    assert b"r2" not in fs.read_file(w.segment_path)
    with pytest.raises(lsm.NeedsRecoveryError):
        w.commit_wait(2, lsm.Sync.FULL)  # later waiters raise too; nothing retried
    assert w.syncs == syncs
    w.close(sync=False)


# -- the leader's group write on the plain filesystem (WritableFile.raw_write,
# inlined in GroupSync.sync_to like append_locked's): the short-write rule
# and fencing hold there too.


def _full_threads(db, n_threads: int, per: int, seed: int) -> tuple[dict[bytes, bytes], list[BaseException]]:
    acked: dict[bytes, bytes] = {}
    errors: list[BaseException] = []
    mu = threading.Lock()

    def work(t: int) -> None:
        r = random.Random(seed * 7 + t)
        for i in range(per):
            k, v = b"t%d-%04d" % (t, i), r.randbytes(r.randrange(0, 120))
            try:
                db.put(k, v, sync="full")
            except lsm.NeedsRecoveryError as e:
                with mu:
                    errors.append(e)
                return
            with mu:
                acked[k] = v

    ts = [threading.Thread(target=work, args=(t,), daemon=True) for t in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
        assert not t.is_alive(), "a FULL committer hangs"
    return acked, errors


def _direct_write_db(tmp_path):
    """A FULL database whose leader writes groups through ``raw_write``
    (the plain filesystem), and a seeded rng: LSM_GC_SEED replays a run."""
    seed = int(os.environ.get("LSM_GC_SEED") or random.randrange(1 << 30))
    print("seed", seed)
    path = str(tmp_path / "db")
    db = lsm.open(path, background="thread", sync="full", wal_preallocate=False)
    return seed, random.Random(seed), path, db, db._wal._file


def _reopened_holds(path, acked):
    db = lsm.open(path, background="inline")
    try:
        assert {k: db.get(k) for k in acked} == acked, "an acknowledged commit was lost"
    finally:
        db.close()


def test_short_direct_group_write_completes_the_group(tmp_path):
    seed, rng, path, db, f = _direct_write_db(tmp_path)
    raw = f.raw_write
    assert raw is not None  # the plain filesystem: the leader writes through raw_write
    cuts: list[tuple[int, int]] = []

    def short(data):
        cut = rng.randrange(0, len(data))
        cuts.append((cut, len(data)))
        return raw(data[:cut])

    f.raw_write = short
    acked, errors = _full_threads(db, 4, 60, seed)
    assert not errors and len(acked) == 240
    assert db._wal._file is f and len(cuts) >= 1
    assert any(n > 200 for _, n in cuts), "no group of several records was written"  # (one record is < 150 bytes)
    assert f.size == os.path.getsize(db._wal.segment_path)
    f.raw_write = raw
    db.close()
    _reopened_holds(path, acked)


def test_failed_direct_group_write_fences_and_loses_no_acknowledged_commit(tmp_path):
    seed, rng, path, db, f = _direct_write_db(tmp_path)
    raw = f.raw_write
    fail_at = rng.randint(5, 60)
    calls = [0]

    def failing(data):
        calls[0] += 1
        if calls[0] == fail_at:
            raise OSError(errno.EIO, "injected group write failure")
        return raw(data)

    f.raw_write = failing
    acked, errors = _full_threads(db, 4, 60, seed)
    assert calls[0] >= fail_at and errors, "the failed write fenced nobody"
    assert isinstance(db._wal.fenced, OSError)
    with pytest.raises(lsm.NeedsRecoveryError):
        db.put(b"later", b"x", sync="off")
    try:
        db.close()
    except lsm.NeedsRecoveryError:
        pass
    _reopened_holds(path, acked)
