"""lsm.restore: point-in-time restore from a checkpoint (or a closed
database) plus the live and archived WAL, compared with a model that
records every commit (sequence numbers, commit time, ops).

Commit times are injected (``lsm.db.time`` replaced by a fake whose
``time_ns`` the test steps), so restores by time have exact expectations,
including a clock that steps back. Seeds print and replay with
LSM_RESTORE_SEED."""

import hashlib
import os
import random
import time
import types
from datetime import datetime, timezone

import pytest

import lsm
import lsm.db
from lsm.base import filenames
from lsm.base.crashfs import CrashFS
from lsm.restore import time_us
from tests.conftest import TINY
from tests.seeds import seed

T0 = 1_700_000_000_000_000  # microseconds


class Clock:
    """``time`` for lsm.db with a settable ``time_ns`` (commit timestamps)."""

    def __init__(self):
        self.us = T0
        self.time = types.SimpleNamespace(time_ns=lambda: self.us * 1000, perf_counter=time.perf_counter,
                                          sleep=time.sleep, monotonic=time.monotonic, time=time.time)


@pytest.fixture
def clock(monkeypatch):
    c = Clock()
    monkeypatch.setattr(lsm.db, "time", c.time)
    return c


class History:
    """A database with retention on, and every commit recorded."""

    def __init__(self, path, clock, rng, **opts):
        self.path = str(path)
        self.clock = clock
        self.rng = rng
        kw = dict(TINY, wal_retention_segments=10**6, background="inline")
        kw.update(opts)
        self.db = lsm.open(self.path, **kw)
        self.commits = []  # (first_seq, last_seq, ts_us, [(key, value or None)])
        self.checkpoints = []  # (path, CheckpointInfo)

    def commit(self, step_us=None):
        rng, db = self.rng, self.db
        self.clock.us += rng.choice((0, 1, 7, 250)) if step_us is None else step_us
        r = rng.random()
        if r < 0.6:
            k, v = b"k%03d" % rng.randrange(120), b"v%d" % len(self.commits)
            last = db.put(k, v, sync=lsm.Sync.OFF)
            ops = [(k, v)]
        elif r < 0.8:
            k = b"k%03d" % rng.randrange(120)
            last = db.delete(k, sync=lsm.Sync.OFF)
            ops = [(k, None)]
        else:
            b = lsm.WriteBatch()
            ops = []
            for _ in range(rng.randrange(2, 6)):
                k = b"k%03d" % rng.randrange(120)
                if rng.random() < 0.8:
                    b.put(k, b"b%d" % len(self.commits))
                    ops.append((k, b"b%d" % len(self.commits)))
                else:
                    b.delete(k)
                    ops.append((k, None))
            last = db.write(b, sync=lsm.Sync.OFF)
        self.commits.append((last - len(ops) + 1, last, self.clock.us, ops))
        return last

    def run(self, n):
        for _ in range(n):
            self.commit()

    def checkpoint(self, name):
        p = os.path.join(os.path.dirname(self.path), name)
        info = self.db.checkpoint(p)
        self.checkpoints.append((p, info))
        return p, info

    def state_at(self, seq):
        state = {}
        for first, last, _ts, ops in self.commits:
            if last > seq:
                assert first > seq, "the model cuts a batch"
                break
            for k, v in ops:
                if v is None:
                    state.pop(k, None)
                else:
                    state[k] = v
        return state

    def point_of_time(self, t_us):
        """The last seq of the longest prefix of commits stamped <= t_us."""
        seq = 0
        for _first, last, ts, _ops in self.commits:
            if ts > t_us:
                break
            seq = last
        return seq

    def point_of_seq(self, to_seq):
        seq = 0
        for _first, last, _ts, _ops in self.commits:
            if last > to_seq:
                break
            seq = last
        return seq


def restored(path, **kw):
    db = lsm.open(path, background="inline", create_if_missing=False, **kw)
    try:
        return dict(db.items()), db.last_seq
    finally:
        db.close()


def tree_digest(*dirs):
    out = {}
    for d in dirs:
        for root, _sub, files in os.walk(d):
            for f in files:
                p = os.path.join(root, f)
                with open(p, "rb") as fh:
                    out[p] = hashlib.sha256(fh.read()).hexdigest()
    return out


