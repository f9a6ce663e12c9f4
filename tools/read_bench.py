"""Measure and profile the read path: point gets, absent keys, a full scan
and seeks, on a database reopened from disk (as the harness's read
workloads do), in CPU time, so that two trees can be compared on a busy
machine by alternating runs.

A template database of --num keys (fillrandom order, 16-byte keys, 100-byte
values, Sync.OFF) is built once under --dir and copied for every run, so
every run reads the same files; after the reopen the memtable holds what
the WAL replayed (``--flush`` empties it first).

    python tools/read_bench.py --num 200000 --reads 20000
    python tools/read_bench.py --only seekrandom --profile seekrandom   # cProfile, top 18
    cd /tmp/before && python /work/main/tools/read_bench.py --tree .    # another tree's lsm
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import shutil
import sys
import time
from itertools import islice


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                    help="the source tree whose lsm to import (default: this one)")
    ap.add_argument("--num", type=int, default=200_000, help="keys in the database")
    ap.add_argument("--reads", type=int, default=20_000, help="gets per get workload; seeks are a tenth")
    ap.add_argument("--only", default="readrandom,readmissing,readseq,seekrandom",
                    help="workloads in order (a name may repeat)")
    ap.add_argument("--profile", default=None, help="cProfile this workload")
    ap.add_argument("--flush", action="store_true", help="flush the replayed memtable after the reopen")
    ap.add_argument("--dir", default="/tmp/lsm-read-bench", help="where the template and copies go")
    ap.add_argument("--rebuild", action="store_true", help="build the template again")
    ap.add_argument("--compression", default=None, help="the template's compression (default: the option's)")
    ap.add_argument("--block-size", type=int, default=None, help="the template's block_size (default: the option's)")
    ap.add_argument("--inline", action="store_true",
                    help="build the template with background='inline': the same files every build "
                         "(codec comparisons on one shape; give each variant its own --dir)")
    a = ap.parse_args()
    sys.path.insert(0, os.path.abspath(a.tree))
    import lsm

    n = a.num
    fmt = b"%016d"
    tmpl = os.path.join(a.dir, f"tmpl-{n}")
    if a.rebuild or not os.path.exists(tmpl):
        shutil.rmtree(tmpl, ignore_errors=True)
        order = list(range(n))
        random.Random(1).shuffle(order)
        vals = [random.Random(i).randbytes(50) * 2 for i in range(1000)]
        kw = {} if a.compression is None else {"compression": a.compression}
        if a.block_size is not None:
            kw["block_size"] = a.block_size
        if a.inline:
            kw["background"] = "inline"
        with lsm.open(tmpl, sync=lsm.Sync.OFF, **kw) as db:
            for j, i in enumerate(order):
                db.put(fmt % i, vals[j % 1000])
    work = os.path.join(a.dir, f"work-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(tmpl, work)
    db = lsm.open(work, sync=lsm.Sync.OFF)
    if a.flush:
        db.flush()
    sv = db._sv
    print(f"lsm from {os.path.dirname(lsm.__file__)}; files per level {[len(lv) for lv in sv.version.levels]}, "
          f"memtable entries {sv.mem.count}")
    rng = random.Random(7)
    r = a.reads
    keys = [fmt % rng.randrange(n) for _ in range(r)]
    missing = [b"%015d." % (rng.randrange(n) // 10 or 1) for _ in range(r)]
    seeks = keys[: max(1, r // 10)]

    def readrandom() -> int:
        get = db.get
        found = sum(1 for k in keys if get(k) is not None)
        assert found == r, found
        return r

    def readmissing() -> int:
        get = db.get
        assert all(get(k) is None for k in missing)
        return r

    def readseq() -> int:
        count = sum(1 for _ in db.items())
        assert count == n, count
        return count

    def seekrandom() -> int:
        items = db.items
        for k in seeks:
            assert len(list(islice(items(start=k), 10))) == 10
        return len(seeks)

    workloads = {"readrandom": readrandom, "readmissing": readmissing, "readseq": readseq,
                 "seekrandom": seekrandom}
    try:
        for name in a.only.split(","):
            fn = workloads[name]
            prof = cProfile.Profile() if a.profile == name else None
            if prof is not None:
                prof.enable()
            t0 = time.process_time()
            ops = fn()
            dt = time.process_time() - t0
            if prof is not None:
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(18)
            print(f"{name:12s} {ops / dt:12,.0f} /s CPU  {dt / ops * 1e6:8.2f} us/op")
    finally:
        db.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
