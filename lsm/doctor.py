"""What durability costs on a given disk: the measurements behind
``lsm doctor``.

:func:`measure` times, through the filesystem layer, the operations the
sync levels are made of (an fdatasync and an fsync after a small append,
as a commit makes; a directory fsync after a create, as a new WAL segment
makes), then runs the real WAL writer (group commit included) at ``OFF``
and ``FULL`` from one thread and at ``FULL`` from several, and
:func:`advice` turns the figures into what each sync level will cost there.

Everything happens in a scratch directory created inside the directory
under test and removed afterwards; nothing else is touched. Each phase runs
for at most ``seconds`` (and at least a few operations), so the whole
measurement takes about ``6 * seconds``.

Thread-safety: :func:`measure` starts and joins its own threads; it is not
meant to run twice at once on one directory.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from lsm.base import filenames
from lsm.base.fs import FileSystem
from lsm.options import Sync
from lsm.wal.format import encode_record
from lsm.wal.writer import WalWriter

RECORD_BODY = 128
"""Bytes appended before each timed sync: about one small commit."""

MIN_SAMPLES = 5

PHASES = ("fdatasync", "fsync", "dir_fsync", "commit_off", "commit_full", "commit_full_threads")


def percentiles(xs: list[float]) -> dict[str, float]:
    """``samples``, ``mean``, ``p50``, ``p90``, ``p99``, ``max`` (nearest
    rank) of durations in seconds."""
    n = len(xs)
    if not n:
        return {"samples": 0, "mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    s = sorted(xs)
    out = {"samples": n, "mean": sum(s) / n}
    for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
        out[name] = s[max(0, -int(-q * n) - 1)]
    out["max"] = s[-1]
    return out


def _timed_loop(seconds: float, max_ops: int, op: Callable[[int], float]) -> list[float]:
    """Call ``op(i)`` (which returns the duration it measured) until
    ``seconds`` passed (after at least MIN_SAMPLES calls) or ``max_ops``."""
    out: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(out) < max_ops and (len(out) < MIN_SAMPLES or time.perf_counter() < deadline):
        out.append(op(len(out)))
    return out


def filesystem_of(fs: FileSystem, path: str) -> dict[str, str] | None:
    """``type``, ``source`` and ``mount_point`` of the filesystem holding
    ``path``, from /proc/self/mountinfo (None where that is unreadable)."""
    try:
        f = fs.open_read("/proc/self/mountinfo")
        try:
            data = f.pread(0, 1 << 22)
        finally:
            f.close()
    except OSError:
        return None
    real = os.path.realpath(path)
    best: dict[str, str] | None = None
    for line in data.decode("utf-8", "replace").splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5:
            continue
        mount = fields[4].encode().decode("unicode_escape")  # \040 for a space, etc.
        inside = real == mount or real.startswith(mount.rstrip("/") + "/")
        if inside and (best is None or len(mount) >= len(best["mount_point"])):
            parts = right.split()
            best = {"type": parts[0] if parts else "?", "source": parts[1] if len(parts) > 1 else "?",
                    "mount_point": mount}
    return best


def measure(fs: FileSystem, directory: str, *, seconds: float = 1.0, threads: int = 8, max_ops: int = 5000,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the disk under ``directory`` (see the module docstring).
    ``progress(phase)`` is called as each phase of :data:`PHASES` starts.
    Returns ``directory``, ``filesystem``, latency percentiles (seconds) of
    ``write``, ``fdatasync``, ``fsync`` and ``dir_fsync``, and ``commits``:
    measured commits/s at ``off`` and ``full`` from one thread and ``full``
    from ``threads`` threads, with ``avg_group`` (commits per sync)."""
    if not fs.is_dir(directory):
        raise NotADirectoryError(20, "not a directory", directory)
    scratch = filenames.join(directory, f".lsm-doctor-{os.getpid()}")
    fs.makedirs(scratch)
    created: list[str] = []
    note = progress or (lambda _phase: None)
    body = b"x" * RECORD_BODY
    try:
        out: dict[str, Any] = {"directory": os.path.abspath(directory), "filesystem": filesystem_of(fs, directory),
                               "seconds": seconds, "threads": threads}
        writes: list[float] = []
        for phase, data_only in (("fdatasync", True), ("fsync", False)):
            note(phase)
            path = filenames.join(scratch, phase)
            created.append(path)
            f = fs.create(path)
            try:
                def one(_i: int, f: Any = f, data_only: bool = data_only) -> float:
                    t0 = time.perf_counter()
                    f.write(body)
                    t1 = time.perf_counter()
                    f.datasync() if data_only else f.fsync()
                    writes.append(t1 - t0)
                    return time.perf_counter() - t1

                out[phase] = percentiles(_timed_loop(seconds, max_ops, one))
            finally:
                f.close()
        out["write"] = percentiles(writes)

        note("dir_fsync")

        def one_dir(i: int) -> float:
            p = filenames.join(scratch, f"d{i}")
            created.append(p)
            fs.create(p).close()
            t0 = time.perf_counter()
            fs.sync_dir(scratch)
            return time.perf_counter() - t0

        out["dir_fsync"] = percentiles(_timed_loop(seconds, max_ops, one_dir))

        wal_dir = filenames.join(scratch, "wal")
        fs.makedirs(wal_dir)
        try:
            commits: dict[str, Any] = {}
            for phase, level, n in (("commit_off", Sync.OFF, 1), ("commit_full", Sync.FULL, 1),
                                    ("commit_full_threads", Sync.FULL, threads)):
                note(phase)
                commits[phase.removeprefix("commit_")] = _commit_rate(fs, wal_dir, level, n, seconds, body)
            out["commits"] = {"off": commits["off"]["per_second"], "full": commits["full"]["per_second"],
                              "full_threads": commits["full_threads"]["per_second"],
                              "avg_group": commits["full_threads"]["avg_group"], "threads": threads}
        finally:
            for name in fs.listdir(wal_dir):
                fs.remove(filenames.join(wal_dir, name))
            os.rmdir(wal_dir)  # the fs layer has no rmdir; an empty scratch directory holds no data
        return out
    finally:
        for p in created:
            try:
                fs.remove(p)
            except FileNotFoundError:
                pass
        try:
            os.rmdir(scratch)
        except OSError:
            pass


