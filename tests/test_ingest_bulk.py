"""Bulk ingestion: db.ingest (sorted and unsorted input, external sort in a
small memory budget), lsm.TableWriter + db.ingest_files, sequence-number
semantics (ingested data shadows older data, later writes shadow it,
snapshots taken before do not see it, the sequence number survives a
reopen), atomicity across power cuts, and the errors.

Randomized tests print their seed; LSM_INGEST_SEED replays one,
LSM_INGEST_CRASH_ROUNDS scales the power-cut test."""

import errno
import os
import random
import threading

import pytest

import lsm
from lsm.background import Background
from lsm.base import filenames
from lsm.base.crashfs import CrashFS
from lsm.ingest import job as ingest_job
from lsm.ingest import sort as ingest_sort
from lsm.ingest.job import DEFAULT_MEMORY_BUDGET
from tests.conftest import TINY

CRASH_ROUNDS = int(os.environ.get("LSM_INGEST_CRASH_ROUNDS", "12"))


def seed_of(name):
    s = os.environ.get("LSM_INGEST_SEED")
    seed = int(s) if s else random.randrange(1 << 30)
    print(f"{name}: seed {seed} (replay with LSM_INGEST_SEED={seed})")
    return seed


def key(i):
    return b"key%08d" % i


def content(db, **kw):
    return dict(db.items(**kw))


def tmp_files(fs, path):
    """Temporary files an ingest left behind (the WAL's preallocated spare
    segment is the engine's own, not the ingest's)."""
    return [n for n in fs.listdir(path) if n.endswith(".tmp") and n != filenames.WAL_SPARE]


def verified(db):
    """db.verify() (lsm/ops/verify.py) finds nothing wrong after an ingest."""
    verify = getattr(db, "verify", None)
    if verify is not None:
        report = verify()
        assert report.ok, report.problems
    return True


def open_mem(fs, **kw):
    opts = {"fs": fs, "background": "thread"}
    opts.update(kw)
    return lsm.open("/db", **opts)


# ------------------------------------------------------------------ basics
@pytest.mark.parametrize("presorted", [True, False])
def test_ingest_into_empty_db_goes_to_last_level(tmp_path, presorted):
    rnd = random.Random(seed_of("empty"))
    items = [(key(i), b"v%d" % rnd.randrange(10**6)) for i in range(5000)]
    if not presorted:
        rnd.shuffle(items)
    with lsm.open(tmp_path / "db", background="thread", target_file_size=16 * 1024) as db:
        before = db.last_seq
        seq = db.ingest(items, sorted=presorted)
        assert seq == before + 1 == db.last_seq
        assert content(db) == dict(items)
        st = db.stats()
        last = st["levels"][-1]
        # Nothing overlapped: all of it at the last level, split by target_file_size.
        assert last["files"] > 1 and st["sst_files"] == last["files"]
        assert db.get(key(4999)) == dict(items)[key(4999)]
        assert list(db.keys(reverse=True))[:2] == [key(4999), key(4998)]
    assert not tmp_files(lsm.Options().fs, str(tmp_path / "db"))


def test_ingest_with_default_background_process(tmp_path):
    with lsm.open(tmp_path / "db") as db:
        for i in range(0, 1000, 3):
            db.put(key(i), b"old")
        items = [(key(i), b"new%d" % i) for i in range(0, 1000, 2)]
        seq = db.ingest(reversed(items))
        assert db.last_seq == seq
        model = {key(i): b"old" for i in range(0, 1000, 3)}
        model.update(items)
        assert content(db) == model
    with lsm.open(tmp_path / "db") as db:
        assert content(db) == model


