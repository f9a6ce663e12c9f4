"""Power cuts against each sync level's promise (issue 3's proof).

Writer threads commit puts, deletes and batches at the levels under test on
a :class:`~lsm.base.crashfs.CrashFS`; power is lost at a random operation
(anywhere, or the nth operation of a flush, a compaction, a manifest write
or the WAL); the database is reopened from what the disk kept and checked
against a model, then the next round writes on and crashes again.

The oracle lives outside the crash domain: a recorder on the WAL writer
notes which commit got which sequence numbers when its record reached
write(2) (acknowledged or not), and each thread notes what returned. After
reopen the state must equal the model after some prefix of the commit
order (by sequence number) ending on a commit boundary, and that prefix
must contain:

* every commit acknowledged at FULL or EXTRA;
* every commit acknowledged at BARRIER that a later record followed;
* everything ``sync_wal`` / ``wait_durable`` / ``durable_seq`` said was
  durable before the cut.

Values are unique per commit, so nothing that was never written can pass.
Seed: ``LSM_CRASH_SEED`` (printed); rounds per case: ``LSM_CRASH_ROUNDS``.
"""

import os
import random
import threading

import pytest

import lsm
from lsm.base.crashfs import CrashFS
from lsm.base.fs import current_site
from tests.reliability_log import record

ROUNDS = int(os.environ.get("LSM_CRASH_ROUNDS", "12"))
SEED = int(os.environ.get("LSM_CRASH_SEED", random.randrange(1 << 30)))

OPTS = dict(
    memtable_size=3000,
    wal_segment_size=4096,
    target_file_size=1500,
    block_size=256,
    l0_compaction_trigger=2,
    l0_slowdown_trigger=6,
    l0_stop_trigger=10,
    max_bytes_for_level_base=6000,
    level_multiplier=2,
    num_levels=4,
    sync_interval=0.002,
)
KEYS = [b"key%02d" % i for i in range(40)]
S = lsm.Sync


class Recorder:
    """Records seq range -> the attempt whose record was appended to the
    WAL (reached write(2), or staged for its group's), under the DB write
    lock: a setter on the writer's ``written_seq``, which every append path
    sets once its record is in (WalWriter.append_locked, and DB.put's
    inlined appends, which do not call it)."""

    def __init__(self, db, written, local):
        record_written_seq(db._wal, lambda seq: written.__setitem__(seq, local.attempt))


def record_written_seq(wal, on_set) -> None:
    """Call ``on_set(seq)`` whenever ``wal.written_seq`` is set (a subclass
    with a ``written_seq`` property swapped in as the writer's class)."""

    class _Recording(type(wal)):
        @property
        def written_seq(self):
            return self.__dict__["written_seq"]

        @written_seq.setter
        def written_seq(self, seq):
            self.__dict__["written_seq"] = seq
            on_set(seq)

    wal.__class__ = _Recording


class Attempt:
    __slots__ = ("acked", "level", "ops", "seq")

    def __init__(self, level, ops):
        self.level = level
        self.ops = ops  # [(key, value or None)]
        self.acked = False
        self.seq = None


def writer(db, rng, tid, levels, n, attempts, promises, local, stop):
    for i in range(n):
        if stop.is_set():
            return
        level = rng.choice(levels)
        r = rng.random()
        tag = b"t%d.%d." % (tid, i)
        try:
            if r < 0.04:
                promises.append(("sync_wal", db.sync_wal()))
                continue
            if r < 0.07:
                s = db.last_seq
                if db.wait_durable(s, timeout=0.05):
                    promises.append(("wait_durable", s))
                continue
            if r < 0.80:
                k = rng.choice(KEYS)
                a = Attempt(level, [(k, tag + b"v" * rng.randrange(30))])
                local.attempt = a
                a.seq = db.put(k, a.ops[0][1], sync=level)
            elif r < 0.90:
                k = rng.choice(KEYS)
                a = Attempt(level, [(k, None)])
                local.attempt = a
                a.seq = db.delete(k, sync=level)
            else:
                ops = []
                b = lsm.WriteBatch()
                for j in range(rng.randrange(1, 6)):
                    k = rng.choice(KEYS)
                    if rng.random() < 0.8:
                        v = tag + b"b%d" % j
                        b.put(k, v)
                        ops.append((k, v))
                    else:
                        b.delete(k)
                        ops.append((k, None))
                a = Attempt(level, ops)
                local.attempt = a
                a.seq = db.write(b, sync=level)
            a.acked = True
            attempts.append(a)
        except (lsm.NeedsRecoveryError, lsm.ClosedError, OSError):
            attempts.append(local.attempt) if getattr(local, "attempt", None) is not None else None
            return