def _commit_rate(fs: FileSystem, wal_dir: str, level: int, threads: int, seconds: float,
                 body: bytes) -> dict[str, float]:
    """Commits/s of the real WAL writer at ``level`` from ``threads``
    threads for about ``seconds`` (the DB write path without the memtable:
    append under a lock, then the sync level)."""
    for name in fs.listdir(wal_dir):
        fs.remove(filenames.join(wal_dir, name))
    wal = WalWriter(fs, wal_dir, segment_size=1 << 30, sync_interval=0.1)
    mu = threading.Lock()
    with mu:
        wal.start_segment_locked(1)
    wal.sync_to(0)  # the segment's name, as open does; not timed
    state = {"seq": 0}
    deadline = time.perf_counter() + seconds
    errors: list[BaseException] = []

    def run() -> None:
        try:
            n = 0
            while n < MIN_SAMPLES or time.perf_counter() < deadline:
                with mu:
                    seq = state["seq"] + 1
                    wal.append_locked(encode_record(seq, 1, time.time_ns() // 1000, body, wal.synced_offset), seq, 1, level)
                    state["seq"] = seq
                if level:
                    wal.commit_wait(seq, level)
                n += 1
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)

    t0 = time.perf_counter()
    workers = [threading.Thread(target=run, name=f"lsm-doctor-{i}") for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    elapsed = time.perf_counter() - t0
    wal.close(sync=False)
    if errors:
        raise errors[0]
    return {"per_second": state["seq"] / elapsed if elapsed > 0 else 0.0,
            "avg_group": wal.synced_commits / wal.groups if wal.groups else 0.0}


def advice(m: dict[str, Any], sync_interval: float = 0.1) -> dict[str, str]:
    """One sentence per sync level: what it costs on the measured disk."""
    ds, fs_, dirs, c = m["fdatasync"], m["fsync"], m["dir_fsync"], m["commits"]

    def ms(x: float) -> str:
        return f"{x * 1e3:.2f} ms"

    return {
        "OFF": (f"no sync: the WAL takes about {c['off']:,.0f} commits/s from one thread (CPU-bound; a put "
                f"also pays for its memtable insert); a killed process loses nothing, a power cut loses the "
                f"commits no later sync covered"),
        "NORMAL": (f"commits run at about OFF speed; a background fdatasync every {sync_interval:g} s "
                   f"({ms(ds['p50'])} each, p99 {ms(ds['p99'])}); a power cut loses at most about "
                   f"{sync_interval:g} s of commits"),
        "BARRIER": (f"one thread: about {1 / max(ds['p50'], 1e-9):,.0f} commits/s (each commit waits for the "
                    f"previous one's fdatasync, {ms(ds['p50'])}); many threads: near OFF speed; a power cut "
                    f"loses at most the newest commit"),
        "FULL": (f"each commit waits for an fdatasync: {ms(ds['p50'])} (p99 {ms(ds['p99'])}); one thread: "
                 f"{c['full']:,.0f} commits/s; {c['threads']} threads with group commit: "
                 f"{c['full_threads']:,.0f} commits/s ({c['avg_group']:.1f} commits per sync); a power cut loses "
                 f"nothing acknowledged"),
        "EXTRA": (f"like FULL with fsync instead: {ms(fs_['p50'])} (p99 {ms(fs_['p99'])}), about "
                  f"{1 / max(fs_['p50'] + m['write']['p50'], 1e-9):,.0f} commits/s from one thread, plus a "
                  f"directory fsync ({ms(dirs['p50'])}, p99 {ms(dirs['p99'])}) when WAL segments are created "
                  f"or deleted"),
    }


def warnings(m: dict[str, Any]) -> list[str]:
    """Reasons to distrust the figures or the disk's promises."""
    out = []
    fsys = m.get("filesystem") or {}
    if fsys.get("type") in ("tmpfs", "ramfs"):
        out.append(f"{m['directory']} is on {fsys['type']}: memory, nothing survives a reboot or power cut")
    elif m["fdatasync"]["p50"] < 20e-6:
        out.append("fdatasync takes under 20 us: the disk (or the VM's virtual disk) probably acknowledges "
                   "syncs from a volatile cache; power-cut promises hold only if that cache is battery-backed")
    if m["fdatasync"]["p99"] > 20 * max(m["fdatasync"]["p50"], 1e-6):
        out.append("fdatasync latency varies a lot (p99 > 20 x p50): the disk is shared or busy; FULL commit "
                   "latency will have a long tail")
    return out
