"""The writer's rate with and without background compaction (issue 7,
target 7: writers keep >= 0.8 of their rate while compaction runs).

A :class:`BgSampler` thread asks the adapter every ``interval`` seconds
whether a compaction is running (``Adapter.background_busy``; lsm:
``stats()["compactions_running"]``). :func:`split_rate` then counts the
writer's completed ops (their end timestamps) in the sample intervals where
a compaction ran at either end and in the others, and divides each by its
time. Both rates come from the same run, so the ratio does not drift with
the machine's load the way two separate runs do. Only engines that report
their background work have these figures.
"""

from __future__ import annotations

import bisect
import itertools
import threading
import time


class BgSampler:
    """Samples ``busy()`` (True/False/None) every ``interval`` seconds until
    :meth:`stop`; ``samples`` is a list of ``(perf_counter_ns, busy)``."""

    def __init__(self, busy, interval: float = 0.05) -> None:
        self._busy = busy
        self._interval = interval
        self._stop = threading.Event()
        self.samples: list[tuple[int, bool]] = []
        self._thread = threading.Thread(target=self._run, name="bench-bg-sampler", daemon=True)

    def start(self) -> BgSampler:
        self._sample()
        self._thread.start()
        return self

    def _sample(self) -> None:
        try:
            b = self._busy()
        except Exception:  # noqa: BLE001 - a closed database ends sampling
            b = None
        if b is not None:
            self.samples.append((time.perf_counter_ns(), bool(b)))

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def stop(self) -> list[tuple[int, bool]]:
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.samples


def split_rate(samples: list[tuple[int, bool]], ends_ns) -> dict | None:
    """Ops per second in the sample intervals with a compaction running (at
    either end of the interval) and in those without; ``ends_ns`` sorted.
    None when there are no samples or no op."""
    if len(samples) < 2 or not len(ends_ns):
        return None
    busy_ops = idle_ops = 0
    busy_ns = idle_ns = 0
    for (t0, b0), (t1, b1) in itertools.pairwise(samples):
        n = bisect.bisect_left(ends_ns, t1) - bisect.bisect_left(ends_ns, t0)
        if b0 or b1:
            busy_ops += n
            busy_ns += t1 - t0
        else:
            idle_ops += n
            idle_ns += t1 - t0
    busy = busy_ops / (busy_ns / 1e9) if busy_ns else None
    idle = idle_ops / (idle_ns / 1e9) if idle_ns else None
    total_ns = busy_ns + idle_ns
    return {
        "writer_rate_compacting": busy,
        "writer_rate_not_compacting": idle,
        "writer_rate_ratio": busy / idle if busy is not None and idle else None,
        "compacting_fraction": busy_ns / total_ns if total_ns else None,
    }
