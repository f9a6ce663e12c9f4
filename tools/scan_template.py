"""Build the database state the harness's readseq meets after fillrandom
and overwrite (issue 7, target 6): --num keys put in random order, then
each overwritten once in another random order (16-byte keys, 100-byte
values of the harness's compressible pool), closed, reopened and
closed again once the background work settles (as the harness reopens
and waits before a read workload). Written as ``DIR/tmpl-N``, the template that
tools/read_callgrind.py and tools/read_bench.py copy and reopen:

    python tools/scan_template.py --num 300000 --dir /tmp/lsm-scan-ow
    python tools/read_bench.py --num 300000 --dir /tmp/lsm-scan-ow --only readseq
    PYTHONHASHSEED=0 valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python tools/read_callgrind.py --num 300000 --dir /tmp/lsm-scan-ow readseq 300000
    python tools/scan_template.py --num 300000 --measure readseq,readreverse [--tree T]
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import time
from itertools import islice

_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if "--tree" in sys.argv:  # another tree's lsm (before/after comparisons)
    _TREE = os.path.abspath(sys.argv[sys.argv.index("--tree") + 1])
sys.path.insert(0, _TREE)

import lsm
from benchmarks import data


def measure(tmpl: str, workloads: list[str]) -> None:
    """CPU time per key of full scans drained as the harness drains them
    (``list(islice(it, 256))`` per chunk), on a copy of the template."""
    work = f"{tmpl}-work-{os.getpid()}"
    shutil.copytree(tmpl, work)
    try:
        with lsm.open(work, sync=lsm.Sync.OFF) as db:
            for w in workloads:
                it = db.items(reverse=w == "readreverse")
                n = 0
                u0, s0 = os.times()[:2]
                w0 = time.perf_counter()
                t0 = time.process_time()
                while True:
                    got = len(list(islice(it, 256)))
                    n += got
                    if got < 256:
                        break
                dt = time.process_time() - t0
                wall = time.perf_counter() - w0
                u1, s1 = os.times()[:2]
                print(f"{w:12s} {n:9d} keys {n / dt:12,.0f} keys/s CPU {dt / n * 1e9:7.0f} ns/key "
                      f"(user {(u1 - u0) / n * 1e9:.0f}, sys {(s1 - s0) / n * 1e9:.0f}, wall {wall / n * 1e9:.0f})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _pending(db: lsm.DB) -> bool:
    s = db.stats()
    return bool(s["compaction_pending"] or s.get("flushes_running") or s.get("immutable_memtables"))


def budget(tmpl: str) -> None:
    """CPU per key scanned by stage, on a copy of the template: the table
    side alone (every table's blocks read, checked, decompressed and cut,
    a stage at a time), the memtable windows, the whole scan, and the
    harness's drain of a ready list; the merge is what the whole scan adds
    to its sources."""
    from lsm.sstable.block import BlockView
    from lsm.sstable.format import BLOCK_TRAILER, unframe_blocks

    try:
        from lsm.sstable.scan import payload_columns
    except ImportError:  # a tree from before payload_columns: a view per block

        def payload_columns(payloads: list, check: bool) -> tuple:
            cols = [BlockView(p, check).columns() for p in payloads]
            return [k for c in cols for k in c[0]], None, None

    work = f"{tmpl}-work-{os.getpid()}"
    shutil.copytree(tmpl, work)
    try:
        with lsm.open(work, sync=lsm.Sync.OFF) as db:
            sv = db._sv
            rs = [sv.readers[f.number] for lv in sv.version.levels for f in lv]
            runs = []
            for r in rs:
                nb = len(r._boffs)
                runs += [(r, a, min(a + 16, nb)) for a in range(0, nb, 16)]
            keys = len(list(db.keys()))
            nent = sum(r.properties.num_entries for r in rs)

            def clock(fn) -> float:  # the best of 3, each result dropped before the next
                best = float("inf")
                for _ in range(3):
                    gc.collect()
                    t0 = time.process_time()
                    fn()
                    best = min(best, time.process_time() - t0)
                return best / keys * 1e9

            def fetch() -> list:
                return [r._file.pread(r._boffs[a], sum(r._bsizes[a:z])) for r, a, z in runs]

            def fetch_only() -> None:
                for r, a, z in runs:
                    r._file.pread(r._boffs[a], sum(r._bsizes[a:z]))

            datas = fetch()
            sizes = [r._bsizes[a:z] for r, a, z in runs]
            t_fetch = clock(fetch_only)
            t_unverified = clock(lambda: [len(unframe_blocks(d, s, False)) for d, s in zip(datas, sizes)])
            t_unframe = clock(lambda: [len(unframe_blocks(d, s, True)) for d, s in zip(datas, sizes)])

            def raw_none() -> None:  # the per-block loop without decompression: crc only
                from lsm.base.checksum import crc

                for d, ss in zip(datas, sizes):
                    mv = memoryview(d)
                    pos = 0
                    for size in ss:
                        BLOCK_TRAILER.unpack_from(d, pos + size - 9)
                        crc(mv[pos : pos + size - 4])
                        pos += size

            t_crc = clock(raw_none)
            payloads = [unframe_blocks(d, s, True) for d, s in zip(datas, sizes)]
            t_cut = clock(lambda: [len(payload_columns(p, False)[0]) for p in payloads])
            t_tables = clock(lambda: [sum(len(c[0]) for c in r.iter_columns()) for r in rs])
            t_mem = clock(lambda: [m.range_columns(None, None) for m in (sv.mem, *sv.imms)])
            t_scan = []
            for _ in range(2):
                it = db.items()
                t0 = time.process_time()
                while len(list(islice(it, 256))) == 256:
                    pass
                t_scan.append((time.process_time() - t0) / keys * 1e9)
            pairs = list(db.items())
            it2 = iter(pairs)
            t0 = time.process_time()
            while len(list(islice(it2, 256))) == 256:
                pass
            t_drain = (time.process_time() - t0) / keys * 1e9
            print(f"{keys} keys, {nent} table entries in {len(rs)} tables, memtable entries {sv.mem.count}; "
                  f"ns per key scanned (CPU):")
            print(f"  pread of 16-block runs         {t_fetch:6.0f}")
            print(f"  trailer + crc32c               {t_crc:6.0f}")
            print(f"  unframe, no crc (trailer, lz4) {t_unverified:6.0f}")
            print(f"  unframe with crc               {t_unframe:6.0f}   (decompress ~ this - crc)")
            print(f"  cut into columns               {t_cut:6.0f}")
            print(f"  iter_columns of every table    {t_tables:6.0f}   (the whole table side)")
            print(f"  memtable window (one)          {t_mem:6.0f}")
            print(f"  whole scan, harness drain      {t_scan[0]:6.0f} {t_scan[1]:6.0f}")
            print(f"  the drain alone (a list)       {t_drain:6.0f}")
            print(f"  merge (scan - tables - mem - drain) {min(t_scan) - t_tables - t_mem - t_drain:6.0f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=300_000)
    ap.add_argument("--dir", default="/tmp/lsm-scan-ow")
    ap.add_argument("--tree", default=_TREE, help="the source tree whose lsm to import")
    ap.add_argument("--measure", default=None, metavar="W,W",
                    help="instead of building: time these scans (readseq, readreverse) on the template")
    ap.add_argument("--no-gc", action="store_true", help="with --measure: the garbage collector disabled")
    ap.add_argument("--budget", action="store_true", help="instead of building: CPU per key by stage")
    a = ap.parse_args()
    n = a.num
    tmpl = os.path.join(a.dir, f"tmpl-{n}")
    if a.budget:
        print(f"lsm from {os.path.dirname(lsm.__file__)}")
        budget(tmpl)
        return
    if a.no_gc:
        gc.disable()
    if a.measure:
        print(f"lsm from {os.path.dirname(lsm.__file__)}" + (" (gc disabled)" if a.no_gc else ""))
        measure(tmpl, a.measure.split(","))
        return
    shutil.rmtree(tmpl, ignore_errors=True)
    os.makedirs(a.dir, exist_ok=True)
    pool = data.value_pool(100, 0.5, 301)
    np = len(pool)
    with lsm.open(tmpl, sync=lsm.Sync.OFF) as db:
        for name in ("fillrandom", "overwrite"):
            keys = data.keys(data.permutation(n, data.seed_for(301, name)), 16)
            put = db.put
            for j, k in enumerate(keys):
                put(k, pool[j % np])
    # The harness closes after overwrite, reopens, and waits (untimed) until
    # no flush or compaction is pending before a read workload.
    with lsm.open(tmpl, sync=lsm.Sync.OFF) as db:
        while _pending(db):
            time.sleep(0.05)
    with lsm.open(tmpl, sync=lsm.Sync.OFF) as db:
        sv = db._sv
        print(f"{tmpl}: files per level {[len(lv) for lv in sv.version.levels]}, memtable entries {sv.mem.count}")


if __name__ == "__main__":
    main()