def seeded():
    return random.Random(seed("LSM_RESTORE_SEED"))


# ---------------------------------------------------------------- the model
def test_restore_to_many_points_matches_the_model(tmp_path, clock):
    rng = seeded()
    h = History(tmp_path / "db", clock, rng)
    h.run(150)
    h.checkpoint("ck0")
    h.run(250)
    h.checkpoint("ck1")
    h.run(250)
    h.db.close()
    last = h.commits[-1][1]
    digest = tree_digest(tmp_path / "db", tmp_path / "ck0", tmp_path / "ck1")
    ck = {name: info for name, info in ((os.path.basename(p), i) for p, i in h.checkpoints)}
    points = {last, ck["ck0"].seq, ck["ck1"].seq, ck["ck1"].flushed_seq, ck["ck0"].flushed_seq + 1, last - 1}
    points |= {rng.randrange(ck["ck0"].flushed_seq, last + 1) for _ in range(6)}
    batch = next(c for c in h.commits if c[1] > c[0] and c[0] > ck["ck0"].flushed_seq)
    points.add(batch[0])  # inside a batch: restored to just before it
    n = 0
    for to_seq in sorted(points):
        for name in ("ck0", "ck1", "db"):
            src = tmp_path / name
            flushed = ck[name].flushed_seq if name in ck else None
            if flushed is not None and to_seq < flushed:
                with pytest.raises(lsm.RestoreError, match="older checkpoint"):
                    lsm.restore(src, tmp_path / f"bad{n}", to_seq=to_seq, wal_dirs=[tmp_path / "db"])
                assert not (tmp_path / f"bad{n}").exists() or not os.listdir(tmp_path / f"bad{n}")
                continue
            target = tmp_path / f"r{n}"
            n += 1
            try:
                res = lsm.restore(src, target, to_seq=to_seq, wal_dirs=[] if name == "db" else [tmp_path / "db"])
            except lsm.RestoreError as e:
                assert name == "db" and "older checkpoint" in str(e), e
                continue
            want_seq = h.point_of_seq(to_seq)
            assert res.seq == want_seq, (name, to_seq)
            got, seq = restored(target)
            assert seq == want_seq
            assert got == h.state_at(want_seq), f"restore of {name} to {to_seq}"
    assert n >= 10
    assert tree_digest(tmp_path / "db", tmp_path / "ck0", tmp_path / "ck1") == digest, "the sources changed"


