"""lsm with its live WAL segment written through a map (``wal_mmap_writes``
True, the default) against write(2) (False), alternating in one process.

    python tools/wal_map_ab.py [--dir DIR] [--puts N] [--seconds S]
                               [--readers K] [--rounds R]

Three measurements per setting and round:

* ``put``: N unsynced puts of random 16-byte keys and 100-byte values into
  a fresh database (a memtable large enough that no flush runs): CPU
  microseconds per put (target 3's path).
* ``beside``: one writer thread putting unsynced for S seconds beside K
  reader threads looping over ``get`` of keys the writer wrote
  (readwhilewriting's shape, without compaction): the writer's puts per
  second and the readers' gets per second. A write(2) releases the GIL and
  must win it back from the busy readers; a store into the map does not
  release it (target 7's writer).
* ``full``: ``--full-threads`` threads (8) each making ``--full-puts``
  FULL puts (target 2's shape): commits per second, commits per sync, and
  the share of the time the disk was syncing (``wal_sync_seconds`` over
  the wall time).

The settings alternate (False, True, False, True, ...) so that drift of
the shared machine falls on both. docs/benchmarks.md, "Mapped WAL
segment", has the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lsm


def put_cpu(d: str, mapped: bool, keys: list[bytes]) -> tuple[float, bool]:
    shutil.rmtree(d, ignore_errors=True)
    db = lsm.open(d, wal_mmap_writes=mapped, sync="OFF", memtable_size=256 << 20)
    try:
        put, val = db.put, b"v" * 100
        c0 = time.process_time()
        for k in keys:
            put(k, val)
        cpu = (time.process_time() - c0) / len(keys) * 1e6
        return cpu, db._wal._file.mapped
    finally:
        db.close()
        shutil.rmtree(d, ignore_errors=True)


def beside(d: str, mapped: bool, seconds: float, readers: int) -> tuple[float, float]:
    shutil.rmtree(d, ignore_errors=True)
    db = lsm.open(d, wal_mmap_writes=mapped, sync="OFF", memtable_size=256 << 20)
    try:
        for i in range(10_000):
            db.put(b"k%015d" % i, b"v" * 100)
        stop = threading.Event()
        counts = [0] * (readers + 1)

        def writer() -> None:
            put, val, n = db.put, b"w" * 100, 0
            while not stop.is_set():
                put(b"w%015d" % n, val)
                n += 1
            counts[0] = n

        def reader(r: int) -> None:
            get, rng, n = db.get, random.Random(r), 0
            while not stop.is_set():
                get(b"k%015d" % rng.randrange(10_000))
                n += 1
            counts[r + 1] = n

        ts = [threading.Thread(target=writer)] + [threading.Thread(target=reader, args=(r,)) for r in range(readers)]
        for t in ts:
            t.start()
        time.sleep(seconds)
        stop.set()
        for t in ts:
            t.join()
        return counts[0] / seconds, sum(counts[1:]) / seconds
    finally:
        db.close()
        shutil.rmtree(d, ignore_errors=True)


def full(d: str, mapped: bool, threads: int, puts: int) -> tuple[float, float, float]:
    shutil.rmtree(d, ignore_errors=True)
    db = lsm.open(d, wal_mmap_writes=mapped)
    try:
        def w(t: int) -> None:
            put, val = db.put, b"v" * 100
            for i in range(puts):
                put(b"%02d%014d" % (t, i), val)

        ts = [threading.Thread(target=w, args=(t,)) for t in range(threads)]
        s0 = db.stats()
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        s = db.stats()
        n = threads * puts
        syncs = s["wal_syncs"] - s0["wal_syncs"]
        return n / wall, n / max(syncs, 1), (s["wal_sync_seconds"] - s0["wal_sync_seconds"]) / wall
    finally:
        db.close()
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", default="/tmp/lsm-wal-map-ab")
    ap.add_argument("--puts", type=int, default=200_000)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--readers", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--full-threads", type=int, default=8)
    ap.add_argument("--full-puts", type=int, default=5000, help="FULL puts per thread (0: skip)")
    a = ap.parse_args()
    keys = [os.urandom(16) for _ in range(a.puts)]
    print(f"{'mapped':>6} {'cpu us/put':>10} {'writer puts/s':>14} {'reader gets/s':>14}"
          f" {'FULL commits/s':>14} {'per sync':>8} {'syncing':>7}")
    for _ in range(a.rounds):
        for mapped in (False, True):
            cpu, was = put_cpu(a.dir, mapped, keys)
            assert was == mapped, "the live segment's mapping is not what was asked"
            w, r = beside(a.dir, mapped, a.seconds, a.readers)
            c, g, busy = full(a.dir, mapped, a.full_threads, a.full_puts) if a.full_puts else (0.0, 0.0, 0.0)
            print(f"{mapped!s:>6} {cpu:10.2f} {w:14,.0f} {r:14,.0f} {c:14,.0f} {g:8.2f} {busy:7.2f}", flush=True)


if __name__ == "__main__":
    main()
