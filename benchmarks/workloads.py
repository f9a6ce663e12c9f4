"""The workloads, run one after another against one adapter.

Workloads that start from an empty database (``FRESH``) destroy it first;
read workloads (``REOPEN``) close and reopen it first, so they read what
the previous fill left from disk and the engine's recovery path, not its
write-side caches. The others continue on the open database.

Every timed loop keeps Python work out of the measured region: keys are
generated before the clock starts, values come from a cycled pool, and
the progress bar is updated once per chunk of ops.

``State`` follows which keys are present (a bytearray, one byte per key
index), so each read workload knows how many keys it should find and
reports a mismatch as a note: a benchmark that silently reads nothing
would be fast and wrong.
"""

from __future__ import annotations

import itertools
import threading
import time
from array import array
from dataclasses import dataclass, field

from benchmarks import data, loops
from benchmarks.bgsample import BgSampler, split_rate
from benchmarks.engines import Adapter, Unsupported
from benchmarks.figures import cpu_figures, lsm_figures
from benchmarks.measure import (
    Progress,
    Recorder,
    cpu_seconds,
    current_rss_mb,
    io_write_bytes,
    latency_summary,
    peak_rss_mb,
    reset_peak_rss,
    timeline,
)

MiB = 1 << 20

FRESH = frozenset({"fillseq", "fillrandom", "fillbatch", "fillsync", "fillsync_threads", "ingest"})
REOPEN = frozenset({"readrandom", "readmissing", "readseq", "readreverse", "seekrandom", "readwhilewriting"})
NEEDS_DATA = REOPEN | {"overwrite", "deleterandom", "compact"}
SYNCED = frozenset({"fillsync", "fillsync_threads"})
SETTLE = frozenset({"fillseq", "fillrandom", "fillbatch", "overwrite", "deleterandom", "readwhilewriting"})
"""Workloads after which ``--settle`` waits for lsm's background work."""
SETTLE_TIMEOUT = 600.0


@dataclass
class Config:
    """The plan's parameters (see ``cli`` for their meaning)."""

    num: int = 100_000
    key_size: int = 16
    value_size: int = 100
    compressible_ratio: float = 0.5
    threads: int = 8
    batch_size: int = 1000
    sync: str = "full"
    sync_num: int = 10_000
    seed: int = 301
    seek_count: int = 10
    progress: bool = True
    limits_seconds: float = 10.0
    settle: bool = False
    read_settle: bool = True

    @property
    def entry_bytes(self) -> int:
        return self.key_size + self.value_size


@dataclass
class State:
    """What the database holds: key index i is present iff present[i]."""

    present: bytearray = field(default_factory=bytearray)

    @property
    def key_count(self) -> int:
        return len(self.present)

    def live(self) -> int:
        return self.present.count(1)

    def filled(self, n: int) -> None:
        self.present = bytearray(b"\x01") * n

    def expected_found(self, indices) -> int:
        p = self.present
        return sum(p[i] for i in indices) if p else 0


@dataclass
class Outcome:
    """What a workload's timed part produced."""

    ops: int
    start_ns: int
    stop_ns: int
    rec: Recorder
    ranges: list
    nbytes: int
    user_bytes: int = 0
    unit: str = "op"
    extra: dict = field(default_factory=dict)
    cpu: tuple[float, float] | None = None
    """CPU seconds over the timed part: (this process, its children);
    ``cpu_seconds()`` after the clock stops minus before it starts."""


def _cpu_since(before: tuple[float, float]) -> tuple[float, float]:
    own, children = cpu_seconds()
    return own - before[0], children - before[1]


# --------------------------------------------------------------- workloads