def test_unsorted_input_larger_than_the_memory_budget(tmp_path, monkeypatch):
    """50k pairs in a 64 KiB budget: hundreds of runs, merged in groups of
    MAX_FAN_IN first; duplicates spread over the runs: the last one wins."""
    rnd = random.Random(seed_of("budget"))
    spills = []
    real = ingest_sort.ExternalSorter._spill

    def counting(self):
        spills.append(len(self._buf))
        return real(self)

    monkeypatch.setattr(ingest_sort.ExternalSorter, "_spill", counting)
    n = 50_000
    order = list(range(n))
    rnd.shuffle(order)
    items = [(key(i), b"first-%d" % i) for i in order]
    dups = rnd.sample(range(n), 2000)
    items += [(key(i), b"second-%d" % i) for i in dups]  # later in the input: these win
    rnd.shuffle(dups)
    items += [(key(i), b"third-%d" % i) for i in dups[:500]]
    model = dict(items)
    assert len(model) == n
    with lsm.open(tmp_path / "db", background="thread") as db:
        db.ingest(iter(items), memory_budget=64 * 1024)
        assert len(spills) > ingest_sort.MAX_FAN_IN  # the pre-merge pass ran
        # Each run held at most about budget / (key + value + charge) pairs.
        assert max(spills) * (11 + 7 + ingest_sort.ENTRY_CHARGE) <= 64 * 1024 + 1024
        assert content(db) == model
        assert db.get(key(dups[0])) == b"third-%d" % dups[0]
        assert not tmp_files(db._fs, db.path)
        assert verified(db)


def test_external_sort_memory_stays_near_the_budget(tmp_path):
    """Measured with tracemalloc: buffering stays under the budget and the
    merge (one decoded chunk per run plus the last buffer) under 1.5 times
    it, while the input is many times larger."""
    import tracemalloc

    fs = lsm.Options().fs
    budget = 256 * 1024
    names = iter(range(10**6))
    sorter = ingest_sort.ExternalSorter(fs, lambda: str(tmp_path / f"r{next(names)}.tmp"), budget)

    def gen():
        r = random.Random(5)
        for _ in range(30_000):
            yield b"key%09d" % r.randrange(10**9), b"v" * 100  # ~3.4 MB of keys and values

    tracemalloc.start()
    try:
        sorter.add_all(gen())
        add_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        last, n = b"", 0
        for chunk in sorter.merged_chunks(512):
            for k, _v in chunk:
                assert k > last
                last, n = k, n + 1
        merge_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        sorter.cleanup()
    assert sorter.spills > 20 and n > 29_000
    assert add_peak < budget and merge_peak < 1.5 * budget, (add_peak, merge_peak)
    assert not list(tmp_path.iterdir())


def test_merge_chunks_against_a_dict():
    """The chunk-wise merge: random sources (random chunk sizes, keys
    shared between sources) merge to the sorted dict in which the newest
    source wins."""
    seed = seed_of("merge_chunks")
    rnd = random.Random(seed)
    for _ in range(200):
        nsrc = rnd.randint(1, 6)
        sources, model = [], {}
        for s_i in range(nsrc):  # oldest first here
            keys = sorted(rnd.sample(range(300), rnd.randint(0, 60)))
            pairs = [(b"%03d" % k, b"s%d" % s_i) for k in keys]
            model.update(pairs)
            chunks, i = [], 0
            while i < len(pairs):
                j = i + rnd.randint(1, 12)
                chunks.append(pairs[i:j])
                i = j
            sources.append(chunks)
        out = [kv for c in ingest_sort.merge_chunks([iter(c) for c in reversed(sources)]) for kv in c]
        assert out == sorted(model.items()), f"seed {seed}"


