"""Timing, percentiles, memory and I/O figures of one workload.

Per-op latency is taken with two ``time.perf_counter_ns`` calls around the
operation and stored in a preallocated ``array('q')`` (no allocation per
op); the end time of each op goes into a second array, from which the
throughput timeline (ops per 100 ms) is built afterwards. Threads write
disjoint index ranges of the same arrays.

Percentiles use the nearest-rank method on the sorted latencies: p99 is a
latency that 99% of the ops did not exceed. Means hide tails; we report
p50, p99, p99.9 and max.

Peak RSS: writing ``5`` to ``/proc/self/clear_refs`` resets the kernel's
high-water mark (VmHWM), so each workload gets its own peak. Where that is
not allowed, ``ru_maxrss`` is used, which is cumulative over the process
(the figure then is the peak so far, and ``rss_method`` says so).
"""

from __future__ import annotations

import bisect
import math
import os
import resource
import sys
import time
from array import array

TIMELINE_INTERVAL_NS = 100_000_000
"""Width of one bucket of the throughput timeline (100 ms)."""

CDF_POINTS = tuple(range(100)) + (99.5, 99.9, 99.95, 99.99, 100.0)
"""Percentiles stored for the latency distribution plot."""

PROGRESS_CHUNK = 4096
"""Ops between progress-bar updates: loops run in chunks of this many ops,
so the bar costs nothing per op."""


class Recorder:
    """Preallocated per-op latency and end-time arrays for ``capacity`` ops.
    Not locked: each thread writes its own index range."""

    __slots__ = ("capacity", "ends", "lat")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        zeros = bytes(8 * capacity)
        self.lat = array("q", zeros)
        self.ends = array("q", zeros)

    def compact(self, ranges: list[tuple[int, int]]) -> tuple[array, array]:
        """The recorded (lat, ends) of the given [lo, hi) index ranges."""
        if len(ranges) == 1 and ranges[0] == (0, self.capacity):
            return self.lat, self.ends
        lat, ends = array("q"), array("q")
        for lo, hi in ranges:
            lat.extend(self.lat[lo:hi])
            ends.extend(self.ends[lo:hi])
        return lat, ends


def percentile(sorted_values, pct: float) -> float:
    """Nearest-rank percentile of an ascending sequence (0 if empty)."""
    n = len(sorted_values)
    if n == 0:
        return 0.0
    rank = max(1, math.ceil(pct / 100.0 * n))
    return float(sorted_values[min(rank, n) - 1])


def latency_summary(lat_ns) -> dict:
    """``latency_us`` (p50, p99, p999, max) and the CDF points, in
    microseconds, of a sequence of nanosecond latencies."""
    ordered = sorted(lat_ns)
    us = 1000.0
    summary = {
        "p50": percentile(ordered, 50) / us,
        "p99": percentile(ordered, 99) / us,
        "p999": percentile(ordered, 99.9) / us,
        "max": (float(ordered[-1]) if ordered else 0.0) / us,
    }
    cdf = [[p, percentile(ordered, p) / us] for p in CDF_POINTS]
    return {"latency_us": summary, "cdf": cdf}


def timeline(ends_ns, start_ns: int, stop_ns: int) -> list[int]:
    """Ops completed in each TIMELINE_INTERVAL_NS bucket from start to stop."""
    ordered = sorted(ends_ns)
    buckets = max(1, -(-(stop_ns - start_ns) // TIMELINE_INTERVAL_NS))
    counts, prev = [], 0
    for b in range(1, buckets + 1):
        pos = bisect.bisect_right(ordered, start_ns + b * TIMELINE_INTERVAL_NS)
        counts.append(pos - prev)
        prev = pos
    if prev < len(ordered):
        counts[-1] += len(ordered) - prev
    return counts


# ------------------------------------------------------------------ memory


def _children_pids() -> list[int]:
    """Pids of this process's direct children (e.g. lsm's background worker)."""
    me, pids = os.getpid(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return pids
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Field 4 (ppid) follows the parenthesised command name.
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == me:
            pids.append(int(name))
    return pids


def _status_kb(pid: int | str, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def reset_peak_rss() -> str:
    """Reset the RSS high-water mark of this process (and, best effort, of
    its children); return the method ``peak_rss_mb`` must use."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return "ru_maxrss (cumulative over the process)"
    for pid in _children_pids():
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    return "VmHWM (reset per workload)"


def peak_rss_mb(method: str) -> tuple[float, float]:
    """(peak RSS of this process, sum of the peaks of its live children) in
    MiB since the last reset (or since start, for ru_maxrss)."""
    own = None
    if method.startswith("VmHWM"):
        own = _status_kb("self", "VmHWM")
    if own is None:
        own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = sum(_status_kb(pid, "VmHWM") or 0 for pid in _children_pids())
    return own / 1024.0, children / 1024.0


def current_rss_mb() -> float:
    kb = _status_kb("self", "VmRSS")
    return (kb or 0) / 1024.0


# --------------------------------------------------------------------- CPU

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds() -> tuple[float, float]:
    """(CPU seconds of this process, every thread, user + system; CPU
    seconds of its live children, e.g. lsm's flush and compaction worker
    processes), cumulative. Taken around a timed region, the difference is
    what the engine burned there: a rate that fell while CPU per op held
    means the process waited (for the CPU, the disk, a lock), not that the
    engine got slower. Children are read from /proc/PID/stat in clock
    ticks (10 ms), so their figure is coarse; a child that exits inside the
    region is missed."""
    own = time.process_time()
    ticks = 0
    for pid in _children_pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return own, ticks / _CLK_TCK


# --------------------------------------------------------------------- I/O


def io_write_bytes() -> int | None:
    """Bytes this process and its live children caused to be written to
    storage (``write_bytes`` of /proc/PID/io: pages dirtied, counted once
    per dirtying). None where /proc/PID/io is unreadable."""
    total, seen = 0, False
    for pid in ["self", *_children_pids()]:
        try:
            with open(f"/proc/{pid}/io") as f:
                for line in f:
                    if line.startswith("write_bytes:"):
                        total += int(line.split()[1])
                        seen = True
        except (OSError, ValueError):
            continue
    return total if seen else None


def dir_bytes(*paths: str | None) -> int:
    """Bytes allocated on disk (st_blocks, so sparse files count what they
    use) by the files under the given directories."""
    total, seen = 0, set()
    for root in paths:
        if not root or not os.path.isdir(root):
            continue
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                try:
                    st = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


# ---------------------------------------------------------------- progress


class Progress:
    """A tqdm bar on stderr when it is a terminal and ``enabled``; otherwise
    a no-op. ``update`` is called once per PROGRESS_CHUNK ops."""

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self._bar = None
        if enabled and total >= PROGRESS_CHUNK and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(
                total=total,
                desc=desc,
                unit="op",
                file=sys.stderr,
                leave=False,
                mininterval=0.5,
                dynamic_ncols=True,
            )

    def update(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
