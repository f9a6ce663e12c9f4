"""The maintenance commands: ``flush``, ``compact`` (with progress),
``checkpoint``, ``restore`` (to a sequence number or a time) and
``doctor`` (the disk's sync latencies, over :mod:`lsm.doctor`)."""

from __future__ import annotations

import argparse
import inspect
import os
import threading
import time
from datetime import datetime
from typing import Any

import lsm
from lsm import doctor as _doctor
from lsm.base.fs import DEFAULT_FS
from lsm.base.infolog import human_bytes
from lsm.cli.common import Failure, UsageError, need, open_db, parse_bytes, print_json, show_report
from lsm.cli.progress import Progress


def cmd_flush(args: argparse.Namespace) -> int:
    with open_db(args) as db:
        db.flush()
        st = db.stats()
    if args.json:
        print_json({"sst_files": st["sst_files"], "level0_files": st["levels"][0]["files"],
                     "durable_seq": st["durable_seq"]})
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    fmt = args.format
    start = None if args.start is None else parse_bytes(args.start, fmt, "--start")
    stop = None if args.stop is None else parse_bytes(args.stop, fmt, "--stop")
    db = open_db(args)
    worker: threading.Thread | None = None
    try:
        before = db.stats()
        t0 = time.perf_counter()
        errors: list[BaseException] = []

        def run() -> None:
            try:
                db.compact_range(start, stop)
            except BaseException as e:  # noqa: BLE001 - re-raised below
                errors.append(e)

        # A daemon: interrupted (^C), the process exits at once, as after a crash (the database is
        # crash-safe: the next open removes the half-written tables).
        worker = threading.Thread(target=run, name="lsm-cli-compact", daemon=True)
        worker.start()
        # Progress: bytes compaction has read, against the bytes in the range's levels (an estimate: a
        # file may be read once per level it passes through, so the bar stops short of 100% at times).
        bar = Progress("compacting", total=max(1, before["sst_bytes"] + before["memtable_bytes"]), unit="B")
        bar.set(0)
        try:
            while worker.is_alive():
                worker.join(0.2)
                bar.set(min(db.stats()["compaction_bytes_read"] - before["compaction_bytes_read"], bar.total or 0))
        finally:
            bar.close()
        if errors:
            raise errors[0]
        after = db.stats()
    finally:
        if worker is None or not worker.is_alive():  # never close under a running compaction
            db.close()
    result = {"seconds": time.perf_counter() - t0, "files_before": before["sst_files"],
              "bytes_before": before["sst_bytes"], "files_after": after["sst_files"],
              "bytes_after": after["sst_bytes"],
              "bytes_read": after["compaction_bytes_read"] - before["compaction_bytes_read"],
              "bytes_written": after["compaction_bytes_written"] - before["compaction_bytes_written"]}
    if args.json:
        print_json(result)
    else:
        print(f"compacted in {result['seconds']:.2f} s: {result['files_before']} files,"
              f" {human_bytes(result['bytes_before'])} -> {result['files_after']} files,"
              f" {human_bytes(result['bytes_after'])} (read {human_bytes(result['bytes_read'])},"
              f" wrote {human_bytes(result['bytes_written'])})")
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    need(lsm.DB, "checkpoint", "lsm checkpoint")
    with open_db(args) as db:
        result = db.checkpoint(args.dest)
    show_report(result, "text", args.json)
    return 0


def parse_time(text: str) -> datetime:
    """An ISO 8601 time (``2026-11-21T12:00:00Z``, ``...+02:00``; without a
    zone: local time) as an aware datetime."""
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise UsageError(f"--to-time: not an ISO 8601 time: {text!r} (e.g. 2026-11-21T12:00:00Z)") from None
    return t if t.tzinfo is not None else t.astimezone()


def cmd_restore(args: argparse.Namespace) -> int:
    restore = need(lsm, "restore", "lsm restore")
    kwargs: dict[str, Any] = {}
    if args.to_seq is not None:
        kwargs["to_seq"] = args.to_seq
    else:
        t = parse_time(args.to_time)
        kwargs["to_time"] = t
        try:  # pass what the API declares: a datetime, or seconds since the epoch
            ann = str(inspect.signature(restore).parameters["to_time"].annotation)
            if "datetime" not in ann and ("float" in ann or "int" in ann):
                kwargs["to_time"] = t.timestamp()
        except (KeyError, TypeError, ValueError):
            pass
    if args.wal_dir:
        kwargs["wal_dirs"] = args.wal_dir
    result = restore(args.src, args.dest, **kwargs)
    show_report(result, "text", args.json)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    if args.seconds <= 0 or args.threads < 1:
        raise UsageError("--seconds must be > 0 and --threads >= 1")
    if not os.path.isdir(args.dir):
        raise Failure(f"{args.dir}: not a directory")
    bar = Progress("doctor", total=len(_doctor.PHASES))
    done = [0]

    def step(phase: str) -> None:
        bar.set(done[0], f"doctor: {phase.replace('_', ' ')}")
        done[0] += 1

    try:
        m = _doctor.measure(DEFAULT_FS, args.dir, seconds=args.seconds, threads=args.threads, progress=step)
    finally:
        bar.close()
    levels = _doctor.advice(m, args.sync_interval)
    warn = _doctor.warnings(m)
    if args.json:
        print_json(dict(m, levels=levels, warnings=warn))
        return 0
    fsys = m["filesystem"]
    where = f" ({fsys['type']} on {fsys['source']}, mounted at {fsys['mount_point']})" if fsys else ""
    print(f"lsm doctor: {m['directory']}{where}")
    for name, label in (("write", "append 128 B"), ("fdatasync", "fdatasync"), ("fsync", "fsync"),
                        ("dir_fsync", "directory fsync")):
        p = m[name]
        print(f"  {label:<16} p50 {p['p50'] * 1e3:8.3f} ms   p99 {p['p99'] * 1e3:8.3f} ms"
              f"   max {p['max'] * 1e3:8.3f} ms   ({p['samples']} samples)")
    print("\nWhat each sync level costs here:")
    for level, text in levels.items():
        print(f"  {level:<8}{text}")
    for w in warn:
        print(f"\nwarning: {w}")
    return 0