def test_run_file_damage_is_detected(tmp_path):
    fs = lsm.Options().fs
    path = str(tmp_path / "r.run.tmp")
    keys = [b"k%05d" % i for i in range(3000)]
    values = {k: b"v" * 20 for k in keys}
    ingest_sort.write_run(fs, path, keys, values, 4096)
    assert [kv for c in ingest_sort.read_run(fs, path) for kv in c] == [(k, values[k]) for k in keys]
    data = bytearray((tmp_path / "r.run.tmp").read_bytes())
    for at, what in ((len(data) // 2, "checksum mismatch"), (7, "runs past the end")):
        bad = bytearray(data)
        bad[at] ^= 0x40
        (tmp_path / "bad.tmp").write_bytes(bytes(bad))
        with pytest.raises(lsm.CorruptionError, match=what):
            for _ in ingest_sort.read_run(fs, str(tmp_path / "bad.tmp")):
                pass
    (tmp_path / "bad.tmp").write_bytes(bytes(data[:-3]))
    with pytest.raises(lsm.CorruptionError):
        for _ in ingest_sort.read_run(fs, str(tmp_path / "bad.tmp")):
            pass


def test_duplicates_last_one_wins_sorted_input(tmp_path):
    with lsm.open(tmp_path / "db", background="inline") as db:
        db.ingest([(b"a", b"1"), (b"a", b"2"), (b"b", b"1"), (b"c", b"1"), (b"c", b"2"), (b"c", b"3")], sorted=True)
        assert content(db) == {b"a": b"2", b"b": b"1", b"c": b"3"}


def test_accepts_mapping_bytearray_memoryview_and_empty_input(tmp_path):
    with lsm.open(tmp_path / "db", background="inline") as db:
        s0 = db.last_seq
        assert db.ingest([]) == s0 and db.ingest([], sorted=True) == s0
        assert db.ingest(iter(())) == s0
        s = db.ingest({b"x": b"1", b"y": bytearray(b"2")})
        assert s == s0 + 1
        db.ingest([(bytearray(b"z"), memoryview(b"3"))], sorted=True)
        assert content(db) == {b"x": b"1", b"y": b"2", b"z": b"3"}


# ------------------------------------------------------- sequence semantics
def test_ingested_data_shadows_memtable_and_table_data(tmp_path):
    with lsm.open(tmp_path / "db", background="thread") as db:
        for i in range(100):
            db.put(key(i), b"table")
        db.flush()
        for i in range(50, 150):
            db.put(key(i), b"mem")
        db.delete(key(10))
        ingest = {key(i): b"ingest" for i in range(0, 200, 2)}
        seq = db.ingest(ingest.items())
        model = {key(i): b"table" for i in range(50)}
        model.update({key(i): b"mem" for i in range(50, 150)})
        del model[key(10)]
        model.update(ingest)
        assert content(db) == model
        assert all(db.get(k) == v for k, v in model.items())
        assert db.get(key(11)) == b"table" and db.get(key(51)) == b"mem"
        # Overlapping data above: the new tables went to level 0, newest.
        assert seq == db.last_seq
        db.compact_range()
        assert content(db) == model


def test_writes_after_ingest_win_and_seq_is_not_reused_after_reopen(tmp_path):
    with lsm.open(tmp_path / "db", background="thread") as db:
        db.put(b"a", b"0")
        seq = db.ingest([(b"a", b"ingested"), (b"b", b"ingested")])
        assert db.get(b"a") == b"ingested"
        s2 = db.put(b"a", b"after")
        assert s2 == seq + 1
        assert db.get(b"a") == b"after" and db.get(b"b") == b"ingested"
    with lsm.open(tmp_path / "db", background="thread") as db:
        assert db.last_seq == seq + 1
        assert db.get(b"a") == b"after" and db.get(b"b") == b"ingested"
        assert db.put(b"c", b"1") == seq + 2


def test_ingest_seq_survives_a_crash_without_close(tmp_path):
    """The reserved sequence number is in the manifest: a crash right after
    the ingest (no commit after it, nothing synced by close) must not hand
    it out again, and WAL replay must accept the gap it leaves."""
    fs = CrashFS()
    db = open_mem(fs)
    db.put(b"a", b"0")
    db.put(b"z", b"0")  # an unflushed commit before the ingest
    seq = db.ingest([(b"a", b"1"), (b"m", b"1")])
    image = fs.power_cut(random.Random(1), mode="drop")
    db._simulate_crash()
    db = open_mem(image)
    assert db.last_seq == seq
    assert content(db) == {b"a": b"1", b"m": b"1", b"z": b"0"}
    assert db.put(b"b", b"2") == seq + 1
    image = db._fs.power_cut(random.Random(2), mode="drop")
    db._simulate_crash()
    db = open_mem(image)
    assert db.last_seq == seq + 1 and db.get(b"b") == b"2"
    db.close()


def test_snapshot_taken_before_does_not_see_the_ingest(tmp_path):
    with lsm.open(tmp_path / "db", background="thread") as db:
        db.put(b"a", b"old")
        snap = db.snapshot()
        db.ingest([(b"a", b"new"), (b"b", b"new")])
        snap2 = db.snapshot()
        db.put(b"b", b"later")
        assert snap.get(b"a") == b"old" and snap.get(b"b") is None
        assert dict(snap.items()) == {b"a": b"old"}
        assert dict(snap2.items()) == {b"a": b"new", b"b": b"new"}
        assert content(db) == {b"a": b"new", b"b": b"later"}
        db.compact_range()  # compaction keeps what the snapshots read
        assert dict(snap.items()) == {b"a": b"old"}
        assert dict(snap2.items()) == {b"a": b"new", b"b": b"new"}
        snap.close()
        snap2.close()


def test_writes_during_the_ingest_rewrite_path(tmp_path, monkeypatch):
    """Commits that arrive while the tables are built (here: from the input
    iterator itself) make the provisional sequence number stale: the
    install flushes the live memtable into its own edit and rewrites the
    tables with a fresh number. The ingest is still newer than every commit
    before its install, and later commits win over it."""
    calls = []
    for mod, name in ((ingest_job, "_reseq"), (Background, "flush_live_locked")):
        real = getattr(mod, name)

        def spy(*a, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(*a, **kw)

        monkeypatch.setattr(mod, name, spy)
    with lsm.open(tmp_path / "db", background="thread") as db:
        db.put(key(1), b"before")

        def items():
            for i in range(2000):
                if i == 1000:
                    db.put(key(3), b"during")  # in the ingested set: the ingest wins
                    db.put(b"other", b"during")
                yield key(i), b"ingest"

        seq = db.ingest(items())
        assert verified(db)
        assert sorted(calls) == ["_reseq", "flush_live_locked"]
        assert seq == db.last_seq and seq >= 4
        model = {key(i): b"ingest" for i in range(2000)}
        model[b"other"] = b"during"
        assert content(db) == model
        db.put(key(5), b"after")
        model[key(5)] = b"after"
        assert content(db) == model
    with lsm.open(tmp_path / "db", background="thread") as db:
        assert content(db) == model


def test_concurrent_writer_and_ingest(tmp_path):
    """A writer thread commits while ingests run: every key's final value is
    decided by sequence number; the writer's values for keys it wrote after
    the ingest returned win; nothing is lost across a reopen."""
    seed = seed_of("concurrent")
    rnd = random.Random(seed)
    stop = threading.Event()
    written = {}
    errors = []
    with lsm.open(tmp_path / "db", background="thread", memtable_size=16 * 1024) as db:

        def writer():
            r = random.Random(seed + 1)
            try:
                while not stop.is_set():
                    k = b"w%04d" % r.randrange(3000)
                    v = b"%d" % r.randrange(10**9)
                    db.put(k, v, sync=lsm.Sync.OFF)
                    written[k] = v
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        t = threading.Thread(target=writer)
        t.start()
        try:
            model_ingest = {}
            for _ in range(3):
                items = [(b"i%05d" % rnd.randrange(20000), b"x%d" % rnd.randrange(10**6)) for _ in range(3000)]
                db.ingest(items, memory_budget=32 * 1024)
                model_ingest.update(items)
        finally:
            stop.set()
            t.join()
        assert not errors
        model = dict(model_ingest)
        model.update(written)
        assert content(db) == model
    with lsm.open(tmp_path / "db", background="thread") as db:
        assert content(db) == model


# ------------------------------------------------------------------ errors
def test_type_errors_name_the_position_and_leave_db_unchanged(tmp_path):
    fs = CrashFS()
    db = open_mem(fs)
    db.put(b"a", b"1")
    good = [(key(i), b"v") for i in range(3000)]
    cases = [
        (good[:100] + [(b"k", "text")], "item 100: value must be bytes"),
        (good[:5] + [("k", b"v")], "item 5: key must be bytes"),
        (good[:7] + [b"kv"], "item 7: key must be bytes"),
        (good[:2] + [(b"k",)], "item 2 must be a (key, value) pair"),
        (good[:2] + [(b"k", b"v", b"x")], "item 2 must be a (key, value) pair"),
        (good + [None], "item 3000 must be a (key, value) pair"),
    ]
    for items, msg in cases:
        for presorted in (False, True):
            with pytest.raises(TypeError, match=msg.replace("(", r"\(").replace(")", r"\)")):
                db.ingest(items, sorted=presorted, memory_budget=8192)
            assert content(db) == {b"a": b"1"}
            assert not tmp_files(fs, "/db")
            assert not [n for n in fs.listdir("/db") if n.endswith(".sst")] or db.stats()["sst_files"]
    with pytest.raises(TypeError, match="items must be an iterable"):
        db.ingest(b"abc")
    with pytest.raises(TypeError, match="items must be an iterable"):
        db.ingest(5)
    with pytest.raises(TypeError, match="memory_budget"):
        db.ingest([], memory_budget=1.5)
    with pytest.raises(ValueError, match="memory_budget"):
        db.ingest([], memory_budget=10)
    with pytest.raises(TypeError, match="sorted"):
        db.ingest([], sorted=1)
    db.close()


def test_sorted_true_checks_the_order(tmp_path):
    fs = CrashFS()
    db = open_mem(fs, target_file_size=4096)
    items = [(key(i), b"v" * 50) for i in range(3000)]
    items[2500], items[2501] = items[2501], items[2500]
    with pytest.raises(ValueError) as ei:
        db.ingest(items, sorted=True)
    msg = str(ei.value)
    assert "item 2501" in msg and "item 2500" in msg and repr(key(2500)) in msg and repr(key(2501)) in msg
    # Tables were already finished for the first keys: all removed, nothing visible.
    assert content(db) == {}
    assert db.stats()["sst_files"] == 0
    assert not [n for n in fs.listdir("/db") if n.endswith(".sst")] + tmp_files(fs, "/db")
    items.sort()
    db.ingest(items, sorted=True)
    assert len(content(db)) == 3000
    db.close()


def test_failure_cleans_up_and_db_stays_usable():
    fs = CrashFS()
    db = open_mem(fs)
    db.put(b"a", b"1")
    rule = fs.fail("write", nth=3, path=r".*\.run\.tmp")  # a spill fails
    with pytest.raises(OSError):
        db.ingest([(key(i), b"v" * 40) for i in range(5000)], memory_budget=16 * 1024)
    assert rule.fired == 1
    assert not tmp_files(fs, "/db")
    rule = fs.fail("sync", nth=1, path=r".*\.sst", site="ingest")  # an output table's fsync fails
    with pytest.raises(OSError):
        db.ingest([(key(i), b"v" * 40) for i in range(5000)], memory_budget=16 * 1024)
    assert rule.fired == 1
    assert not tmp_files(fs, "/db")
    assert db.health == "ok"
    assert content(db) == {b"a": b"1"}
    live = {filenames.sst_name(n) for n in db._vs.current.all_numbers()}
    assert {n for n in fs.listdir("/db") if n.endswith(".sst")} == live
    db.ingest([(b"b", b"2")])
    assert content(db) == {b"a": b"1", b"b": b"2"}
    db.close()


def test_manifest_failure_fences_and_reopen_decides():
    fs = CrashFS()
    db = open_mem(fs)
    db.put(b"a", b"1")
    db.flush()
    fs.fail("sync", nth=1, site="manifest")
    with pytest.raises(OSError):
        db.ingest([(b"a", b"2"), (b"b", b"2")])
    assert db.health == "fenced"
    with pytest.raises(lsm.NeedsRecoveryError):
        db.ingest([(b"c", b"3")])
    db.close()
    db = open_mem(fs)
    # The edit reached the file (its sync failed): the ingest is all there or not at all.
    assert content(db) in ({b"a": b"1"}, {b"a": b"2", b"b": b"2"})
    db.close()


# --------------------------------------------------------------- power cuts
def _crash_round(seed, presorted, during=False):
    """One ingest with power lost at a random operation. ``during``: commits
    (FULL, keys outside the ingest) arrive from the input iterator while the
    tables are built, so the install takes its slow path (flush of the live
    memtable into the ingest's edit, tables rewritten at a fresh seq)."""
    rnd = random.Random(seed)
    fs = CrashFS()
    opts = {"memtable_size": 4096, "target_file_size": 2048, "block_size": 256}
    db = open_mem(fs, **opts)
    before = {}
    for i in range(rnd.randrange(0, 300)):
        k, v = key(rnd.randrange(400)), b"old%d" % i
        db.put(k, v, sync=lsm.Sync.OFF)
        before[k] = v
    db.sync_wal()
    n = rnd.randrange(1, 800)
    items = [(key(rnd.randrange(600)), b"new%d" % j) for j in range(n)]
    if presorted:
        items = sorted(dict(items).items())
    after = dict(before)
    after.update(items)
    acked = {}  # commits made during the ingest that returned (FULL: durable)
    tried = {}

    def source():
        for j, kv in enumerate(items):
            if during and j in (n // 3, n // 2):
                for m in range(3):
                    k, v = b"p%d-%d" % (j, m), b"during"
                    tried[k] = v
                    db.put(k, v, sync=lsm.Sync.FULL)
                    acked[k] = v
            yield kv

    ops0 = fs.ops
    crash_rng = random.Random(rnd.random())
    if rnd.random() < 0.3:  # around the edit: the tables' directory sync, the manifest write and sync
        fs.arm_crash(rnd.randint(1, 4), site=rnd.choice(["manifest", "ingest"]), rng=crash_rng)
    else:  # anywhere (an ingest here takes about 20 to 150 operations)
        fs.arm_crash(rnd.randint(1, 150), rng=crash_rng)
    seq = None
    next_seq = db.last_seq + 1  # the ingest's seq when no commit comes between
    try:
        seq = db.ingest(source(), sorted=presorted, memory_budget=4096 if rnd.random() < 0.5 else 1 << 20)
    except (OSError, lsm.NeedsRecoveryError):
        pass
    if fs.image is None:  # the ingest finished first: cut the power now
        fs._crash = None
        image = fs.power_cut(random.Random(rnd.random()))
    else:
        image = fs.image
    ops = fs.ops - ops0
    db._simulate_crash()
    db = open_mem(image, **opts)
    got = content(db)
    where = f"seed {seed}, ingest returned {seq}, {ops} fs ops"
    for k, v in acked.items():
        assert got.pop(k) == v, where  # acknowledged at FULL: durable
    for k in set(tried) - set(acked):
        got.pop(k, None)  # its put failed at the power cut: either way
    if seq is not None:
        assert got == after, where
        assert db.last_seq >= seq, where
    else:
        assert got in (before, after), where
    if got == after and before != after:
        # The ingest's sequence number is never handed out again.
        assert db.last_seq >= (seq if seq is not None else next_seq), where
    assert verified(db)
    assert not tmp_files(image, "/db")
    s = db.put(b"after", b"1")
    assert s == db.last_seq and db.get(b"after") == b"1"
    db.close()
    return seq is not None


@pytest.mark.parametrize("presorted,during", [(False, False), (True, False), (False, True)])
def test_power_cut_during_ingest_is_all_or_nothing(presorted, during):
    seed = seed_of("power cut")
    rnd = random.Random(seed)
    finished = 0
    for r in range(CRASH_ROUNDS):
        s = rnd.randrange(1 << 30)
        try:
            finished += _crash_round(s, presorted, during)
        except AssertionError as e:
            raise AssertionError(f"round {r} (replay: _crash_round({s}, {presorted}, {during})): {e}") from None
    print(f"{finished} of {CRASH_ROUNDS} ingests finished before the power cut")


# -------------------------------------------------- TableWriter, ingest_files
def _build(path, items, **kw):
    with lsm.TableWriter(path, **kw) as w:
        for k, v in items:
            if v is None:
                w.delete(k)
            else:
                w.put(k, v)
    return w.finish()


def test_table_writer_and_ingest_files_into_an_empty_range(tmp_path):
    a = _build(tmp_path / "a.sst", [(key(i), b"a%d" % i) for i in range(1000)])
    b = _build(tmp_path / "b.sst", [(key(i), b"b%d" % i) for i in range(2000, 3000)], compression="none",
               block_size=512)
    assert (a.num_entries, a.smallest, a.largest) == (1000, key(0), key(999))
    assert (b.num_entries, b.num_deletes, b.data_size) == (1000, 0, sum(len(key(i)) + len(b"b%d" % i)
                                                                       for i in range(2000, 3000)))
    with lsm.open(tmp_path / "db", background="thread") as db:
        db.put(b"other", b"1")  # outside both files' ranges
        before = db.last_seq
        seq = db.ingest_files([tmp_path / "b.sst", str(tmp_path / "a.sst")])
        # Added as they are: no sequence number taken, files at the last level.
        assert seq == before == db.last_seq
        assert db.stats()["levels"][-1]["files"] == 2
        assert verified(db)
        model = {key(i): b"a%d" % i for i in range(1000)}
        model.update({key(i): b"b%d" % i for i in range(2000, 3000)})
        model[b"other"] = b"1"
        assert content(db) == model
        assert os.path.exists(tmp_path / "a.sst")  # move=False copies
        s2 = db.put(key(5), b"later")
        snap = db.snapshot()
        db.delete(key(6))
        db.compact_range()
        model[key(5)] = b"later"
        del model[key(6)]
        assert content(db) == model
        assert snap.get(key(6)) == b"a6" and snap.seq == s2
        snap.close()
    with lsm.open(tmp_path / "db", background="thread") as db:
        assert content(db) == model


def test_ingest_files_over_existing_data_takes_a_fresh_seq(tmp_path):
    path = tmp_path / "t.sst"
    _build(path, [(key(1), b"new"), (key(2), None), (key(3), b"new")])
    with lsm.open(tmp_path / "db", background="thread") as db:
        db.put(key(2), b"old")
        db.put(key(3), b"old")
        db.flush()
        db.put(key(4), b"old")
        snap = db.snapshot()
        seq = db.ingest_files([path], move=True)
        assert seq == db.last_seq == snap.seq + 1
        assert not os.path.exists(path)  # moved
        assert content(db) == {key(1): b"new", key(3): b"new", key(4): b"old"}  # the delete shadows key 2
        assert verified(db)
        assert dict(snap.items()) == {key(2): b"old", key(3): b"old", key(4): b"old"}
        snap.close()


def test_ingest_files_with_a_snapshot_rewrites(tmp_path):
    path = tmp_path / "t.sst"
    _build(path, [(b"x", b"1")])
    with lsm.open(tmp_path / "db", background="thread") as db:
        snap = db.snapshot()
        seq = db.ingest_files([path])
        assert seq == snap.seq + 1
        assert snap.get(b"x") is None and db.get(b"x") == b"1"
        snap.close()


def test_ingest_files_move_links_and_crashfs(tmp_path):
    fs = CrashFS()
    fs.makedirs("/ext")
    _build("/ext/a.sst", [(b"k%03d" % i, b"v") for i in range(100)], fs=fs)
    db = open_mem(fs)
    assert db.ingest_files(["/ext/a.sst"], move=True) == 0
    assert not fs.exists("/ext/a.sst")
    image = fs.power_cut(random.Random(3), mode="drop")
    db._simulate_crash()
    db = open_mem(image)
    assert len(content(db)) == 100
    db.close()


def test_ingest_files_validation(tmp_path):
    good = tmp_path / "good.sst"
    _build(good, [(b"a", b"1"), (b"m", b"1")])
    other = tmp_path / "other.sst"
    _build(other, [(b"c", b"1"), (b"z", b"1")])
    empty = tmp_path / "empty.sst"
    _build(empty, [])
    bad = tmp_path / "bad.sst"
    data = bytearray(good.read_bytes())
    data[5] ^= 0xFF
    bad.write_bytes(bytes(data))
    with lsm.open(tmp_path / "db", background="thread") as db:
        with pytest.raises(lsm.CorruptionError):
            db.ingest_files([bad])
        with pytest.raises(ValueError, match="overlap"):
            db.ingest_files([good, other])
        with pytest.raises(FileNotFoundError):
            db.ingest_files([tmp_path / "missing.sst"])
        with pytest.raises(TypeError, match="list of paths"):
            db.ingest_files(str(good))
        with pytest.raises(TypeError):
            db.ingest_files([good], move="yes")
        assert content(db) == {}
        # A database's own table (real sequence numbers) is refused.
        db.put(b"q", b"1")
        db.flush()
        own = os.path.join(db.path, filenames.sst_name(next(iter(db._vs.current.all_numbers()))))
        with pytest.raises(ValueError, match="sequence numbers"):
            db.ingest_files([own])
        assert db.ingest_files([empty]) == db.last_seq
        db.ingest_files([good, empty])
        assert content(db) == {b"a": b"1", b"m": b"1", b"q": b"1"}


def test_table_writer_errors(tmp_path):
    w = lsm.TableWriter(tmp_path / "t.sst")
    w.put(b"b", b"1")
    with pytest.raises(ValueError, match="strictly ascending"):
        w.put(b"a", b"1")
    with pytest.raises(ValueError, match="repeats"):
        w.delete(b"b")
    with pytest.raises(TypeError, match="key must be bytes"):
        w.put("c", b"1")
    w.put(b"c", bytearray(b"2"))  # the writer is still usable
    info = w.finish()
    assert info.num_entries == 2 and info.largest == b"c"
    with pytest.raises(ValueError, match="unknown option"):
        lsm.TableWriter(tmp_path / "u.sst", memtable_size=1)
    with pytest.raises(ValueError, match="compression"):
        lsm.TableWriter(tmp_path / "u.sst", compression="snappy")
    with pytest.raises(RuntimeError), lsm.TableWriter(tmp_path / "v.sst") as w2:
        w2.put(b"a", b"1")
        raise RuntimeError("boom")
    assert not os.path.exists(tmp_path / "v.sst")  # abandoned


def test_ingest_refused_while_fenced():
    fs = CrashFS()
    db = open_mem(fs)
    fs.fail("sync", nth=1, err=errno.EIO, path=r".*\.wal")
    with pytest.raises((OSError, lsm.NeedsRecoveryError)):
        db.put(b"a", b"1", sync=lsm.Sync.FULL)
    assert db.health == "fenced"
    with pytest.raises(lsm.NeedsRecoveryError):
        db.ingest([(b"a", b"1")])
    with pytest.raises(lsm.NeedsRecoveryError):
        db.ingest_files([])
    db.close()


def test_tiny_options_many_ingests_against_a_model():
    """Ingests mixed with puts, deletes, flushes and compactions under tiny
    options, checked against a dict after each step and after reopen."""
    seed = seed_of("model")
    rnd = random.Random(seed)
    fs = CrashFS()
    db = open_mem(fs, **TINY)
    model = {}
    for step in range(60):
        op = rnd.random()
        if op < 0.25:
            items = [(key(rnd.randrange(300)), b"i%d-%d" % (step, j)) for j in range(rnd.randrange(1, 80))]
            presorted = rnd.random() < 0.3
            if presorted:
                items.sort(key=lambda kv: kv[0])
            db.ingest(items, sorted=presorted, memory_budget=4096)
            model.update(items)
        elif op < 0.7:
            k = key(rnd.randrange(300))
            v = b"p%d" % step
            db.put(k, v)
            model[k] = v
        elif op < 0.85:
            k = key(rnd.randrange(300))
            db.delete(k)
            model.pop(k, None)
        elif op < 0.95:
            db.flush()
        else:
            db.compact_range()
        assert content(db) == model, f"seed {seed}, step {step}"
    assert verified(db)
    db.close()
    db = open_mem(fs, **TINY)
    assert content(db) == model, f"seed {seed}, after reopen"
    db.close()


def test_default_memory_budget():
    assert DEFAULT_MEMORY_BUDGET == 64 * 1024 * 1024
