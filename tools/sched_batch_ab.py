"""FULL commits from many threads with the committing threads' scheduling
policy SCHED_OTHER (the default) against SCHED_BATCH, alternating in one
process (Linux only).

    python tools/sched_batch_ab.py [--dir DIR] [--threads 8] [--puts 2000] [--rounds 3]

Each round opens a fresh database (defaults: ``sync=FULL``), starts
``--threads`` threads that each make ``--puts`` puts of random 16-byte
keys and 100-byte values, and prints, per setting: commits per second, CPU
microseconds per commit (user and system, the whole process), voluntary and
involuntary context switches per commit (``getrusage``), and commits per
fdatasync. A SCHED_BATCH thread does not preempt the running thread when it
wakes; with group commit, a woken follower otherwise often preempts the
thread holding the GIL, finds the GIL taken and sleeps again (two switches
for nothing). docs/durability.md, "Group commit", has the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import lsm  # noqa: E402


def run(d: str, batch: bool, threads: int, puts: int) -> dict[str, float]:
    shutil.rmtree(d, ignore_errors=True)
    db = lsm.open(d)
    try:
        val = b"v" * 100
        start = threading.Barrier(threads + 1)

        def work(i: int) -> None:
            if batch:
                os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
            rng, put = random.Random(i), db.put
            keys = [rng.randbytes(16) for _ in range(puts)]
            start.wait()
            for k in keys:
                put(k, val)

        ts = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for t in ts:
            t.start()
        s0 = db.stats()
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        start.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        wall = time.perf_counter() - t0
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        s1 = db.stats()
    finally:
        db.close()
        shutil.rmtree(d, ignore_errors=True)
    n = threads * puts
    return {
        "rate": n / wall,
        "user": (r1.ru_utime - r0.ru_utime) / n * 1e6,
        "sys": (r1.ru_stime - r0.ru_stime) / n * 1e6,
        "vcsw": (r1.ru_nvcsw - r0.ru_nvcsw) / n,
        "ivcsw": (r1.ru_nivcsw - r0.ru_nivcsw) / n,
        "group": n / max(1, s1["wal_syncs"] - s0["wal_syncs"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/lsm-sched-ab")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--puts", type=int, default=2000, help="puts per thread")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not hasattr(os, "SCHED_BATCH"):
        raise SystemExit("SCHED_BATCH is Linux only")
    print(f"{'policy':<7} {'commits/s':>10} {'user us':>8} {'sys us':>7} {'vcsw':>5} {'ivcsw':>5} {'group':>6}")
    for _ in range(a.rounds):
        for batch in (False, True):
            r = run(a.dir, batch, a.threads, a.puts)
            print(f"{'BATCH' if batch else 'OTHER':<7} {r['rate']:>10,.0f} {r['user']:>8.1f} {r['sys']:>7.1f} "
                  f"{r['vcsw']:>5.2f} {r['ivcsw']:>5.2f} {r['group']:>6.2f}", flush=True)


if __name__ == "__main__":
    main()