def open_db(fs, background, opts=None):
    db = lsm.open("/db", fs=fs, background=background, **(opts or OPTS))
    db._vs.manifest_max_size = 2048  # roll the manifest (and switch CURRENT) often
    return db


def run_case(levels, *, threads, rounds, seed, background="thread", crash_sites=True, hole_share=0.5, opts=None):
    rng = random.Random(seed)
    fs = CrashFS()
    db = open_db(fs, background, opts)
    model: dict[bytes, bytes] = {}
    base = 0
    sites: dict[str, int] = {}
    holes = 0  # power cuts whose image has a hole (a lost block before a kept one) in a WAL segment
    for rnd in range(rounds):
        written: dict[int, Attempt] = {}
        attempts: list[Attempt] = []
        promises: list[tuple[str, int]] = []
        local = threading.local()
        Recorder(db, written, local)
        at_cut: dict[str, int] = {}

        def hook(db=db, at_cut=at_cut):
            at_cut["durable_seq"] = db.durable_seq
            at_cut["site"] = current_site()

        fs.crash_hook = hook
        roll = rng.random()
        mode = "holes" if rng.random() < hole_share else "random"  # holes: every unsynced tail holed (HOLE_BLOCK)
        if crash_sites and roll < 0.4:
            site = rng.choice(["flush", "compaction", "manifest", "wal"])
            fs.arm_crash(rng.randint(1, 12), site=site, rng=random.Random(rng.random()), mode=mode)
        else:
            fs.arm_crash(rng.randint(1, 400), rng=random.Random(rng.random()), mode=mode)
        stop = threading.Event()
        ts = [threading.Thread(target=writer, args=(db, random.Random(rng.random()), t, levels, 60,
                                                    attempts, promises, local, stop))
              for t in range(threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
            assert not t.is_alive(), f"writer hung (seed {seed})"
        if fs.image is None:
            fs._crash = None  # the workload ended first: cut the power while idle
            at_cut["durable_seq"] = db.durable_seq
            image = fs.power_cut(random.Random(rng.random()), mode=mode)
        else:
            image = fs.image
            sites[at_cut["site"]] = sites.get(at_cut["site"], 0) + 1
        holes += image.cut_outcomes.get("holes_wal", 0) > 0
        db._simulate_crash()
        fs = image
        where = f"seed {seed}, round {rnd}, levels {[lv.name for lv in levels]}"
        db = open_db(fs, background, opts)
        base, model = check(db, base, model, written, attempts, promises, at_cut, where)
    db.close()
    print(f"power cuts by call site: {sites}; cuts with a hole in a WAL segment: {holes} of {rounds}")
    record("power_cut", levels="+".join(lv.name for lv in levels), threads=threads, rounds=rounds,
           states=rounds, cuts_mid_workload=sum(sites.values()), hole_cuts=holes,
           **{f"site_{k}": v for k, v in sites.items()})
    HOLES[0] += holes
    return sites, holes


def check(db, base, model, written, attempts, promises, at_cut, where):
    last = db.last_seq
    ends = sorted(written)
    assert last >= base, f"{where}: recovered last_seq {last} is below the previous round's {base}"
    assert last == base or last in written, (
        f"{where}: recovered last_seq {last} is not the end of a written commit (ends {ends[-5:]})")
    expected = dict(model)
    for end in ends:
        if end > last:
            break
        for k, v in written[end].ops:
            if v is None:
                expected.pop(k, None)
            else:
                expected[k] = v
    got = dict(db.items())
    if got != expected:
        diff = {k: (got.get(k), expected.get(k)) for k in set(got) | set(expected) if got.get(k) != expected.get(k)}
        raise AssertionError(f"{where}: recovered state differs from the model at seq {last}: {diff}")
    for k in KEYS:
        assert db.get(k) == expected.get(k), f"{where}: get({k!r}) disagrees with the scan"
    for a in attempts:
        if not a.acked:
            continue
        if a.level >= S.FULL:
            assert a.seq <= last, f"{where}: {a.level.name} commit {a.seq} was acknowledged but lost (kept up to {last})"
        if a.level == S.BARRIER and ends and ends[-1] > a.seq:
            assert a.seq <= last, f"{where}: BARRIER commit {a.seq} lost although a later record ({ends[-1]}) was written"
    for what, seq in promises:
        assert seq <= last, f"{where}: {what} promised seq {seq} durable but only {last} survived"
    d = at_cut.get("durable_seq", 0)
    assert d <= last, f"{where}: durable_seq said {d} at the power cut but only {last} survived"
    return last, expected


HOLES = [0]  # power cuts with a hole, over the module (test_power_cut_holes_occurred)

CASES = {
    "OFF": [S.OFF],
    "NORMAL": [S.NORMAL],
    "BARRIER": [S.BARRIER],
    "FULL": [S.FULL],
    "EXTRA": [S.EXTRA],
    "mixed": [S.OFF, S.NORMAL, S.BARRIER, S.FULL, S.EXTRA],
}


@pytest.mark.parametrize("name", list(CASES))
def test_power_cut_keeps_each_levels_promise(name):
    seed = SEED + sum(map(ord, name))
    print(f"power cut {name}: LSM_CRASH_SEED={SEED} (case seed {seed})")
    sites, _ = run_case(CASES[name], threads=3, rounds=ROUNDS, seed=seed)
    assert sum(sites.values()) > 0  # the crash points do land inside the workload


def test_power_cut_single_writer_inline():
    """One writer, inline background: every crash point is replayable
    from the seed."""
    seed = SEED + 7
    print(f"power cut inline: LSM_CRASH_SEED={SEED} (case seed {seed})")
    run_case([S.FULL, S.OFF, S.BARRIER], threads=1, rounds=ROUNDS, seed=seed, background="inline")


@pytest.mark.parametrize("name", ["OFF", "NORMAL", "mixed"])
def test_power_cut_with_holes(name):
    """Every unsynced tail holed (a disk that persisted later unsynced
    blocks but not earlier ones): the database must still open under
    ``tolerate_tail`` and keep every promise (WAL format version 2: the
    intact records after a hole carry a ``synced`` offset below it, so the
    hole is a torn tail; version 1 refused it as mid-log corruption)."""
    seed = SEED + 1000 + sum(map(ord, name))
    print(f"power cut with holes {name}: LSM_CRASH_SEED={SEED} (case seed {seed})")
    # WAL segments of a few blocks, so that unsynced tails span several
    opts = dict(OPTS, memtable_size=12000, wal_segment_size=16384)
    _, holes = run_case(CASES[name], threads=2, rounds=4 * ROUNDS, seed=seed, hole_share=1.0, opts=opts,
                        crash_sites=False)
    if name != "mixed":  # FULL and EXTRA commits sync often: few unsynced tails span two blocks
        assert holes > 0, "no power cut left a hole in a WAL segment: the test does not test holes"


def test_damaged_last_manifest_edit_that_was_acted_on_fails_closed():
    """The last manifest record is a flush whose WAL segments were deleted
    after it. Damage to it looks like a torn write and is dropped, but the
    open must then fail on the missing log, never come up without the data."""
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline")
    for i in range(50):
        db.put(b"k%02d" % i, b"v%d" % i)
    db.flush()
    db.close()
    cur = fs.read_file("/db/CURRENT").decode().strip()
    data = bytearray(fs.read_file("/db/" + cur))
    data[-3] ^= 0x40  # inside the payload of the last edit (the flush)
    fs.write_file("/db/" + cur, bytes(data))
    with pytest.raises(lsm.CorruptionError, match="oldest WAL segment starts at 51"):
        lsm.open("/db", fs=fs, background="inline")
    # point_in_time accepts the loss explicitly
    db = lsm.open("/db", fs=fs, background="inline", wal_recovery="point_in_time")
    assert db.last_seq == 0 and list(db.items()) == []
    db.close()
