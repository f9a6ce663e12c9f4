"""Every crash point (issue 5, family 1).

Deterministic workloads (one writer, inline background, levels OFF, FULL and
EXTRA) run on a CrashFS and are cut before EVERY mutating operation index,
from database creation to close: put at FULL across WAL rotation, batches,
mixed levels, flush with obsolete-WAL deletion, compaction with input
deletion, manifest roll-over with the CURRENT switch. Each cut is checked in
two unsynced-data outcomes: "drop" (only what was synced survives: the
durability promises) and one of "keep" (what a killed process leaves),
"random" (a seeded mix) and "holes" (every unsynced tail holed:
crashfs.HOLE_BLOCK blocks kept, zeroed or garbage independently), taken in
turn from a seeded offset, so each of them covers a third of the indices.
One outcome per index is then recovered again with a second power cut
before every operation of that recovery, and must come back to exactly the
state a clean recovery gives. Recoveries repeat themselves: the clean
recovery of each index is traced, and the second-crash sweep runs for every
recovery whose shape (its operations' kinds, call sites and file names with
the numbers masked) is new, and for a seeded one in
``LSM_CRASH_POINT_SECOND_SAMPLE`` of the others. The default, 1, is every
recovery (issue 5: a second crash at every operation of the recovery that
follows); a larger value thins the repeats for quick local runs, and every
operation of every distinct recovery is still crashed.

``LSM_CRASH_POINT_ALL=1`` is the full sweep: all four outcomes at every
index and the second-crash sweep after every index (about 5x the CPU).

The oracle (tests/test_power_cut.py ``check``): every FULL/EXTRA commit that
returned is there; the state equals the model after a prefix of the commit
order ending on a commit boundary; nothing unwritten; after ``close()``
returned, everything.

``LSM_CRASH_POINT_STRIDE`` (default 1: every index) thins the first-level
indices for quick local runs; ``LSM_CRASH_POINT_SEED`` seeds the random
outcomes.
"""

import os
import random
import re
import threading

import pytest

import lsm
from lsm.base.crashfs import CrashFS
from tests.reliability_log import record
from tests.test_power_cut import Attempt, Recorder, check

S = lsm.Sync
STRIDE = int(os.environ.get("LSM_CRASH_POINT_STRIDE", "1"))
SEED = int(os.environ.get("LSM_CRASH_POINT_SEED", "1729"))
ALL = os.environ.get("LSM_CRASH_POINT_ALL", "") not in ("", "0")
SECOND_SAMPLE = int(os.environ.get("LSM_CRASH_POINT_SECOND_SAMPLE", "1"))
OUTCOMES = ("drop", "keep", "random", "holes")
OPTS = dict(
    background="inline",
    memtable_size=1500,
    wal_segment_size=4096,
    target_file_size=1200,
    block_size=256,
    l0_compaction_trigger=2,
    l0_slowdown_trigger=8,
    l0_stop_trigger=12,
    max_bytes_for_level_base=3000,
    level_multiplier=2,
    num_levels=4,
)
STATS: dict[str, dict[str, int]] = {}


def _put(db, local, attempts, k, v, level):
    a = Attempt(level, [(k, v)])
    local.attempt = a
    attempts.append(a)
    a.seq = db.put(k, v, sync=level)
    a.acked = True


def _batch(db, local, attempts, ops, level):
    b = lsm.WriteBatch()
    for k, v in ops:
        b.put(k, v) if v is not None else b.delete(k)
    a = Attempt(level, ops)
    local.attempt = a
    attempts.append(a)
    a.seq = db.write(b, sync=level)
    a.acked = True


def w_put_full(db, local, attempts):
    for i in range(70):
        _put(db, local, attempts, b"k%02d" % (i % 25), b"v%d-" % i + b"x" * 40, S.FULL)


def w_mixed(db, local, attempts):
    levels = [S.OFF, S.FULL, S.OFF, S.EXTRA, S.OFF, S.OFF, S.FULL]
    for i in range(60):
        _put(db, local, attempts, b"k%02d" % (i % 20), b"m%d-" % i + b"y" * 30, levels[i % len(levels)])


def w_batches(db, local, attempts):
    for i in range(25):
        ops = [(b"b%02d" % ((i * 3 + j) % 30), b"b%d.%d" % (i, j) if j != 2 else None) for j in range(4)]
        _batch(db, local, attempts, ops, S.FULL if i % 3 else S.OFF)


def w_flush(db, local, attempts):
    for i in range(30):
        _put(db, local, attempts, b"f%02d" % i, b"f%d" % i, S.OFF)
    db.flush()  # a table, a manifest edit, then the WAL deleted
    for i in range(10):
        _put(db, local, attempts, b"f%02d" % i, b"g%d" % i, S.FULL)


