"""The timed loops of the workloads: per-op latency into a ``Recorder``,
progress once per chunk, and threads started together.

Each loop keeps work out of the measured region: the key is fetched and the
value made before ``t0``; the result is inspected after ``t1``. Locals
alias the callables (``pc``, ``lat``, ``ends``): attribute look-ups per op
would be measured too.
"""

from __future__ import annotations

import threading
import time

from benchmarks.measure import PROGRESS_CHUNK


def put_range(put, keys, nextv, lo, hi, rec, progress):
    pc, lat, ends = time.perf_counter_ns, rec.lat, rec.ends
    i = lo
    while i < hi:
        j = min(i + PROGRESS_CHUNK, hi)
        for idx in range(i, j):
            k = keys[idx]
            v = nextv()
            t0 = pc()
            put(k, v)
            t1 = pc()
            lat[idx] = t1 - t0
            ends[idx] = t1
        progress.update(j - i)
        i = j


def unary_range(op, keys, lo, hi, rec, progress):
    """Time ``op(key)`` for keys[lo:hi]; return (number of non-None
    results, their summed len(), or their sum when they are ints)."""
    pc, lat, ends = time.perf_counter_ns, rec.lat, rec.ends
    found = total = 0
    i = lo
    while i < hi:
        j = min(i + PROGRESS_CHUNK, hi)
        for idx in range(i, j):
            k = keys[idx]
            t0 = pc()
            r = op(k)
            t1 = pc()
            lat[idx] = t1 - t0
            ends[idx] = t1
            if r is not None:
                found += 1
                total += r if isinstance(r, int) else len(r)
        progress.update(j - i)
        i = j
    return found, total


def void_range(op, keys, lo, hi, rec, progress):
    """Time ``op(key)`` for keys[lo:hi], ignoring results."""
    pc, lat, ends = time.perf_counter_ns, rec.lat, rec.ends
    i = lo
    while i < hi:
        j = min(i + PROGRESS_CHUNK, hi)
        for idx in range(i, j):
            k = keys[idx]
            t0 = pc()
            op(k)
            t1 = pc()
            lat[idx] = t1 - t0
            ends[idx] = t1
        progress.update(j - i)
        i = j


def scan_range(it, limit, rec, progress):
    """Time each ``next(it)`` up to ``limit`` entries; return (entries, bytes)."""
    pc, lat, ends, nxt = time.perf_counter_ns, rec.lat, rec.ends, it.__next__
    n = nbytes = 0
    done = False
    while n < limit and not done:
        j = min(n + PROGRESS_CHUNK, limit)
        start = n
        for idx in range(n, j):
            t0 = pc()
            try:
                k, v = nxt()
            except StopIteration:
                done = True
                break
            t1 = pc()
            lat[idx] = t1 - t0
            ends[idx] = t1
            nbytes += len(k) + len(v)
            n = idx + 1
        progress.update(n - start)
    return n, nbytes


def parallel(n_threads: int, target) -> tuple[int, int]:
    """Run ``target(tid)`` in n_threads threads started together; return the
    (start, stop) perf_counter_ns of the whole. Re-raises a thread's error."""
    barrier = threading.Barrier(n_threads + 1)
    errors: list[BaseException] = []

    def run(tid):
        barrier.wait()
        try:
            target(tid)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(n_threads)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter_ns()
    for t in threads:
        t.join()
    stop = time.perf_counter_ns()
    if errors:
        raise errors[0]
    return start, stop


def split(n: int, parts: int) -> list[tuple[int, int]]:
    return [(n * p // parts, n * (p + 1) // parts) for p in range(parts)]
