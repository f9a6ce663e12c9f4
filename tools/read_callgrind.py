"""Driver for the read paths' instruction counts (docs/benchmarks.md,
"Point reads" and "Scan profile"): opens a copy of tools/read_bench.py's
template database of --num keys (build it first: ``python
tools/read_bench.py --num N --only readrandom``; fillrandom order, 16-byte
keys, 100-byte values; the memtable holds what the WAL replayed, as in the
harness's read workloads), runs one workload, and exits without closing.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python tools/read_callgrind.py --tree TREE MODE N

for the same MODE with N and with 0: (instructions of the first - of the
second) / N is the cost per get, per key scanned or per seek.

Point reads (N gets, after ``--warm`` gets): ``missing`` (readmissing's
keys: same width, between two present keys), ``present`` (readrandom's),
``hot`` (present keys after every block they need is cached: the cache-hit
path). Scans: ``readseq`` (drain ``db.items()``, N keys at most),
``readreverse`` (``reverse=True``), ``seekrandom`` (N seeks of 10 entries
each). ``--cache`` sets block_cache_size in MiB (default: the option's
default); ``--tree`` imports another tree's lsm (before/after
comparisons: set PYTHONPATH to it as well, or the editable install wins
in the worker process).
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import shutil
import sys
from itertools import islice

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--tree", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap.add_argument("--num", type=int, default=300_000)
ap.add_argument("--dir", default="/tmp/lsm-read-bench")
ap.add_argument("--cache", type=int, default=None)
ap.add_argument("--warm", type=int, default=5000)
ap.add_argument("--max", type=int, default=20000, help="keys made for point reads (N <= max)")
ap.add_argument("--flush", action="store_true", help="flush the replayed memtable after the reopen")
ap.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                help="an lsm.open option for the reopen (VALUE a Python literal), e.g. mmap_reads=False")
ap.add_argument("mode", choices=["missing", "present", "hot", "readseq", "readreverse", "seekrandom"])
ap.add_argument("n", type=int)
a = ap.parse_args()
sys.path.insert(0, os.path.abspath(a.tree))
import lsm  # noqa: E402

tmpl = os.path.join(a.dir, f"tmpl-{a.num}")
if not os.path.exists(tmpl):
    raise SystemExit(f"no template {tmpl}: run tools/read_bench.py --num {a.num} --dir {a.dir} first")
work = os.path.join(a.dir, f"cg-{os.getpid()}")
shutil.copytree(tmpl, work)
kw = {} if a.cache is None else {"block_cache_size": a.cache << 20}
for o in a.option:
    name, _, value = o.partition("=")
    kw[name] = __import__("ast").literal_eval(value)
db = lsm.open(work, sync=lsm.Sync.OFF, background="inline", **kw)
if a.flush:
    db.flush()
rng = random.Random(7)
n = a.num
if a.mode in ("missing", "present", "hot"):
    # The same keys are made whatever N is (up to --max), so that the
    # difference of two runs is the gets alone.
    if a.mode == "missing":
        keys = [b"%015d." % (rng.randrange(n) // 10 or 1) for _ in range(a.warm + a.max)]
    else:
        keys = [b"%016d" % rng.randrange(n) for _ in range(a.warm + a.max)]
    get = db.get
    warm = keys[: a.warm]
    run = keys[a.warm : a.warm + a.n]
    if a.mode == "hot":
        warm = keys  # every block the run needs is cached first
    for k in warm:
        get(k)
    for k in run:
        get(k)
elif a.mode == "seekrandom":
    items = db.items
    for _ in range(a.n):
        collections.deque(islice(items(start=b"%016d" % rng.randrange(n)), 10), maxlen=0)
else:
    collections.deque(islice(db.items(reverse=a.mode == "readreverse"), a.n), maxlen=0)
shutil.rmtree(work, ignore_errors=True)
os._exit(0)  # no close: the counts cover the workload, not the shutdown