def w_compaction(db, local, attempts):
    for r in range(3):
        for i in range(30):
            _put(db, local, attempts, b"c%02d" % i, b"c%d.%d-" % (r, i) + b"z" * 20, S.OFF)
        db.flush()
    db.compact_range()  # merges, installs, deletes its inputs
    _put(db, local, attempts, b"c00", b"last", S.FULL)


def w_manifest_roll(db, local, attempts):
    db._vs.manifest_max_size = 300  # roll (new manifest + CURRENT switch) at almost every edit
    for r in range(4):
        for i in range(12):
            _put(db, local, attempts, b"r%02d" % i, b"r%d.%d" % (r, i), S.FULL)
        db.flush()


WORKLOADS = {
    "put_full_rotation": w_put_full,
    "mixed_levels": w_mixed,
    "batches": w_batches,
    "flush_wal_delete": w_flush,
    "compaction": w_compaction,
    "manifest_roll": w_manifest_roll,
}


def run(fs, workload):
    """Create, run and close; returns (written, attempts, promises). Stops
    quietly at the first error (the crash point)."""
    written, attempts, promises = {}, [], []
    local = threading.local()
    local.attempt = None
    try:
        db = lsm.open("/db", fs=fs, **OPTS)
    except (OSError, lsm.Error):
        return written, attempts, promises
    try:
        Recorder(db, written, local)
        WORKLOADS[workload](db, local, attempts)
        last = db.last_seq
        db.close()
        promises.append(("close", last))
    except (OSError, lsm.Error):
        db._simulate_crash()
    return written, attempts, promises


def recover(fs, where):
    db = lsm.open("/db", fs=fs, **OPTS)
    try:
        return db.last_seq, dict(db.items())
    finally:
        db.close()


def recovery_shape(fs):
    """The operations a clean recovery of ``fs`` (not changed) makes, as
    (kind, call site, path with its numbers masked), and the state it
    recovers."""
    probe = fs.clone()
    probe.trace = []
    state = recover(probe, None)
    return tuple((kind, site, re.sub(r"\d+", "#", path)) for _, kind, path, site in probe.trace), state


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_every_crash_point(workload):
    ref = CrashFS()
    run(ref, workload)
    total = ref.ops
    assert total > 20
    rng = random.Random(SEED)
    turn = random.Random(SEED + sum(map(ord, workload))).randrange(3)
    cuts = second = holes = sweeps = 0
    shapes: set[tuple] = set()
    outcomes: dict[str, int] = {}
    for i in range(1, total + 1, STRIDE):
        fs = CrashFS()
        extra = []
        rs = random.Random(rng.random())
        names = OUTCOMES if ALL else ("drop", OUTCOMES[1 + (i + turn) % 3])

        def hook(fs=fs, extra=extra, rs=rs, names=names):
            for name in names[1:]:
                extra.append(fs.power_cut(None if name == "keep" else rs, mode=name))

        fs.crash_hook = hook
        fs.arm_crash(i, mode="drop")
        written, attempts, promises = run(fs, workload)
        assert fs.image is not None, f"{workload}: crash point {i} of {total} never reached"
        images = [fs.image] + extra
        for n, img in enumerate(images):
            if names[n] == "holes":
                holes += img.cut_outcomes.get("holes_wal", 0) > 0
            where = f"{workload}, crash before op {i} of {total} (outcome {names[n]})"
            db = lsm.open("/db", fs=img.clone(), **OPTS)
            try:
                check(db, 0, {}, written, attempts, promises, {}, where)
            finally:
                db.close()
            cuts += 1
            outcomes[names[n]] = outcomes.get(names[n], 0) + 1
        # a second power cut before every operation of the recovery of one outcome
        img = images[i % len(images)]
        shape, want = recovery_shape(img)
        sample = rng.random() < 1 / SECOND_SAMPLE
        if not (ALL or shape not in shapes or sample):
            continue
        shapes.add(shape)
        sweeps += 1
        for j in range(1, len(shape) + 1):
            fs2 = img.clone()
            fs2.arm_crash(j, rng=random.Random(rng.random()))
            try:
                recover(fs2, workload)
            except (OSError, lsm.Error):
                pass
            assert fs2.image is not None
            got = recover(fs2.image, workload)
            assert got == want, (f"{workload}, crash before op {i}, then before recovery op {j}: "
                                 f"state differs from a clean recovery (last_seq {got[0]} vs {want[0]})")
            second += 1
    if STRIDE == 1:
        assert set(outcomes) == set(OUTCOMES), outcomes
    STATS[workload] = {"ops": total, "states": cuts, "second_crash_states": second, "wal_hole_states": holes}
    print(f"crash points {workload}: {total} op indices, {cuts} crash states checked {outcomes} "
          f"({holes} with a hole in a WAL segment), {second} second-crash states in {sweeps} recovery sweeps "
          f"({len(shapes)} recovery shapes)")
    record("crash_points", workload=workload, op_indices=total, states=cuts, second_crash_states=second,
           wal_hole_states=holes, recovery_sweeps=sweeps, recovery_shapes=len(shapes))