def test_restore_by_time_matches_the_model(tmp_path, clock):
    rng = seeded()
    h = History(tmp_path / "db", clock, rng)
    h.run(60)
    ck, info = h.checkpoint("ck")
    h.run(40)
    h.commit(step_us=300)
    edge = h.clock.us
    h.commit(step_us=1)  # one microsecond later: excluded at to_time=edge
    h.run(40)
    h.commit(step_us=1000)
    h.commit(step_us=-5000)  # the clock steps back: the prefix rule stops at the first later stamp
    h.run(80)
    h.db.close()
    stamps = sorted({c[2] for c in h.commits if c[1] > info.flushed_seq})
    times = [stamps[0], stamps[len(stamps) // 3], stamps[-1], stamps[len(stamps) // 2] + 1]
    back = next(i for i in range(1, len(h.commits)) if h.commits[i][2] < h.commits[i - 1][2])
    times.append(h.commits[back][2])  # later commits share stamps with earlier ones
    times.append(edge)
    for i, t in enumerate(times):
        want = h.point_of_time(t)
        if want < info.flushed_seq:
            with pytest.raises(lsm.RestoreError, match="older checkpoint"):
                lsm.restore(ck, tmp_path / f"t{i}", to_time=t / 1e6, wal_dirs=[tmp_path / "db"])
            continue
        if want == h.commits[-1][1]:  # no commit stamped later: the log cannot prove it is complete
            with pytest.raises(lsm.RestoreError, match="newest commit available"):
                lsm.restore(ck, tmp_path / f"t{i}", to_time=t / 1e6, wal_dirs=[tmp_path / "db"])
            continue
        res = lsm.restore(ck, tmp_path / f"t{i}", to_time=datetime.fromtimestamp(t / 1e6, timezone.utc),
                          wal_dirs=[tmp_path / "db"])
        assert res.seq == want, (i, t)
        got, _ = restored(tmp_path / f"t{i}")
        assert got == h.state_at(want)
    # seconds as a float work too, and name the same point
    t = stamps[len(stamps) // 3]
    res = lsm.restore(ck, tmp_path / "float", to_time=t / 1e6, wal_dirs=[tmp_path / "db"])
    assert res.seq == h.point_of_time(t) and res.timestamp_us is not None and res.timestamp_us <= t


def test_time_before_the_base_and_after_the_log(tmp_path, clock):
    rng = seeded()
    h = History(tmp_path / "db", clock, rng)
    h.run(200)
    ck, info = h.checkpoint("ck")
    h.run(50)
    h.db.close()
    assert info.flushed_seq > 0
    first_stamp = h.commits[0][2]
    with pytest.raises(lsm.RestoreError, match="older checkpoint"):
        lsm.restore(ck, tmp_path / "early", to_time=(first_stamp - 1) / 1e6, wal_dirs=[tmp_path / "db"])
    with pytest.raises(lsm.RestoreError, match="newest commit available is"):
        lsm.restore(ck, tmp_path / "late", to_time=(h.commits[-1][2] + 10**6) / 1e6, wal_dirs=[tmp_path / "db"])
    with pytest.raises(lsm.RestoreError, match="newest commit available is"):
        lsm.restore(ck, tmp_path / "late2", to_seq=h.commits[-1][1] + 1, wal_dirs=[tmp_path / "db"])
    # at exactly the base's time the base itself is the answer
    f_stamp = next(c[2] for c in h.commits if c[1] == info.flushed_seq)
    if all(c[2] > f_stamp for c in h.commits if c[1] > info.flushed_seq):
        res = lsm.restore(ck, tmp_path / "exact", to_time=f_stamp / 1e6, wal_dirs=[tmp_path / "db"])
        assert res.seq == info.flushed_seq
    # and without a bound: everything available
    res = lsm.restore(ck, tmp_path / "all", wal_dirs=[tmp_path / "db"])
    assert res.seq == h.commits[-1][1]
    assert restored(tmp_path / "all")[0] == h.state_at(res.seq)
    # without the source's log, the checkpoint alone reaches its own S
    res = lsm.restore(ck, tmp_path / "ckonly")
    assert res.seq == info.seq and restored(tmp_path / "ckonly")[0] == h.state_at(info.seq)


# -------------------------------------------------------------------- gaps
def test_a_pruned_segment_is_a_gap(tmp_path, clock):
    h = History(tmp_path / "db", clock, seeded())
    h.run(100)
    ck, info = h.checkpoint("ck")
    h.run(400)
    h.db.close()
    arch = tmp_path / "db" / filenames.ARCHIVE_DIR
    segs = sorted(os.listdir(arch))
    firsts = [filenames.parse_archived_wal(n)[0] for n in segs]
    i = next(j for j in range(1, len(firsts) - 1) if firsts[j] > info.seq + 1)
    os.remove(arch / segs[i])
    hole, resumes = firsts[i], firsts[i + 1]
    with pytest.raises(lsm.RestoreGapError) as ei:
        lsm.restore(ck, tmp_path / "r", wal_dirs=[tmp_path / "db"])
    assert (ei.value.missing, ei.value.resumes) == (hole, resumes)
    assert f"resumes at {resumes}" in str(ei.value)
    assert not os.path.exists(tmp_path / "r")
    # a point before the hole is fine
    res = lsm.restore(ck, tmp_path / "r2", to_seq=hole - 1, wal_dirs=[tmp_path / "db"])
    assert res.seq == h.point_of_seq(hole - 1)
    assert restored(tmp_path / "r2")[0] == h.state_at(res.seq)
    # and one inside it is not
    with pytest.raises(lsm.RestoreGapError):
        lsm.restore(ck, tmp_path / "r3", to_seq=hole, wal_dirs=[tmp_path / "db"])


def test_archive_not_reaching_back_to_the_base(tmp_path, clock):
    h = History(tmp_path / "db", clock, seeded())
    h.run(150)
    ck, info = h.checkpoint("ck")
    h.run(300)
    h.db.close()
    # the checkpoint's own WAL tail is lost and the archive was pruned up to past it
    for n in os.listdir(ck):
        if filenames.parse_wal(n) is not None:
            os.remove(os.path.join(ck, n))
    arch = tmp_path / "db" / filenames.ARCHIVE_DIR
    for n in sorted(os.listdir(arch)):
        if filenames.parse_archived_wal(n)[0] <= info.flushed_seq + 1:
            os.remove(arch / n)
    with pytest.raises(lsm.RestoreGapError, match="reaches back") as ei:
        lsm.restore(ck, tmp_path / "r", to_seq=h.commits[-1][1], wal_dirs=[tmp_path / "db"])
    assert ei.value.missing == info.flushed_seq + 1
    res = lsm.restore(ck, tmp_path / "r2", to_seq=info.flushed_seq)  # the base alone is fine
    assert res.seq == info.flushed_seq and restored(tmp_path / "r2")[0] == h.state_at(info.flushed_seq)


def test_histories_that_disagree(tmp_path, clock):
    """A checkpoint that was opened and written to has its own history
    after its S: mixing it with the source's log is refused."""
    h = History(tmp_path / "db", clock, seeded())
    h.run(100)
    ck, info = h.checkpoint("ck")
    h.run(100)
    h.db.close()
    other = lsm.open(ck, background="inline")
    other.put(b"diverged", b"!")
    other.close()
    with pytest.raises(lsm.RestoreError, match="disagree"):
        lsm.restore(ck, tmp_path / "r", to_seq=info.seq + 5, wal_dirs=[tmp_path / "db"])


# -------------------------------------------------------------- the sources
def test_source_open_elsewhere_is_refused_but_its_wal_dir_may_be_read(tmp_path, clock):
    h = History(tmp_path / "db", clock, seeded(), background="thread")
    h.run(100)
    ck, _info = h.checkpoint("ck")
    h.run(200)
    with pytest.raises(lsm.LockedError, match="checkpoint"):
        lsm.restore(tmp_path / "db", tmp_path / "r")
    h.db.sync_wal()
    seq = h.db.last_seq
    res = lsm.restore(ck, tmp_path / "r", to_seq=seq, wal_dirs=[tmp_path / "db"])  # the live db's log
    assert res.seq == seq and restored(tmp_path / "r")[0] == h.state_at(seq)
    h.run(50)
    h.db.close()


def test_separate_wal_dir_and_restore_from_the_database_itself(tmp_path, clock):
    h = History(tmp_path / "db", clock, seeded(), wal_dir=str(tmp_path / "wal"))
    h.run(300)
    h.db.close()
    vs_flushed = lsm.restore(tmp_path / "db", tmp_path / "probe", to_seq=h.commits[-1][1],
                             wal_dirs=[tmp_path / "wal"]).base_seq
    for to_seq in (vs_flushed, h.commits[-1][1], (vs_flushed + h.commits[-1][1]) // 2):
        res = lsm.restore(tmp_path / "db", tmp_path / f"r{to_seq}", to_seq=to_seq, wal_dirs=str(tmp_path / "wal"))
        assert restored(tmp_path / f"r{to_seq}")[0] == h.state_at(res.seq)
    with pytest.raises(lsm.RestoreError, match="older checkpoint"):
        lsm.restore(tmp_path / "db", tmp_path / "old", to_seq=0, wal_dirs=[tmp_path / "wal"])


def test_argument_and_target_errors(tmp_path, clock):
    h = History(tmp_path / "db", clock, seeded())
    h.run(50)
    ck, _ = h.checkpoint("ck")
    h.db.close()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_bytes(b"1")
    with pytest.raises(lsm.TargetNotEmptyError):
        lsm.restore(ck, tmp_path / "full")
    with pytest.raises(lsm.TargetNotEmptyError, match="inside"):
        lsm.restore(ck, os.path.join(ck, "sub"))
    with pytest.raises(ValueError, match="not both"):
        lsm.restore(ck, tmp_path / "r", to_seq=1, to_time=1.0)
    with pytest.raises(TypeError, match="to_seq"):
        lsm.restore(ck, tmp_path / "r", to_seq="5")
    with pytest.raises(ValueError, match="to_seq"):
        lsm.restore(ck, tmp_path / "r", to_seq=-1)
    with pytest.raises(TypeError, match="to_time"):
        lsm.restore(ck, tmp_path / "r", to_time="yesterday")
    with pytest.raises(lsm.InvalidDatabaseError, match="no database"):
        lsm.restore(tmp_path / "full", tmp_path / "r")
    with pytest.raises(lsm.InvalidDatabaseError, match="wal_dirs"):
        lsm.restore(ck, tmp_path / "r", wal_dirs=[tmp_path / "nope"])
    assert not (tmp_path / "r").exists()
    assert time_us(datetime(2024, 1, 1, tzinfo=timezone.utc)) == 1704067200 * 10**6
    assert time_us(1.5) == 1_500_000


# ------------------------------------------------------ durability, chunks
def test_restored_database_is_durable_and_usable(clock):
    fs = CrashFS()
    rng = seeded()
    h = History("/db", clock, rng, fs=fs, background="inline")
    h.run(100)
    h.checkpoint("ck")
    h.run(300)
    h.db.close()
    last = h.commits[-1][1]
    opts = lsm.Options(fs=fs, memtable_size=2048)
    res = lsm.restore("/ck", "/r", wal_dirs=["/db"], options=opts)
    assert res.seq == last
    assert res.tables_written > 2, "memtable_size bounds each replayed table"
    image = fs.power_cut(mode="drop")
    db = lsm.open("/r", fs=image, background="inline", create_if_missing=False)
    assert dict(db.items()) == h.state_at(last)
    assert db.verify().ok
    assert [n for n in image.listdir("/r") if n.endswith(".wal")] == [filenames.wal_name(last + 1)]
    db.put(b"new", b"1")
    db.close()
    db = lsm.open("/r", fs=image, background="inline")
    assert db.get(b"new") == b"1" and db.last_seq == last + 1
    db.close()


def test_range_deletions_are_restored(tmp_path):
    """delete_range commits (range tombstones) replay through restore's
    flush jobs like any other op, before and after a checkpoint."""
    db = lsm.open(tmp_path / "db", background="inline", wal_retention_segments=10**6, **TINY)
    model = {}
    points = {}
    for i in range(300):
        db.put(b"k%04d" % i, b"a%d" % i, sync=lsm.Sync.OFF)
        model[b"k%04d" % i] = b"a%d" % i
    db.delete_range(b"k0050", b"k0100")
    for i in range(50, 100):
        model.pop(b"k%04d" % i)
    points[db.last_seq] = dict(model)
    info = db.checkpoint(tmp_path / "ck")
    for i in range(80, 120):
        db.put(b"k%04d" % i, b"b%d" % i, sync=lsm.Sync.OFF)
        model[b"k%04d" % i] = b"b%d" % i
    points[db.last_seq] = dict(model)
    db.delete_range(b"k0000", b"k0090")
    for i in range(90):
        model.pop(b"k%04d" % i, None)
    points[db.last_seq] = dict(model)
    db.close()
    assert info.seq == min(points)
    for n, (seq, want) in enumerate(sorted(points.items())):
        res = lsm.restore(tmp_path / "ck", tmp_path / f"r{n}", to_seq=seq, wal_dirs=[tmp_path / "db"],
                          options=lsm.Options(memtable_size=2048))
        assert res.seq == seq
        assert restored(tmp_path / f"r{n}")[0] == want, f"restore to {seq}"


def test_a_restore_across_an_ingest_names_the_ingest(tmp_path, clock):
    """An ingest takes a sequence number without a log record: the log
    cannot replay across it, and the error says so (not only "pruned")."""
    h = History(tmp_path / "db", clock, seeded())
    h.run(50)
    ck, info = h.checkpoint("ck")
    h.run(20)
    before = h.db.last_seq
    ingested = h.db.ingest([(b"ingested-%03d" % i, b"v") for i in range(10)])
    assert ingested > before
    h.db.put(b"after", b"x")
    after = h.db.last_seq
    h.db.close()
    with pytest.raises(lsm.RestoreGapError) as ei:
        lsm.restore(ck, tmp_path / "r", to_seq=after, wal_dirs=[tmp_path / "db"])
    msg = str(ei.value)
    assert "ingest" in msg and f"before {before + 1}" in msg, msg
    assert ei.value.missing == before + 1
    # up to the commit before the ingest is fine
    res = lsm.restore(ck, tmp_path / "r2", to_seq=before, wal_dirs=[tmp_path / "db"])
    assert res.seq == before
