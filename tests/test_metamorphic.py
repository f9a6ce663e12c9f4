"""Metamorphic test (issue 5, family 7; pebble's metamorphic test is the
model): one generated op log runs under many option sets, and every read
result must be identical across them and equal to a dict model.

The op log: put, delete, batch, delete_range, get, scans (forward, reverse,
bounded, prefix), snapshot take/get/scan/release, flush, compact_range,
reopen, crash, set_sync. A crash is ``db._simulate_crash()`` and reopen:
on :class:`~lsm.base.crashfs.CrashFS` from ``power_cut(mode="keep")`` (what
a killed process leaves: the OS keeps every write), on a real directory as
is; either way nothing acknowledged is lost, so the model is unchanged and
snapshots die.

The option sets stretch every knob that must not change a result: memtable
of 2 KB, block size 1, level multiplier 2, compression off, bloom off, each
sync level, compaction triggers 1 and 8, inline vs thread background,
paranoid checks off, tiny WAL segments with a separate WAL directory and
retention, two levels only, the defaults, and a real directory.

Op logs come from Hypothesis (seeded; the seed is printed:
``LSM_METAMORPHIC_SEED`` replays it, ``LSM_METAMORPHIC_EXAMPLES`` sets the
number of logs) and from a seeded ``random`` generator for one longer log
(``LSM_METAMORPHIC_OPS``). Counts go to ``LSM_RELIABILITY_LOG`` when set.
"""

from __future__ import annotations

import os
import random
from collections import Counter

from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

import lsm
from lsm.base.crashfs import CrashFS
from tests.reliability_log import record

S = lsm.Sync
SEED = int(os.environ.get("LSM_METAMORPHIC_SEED", random.randrange(1 << 30)))
EXAMPLES = int(os.environ.get("LSM_METAMORPHIC_EXAMPLES", "8"))
LONG_OPS = int(os.environ.get("LSM_METAMORPHIC_OPS", "500"))

KEYS = [b"a/%02d" % i for i in range(8)] + [b"b/%02d" % i for i in range(8)] + [b"c%02d" % i for i in range(8)]
BOUNDS = [None, b"a/", b"a/04", b"b/", b"b/03", b"b/99", b"c", b"c04", b"d"]
PREFIXES = [b"a/", b"b/", b"c", b"a/0", b"z"]

TINY = dict(memtable_size=2048, target_file_size=2048, max_bytes_for_level_base=8192, level_multiplier=2,
            l0_compaction_trigger=2, l0_slowdown_trigger=100, l0_stop_trigger=200, num_levels=4,
            wal_segment_size=4096, block_size=256, background="inline", sync_interval=0.01)

OPTION_SETS: dict[str, dict] = {
    "memtable_2k": dict(TINY),
    "block_size_1": dict(TINY, block_size=1),
    "multiplier_2": dict(TINY, level_multiplier=2, max_bytes_for_level_base=2048, target_file_size=512),
    "compression_none": dict(TINY, compression="none"),
    "bloom_off": dict(TINY, bloom_bits_per_key=0),
    "sync_off_unparanoid": dict(TINY, sync=S.OFF, paranoid_checks=False),
    "sync_normal": dict(TINY, sync=S.NORMAL),
    "sync_barrier": dict(TINY, sync=S.BARRIER),
    "sync_extra_retention": dict(TINY, sync=S.EXTRA, wal_retention_segments=2, wal_dir="/wal",
                                 max_total_wal_size=4096),
    "l0_trigger_1": dict(TINY, l0_compaction_trigger=1),
    "l0_trigger_8_thread": dict(TINY, l0_compaction_trigger=8, background="thread"),
    "thread_memtable_1k": dict(TINY, memtable_size=1024, background="thread", block_cache_size=0),
    "two_levels": dict(TINY, num_levels=2),
    "defaults": dict(background="inline"),
    "real_dir_thread": dict(TINY, background="thread", real_dir=True),
}



def value(i: int, n: int) -> bytes:
    """The value written by op ``i``: unique, ``n`` padding bytes."""
    return b"%d|" % i + bytes([97 + i % 26]) * n


