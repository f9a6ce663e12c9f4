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
from array import array
from itertools import chain, islice

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


SCAN_CHUNK = 256
"""Entries a scan takes per timed chunk (:func:`scan_range`)."""


def scan_range(it, limit, rec, progress):
    """Drain ``it`` up to ``limit`` entries; return (entries, bytes).

    Timed per chunk of ``SCAN_CHUNK`` entries, as db_bench times a scan:
    the entries are counted one by one (ops = entries), and each entry of a
    chunk is given the chunk's average latency and end time. The chunk is
    taken by ``list(islice(it, SCAN_CHUNK))``, so the engine's iterator is
    advanced from C with no Python frame or clock read per entry (timing
    each ``next()`` cost ~0.45 us per entry, as much as some engines' scan
    itself); the bytes are summed after the clock stops."""
    pc, lat, ends = time.perf_counter_ns, rec.lat, rec.ends
    n = nbytes = 0
    while n < limit:
        j = min(n + PROGRESS_CHUNK, limit)
        start = n
        while n < j:
            size = min(SCAN_CHUNK, j - n)
            t0 = pc()
            chunk = list(islice(it, size))
            t1 = pc()
            got = len(chunk)
            if not got:
                break
            lat[n : n + got] = array("q", [(t1 - t0) // got]) * got
            ends[n : n + got] = array("q", [t1]) * got
            nbytes += sum(map(len, chain.from_iterable(chunk)))
            n += got
            if got < size:
                break
        progress.update(n - start)
        if n < j:
            break
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
