"""Every crash point of a threaded group-commit workload (issue 5, family 1:
"group commit with mixed levels across threads").

Threads commit puts, deletes and batches at mixed levels (OFF, NORMAL,
BARRIER, FULL, EXTRA) on a CrashFS whose syncs take time, so that FULL
committers share syncs (groups form), across WAL rotation, flush and
compaction (background threads). Thread interleaving is not deterministic,
so instead of replaying the workload to each crash point, ONE run is cut at
every point: the filesystem's ``trace_hook`` runs before every mutating
operation, under the filesystem lock, and takes the power-cut image of the
state just before that operation (what the disk could hold if power were
lost there), together with the oracle's view at that instant: which commits
had returned, and ``durable_seq``. Nothing is lost by not crashing: no
operation after the cut can change the image, and a commit that returned
before the hook ran had completed its sync before it (so it must be in the
image). Every commit of the run then returns, so every commit's sequence
numbers are known.

Each image is recovered and checked against outcomes only (so the check
holds whatever the WAL writer does inside: who writes whose record, how
groups form):

* every FULL/EXTRA commit that had returned is present, and every BARRIER
  commit followed by a commit that had returned;
* ``durable_seq`` read at the cut survived;
* the state equals the model after the commits up to the recovered
  ``last_seq`` in commit (sequence) order, and ``last_seq`` ends a commit:
  a prefix, batches all-or-nothing, no holes, nothing never written.

Outcomes: at each index one unsynced-data outcome (drop, keep, random,
holes) chosen by a seeded generator per index, each outcome covering a
quarter of the indices; ``LSM_GROUP_CRASH_ALL=1`` checks all four at every
index. Then every image (with ``LSM_GROUP_CRASH_ALL``, the "random" one of
each index) is recovered with a second power cut before every operation of
that recovery, which must come back to the state a clean recovery gives
(issue 5: a second crash at every operation of the recovery that follows).
``LSM_GROUP_CRASH_SECOND_EVERY=N`` thins that to every Nth index for quick
local runs (0: none).

Cost. The recovery of an image is inline and deterministic, so the second
crash images are taken the way the first ones are: ONE recovery of a clone
runs with a ``trace_hook`` that takes the power-cut image before each of
its operations (the image ``arm_crash(j)`` would leave: the same state
before the same operation), instead of one recovery cut short per
operation; that recovery's result is also the clean state. Recovering an
image is a function of its content (files and directories), so each state
is computed once per distinct image (a content digest) and reused: many
second-crash images repeat (a crash before an operation that a power cut
then undoes anyway). The seed (workload choices, outcomes) is
``LSM_CRASH_POINT_SEED``; the interleaving is not replayable, so a failure
names the op index, outcome and the operations around it.
"""

from __future__ import annotations

import hashlib
import os
import random
import threading

import lsm
from lsm.base import filenames, infolog
from lsm.base.crashfs import CrashFS
from tests import test_crash_points as _single
from tests.reliability_log import record

S = lsm.Sync
SEED = int(os.environ.get("LSM_CRASH_POINT_SEED", "1729"))
ALL_OUTCOMES = os.environ.get("LSM_GROUP_CRASH_ALL", "") not in ("", "0")
SECOND_EVERY = int(os.environ.get("LSM_GROUP_CRASH_SECOND_EVERY", "1"))
THREADS = 4
COMMITS = 24  # per thread
LEVELS = (S.OFF, S.NORMAL, S.BARRIER, S.FULL, S.FULL, S.EXTRA)
KEYS = [b"g%02d" % i for i in range(16)]
# test_crash_points' small-everything options, with threads and a syncer
OPTS = dict(_single.OPTS, background="thread", memtable_size=2500, sync_interval=0.05)


class Commit:
    __slots__ = ("level", "ops", "seq")

    def __init__(self, level, ops):
        self.level = level
        self.ops = ops  # [(key, value or None)]
        self.seq = None  # the last sequence number of the commit, once it returned