# ------------------------------------------------------------------ the model
def model_results(ops: list[tuple]) -> list:
    """What every read of ``ops`` must return, from a dict."""
    data: dict[bytes, bytes] = {}
    snaps: list[dict[bytes, bytes]] = []
    out: list = []

    def scan(d, start, stop, prefix, reverse):
        ks = sorted(k for k in d if (start is None or k >= start) and (stop is None or k < stop)
                    and (prefix is None or k.startswith(prefix)))
        if reverse:
            ks.reverse()
        return [(k, d[k]) for k in ks]

    for i, op in enumerate(ops):
        kind = op[0]
        if kind == "put":
            data[op[1]] = value(i, op[2])
        elif kind == "delete":
            data.pop(op[1], None)
        elif kind == "batch":
            for j, (k, n) in enumerate(op[1]):
                if n is None:
                    data.pop(k, None)
                else:
                    data[k] = value(i * 100 + j, n)
        elif kind == "delete_range":
            for k in [k for k in data if op[1] <= k < op[2]]:
                del data[k]
        elif kind == "get":
            out.append(data.get(op[1]))
        elif kind == "scan":
            out.append(scan(data, op[1], op[2], None, op[3]))
        elif kind == "prefix":
            out.append(scan(data, None, None, op[1], op[2]))
        elif kind == "snap":
            snaps.append(dict(data))
        elif kind == "snap_get":
            out.append(snaps[-1].get(op[1]) if snaps else "no snapshot")
        elif kind == "snap_scan":
            out.append(scan(snaps[-1], None, None, None, op[1]) if snaps else "no snapshot")
        elif kind == "snap_release":
            if snaps:
                snaps.pop()
        elif kind in ("reopen", "crash"):
            snaps.clear()
    out.append(scan(data, None, None, None, False))  # the final state, after a last reopen
    return out


# ------------------------------------------------------------------ the engine
class Runner:
    def __init__(self, name: str, opts: dict, tmp_path):
        self.name = name
        opts = dict(opts)
        self.real = opts.pop("real_dir", False)
        self.opts = opts
        if self.real:
            self.path = str(tmp_path / name)
            self.fs = None
        else:
            self.path = "/db"
            self.fs = CrashFS()
        self.db = self._open()
        self.events: Counter[str] = Counter()

    def _open(self) -> lsm.DB:
        kw = dict(self.opts)
        if self.fs is not None:
            kw["fs"] = self.fs
        elif "wal_dir" in kw:
            kw["wal_dir"] = self.path + "-wal"
        return lsm.open(self.path, **kw)

    def _count(self, db: lsm.DB) -> None:
        st = db.stats()
        self.events.update(flushes=st["flush_count"], compactions=st["compaction_count"])

    def run(self, ops: list[tuple]) -> list:
        db = self.db
        snaps: list = []
        out: list = []
        for i, op in enumerate(ops):
            kind = op[0]
            if kind == "put":
                db.put(op[1], value(i, op[2]))
            elif kind == "delete":
                db.delete(op[1])
            elif kind == "batch":
                b = lsm.WriteBatch()
                for j, (k, n) in enumerate(op[1]):
                    b.put(k, value(i * 100 + j, n)) if n is not None else b.delete(k)
                db.write(b)
            elif kind == "delete_range":
                db.delete_range(op[1], op[2])
            elif kind == "get":
                out.append(db.get(op[1]))
            elif kind == "scan":
                out.append(list(db.items(op[1], op[2], reverse=op[3])))
            elif kind == "prefix":
                out.append(list(db.items(prefix=op[1], reverse=op[2])))
            elif kind == "snap":
                snaps.append(db.snapshot())
            elif kind == "snap_get":
                out.append(snaps[-1].get(op[1]) if snaps else "no snapshot")
            elif kind == "snap_scan":
                out.append(list(snaps[-1].items(reverse=op[1])) if snaps else "no snapshot")
            elif kind == "snap_release":
                if snaps:
                    snaps.pop().close()
            elif kind == "flush":
                db.flush()
            elif kind == "compact":
                db.compact_range(op[1], op[2])
            elif kind == "set_sync":
                db.set_sync(op[1])
            elif kind == "reopen":
                for s in snaps:
                    s.close()
                snaps.clear()
                self._count(db)
                db.close()
                db = self.db = self._open()
            elif kind == "crash":
                for s in snaps:
                    s.close()
                snaps.clear()
                image = self.fs.power_cut(mode="keep") if self.fs is not None else None
                self._count(db)
                db._simulate_crash()
                if image is not None:
                    self.fs = image
                db = self.db = self._open()
            else:
                raise AssertionError(f"unknown op {op!r}")
        for s in snaps:
            s.close()
        self._count(db)
        db.close()
        db = self.db = self._open()
        out.append(list(db.items()))
        db.close()
        return out


