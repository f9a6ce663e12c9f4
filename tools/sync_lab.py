"""FULL commits from T threads into /dev/shm with a simulated disk sync
(os.fdatasync followed by a sleep), for docs/durability.md "Group commit":
rate, CPU per commit, syncs, commits per sync, context switches.

    python tools/sync_lab.py THREADS COMMITS SYNC_US [TREE]

TREE: import lsm from that checkout (a HEAD worktree). SYNC_LAB_OPTIONS:
integer options for lsm.open, ``name=value,...`` (``commit_linger_us=200``);
SYNC_LAB_DIR: where the database goes (default /dev/shm; a real disk with
SYNC_US 0 measures the disk's own sync). The sleep is
installed before lsm is imported (lsm.base.fs binds os.fdatasync at import).
"""

import os
import resource
import sys
import tempfile
import threading
import time

T, N, SLEEP = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]) / 1e6
if len(sys.argv) > 4:
    sys.path.insert(0, sys.argv[4])
if SLEEP:
    _fdatasync, _sleep = os.fdatasync, time.sleep

    def _slow_fdatasync(fd: int) -> None:
        _fdatasync(fd)
        _sleep(SLEEP)

    os.fdatasync = _slow_fdatasync

import lsm

_dir = os.environ.get("SYNC_LAB_DIR") or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
with tempfile.TemporaryDirectory(dir=_dir) as t:
    opts = dict(kv.split("=", 1) for kv in os.environ.get("SYNC_LAB_OPTIONS", "").split(",") if kv)
    db = lsm.open(t + "/db", sync="full", background="thread", **{k: int(v) for k, v in opts.items()})
    v = b"x" * 100
    for i in range(200):
        db.put(b"w%015d" % i, v)
    st0 = db.stats()
    per = N // T

    def work(tid: int) -> None:
        put = db.put
        for i in range(tid * per, (tid + 1) * per):
            put(b"%016d" % i, v)

    ths = [threading.Thread(target=work, args=(i,)) for i in range(T)]
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0, w0 = time.process_time(), time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    w, c = time.perf_counter() - w0, time.process_time() - c0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    st = db.stats()
    n = per * T
    syncs = st["wal_syncs"] - st0["wal_syncs"]
    groups = max(st["wal_groups"] - st0["wal_groups"], 1)
    print(f"threads {T}, sync +{SLEEP * 1e6:.0f} us: {n / w:,.0f}/s, cpu {c / n * 1e6:.1f} us/commit, syncs {syncs}, "
          f"commits/sync {(st['wal_synced_commits'] - st0['wal_synced_commits']) / groups:.2f}, "
          f"voluntary cs/commit {(r1.ru_nvcsw - r0.ru_nvcsw) / n:.2f}, involuntary {(r1.ru_nivcsw - r0.ru_nivcsw) / n:.2f}, "
          f"user {(r1.ru_utime - r0.ru_utime) / n * 1e6:.1f} us/commit, sys {(r1.ru_stime - r0.ru_stime) / n * 1e6:.1f}")
    hist = {k: v - st0["group_commit_histogram"][k] for k, v in st["group_commit_histogram"].items()}
    print(f"  groups by size (upper bound: count) {', '.join(f'{k}: {v}' for k, v in hist.items() if v)}; "
          f"linger {(st['wal_linger_seconds'] - st0['wal_linger_seconds']) / syncs * 1e6:.0f} us/sync, "
          f"sync p50 {st['wal_sync_latency']['p50'] * 1e6:.0f} us")
    db.close()
