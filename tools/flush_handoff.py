"""Driver for the flush hand-off's cost (docs/architecture.md, "Background
work"): a memtable of N entries (16-byte keys, 100-byte values compressible
to 0.5, batches of 1000 as fillbatch writes them; ``--shuffle`` for random
key order), then 3 repetitions of one side of a flush to a process worker:

* ``parent``: pickling the flush job (``MemTable.frozen()`` inside) as the
  worker pool does (protocol 5, the columns as an out-of-band buffer),
  the writers' process's share;
* ``worker``: unpickling it and running the flush job (``run_job``: table
  built, compressed (``--compression``, default lz4), bloom, fsync), the
  worker's share;
* ``none``: the set-up only (subtract it).

Instruction counts (load-independent)::

    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        $(python -c 'import sys; print(sys.executable)') tools/flush_handoff.py MODE

(instructions of MODE - of ``none``) / (3 N) is the cost per entry. Give
valgrind the interpreter itself, not a pyenv shim; for a worktree, set
``PYTHONPATH`` to it. ``--time`` prints CPU seconds per entry instead
(``time.process_time``; noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import pickle
import random
import tempfile
import time

from lsm.base.compression import NAMES
from lsm.base.fs import FileSystem
from lsm.compaction.runner import FlushJob, TableOptions, run_job
from lsm.memtable import MemTable

REPS = 3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("mode", choices=("none", "parent", "worker"))
    ap.add_argument("--num", type=int, default=63000, help="entries (default: an 8 MiB memtable's worth)")
    ap.add_argument("--shuffle", action="store_true", help="keys in random order")
    ap.add_argument("--time", action="store_true", help="print CPU time per entry")
    ap.add_argument("--compression", choices=("none", "zstd", "lz4"), default="lz4", help="block codec")
    a = ap.parse_args()
    n = a.num
    rng = random.Random(1)
    half = rng.randbytes(50)
    keys = [b"%016d" % i for i in range(n)]
    if a.shuffle:
        rng.shuffle(keys)
    values = [rng.randbytes(50) + half for _ in range(n)]
    m = MemTable()
    for s in range(0, n, 1000):
        k, v = keys[s : s + 1000], values[s : s + 1000]
        m.add_batch(s + 1, k, v, None, sum(map(len, k)) + sum(map(len, v)))
    table = TableOptions(block_size=4096, bloom_bits_per_key=10, compression=NAMES[a.compression], compression_level=1,
                         target_file_size=4 << 20)
    job = FlushJob(dbdir=tempfile.mkdtemp(prefix="flush-handoff-"), file_number=1, table=table, snapshots=[],
                   start_seq=0, end_seq=n)
    job.entries = m.frozen()  # type: ignore[assignment]
    job.range_dels = []
    bufs: list[pickle.PickleBuffer] = []
    data = pickle.dumps(job, 5, buffer_callback=bufs.append)
    raws = [bytes(b.raw()) for b in bufs]  # as the worker reads them from its pipe
    del bufs
    fs = FileSystem()
    c0 = time.process_time()
    for i in range(REPS):
        if a.mode == "parent":
            pickle.dumps(job, 5, buffer_callback=[].append)
        elif a.mode == "worker":
            j = pickle.loads(data, buffers=raws)
            j.file_number = 10 + i
            run_job(j, fs)
    if a.time:
        print(f"{a.mode}: {(time.process_time() - c0) / REPS / n * 1e6:.3f} us CPU per entry "
              f"({(len(data) + sum(map(len, raws))) / n:.1f} pickled bytes per entry)")


if __name__ == "__main__":
    main()