def check_log(ops: list[tuple], tmp_path, label: str) -> Counter:
    """Run ``ops`` under every option set; every result equals the model's."""
    want = model_results(ops)
    reads = [op for op in ops if op[0] in ("get", "scan", "prefix", "snap_get", "snap_scan")] + [("final",)]
    totals: Counter[str] = Counter()
    for name, opts in OPTION_SETS.items():
        r = Runner(name, opts, tmp_path / label)
        got = r.run(ops)
        totals.update(r.events)
        assert len(got) == len(want)
        for j, (g, w) in enumerate(zip(got, want)):
            if g != w:
                raise AssertionError(
                    f"option set {name!r}: read #{j} {reads[j]!r} returned {g!r}, the model says {w!r} "
                    f"(LSM_METAMORPHIC_SEED={SEED}; ops: {ops!r})")
    totals["reads"] += len(want) * len(OPTION_SETS)
    return totals


# ------------------------------------------------------------------ generators
def _range(pick):
    a, b = pick(BOUNDS), pick(BOUNDS)
    if a is not None and b is not None and a > b:
        a, b = b, a
    return a, b


def random_ops(rng: random.Random, n: int) -> list[tuple]:
    """A seeded op log of ``n`` ops, weighted towards writes."""
    ops: list[tuple] = []
    key = lambda: rng.choice(KEYS)
    vlen = lambda: rng.randrange(40) if rng.random() < 0.8 else rng.randrange(200, 1500)
    for _ in range(n):
        r = rng.random()
        if r < 0.40:
            ops.append(("put", key(), vlen()))
        elif r < 0.48:
            ops.append(("delete", key()))
        elif r < 0.54:
            ops.append(("batch", [(key(), None if rng.random() < 0.2 else vlen()) for _ in range(rng.randrange(1, 6))]))
        elif r < 0.56:
            a, b = sorted((key(), key()))
            ops.append(("delete_range", a, b))
        elif r < 0.66:
            ops.append(("get", key()))
        elif r < 0.71:
            a, b = _range(rng.choice)
            ops.append(("scan", a, b, rng.random() < 0.5))
        elif r < 0.74:
            ops.append(("prefix", rng.choice(PREFIXES), rng.random() < 0.5))
        elif r < 0.77:
            ops.append(("snap",))
        elif r < 0.81:
            ops.append(("snap_get", key()))
        elif r < 0.83:
            ops.append(("snap_scan", rng.random() < 0.5))
        elif r < 0.85:
            ops.append(("snap_release",))
        elif r < 0.89:
            ops.append(("flush",))
        elif r < 0.92:
            a, b = _range(rng.choice)
            ops.append(("compact", a, b))
        elif r < 0.94:
            ops.append(("reopen",))
        elif r < 0.96:
            ops.append(("crash",))
        else:
            ops.append(("set_sync", rng.choice(list(S))))
    return ops


keys_st = st.sampled_from(KEYS)
vlen_st = st.one_of(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40), st.integers(200, 1500))
bound_st = st.sampled_from(BOUNDS)


def _ordered(a, b):
    return (b, a) if a is not None and b is not None and a > b else (a, b)


