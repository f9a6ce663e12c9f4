"""How a WAL record reaches the page cache: write(2) against a store into
a shared memory map of a preallocated file, alone and beside a thread that
is busy in Python (readwhilewriting's shape: a reader holding the GIL).

    python tools/wal_write_lab.py [DIR] [RECORDS] [SIZE] [ROUNDS]

Both ways leave the same bytes in the page cache, where a killed process
cannot lose them and an fdatasync of the file makes them durable (pages
dirtied through a MAP_SHARED mapping are the file's page cache). The file
is written with zeros and fdatasync'd first, as a spare WAL segment is
(lsm/wal/spare.py), so a store into the map allocates nothing. Per way it
prints the wall and CPU time per record alone, and records per second of
a writer thread beside one thread spinning in Python: write(2) releases
the GIL and must win it back from the spinning thread; a store into the
map never releases it. The two ways alternate over ROUNDS rounds.

docs/benchmarks.md, "Session 10 levers", has the figures. Not an lsm
code path: a measurement for the WAL's next step.
"""

from __future__ import annotations

import mmap
import os
import sys
import threading
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "."
N = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
SIZE = int(sys.argv[3]) if len(sys.argv) > 3 else 152
ROUNDS = int(sys.argv[4]) if len(sys.argv) > 4 else 3


def _prealloc(path: str, size: int) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    page = bytes(4096)
    for _ in range(0, size, 4096):
        os.write(fd, page)
    os.fdatasync(fd)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _writer(way: str, fd: int, mm: mmap.mmap, n: int, rec: bytes, stop: threading.Event | None) -> int:
    done = 0
    if way == "write":
        w = os.write
        for _ in range(n):
            w(fd, rec)
            done += 1
            if stop is not None and stop.is_set():
                break
    else:
        pos, k = 0, len(rec)
        for _ in range(n):
            mm[pos : pos + k] = rec
            pos += k
            done += 1
            if stop is not None and stop.is_set():
                break
    return done


def _one(way: str, busy: bool) -> tuple[float, float]:
    """(wall us per record, CPU us per record) alone; (records/s, 0) beside a busy thread."""
    path = os.path.join(DIR, f"wal_write_lab.{os.getpid()}")
    size = N * SIZE + 4096
    fd = _prealloc(path, size)
    mm = mmap.mmap(fd, size)
    rec = b"r" * SIZE
    try:
        if not busy:
            t0, c0 = time.perf_counter(), time.process_time()
            _writer(way, fd, mm, N, rec, None)
            return (time.perf_counter() - t0) / N * 1e6, (time.process_time() - c0) / N * 1e6
        stop = threading.Event()

        def spin() -> None:
            x = 0
            while not stop.is_set():
                for i in range(1000):
                    x += i

        th = threading.Thread(target=spin, daemon=True)
        th.start()
        t0 = time.perf_counter()
        deadline = t0 + 1.0
        done = 0
        while time.perf_counter() < deadline and done < N:
            done += _writer(way, fd, mm, min(1000, N - done), rec, None)
        rate = done / (time.perf_counter() - t0)
        stop.set()
        th.join()
        return rate, 0.0
    finally:
        mm.close()
        os.close(fd)
        os.remove(path)


def main() -> None:
    res: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for r in range(ROUNDS):
        for way in (("write", "mmap") if r % 2 == 0 else ("mmap", "write")):
            for busy in (False, True):
                res.setdefault((way, busy), []).append(_one(way, busy))
    for way in ("write", "mmap"):
        alone = res[(way, False)]
        beside = res[(way, True)]
        print(f"{way:5s} alone: wall {min(a for a, _ in alone):.3f} us/record, CPU {min(c for _, c in alone):.3f} us/record; "
              f"beside a busy thread: {', '.join(f'{r:,.0f}' for r, _ in beside)} records/s")


if __name__ == "__main__":
    main()
