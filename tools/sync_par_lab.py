"""Concurrent fdatasyncs on one file, and what they would give a FULL put,
for issue 7's target 2 (docs/benchmarks.md, "Session 14").

    python tools/sync_par_lab.py raw [DIR] [SECONDS]
    python tools/sync_par_lab.py lsm [DIR] [THREADS] [PUTS]

``raw``: T threads (1, 2, 4, 8), each with its own descriptor of one
preallocated file (zeros written and synced first), each writing 160-byte
records into its own region with pwrite(2) and fdatasync'ing after each;
prints the syncs per second of all threads together, three rounds. Shows
whether the disk overlaps concurrent syncs (a group commit with one sync
at a time leaves that unused).

``lsm``: THREADS threads putting PUTS 16-byte keys with 100-byte values
into a fresh database, alternating two ways: ``full`` (each put at
Sync.FULL: group commit, one sync at a time) and ``own`` (each put at
Sync.OFF, then an fdatasync of the live WAL segment on the thread's own
descriptor: no grouping, concurrent syncs; a model, not a safe commit
path). Prints puts/s, CPU per put and the WAL's sync and group counts.
DIR defaults to the current directory (must not be tmpfs).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable


def _in_threads(n: int, work: Callable[[int], None]) -> None:
    """Run ``work(0)`` .. ``work(n - 1)`` in n threads; return when all end."""
    ths = [threading.Thread(target=work, args=(t,)) for t in range(n)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()


def raw(d: str, secs: float) -> None:
    path = os.path.join(d, "sync_par_lab.tmp")
    size = 64 << 20
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        z = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            os.write(fd, z)
        os.fsync(fd)

        def run(nthreads: int) -> float:
            counts = [0] * nthreads
            stop = time.perf_counter() + secs

            def work(t: int) -> None:
                f = os.open(path, os.O_RDWR)
                off, rec, c = t * (size // nthreads), b"x" * 160, 0
                while time.perf_counter() < stop:
                    os.pwrite(f, rec, off)
                    os.fdatasync(f)
                    off += 160
                    c += 1
                counts[t] = c
                os.close(f)

            _in_threads(nthreads, work)
            return sum(counts) / secs

        for rnd in range(3):
            print(f"round {rnd}: " + ", ".join(f"{n} threads {run(n):,.0f} syncs/s" for n in (1, 2, 4, 8)))
    finally:
        os.close(fd)
        os.unlink(path)


def one(d: str, mode: str, threads: int, puts: int) -> None:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import lsm

    path = os.path.join(d, "sync_par_lab.db")
    shutil.rmtree(path, ignore_errors=True)
    db = lsm.open(path)
    val, wal = b"v" * 100, db._wal

    def work(t: int) -> None:
        fd, seg, put = -1, None, db.put
        for i in range(t, puts, threads):
            if mode == "full":
                put(b"%016d" % i, val)
                continue
            put(b"%016d" % i, val, sync=lsm.Sync.OFF)
            p = wal._file.path
            if p != seg:
                if fd >= 0:
                    os.close(fd)
                fd, seg = os.open(p, os.O_RDWR), p
            os.fdatasync(fd)
        if fd >= 0:
            os.close(fd)

    c0, t0 = time.process_time(), time.perf_counter()
    _in_threads(threads, work)
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    st = db.stats()
    print(f"{mode:4s} {threads} threads: {puts / dt:,.0f} puts/s, CPU {cpu / puts * 1e6:.1f} us/put, "
          f"wal_syncs {st['wal_syncs']}, groups {st['wal_groups']}")
    db.close()
    shutil.rmtree(path)


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "raw"
    d = sys.argv[2] if len(sys.argv) > 2 else "."
    if mode == "raw":
        raw(d, float(sys.argv[3]) if len(sys.argv) > 3 else 2.0)
    elif mode == "lsm":
        threads = int(sys.argv[3]) if len(sys.argv) > 3 else 8
        puts = int(sys.argv[4]) if len(sys.argv) > 4 else 20000
        for _ in range(2):
            for m in ("full", "own"):
                one(d, m, threads, puts)
    else:
        raise SystemExit(f"mode: raw or lsm, got {mode!r}")


if __name__ == "__main__":
    main()
