"""Driver for the group-commit instruction counts (issue 7, target 2): T
threads make FULL puts (16-byte keys, 100-byte values) into a database on
/dev/shm, whose fdatasync is followed by a sleep of SYNC_US (so groups
form, as on a disk), 500 warm-up puts first.

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=F \
        python tools/group_callgrind.py T N SYNC_US [TREE]

for N = 8000 and N = 0; (instructions of the first - of the second) / N
is the cost per commit, every thread together (leader's share included).
With full groups (commits per sync about T, printed), cost(T) = f + l / T:
runs at T = 1, 2, 4, 8 give the follower's cost per commit f (the put,
its wait and wake-up) and the leader's extra per group l (forming the
group, the write, the sync call, publishing). Use the real interpreter
(``python -c 'import sys; print(sys.executable)'``), not a pyenv shim.
TREE: import lsm from that checkout (a HEAD worktree).
"""

import os
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

    os.fdatasync = _slow_fdatasync  # before lsm.base.fs binds it

import lsm

d = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
db = lsm.open(d, sync=lsm.Sync.FULL, memtable_size=1 << 30, wal_segment_size=1 << 30, background="inline",
              wal_preallocate=False)
v = b"x" * 100
for i in range(500):
    db.put(b"w%015d" % i, v)
st0 = db.stats()
per = N // T


def work(tid: int) -> None:
    put = db.put
    for i in range(tid * per, (tid + 1) * per):
        put(b"%016d" % i, v)


ths = [threading.Thread(target=work, args=(i,)) for i in range(T)]
for th in ths:
    th.start()
for th in ths:
    th.join()
st = db.stats()
groups = max(st["wal_groups"] - st0["wal_groups"], 1)
print(f"threads {T}, commits {per * T}, syncs {st['wal_syncs'] - st0['wal_syncs']}, "
      f"commits/sync {(st['wal_synced_commits'] - st0['wal_synced_commits']) / groups:.2f}", file=sys.stderr)
os._exit(0)  # no close: the counts cover the puts (and the threads' start)
