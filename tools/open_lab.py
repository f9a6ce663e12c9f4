"""fillsync right after open, against the disk's floors, in one process
(issue 7 target 1: what an open leaves running beside the first commits).

    python tools/open_lab.py [--variant V] [--num N] [--dir D] [--floors] [--level OFF] [--background M]

Runs, in this order, in one fresh process (as the harness runs an engine):
the prealloc+fdatasync floor (``--floors``: and append+fdatasync) with N
128-byte writes (benchmarks/limits.py's loops), then ``lsm.open`` of a new
database under D (default: a temp dir next to this file, on the project's
disk) and N FULL (``--level``) puts of 16-byte keys and 100-byte values, timed
from the first put, right after open (open untimed). Prints one JSON line:
rates, p50/p99/max latency, seconds spent in puts over 1 ms, CPU per put
(the process, its main thread) and the worker children's CPU seconds
during the puts. ``--dir /dev/shm`` takes the disk out (tmpfs: fdatasync
is nearly free), leaving what runs beside the commits. ``--variant``
patches the engine for attribution (of a tree before the lazy start-up):

* ``as-is``: the code on disk.
* ``no-spare``: no spare segment is prepared after open (the first
  segment still takes the one prepared at open).
* ``no-prestart``: the worker pools are not pre-started at open.
* ``neither``: both.

For before/after, run it alternately with ``PYTHONPATH`` (or cwd) at a HEAD
worktree and at the working tree.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.getcwd())

import lsm
from benchmarks import limits
from benchmarks.measure import cpu_seconds


def _rate(rec_ops_start_stop) -> tuple[float, float]:
    rec, ops, start, stop = rec_ops_start_stop
    lat = sorted(rec.lat[:ops])
    return ops / ((stop - start) / 1e9), lat[len(lat) // 2] / 1e3


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", default="as-is", choices=("as-is", "no-spare", "no-prestart", "neither"))
    ap.add_argument("--num", type=int, default=10000)
    ap.add_argument("--dir", default=None)
    ap.add_argument("--floors", action="store_true")
    ap.add_argument("--background", default="process")
    ap.add_argument("--level", default="FULL", help="sync level of the puts (OFF: a fillrandom-like load)")
    a = ap.parse_args()
    if a.variant in ("no-spare", "neither"):
        from lsm.wal import spare

        spare.SpareSegment.want = lambda self: None
    if a.variant in ("no-prestart", "neither"):
        from lsm.compaction import worker

        worker.WorkerPool.prestart = lambda self: None
    base = a.dir or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    d = tempfile.mkdtemp(prefix="open-lab-", dir=base)
    out: dict = {"variant": a.variant, "lsm": os.path.dirname(lsm.__file__), "num": a.num}
    try:
        if a.floors:
            out["append_rate"], out["append_p50_us"] = _rate(limits.append_fdatasync(d, a.num, 30.0))
        c0 = time.process_time()
        out["prealloc_rate"], out["prealloc_p50_us"] = _rate(limits.prealloc_fdatasync(d, a.num, 30.0))
        out["prealloc_cpu_us"] = (time.process_time() - c0) / a.num * 1e6
        rng = random.Random(301)
        keys = [b"%016d" % i for i in range(a.num)]
        rng.shuffle(keys)
        val = bytes(rng.randrange(256) for _ in range(100))
        db = lsm.open(os.path.join(d, "db"), sync=lsm.Sync.OFF, background=a.background)
        put, full = db.put, lsm.Sync[a.level.upper()]
        lat = [0] * a.num
        pc = time.perf_counter_ns
        c0, ch0, m0 = time.process_time(), cpu_seconds()[1], time.thread_time()
        start = pc()
        for i, k in enumerate(keys):
            t0 = pc()
            put(k, val, sync=full)
            lat[i] = pc() - t0
        stop = pc()
        c1, ch1, m1 = time.process_time(), cpu_seconds()[1], time.thread_time()
        st = db.stats()
        db.close()
        lat.sort()
        out.update(
            fillsync_rate=a.num / ((stop - start) / 1e9),
            fillsync_p50_us=lat[len(lat) // 2] / 1e3,
            fillsync_p99_us=lat[len(lat) * 99 // 100] / 1e3,
            fillsync_max_us=lat[-1] / 1e3,
            fillsync_over_1ms_s=sum(x for x in lat if x > 1_000_000) / 1e9,
            cpu_us_per_put=(c1 - c0) / a.num * 1e6,
            main_thread_cpu_us_per_put=(m1 - m0) / a.num * 1e6,
            other_threads_cpu_s=(c1 - c0) - (m1 - m0),
            children_cpu_s=ch1 - ch0,
            wal_syncs=st.get("wal_syncs"),
        )
        out["vs_prealloc"] = out["fillsync_rate"] / out["prealloc_rate"]
        if a.floors:
            out["vs_append"] = out["fillsync_rate"] / out["append_rate"]
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))


if __name__ == "__main__":
    main()
