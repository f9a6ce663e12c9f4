"""What the writers commit: every commit's level, kind and ops are a pure
function of ``seed, cycle, thread, commit number`` (so the oracle knows
the ops of a commit that was in flight at the kill), and the tiny database
options that make every cycle flush, compact and roll the manifest over."""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass

import lsm

LEVELS = {s.name: s for s in lsm.Sync}

TINY = {
    "memtable_size": 16 * 1024,
    "wal_segment_size": 16 * 1024,
    "target_file_size": 16 * 1024,
    "block_size": 1024,
    "l0_compaction_trigger": 2,
    "l0_slowdown_trigger": 6,
    "l0_stop_trigger": 12,
    "max_bytes_for_level_base": 64 * 1024,
    "level_multiplier": 4,
    "num_levels": 5,
    "sync_interval": 0.02,
}
"""Database options of the writer (and of the driver's reopen, apart from
``background``): small enough that every cycle switches memtables, rotates
WAL segments, flushes and compacts (measured: see the summary line)."""

PUT, DELETE = 1, 0  # lsm.base.coding.ValueKind


@dataclass(frozen=True)
class Workload:
    seed: int
    keys: int = 2000
    value_size: int = 100
    batch_prob: float = 0.2
    delete_prob: float = 0.15
    max_batch: int = 20
    big_prob: float = 0.01
    promise_prob: float = 0.02
    mix: tuple[tuple[str, int], ...] = (("FULL", 45), ("EXTRA", 5), ("BARRIER", 15), ("NORMAL", 15), ("OFF", 20))


@dataclass
class Commit:
    """One commit of a writer thread: what it does, as a pure function of
    (workload, cycle, thread, n). ``after``: once it returned, the thread
    asks for a durability promise ("sync_wal", "wait_durable") or not ("")."""

    thread: int
    n: int
    level: str
    kind: str  # "put", "delete", "batch"
    ops: list[tuple[int, bytes, bytes]]  # (PUT/DELETE, key, value)
    after: str = ""

    @property
    def count(self) -> int:
        return len(self.ops)

    def describe(self) -> str:
        return f"thread {self.thread} commit {self.n} ({self.kind} of {self.count} op(s) at {self.level})"


def make_commit(w: Workload, cycle: int, thread: int, n: int) -> Commit:
    rng = random.Random(f"{w.seed}/{cycle}/{thread}/{n}")
    names = [m[0] for m in w.mix]
    level = rng.choices(names, weights=[m[1] for m in w.mix])[0]
    r = rng.random()
    if r < w.batch_prob:
        kind, nops = "batch", rng.randint(2, w.max_batch)
    elif r < w.batch_prob + w.delete_prob:
        kind, nops = "delete", 1
    else:
        kind, nops = "put", 1
    ops = []
    for i in range(nops):
        key = b"k%06d" % rng.randrange(w.keys)
        if kind == "delete" or (kind == "batch" and rng.random() < w.delete_prob):
            ops.append((DELETE, key, b""))
            continue
        size = rng.randint(0, 2 * w.value_size)
        if rng.random() < w.big_prob:
            size = rng.randint(4096, 20000)  # records that span pages: a kill can tear their write(2)
        tag = b"%d.%d.%d.%d:" % (cycle, thread, n, i)
        ops.append((PUT, key, tag + rng.randbytes(size)))
    after = ""
    if rng.random() < w.promise_prob:
        after = rng.choice(("sync_wal", "wait_durable"))
    return Commit(thread, n, level, kind, ops, after)


def value_origin(v: bytes) -> str:
    tag = v.split(b":", 1)[0]
    try:
        c, t, n, i = (int(x) for x in tag.split(b"."))
    except ValueError:
        return f"a value this test never wrote ({v[:40]!r})"
    return f"the value of cycle {c} thread {t} commit {n} op {i}"


def workload_from(a: argparse.Namespace) -> Workload:
    mix = []
    for part in a.sync_mix.split(","):
        name, _, weight = part.partition("=")
        name = name.strip().upper()
        if name not in LEVELS or not weight.strip().isdigit():
            raise SystemExit(f"--sync-mix: expected LEVEL=WEIGHT,... with levels {sorted(LEVELS)}, got {part!r}")
        mix.append((name, int(weight)))
    return Workload(seed=a.cycle_seed if a.child else a.seed, keys=a.keys, value_size=a.value_size,
                    batch_prob=a.batch_prob, delete_prob=a.delete_prob, max_batch=a.max_batch,
                    big_prob=a.big_prob, promise_prob=a.promise_prob, mix=tuple(mix))


def options_from(a: argparse.Namespace) -> dict:
    opts = dict(TINY)
    for item in a.option or ():
        name, _, value = item.partition("=")
        if value.lower() in ("true", "false"):  # bool options (wal_preallocate=false): Options wants a bool
            opts[name] = value.lower() == "true"
            continue
        try:
            opts[name] = int(value)
        except ValueError:
            try:
                opts[name] = float(value)
            except ValueError:
                opts[name] = value
    return opts
