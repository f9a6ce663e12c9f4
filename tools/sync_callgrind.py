"""Driver for the FULL-commit instruction counts in docs/durability.md,
"Group commit" (the commit path's own CPU): 2,000 warm-up FULL puts, then
N single-thread FULL puts (16-byte keys, 100-byte values) into a database
on /dev/shm (tmpfs: the fdatasync costs next to nothing, so the count is
the commit path's user-space work).

    PYTHONHASHSEED=0 valgrind --tool=callgrind python tools/sync_callgrind.py N [TREE]

for N = 2000 and N = 0; (instructions of the first - of the second) / N
is the cost per put. TREE: import lsm from that checkout (a HEAD worktree)
instead of the installed one. Use the real interpreter (``python -c
'import sys; print(sys.executable)'``), not a pyenv shim.
"""

import os
import random
import shutil
import sys
import tempfile

if len(sys.argv) > 2:
    sys.path.insert(0, sys.argv[2])

import lsm

n = int(sys.argv[1])
rng = random.Random(1)
keys = [b"%016d" % i for i in range(4000)]
rng.shuffle(keys)
val = bytes(rng.randrange(256) for _ in range(100))
d = tempfile.mkdtemp(dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
db = lsm.open(d, sync=lsm.Sync.FULL, memtable_size=1 << 30, wal_segment_size=1 << 30, background="inline",
              wal_preallocate=False)
put = db.put
for k in keys[2000:]:
    put(k, val)
for k in keys[:n]:
    put(k, val)
db.close()
shutil.rmtree(d)
