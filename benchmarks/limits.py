"""The physical limits of the disk under a directory, the ceiling that no
engine's synced writes can beat:

* ``append+fdatasync``: append 128 bytes to a new file, fdatasync, repeat.
  Each sync also commits the file-size change (metadata) to the journal.
  This is what a WAL at ``Sync.FULL`` pays per commit, without group commit.
* ``prealloc+fdatasync``: the same 128-byte writes into a file that was
  zero-filled and synced beforehand, so a sync carries no metadata: the
  best a WAL that preallocates its segments can reach.
* ``seqwrite``: sequential 1 MiB writes and one fdatasync at the end;
  the streaming bandwidth that flush and compaction draw on.

The sync measurements stop after ``count`` ops or ``max_seconds``,
whichever comes first; ops and seconds say which.
"""

from __future__ import annotations

import os
import time

from benchmarks.measure import Recorder, current_rss_mb, latency_summary, timeline

RECORD = 128
CHUNK = 1 << 20
MiB = 1 << 20


def _sync_loop(fd: int, count: int, max_seconds: float, positional: bool) -> tuple[Recorder, int, int, int]:
    rec = Recorder(count)
    lat, ends = rec.lat, rec.ends
    payload = b"\xa5" * RECORD
    pc, write, pwrite, fdatasync = time.perf_counter_ns, os.write, os.pwrite, os.fdatasync
    deadline = pc() + int(max_seconds * 1e9)
    start = pc()
    i = 0
    while i < count:
        t0 = pc()
        if positional:
            pwrite(fd, payload, i * RECORD)
        else:
            write(fd, payload)
        fdatasync(fd)
        t1 = pc()
        lat[i] = t1 - t0
        ends[i] = t1
        i += 1
        if t1 > deadline:
            break
    return rec, i, start, pc()


def append_fdatasync(directory: str, count: int, max_seconds: float):
    path = os.path.join(directory, "limits-append.tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        return _sync_loop(fd, count, max_seconds, positional=False)
    finally:
        os.close(fd)
        os.unlink(path)


def prealloc_fdatasync(directory: str, count: int, max_seconds: float):
    path = os.path.join(directory, "limits-prealloc.tmp")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        size = count * RECORD
        zeros = bytes(min(size, CHUNK)) or b"\0"
        written = 0
        while written < size:
            written += os.write(fd, zeros[: size - written])
        os.fsync(fd)
        return _sync_loop(fd, count, max_seconds, positional=True)
    finally:
        os.close(fd)
        os.unlink(path)


def seqwrite(directory: str, total_bytes: int):
    """Write ``total_bytes`` in 1 MiB chunks, fdatasync once; latency is per
    chunk (the last one includes the fdatasync)."""
    chunks = max(1, total_bytes // CHUNK)
    rec = Recorder(chunks)
    lat, ends = rec.lat, rec.ends
    path = os.path.join(directory, "limits-seq.tmp")
    buf = os.urandom(CHUNK)
    pc = time.perf_counter_ns
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        start = pc()
        for i in range(chunks):
            t0 = pc()
            os.write(fd, buf)
            if i == chunks - 1:
                os.fdatasync(fd)
            t1 = pc()
            lat[i] = t1 - t0
            ends[i] = t1
        stop = pc()
    finally:
        os.close(fd)
        os.unlink(path)
    return rec, chunks, start, stop


def records(directory: str, cfg, label: str) -> list[dict]:
    """The three measurements as result records of engine ``label``.
    ``cfg`` is a ``workloads.Config``: the synced ones run min(num,
    sync_num) ops, seqwrite writes num key+value bytes (8 to 256 MiB)."""
    n = max(1, min(cfg.num, cfg.sync_num))
    seq_bytes = min(256 * MiB, max(8 * MiB, cfg.num * cfg.entry_bytes))
    runs = [
        (
            "limits.append_fdatasync",
            append_fdatasync(directory, n, cfg.limits_seconds),
            RECORD,
            "128-byte append + fdatasync",
        ),
        (
            "limits.prealloc_fdatasync",
            prealloc_fdatasync(directory, n, cfg.limits_seconds),
            RECORD,
            "128-byte write into a zero-filled file + fdatasync",
        ),
        (
            "limits.seqwrite",
            seqwrite(directory, seq_bytes),
            CHUNK,
            "1 MiB sequential writes, one fdatasync at the end",
        ),
    ]
    out = []
    for workload, (rec, ops, start, stop), size, what in runs:
        seconds = max((stop - start) / 1e9, 1e-9)
        lat, ends = rec.compact([(0, ops)])
        summary = latency_summary(lat)
        out.append(
            {
                "engine": label,
                "workload": workload,
                "ops": ops,
                "seconds": seconds,
                "ops_per_sec": ops / seconds,
                "micros_per_op": seconds * 1e6 / ops,
                "mb_per_sec": ops * size / MiB / seconds,
                "latency_us": summary["latency_us"],
                "rss_peak_mb": round(current_rss_mb(), 1),
                "extra": {
                    "what": what,
                    "directory": directory,
                    "latency_unit": "write" if size == CHUNK else "write+fdatasync",
                    "latency_cdf_us": summary["cdf"],
                    "timeline_interval_ms": 100,
                    "timeline_ops": timeline(ends, start, stop),
                    "ops_requested": n if size == RECORD else ops,
                },
            }
        )
    return out
