"""Open time of a database whose WAL holds many batches (recovery's replay,
lsm/recovery.py).

    python tools/replay_lab.py make DIR [--num N] [--batch B] [--shuffle]
    python tools/replay_lab.py open DIR [--background M]

``make`` writes N puts (16-byte keys, 100-byte values) in batches of B
(``db.write``) into a new database at DIR with a memtable large enough that
nothing flushes, then closes it (``close`` flushes nothing: the data stays
in the WAL, as after a kill -9 once the WAL is in the page cache).

``open`` copies DIR to a scratch directory beside it (untimed), then times
``lsm.open`` of the copy (wall and process CPU seconds), then the first
``get`` (which indexes batches the replay left pending, if any), checks the
memtable's entry count, closes and removes the copy. Prints one JSON line.

For before/after, run ``open`` alternately with cwd (or ``PYTHONPATH``) at
a worktree of each version; the ``make`` output serves both.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time

sys.path.insert(0, os.getcwd())

import lsm

_BIG = 1 << 30  # memtable_size / wal_segment_size for make: no flush, one segment


def make(path: str, num: int, batch: int, shuffle: bool) -> None:
    rng = random.Random(1)
    keys = [b"%016d" % i for i in range(num)]
    if shuffle:
        rng.shuffle(keys)
    db = lsm.open(path, memtable_size=_BIG, wal_segment_size=_BIG, sync=lsm.Sync.OFF, background="inline")
    for s in range(0, num, batch):
        b = lsm.WriteBatch()
        for k in keys[s : s + batch]:
            b.put(k, rng.randbytes(100))
        db.write(b)
    assert db.stats()["flush_count"] == 0
    db.close()


def open_(path: str, background: str) -> dict:
    scratch = path.rstrip("/") + ".open"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(path, scratch)
    try:
        w0, c0 = time.perf_counter(), time.process_time()
        db = lsm.open(scratch, background=background)
        w1, c1 = time.perf_counter(), time.process_time()
        db.get(b"%016d" % 0)
        w2, c2 = time.perf_counter(), time.process_time()
        out = {"lsm": os.path.dirname(lsm.__file__), "open_s": w1 - w0, "open_cpu_s": c1 - c0,
               "first_get_s": w2 - w1, "first_get_cpu_s": c2 - c1, "entries": db._mem.count,
               "records": db.recovery_report["replayed_records"]}
        db.close()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("make", "open"))
    ap.add_argument("dir")
    ap.add_argument("--num", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--shuffle", action="store_true", help="keys in random order")
    ap.add_argument("--background", default="process")
    a = ap.parse_args()
    if a.mode == "make":
        make(a.dir, a.num, a.batch, a.shuffle)
    else:
        print(json.dumps(open_(a.dir, a.background)))


if __name__ == "__main__":
    main()