class Runner:
    """Runs workloads in order against one adapter, carrying ``State``."""

    def __init__(self, adapter: Adapter, cfg: Config, notes: list[str]) -> None:
        self.db = adapter
        self.cfg = cfg
        self.notes = notes
        self.state = State()
        self.last_fill = "the load"
        self.pool = data.value_pool(cfg.value_size, cfg.compressible_ratio, data.seed_for(cfg.seed, "values"))

    def _values(self):
        return itertools.cycle(self.pool).__next__

    def _keys(self, indices) -> list[bytes]:
        return data.keys(indices, self.cfg.key_size)

    def _seed(self, name: str) -> int:
        return data.seed_for(self.cfg.seed, name)

    def _progress(self, total: int, name: str) -> Progress:
        return Progress(total, f"{self.db.name} {name}", self.cfg.progress)

    # -- writes, one thread
    def _fill(self, name: str, indices: list[int], level: str) -> Outcome:
        n = len(indices)
        keys = self._keys(indices)
        rec, put, nextv = Recorder(n), self.db.putter(level), self._values()
        progress = self._progress(n, name)
        sampler = self._sampler()
        cpu0 = cpu_seconds()
        start = time.perf_counter_ns()
        loops.put_range(put, keys, nextv, 0, n, rec, progress)
        stop = time.perf_counter_ns()
        cpu = _cpu_since(cpu0)
        progress.close()
        b = n * self.cfg.entry_bytes
        extra = {}
        if sampler is not None:
            extra = split_rate(sampler.stop(), rec.ends) or {}
        return Outcome(n, start, stop, rec, [(0, n)], b, user_bytes=b, extra=extra, cpu=cpu)

    def _sampler(self) -> BgSampler | None:
        """A started compaction sampler, for engines that report their
        background work (benchmarks/bgsample.py)."""
        busy = self.db.background_busy
        return BgSampler(busy).start() if busy() is not None else None

    def fillseq(self, name):
        n = self.cfg.num
        out = self._fill(name, list(range(n)), "off")
        self.state.filled(n)
        return out

    def fillrandom(self, name):
        n = self.cfg.num
        out = self._fill(name, data.permutation(n, self._seed(name)), "off")
        self.state.filled(n)
        return out

    def overwrite(self, name):
        kc = self.state.key_count
        perm = data.permutation(kc, self._seed(name))
        indices = [perm[i % kc] for i in range(self.cfg.num)]
        out = self._fill(name, indices, "off")
        for i in indices:
            self.state.present[i] = 1
        return out

    def fillsync(self, name):
        n = min(self.cfg.num, self.cfg.sync_num)
        out = self._fill(name, data.permutation(n, self._seed(name)), self.cfg.sync)
        self.state.filled(n)
        return out

    def fillbatch(self, name):
        n, bs = self.cfg.num, self.cfg.batch_size
        keys, nextv = self._keys(range(n)), self._values()
        batches = -(-n // bs)
        rec, write = Recorder(batches), self.db.batch_writer("off")
        lat, ends, pc = rec.lat, rec.ends, time.perf_counter_ns
        progress = self._progress(n, name)
        cpu0 = cpu_seconds()
        start = pc()
        for b in range(batches):
            pairs = [(k, nextv()) for k in keys[b * bs : (b + 1) * bs]]
            t0 = pc()
            write(pairs)
            t1 = pc()
            lat[b] = t1 - t0
            ends[b] = t1
            progress.update(len(pairs))
        stop = pc()
        cpu = _cpu_since(cpu0)
        progress.close()
        self.state.filled(n)
        nb = n * self.cfg.entry_bytes
        return Outcome(
            n,
            start,
            stop,
            rec,
            [(0, batches)],
            nb,
            user_bytes=nb,
            unit="batch",
            extra={"batch_size": bs},
            cpu=cpu,
        )

    def fillsync_threads(self, name):
        cfg = self.cfg
        n, t = min(cfg.num, cfg.sync_num), cfg.threads
        keys = self._keys(data.permutation(n, self._seed(name)))
        rec, parts = Recorder(n), loops.split(n, t)
        progress = self._progress(n, name)

        def work(tid):
            h = self.db.thread_handle()
            try:
                lo, hi = parts[tid]
                loops.put_range(h.putter(cfg.sync), keys, self._values(), lo, hi, rec, progress)
            finally:
                self.db.release_handle(h)

        cpu0 = cpu_seconds()
        start, stop = loops.parallel(t, work)
        cpu = _cpu_since(cpu0)
        progress.close()
        self.state.filled(n)
        nb = n * cfg.entry_bytes
        return Outcome(n, start, stop, rec, [(0, n)], nb, user_bytes=nb, extra={"threads": t}, cpu=cpu)

    def deleterandom(self, name):
        kc, n = self.state.key_count, self.cfg.num
        perm = data.permutation(kc, self._seed(name))
        indices = [perm[i % kc] for i in range(n)]
        rec, progress, keys = Recorder(n), self._progress(n, name), self._keys(indices)
        cpu0 = cpu_seconds()
        start = time.perf_counter_ns()
        loops.void_range(self.db.deleter("off"), keys, 0, n, rec, progress)
        stop = time.perf_counter_ns()
        cpu = _cpu_since(cpu0)
        progress.close()
        for i in indices:
            self.state.present[i] = 0
        return Outcome(
            n, start, stop, rec, [(0, n)], n * self.cfg.key_size, user_bytes=n * self.cfg.key_size, cpu=cpu
        )

    # -- reads
    def _point_reads(self, name, keys, expected, op, unit="op", per_hit=None):
        n = len(keys)
        rec, progress = Recorder(n), self._progress(n, name)
        cpu0 = cpu_seconds()
        start = time.perf_counter_ns()
        found, total = loops.unary_range(op, keys, 0, n, rec, progress)
        stop = time.perf_counter_ns()
        cpu = _cpu_since(cpu0)
        progress.close()
        nbytes = total * per_hit if per_hit else total + found * self.cfg.key_size
        self._check_found(name, found, expected, n)
        return Outcome(
            n,
            start,
            stop,
            rec,
            [(0, n)],
            nbytes,
            unit=unit,
            extra={"found": found, "expected_found": expected},
            cpu=cpu,
        )

    def _check_found(self, name, found, expected, n):
        if found != expected:
            self.notes.append(f"{self.db.name} {name}: found {found} of {n} keys, expected {expected}")

    def readrandom(self, name):
        indices = data.uniform(self.state.key_count, self.cfg.num, self._seed(name))
        return self._point_reads(
            name, self._keys(indices), self.state.expected_found(indices), self.db.getter()
        )

    def readmissing(self, name):
        indices = data.uniform(self.state.key_count, self.cfg.num, self._seed(name))
        keys = data.missing_keys(indices, self.cfg.key_size)
        return self._point_reads(name, keys, 0, self.db.getter())

    def seekrandom(self, name):
        indices = data.uniform(self.state.key_count, self.cfg.num, self._seed(name))
        seek = self.db.seeker(self.cfg.seek_count)
        out = self._point_reads(
            name, self._keys(indices), len(indices), seek, unit="seek", per_hit=self.cfg.entry_bytes
        )
        out.extra["entries_read"] = out.nbytes // self.cfg.entry_bytes
        out.extra["seek_count"] = self.cfg.seek_count
        return out

    def _scan(self, name, reverse):
        limit = min(self.cfg.num, self.state.key_count)
        expected = min(limit, self.state.live())
        rec, progress = Recorder(limit), self._progress(limit, name)
        cpu0 = cpu_seconds()
        start = time.perf_counter_ns()
        n, nbytes = loops.scan_range(self.db.scan(reverse), limit, rec, progress)
        stop = time.perf_counter_ns()
        cpu = _cpu_since(cpu0)
        progress.close()
        self._check_found(name, n, expected, limit)
        return Outcome(
            n,
            start,
            stop,
            rec,
            [(0, n)],
            nbytes,
            unit="entry",
            extra={"found": n, "expected_found": expected},
            cpu=cpu,
        )

    def readseq(self, name):
        return self._scan(name, reverse=False)

    def readreverse(self, name):
        return self._scan(name, reverse=True)

    def readwhilewriting(self, name):
        cfg, kc = self.cfg, self.state.key_count
        n, t = cfg.num, max(1, cfg.threads)
        indices = data.uniform(kc, n, self._seed(name))
        keys = self._keys(indices)
        windices = data.uniform(kc, max(n, 1), self._seed(name + ".writer"))
        wkeys = self._keys(windices)
        # The writer overwrites present keys only, unless some were deleted:
        # then a read may find a key the writer just brought back.
        expected = self.state.expected_found(indices) if self.state.live() == kc else None
        rec, parts = Recorder(n), loops.split(n, t)
        progress = self._progress(n, name)
        found = [0] * t
        stop_writer = threading.Event()
        written = [0]
        # The writer's own latencies and end times (array appends: ~0.1 us
        # per put, small beside a put): its longest put is the longest
        # write stall, its end times split its rate by compaction activity.
        wlat, wends = array("q"), array("q")

        def writer():
            h = self.db.thread_handle()
            try:
                put, nextv, stop_is_set, count = h.putter("off"), self._values(), stop_writer.is_set, 0
                pc, lat_add, end_add = time.perf_counter_ns, wlat.append, wends.append
                for k in itertools.cycle(wkeys):
                    v = nextv()
                    t0 = pc()
                    put(k, v)
                    t1 = pc()
                    lat_add(t1 - t0)
                    end_add(t1)
                    count += 1
                    if count % 64 == 0 and stop_is_set():
                        break
                written[0] = count
            finally:
                self.db.release_handle(h)

        def reader(tid):
            h = self.db.thread_handle()
            try:
                lo, hi = parts[tid]
                found[tid] = loops.unary_range(h.getter(), keys, lo, hi, rec, progress)[0]
            finally:
                self.db.release_handle(h)

        sampler = self._sampler()
        wt = threading.Thread(target=writer, daemon=True)
        cpu0 = cpu_seconds()
        wt.start()
        try:
            start, stop = loops.parallel(t, reader)
        finally:
            stop_writer.set()
            wt.join()
        cpu = _cpu_since(cpu0)
        progress.close()
        split = split_rate(sampler.stop(), wends) if sampler is not None else None
        wsum = latency_summary(wlat)["latency_us"]
        total = sum(found)
        for i in range(min(written[0], len(windices))):
            self.state.present[windices[i]] = 1
        if expected is not None:
            self._check_found(name, total, expected, n)
        return Outcome(
            n,
            start,
            stop,
            rec,
            [(0, n)],
            total * cfg.entry_bytes,
            user_bytes=written[0] * cfg.entry_bytes,
            extra={
                "found": total,
                "expected_found": expected,
                "threads": t,
                "writes_during": written[0],
                "writes_per_sec": written[0] / max((stop - start) / 1e9, 1e-9),
                "writer_latency_us": wsum,
                **(split or {}),
            },
            cpu=cpu,
        )

    # -- maintenance
    def compact(self, name):
        rec = Recorder(1)
        cpu0 = cpu_seconds()
        start = time.perf_counter_ns()
        self.db.compact()
        stop = time.perf_counter_ns()
        cpu = _cpu_since(cpu0)
        rec.lat[0], rec.ends[0] = stop - start, stop
        live = self.state.live() * self.cfg.entry_bytes
        return Outcome(1, start, stop, rec, [(0, 1)], live, unit="compaction", cpu=cpu)

    def ingest(self, name):
        n = self.cfg.num
        keys, nextv = self._keys(data.permutation(n, self._seed(name))), self._values()
        pairs = [(k, nextv()) for k in keys]  # random order: the engine sorts
        rec = Recorder(1)
        cpu0 = cpu_seconds()
        start = time.perf_counter_ns()
        self.db.ingest(iter(pairs))
        stop = time.perf_counter_ns()
        cpu = _cpu_since(cpu0)
        rec.lat[0], rec.ends[0] = stop - start, stop
        self.state.filled(n)
        nb = n * self.cfg.entry_bytes
        return Outcome(n, start, stop, rec, [(0, 1)], nb, user_bytes=nb, unit="ingest call", cpu=cpu)

    # -- driver
    def _load(self, name):
        """Untimed bulk load for a workload that needs data when no fill ran."""
        n, bs = self.cfg.num, 1000
        keys, nextv = self._keys(data.permutation(n, self._seed("load"))), self._values()
        write = self.db.batch_writer("off")
        for b in range(0, n, bs):
            write([(k, nextv()) for k in keys[b : b + bs]])
        self.state.filled(n)
        self.notes.append(
            f"{self.db.name} {name}: no fill ran before it; loaded {n} keys first "
            "(random order, batches of 1000, untimed)"
        )

    def run(self, name: str) -> dict | None:
        """Run one workload; return its result record, or None (with a note)
        when the engine has no equivalent."""
        fn = getattr(self, name)
        if name == "ingest" and not getattr(self.db, "ingest_supported", False):
            self.notes.append(f"{self.db.name} ingest: skipped, the engine has no db.ingest")
            return None
        if name == "compact" and type(self.db).compact is Adapter.compact:
            self.notes.append(f"{self.db.name} compact: skipped, {self.db.name} has no full compaction")
            return None
        if name in FRESH:
            self.db.destroy()
        if name in NEEDS_DATA and self.state.key_count == 0:
            if name not in FRESH:
                self.db.destroy()
            self._load(name)
        read_settle = None
        if name in REOPEN:
            self.db.reopen()
            if self.cfg.read_settle:
                read_settle = self._wait_idle(name)
        if name in NEEDS_DATA and self.state.key_count < self.cfg.num:
            self.notes.append(
                f"{self.db.name} {name}: runs on the {self.state.key_count:,} keys that "
                f"{self.last_fill} left, fewer than --num (put synced fills before the others)"
            )
        if name in FRESH:
            self.last_fill = name
        try:
            before = _snapshot(self.db)
            rss_method = reset_peak_rss()
            rss_base = current_rss_mb()
            out = fn(name)
            rss_peak, rss_children = peak_rss_mb(rss_method)
            after = _snapshot(self.db)
            if self.cfg.settle and name in SETTLE:
                out.extra.update(self._settle(name, before, after))
            if read_settle is not None:
                out.extra["read_settle_seconds"] = read_settle
        except Unsupported as exc:
            self.notes.append(f"{self.db.name} {name}: skipped, {exc}")
            return None
        level = self.cfg.sync if name in SYNCED else "off"
        return self._record(
            name,
            out,
            before,
            after,
            level,
            {
                "rss_method": rss_method,
                "rss_baseline_mb": round(rss_base, 1),
                "rss_children_peak_mb": round(rss_children, 1),
            },
            rss_peak,
        )

    def _wait_idle(self, name) -> float | None:
        """Before a read workload, after the reopen: wait (untimed) until
        the engine's own signal says no flush or compaction is pending or
        running (``background_pending``), so that every engine's reads
        meet its settled tree rather than whatever shape its last write
        left (lsm's level-0 count at reopen swung readmissing 1.4x between
        runs). None when the engine has no signal (no wait)."""
        pending = self.db.background_pending
        if pending() is None:
            return None
        t0 = time.perf_counter()
        while pending() and time.perf_counter() - t0 < SETTLE_TIMEOUT:
            time.sleep(0.05)
        if pending():
            self.notes.append(f"{self.db.name} {name}: background work not done after {SETTLE_TIMEOUT:.0f} s")
        return time.perf_counter() - t0

    def _settle(self, name, before, after) -> dict:
        """``--settle``: after the timed part and its figures, wait (untimed)
        until the engine's background work is done, then count the SSTable
        bytes the workload caused in all: its write amplification settled,
        without compaction debt left for the next workload."""
        pending = self.db.background_pending
        if pending() is None:
            return {}
        t0 = time.perf_counter()
        while pending() and time.perf_counter() - t0 < SETTLE_TIMEOUT:
            time.sleep(0.1)
        waited = time.perf_counter() - t0
        if pending():
            self.notes.append(f"{self.db.name} {name}: background work not done after {SETTLE_TIMEOUT:.0f} s")
        settled = self.db.stats() or {}
        b = before["stats"] or {}
        user = (after["stats"] or {}).get("user_bytes_written", 0) - b.get("user_bytes_written", 0)
        sst = settled.get("sst_bytes_written", 0) - b.get("sst_bytes_written", 0)
        return {
            "settle_seconds": waited,
            "sst_write_amp_settled": sst / user if user else None,
            "levels_settled": [lv.get("bytes") for lv in settled.get("levels", [])],
        }

    def _record(self, name, out: Outcome, before, after, level, rss_extra, rss_peak) -> dict:
        cfg = self.cfg
        seconds = max((out.stop_ns - out.start_ns) / 1e9, 1e-9)
        lat, ends = out.rec.compact(out.ranges)
        summary = latency_summary(lat)
        live_bytes = self.state.live() * cfg.entry_bytes
        extra = {
            "durability": self.db.durability(level)
            if (name not in REOPEN or name == "readwhilewriting")
            else None,
            "latency_unit": out.unit,
            "latency_cdf_us": summary["cdf"],
            "timeline_interval_ms": 100,
            "timeline_ops": timeline(ends, out.start_ns, out.stop_ns),
            "user_bytes": out.user_bytes,
            "live_bytes": live_bytes,
            "disk_bytes": after["disk_bytes"],
            "space_amp": after["disk_bytes"] / live_bytes if live_bytes else None,
            **rss_extra,
            **out.extra,
        }
        io = None
        if before["io"] is not None and after["io"] is not None:
            io = after["io"] - before["io"]
        if out.cpu is not None:
            extra.update(cpu_figures(out.cpu, out.ops, seconds))
        extra["io_write_bytes"] = io
        extra["write_amp_io"] = io / out.user_bytes if io is not None and out.user_bytes else None
        if after["stats"] is not None:
            extra.update(lsm_figures(before["stats"] or {}, after["stats"]))
        if name in SYNCED and cfg.num > cfg.sync_num:
            extra["ops_note"] = f"--num reduced to --sync-num {cfg.sync_num} for a synced workload"
        return {
            "engine": self.db.name,
            "workload": name,
            "ops": out.ops,
            "seconds": seconds,
            "ops_per_sec": out.ops / seconds,
            "micros_per_op": seconds * 1e6 / out.ops if out.ops else 0.0,
            "mb_per_sec": out.nbytes / MiB / seconds,
            "latency_us": summary["latency_us"],
            "rss_peak_mb": round(rss_peak, 1),
            "extra": extra,
        }


def _snapshot(db: Adapter) -> dict:
    stats = db.stats()
    return {"stats": stats, "io": io_write_bytes(), "disk_bytes": db.disk_bytes()}