OP_ST = st.one_of(
    st.tuples(st.just("put"), keys_st, vlen_st),
    st.tuples(st.just("put"), keys_st, vlen_st),
    st.tuples(st.just("put"), keys_st, vlen_st),
    st.tuples(st.just("delete"), keys_st),
    st.tuples(st.just("batch"), st.lists(st.tuples(keys_st, st.one_of(st.none(), vlen_st)), min_size=1, max_size=5)),
    st.tuples(keys_st, keys_st).map(lambda t: ("delete_range", *sorted(t))),
    st.tuples(st.just("get"), keys_st),
    st.tuples(bound_st, bound_st, st.booleans()).map(lambda t: ("scan", *_ordered(t[0], t[1]), t[2])),
    st.tuples(st.just("prefix"), st.sampled_from(PREFIXES), st.booleans()),
    st.tuples(st.just("snap")),
    st.tuples(st.just("snap_get"), keys_st),
    st.tuples(st.just("snap_scan"), st.booleans()),
    st.tuples(st.just("snap_release")),
    st.tuples(st.just("flush")),
    st.tuples(bound_st, bound_st).map(lambda t: ("compact", *_ordered(*t))),
    st.tuples(st.just("reopen")),
    st.tuples(st.just("crash")),
    st.tuples(st.just("set_sync"), st.sampled_from(list(S))),
)


# ------------------------------------------------------------------ tests
def test_model_itself():
    """The dict model on a hand-checked log (a wrong model would make every
    option set agree on wrong answers)."""
    ops = [("put", b"a/01", 1), ("put", b"b/01", 2), ("snap",), ("delete", b"a/01"), ("get", b"a/01"),
           ("snap_get", b"a/01"), ("delete_range", b"b/", b"c"), ("scan", None, None, False),
           ("batch", [(b"c01", 0), (b"c00", None)]), ("prefix", b"c", True), ("crash",), ("snap_get", b"a/01")]
    assert model_results(ops) == [None, value(0, 1), [], [(b"c01", value(800, 0))], "no snapshot",
                                  [(b"c01", value(800, 0))]]


_stats: Counter[str] = Counter()


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@seed(SEED)
@given(ops=st.lists(OP_ST, min_size=40, max_size=150))
def test_metamorphic_hypothesis(ops, tmp_path_factory):
    print(f"metamorphic: LSM_METAMORPHIC_SEED={SEED}, {len(ops)} ops")
    _stats["logs"] += 1
    _stats["ops"] += len(ops)
    _stats.update(check_log(ops, tmp_path_factory.mktemp("meta"), "h"))


def test_metamorphic_hypothesis_summary():
    """Runs after the Hypothesis test (file order): prints and logs its counts."""
    print(f"metamorphic (hypothesis): {_stats['logs']} op logs, {_stats['ops']} ops, {len(OPTION_SETS)} option "
          f"sets, {_stats['reads']} read results compared, {_stats['flushes']} flushes, "
          f"{_stats['compactions']} compactions; LSM_METAMORPHIC_SEED={SEED}")
    if _stats["logs"]:
        record("metamorphic", workload=f"hypothesis ({len(OPTION_SETS)} option sets)",
               runs=_stats["logs"] * len(OPTION_SETS), op_logs=_stats["logs"], ops=_stats["ops"],
               reads_compared=_stats["reads"], flushes=_stats["flushes"], compactions=_stats["compactions"])


def test_metamorphic_long_log(tmp_path):
    """One longer seeded log (flushes, compactions down several levels,
    reopens and crashes) under every option set."""
    rng = random.Random(SEED)
    ops = random_ops(rng, LONG_OPS)
    print(f"metamorphic long log: LSM_METAMORPHIC_SEED={SEED}, {len(ops)} ops")
    totals = check_log(ops, tmp_path, "long")
    print(f"metamorphic (long): {len(ops)} ops x {len(OPTION_SETS)} option sets, {totals['reads']} read results "
          f"compared, {totals['flushes']} flushes, {totals['compactions']} compactions")
    assert totals["flushes"] > len(OPTION_SETS) and totals["compactions"] > len(OPTION_SETS)
    record("metamorphic", workload=f"long log ({len(OPTION_SETS)} option sets)", runs=len(OPTION_SETS),
           op_logs=1, ops=len(ops), reads_compared=totals["reads"], flushes=totals["flushes"],
           compactions=totals["compactions"])