def _worker(db, rng, tid, acked, errors):
    try:
        for i in range(COMMITS):
            level = rng.choice(LEVELS)
            tag = b"t%d.%d." % (tid, i)
            r = rng.random()
            if r < 0.6:
                c = Commit(level, [(rng.choice(KEYS), tag + b"v" * rng.randrange(40))])
                c.seq = db.put(c.ops[0][0], c.ops[0][1], sync=level)
            elif r < 0.7:
                c = Commit(level, [(rng.choice(KEYS), None)])
                c.seq = db.delete(c.ops[0][0], sync=level)
            else:
                b = lsm.WriteBatch()
                ops = []
                for j in range(rng.randrange(2, 5)):
                    k = rng.choice(KEYS)
                    if rng.random() < 0.8:
                        ops.append((k, tag + b"b%d" % j))
                        b.put(k, ops[-1][1])
                    else:
                        ops.append((k, None))
                        b.delete(k)
                c = Commit(level, ops)
                c.seq = db.write(b, sync=level)
            acked.append(c)  # after it returned: list.append is atomic
    except BaseException as e:  # noqa: BLE001 (reported by the test)
        errors.append(f"thread {tid}: {e!r}")


def _record_run(seed):
    """One threaded run with an image before every mutating operation.
    Returns (cuts, acked, trace, wal_syncs): cuts[i-1] = (index, outcome,
    image, acked count, durable_seq) for op index i."""
    rng = random.Random(seed)
    fs = CrashFS(sync_latency=0.002)
    acked: list[Commit] = []
    holder: dict[str, lsm.DB] = {}
    cuts = []
    trace = []
    wal_syncs = [0]

    def hook(index, kind, path, site, info):
        trace.append((index, kind, path, site))
        if kind == "sync" and path.endswith(".wal"):
            wal_syncs[0] += 1
        db = holder.get("db")
        n = len(acked)
        durable = db.durable_seq if db is not None else 0
        ro = random.Random(rng.random())
        outs = _single.OUTCOMES if ALL_OUTCOMES else (_single.OUTCOMES[(index + ro.randrange(4)) % 4],)
        for out in outs:
            cuts.append((index, out, fs.power_cut(random.Random(ro.random()), mode=out), n, durable))

    fs.trace_hook = hook
    db = lsm.open("/db", fs=fs, **OPTS)
    holder["db"] = db
    errors: list[str] = []
    ts = [threading.Thread(target=_worker, args=(db, random.Random(rng.random()), t, acked, errors), daemon=True)
          for t in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
        assert not t.is_alive(), f"a committer hung (seed {seed})"
    assert not errors, errors
    db.compact_range()  # a compaction with input deletion, on top of whatever the workers triggered
    db.close()
    fs.trace_hook = None
    return cuts, acked, trace, wal_syncs[0]


def _state(img):
    # recovered inline: the same recovery, with a deterministic operation
    # count (for the second crash) and no background work racing the check
    db = lsm.open("/db", fs=img, **dict(OPTS, background="inline"))
    try:
        return db.last_seq, dict(db.items())
    finally:
        db.close()


def _digest(img) -> bytes:
    """The content of an image (every directory and file, by path; of the
    info log ``LOG``/``LOG.old``, only the size, since its text carries
    timestamps and recovery only appends to it): equal digests recover to
    equal states (the recovery is deterministic)."""
    h = hashlib.blake2b(digest_size=20)
    todo = ["/"]
    while todo:
        d = todo.pop()
        for name in img.listdir(d):
            p = d.rstrip("/") + "/" + name
            if img.is_dir(p):
                h.update(b"D%d:%s" % (len(p), p.encode()))
                todo.append(p)
            else:
                data = img.read_file(p)
                h.update(b"F%d:%s%d:" % (len(p), p.encode(), len(data)))
                if name not in _INFO_LOGS:
                    h.update(data)
    return h.digest()


_INFO_LOGS = (filenames.LOG, infolog.LOG_OLD)


class States:
    """Recovered states by image content (``_digest``), each computed once."""

    def __init__(self):
        self._by_digest: dict[bytes, tuple] = {}
        self.recoveries = self.reused = 0

    def get(self, img, *, consume: bool = False):
        """The state ``img`` recovers to (``consume``: ``img`` may be
        changed, it is not used again)."""
        key = _digest(img)
        st = self._by_digest.get(key)
        if st is None:
            st = self._by_digest[key] = _state(img if consume else img.clone())
            self.recoveries += 1
        else:
            self.reused += 1
        return st

    def traced(self, img, rng):
        """Recover a clone of ``img`` with the power-cut image taken before
        each of the recovery's operations (what ``arm_crash(j)`` leaves,
        mode "random"). Returns (state, [(op, kind, path, image)])."""
        fs = img.clone()
        images = []

        def hook(index, kind, path, site, info):
            images.append((index, kind, path, fs.power_cut(random.Random(rng.random()))))

        fs.trace_hook = hook
        st = _state(fs)
        fs.trace_hook = None
        self.recoveries += 1
        self._by_digest.setdefault(_digest(img), st)
        return st, images


def _check(state, commits, ends, acked_before, durable, where):
    last, got = state
    assert last == 0 or last in ends, f"{where}: recovered last_seq {last} does not end a commit"
    expected: dict[bytes, bytes] = {}
    for c in commits:
        if c.seq > last:
            break
        for k, v in c.ops:
            if v is None:
                expected.pop(k, None)
            else:
                expected[k] = v
    if got != expected:
        diff = {k: (got.get(k), expected.get(k)) for k in set(got) | set(expected) if got.get(k) != expected.get(k)}
        raise AssertionError(f"{where}: recovered state is not the model at seq {last}: {diff}")
    newest_acked = max((c.seq for c in acked_before), default=0)
    for c in acked_before:
        if c.level >= S.FULL:
            assert c.seq <= last, f"{where}: {c.level.name} commit {c.seq} returned but was lost (kept up to {last})"
        elif c.level == S.BARRIER and newest_acked > c.seq:
            assert c.seq <= last, (f"{where}: BARRIER commit {c.seq} lost although commit {newest_acked} "
                                   f"returned after it")
    assert durable <= last, f"{where}: durable_seq was {durable} at the cut but only {last} survived"
    return last


def test_every_crash_point_group_commit_threads():
    print(f"group-commit crash points: LSM_CRASH_POINT_SEED={SEED}")
    cuts, acked, trace, wal_syncs = _record_run(SEED)
    commits = sorted(acked, key=lambda c: c.seq)
    assert len(commits) == THREADS * COMMITS
    ends = {c.seq for c in commits}
    total = trace[-1][0]
    assert [i for i, *_ in trace] == list(range(1, total + 1))
    # the workload did what it is for: groups formed (fewer WAL syncs than
    # FULL/EXTRA commits), the WAL rotated, tables were written
    full = sum(c.level >= S.FULL for c in commits)
    assert wal_syncs < full, f"no sync group formed: {wal_syncs} WAL syncs for {full} FULL/EXTRA commits"
    segments = [p for _, kind, p, site in trace if (kind == "create" and p.endswith(".wal"))
                or (kind == "rename" and site == "wal")]  # a new segment: created, or the spare renamed in
    assert len(segments) >= 3, f"the WAL rotated {len(segments) - 1} times"
    assert any(kind == "create" and p.endswith(".sst") for _, kind, p, _ in trace), "no table was written"
    assert any(kind == "remove" and p.endswith(".wal") for _, kind, p, _ in trace), "no WAL segment was deleted"
    rng = random.Random(SEED ^ 0x5EC0)
    states = second = sweeps = 0
    outcomes: dict[str, int] = {}
    cache = States()
    for index, outcome, img, n_acked, durable in cuts:
        near = trace[max(0, index - 4):index + 1]
        where = (f"seed {SEED}, crash before op {index} of {total} {trace[index - 1][1:]} (outcome {outcome}); "
                 f"ops before it: {near[:-1]}")
        sweep = SECOND_EVERY and index % SECOND_EVERY == 0 and (not ALL_OUTCOMES or outcome == "random")
        try:
            if sweep:
                want, images = cache.traced(img, rng)
            else:
                want = cache.get(img)
        except lsm.Error as e:
            raise AssertionError(f"{where}: recovery failed: {e!r}") from e
        _check(want, commits, ends, acked[:n_acked], durable, where)
        states += 1
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if not sweep:
            continue
        sweeps += 1
        assert images, f"{where}: the recovery did no I/O"
        for j, (op, kind, path, img2) in enumerate(images, 1):
            assert op == j
            got = cache.get(img2, consume=True)
            assert got == want, (f"{where}, then before recovery op {j} ({kind} {path}): state differs from a "
                                 f"clean recovery (last_seq {got[0]} vs {want[0]})")
            second += 1
    assert set(outcomes) == set(_single.OUTCOMES), outcomes
    print(f"group-commit crash points: {total} op indices, {states} crash states ({outcomes}), {second} "
          f"second-crash states in {sweeps} recovery sweeps ({cache.recoveries} recoveries, {cache.reused} "
          f"states reused for a repeated image); {full} FULL/EXTRA commits, {wal_syncs} WAL syncs")
    record("crash_points", workload="group_commit_threads", op_indices=total, states=states,
           second_crash_states=second, recovery_sweeps=sweeps, recoveries=cache.recoveries,
           wal_syncs=wal_syncs, full_commits=full)
