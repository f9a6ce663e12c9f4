"""Driver for the put-path instruction counts in docs/benchmarks.md, "Write
path profile": 10,000 warm-up puts, then N puts (or N/1000 batches of
1000) of shuffled 16-byte keys and 100-byte values, no flush.

    PYTHONHASHSEED=0 valgrind --tool=callgrind python tools/put_callgrind.py MODE N

for N = 10000 and N = 0; (instructions of the first - of the second) / N
is the cost per op. Give valgrind the interpreter itself, not a pyenv
shim (a shell script: valgrind would count the shell and nothing else):
``$(python -c 'import sys; print(sys.executable)')``; for a worktree, set
``PYTHONPATH`` to it so that it imports its own ``lsm``.

MODE: ``put`` (``functools.partial(db.put, sync=Sync.OFF)``, the
harness's old shape), ``putb`` (the bound ``db.put``, the harness's shape
now), ``batch`` (``with db.batch() as b``).
"""

import functools
import os
import random
import sys
import tempfile

import lsm

mode, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
keys = [b"%016d" % i for i in range(20000)]
rng.shuffle(keys)
val = bytes(rng.randrange(256) for _ in range(100))
d = tempfile.mkdtemp()
db = lsm.open(d, sync=lsm.Sync.OFF, memtable_size=1 << 30, wal_segment_size=1 << 30, background="inline",
              wal_preallocate=False)
put = functools.partial(db.put, sync=lsm.Sync.OFF)
for k in keys[10000:]:
    put(k, val)
ks = keys[:n]
if mode == "put":
    for k in ks:
        put(k, val)
elif mode == "putb":
    p = db.put
    for k in ks:
        p(k, val)
elif mode == "batch":
    for b in range(0, n, 1000):
        with db.batch(sync=lsm.Sync.OFF) as bb:
            p = bb.put
            for k in ks[b : b + 1000]:
                p(k, val)
else:
    raise SystemExit(f"unknown mode {mode!r}")
os._exit(0)  # no close: the counts cover the loop, not the shutdown
