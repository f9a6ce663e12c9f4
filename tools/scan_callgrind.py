"""Driver for the scan instruction counts in docs/benchmarks.md ("Scan
profile"): copy the read_bench template database of --num keys (built by
tools/read_bench.py: fillrandom order, 16-byte keys, 100-byte values), reopen
it (the memtable holds what the WAL replayed, as in the harness's read
workloads) and run one workload:

    PYTHONHASHSEED=0 valgrind --tool=callgrind python tools/scan_callgrind.py MODE
    PYTHONHASHSEED=0 valgrind --tool=callgrind python tools/scan_callgrind.py none

(instructions of the first - of the second) / keys is the cost per key.
MODE: ``readseq`` (drain ``db.items()``), ``readreverse`` (``reverse=True``),
``seekrandom`` (1,000 seeks of 10 entries each: per seek), ``none`` (open
only). ``--tree`` imports another tree's lsm (before/after comparisons).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import sys
from itertools import islice

ap = argparse.ArgumentParser()
ap.add_argument("mode", choices=["readseq", "readreverse", "seekrandom", "none"])
ap.add_argument("--num", type=int, default=300_000)
ap.add_argument("--dir", default="/tmp/lsm-read-bench")
ap.add_argument("--tree", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
a = ap.parse_args()
sys.path.insert(0, os.path.abspath(a.tree))
import lsm

tmpl = os.path.join(a.dir, f"tmpl-{a.num}")
if not os.path.exists(tmpl):
    raise SystemExit(f"no template {tmpl}: run tools/read_bench.py --num {a.num} --dir {a.dir} first")
work = os.path.join(a.dir, f"cg-{os.getpid()}")
shutil.copytree(tmpl, work)
db = lsm.open(work, sync=lsm.Sync.OFF)
rng = random.Random(7)
seeks = [b"%016d" % rng.randrange(a.num) for _ in range(1000)]
if a.mode == "readseq":
    collections.deque(db.items(), maxlen=0)
elif a.mode == "readreverse":
    collections.deque(db.items(reverse=True), maxlen=0)
elif a.mode == "seekrandom":
    items = db.items
    for k in seeks:
        collections.deque(islice(items(start=k), 10), maxlen=0)
shutil.rmtree(work)
os._exit(0)  # no close: the counts cover the workload, not the shutdown
