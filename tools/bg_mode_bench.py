"""Measure what background work costs the writers, per background mode.

For each mode (process, thread): load --keys keys at Sync.OFF without
compacting, then run FULL (and OFF) puts from the main thread for
--seconds while compact_range() runs in another thread, and the same with
no compaction running. Prints ops/s and the ratio with/without.

    python tools/bg_mode_bench.py --keys 300000 --seconds 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import lsm  # noqa: E402


def rate(db: lsm.DB, level: lsm.Sync, seconds: float, stop: threading.Event | None, tag: bytes) -> float:
    n = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end and not (stop is not None and stop.is_set()):
        db.put(tag + b"%012d" % n, b"v" * 100, sync=level)
        n += 1
    return n / (time.perf_counter() - t0)


def run(mode: str, keys: int, seconds: float, root: str) -> dict[str, float]:
    path = os.path.join(root, mode)
    opts = dict(background=mode, memtable_size=4 << 20, l0_compaction_trigger=1000,
                l0_slowdown_trigger=1000, l0_stop_trigger=1000)
    out = {}
    with lsm.open(path, **opts) as db:
        for i in range(keys):
            db.put(b"%016d" % ((i * 7919) % keys), b"x" * 100, sync=lsm.Sync.OFF)
        db.flush()
        for level in (lsm.Sync.FULL, lsm.Sync.OFF):
            name = level.name.lower()
            out[f"{name}_idle"] = rate(db, level, seconds, None, b"idle-" + name.encode())
            done = threading.Event()
            t = threading.Thread(target=lambda: (db.compact_range(), done.set()))
            t0 = time.perf_counter()
            t.start()
            out[f"{name}_compacting"] = rate(db, level, seconds, done, b"busy-" + name.encode())
            t.join()
            out[f"{name}_compaction_s"] = time.perf_counter() - t0
            # refill L0 for the next round
            for i in range(keys):
                db.put(b"%016d" % ((i * 7919) % keys), b"y" * 100, sync=lsm.Sync.OFF)
            db.flush()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=300_000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--modes", default="process,thread")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="lsm-bgmode-", dir=".")
    try:
        for mode in args.modes.split(","):
            r = run(mode, args.keys, args.seconds, root)
            print(f"{mode:8s} FULL idle {r['full_idle']:9.0f}/s  during compaction {r['full_compacting']:9.0f}/s "
                  f"(ratio {r['full_compacting'] / r['full_idle']:.2f}, compaction {r['full_compaction_s']:.1f}s)")
            print(f"{mode:8s} OFF  idle {r['off_idle']:9.0f}/s  during compaction {r['off_compacting']:9.0f}/s "
                  f"(ratio {r['off_compacting'] / r['off_idle']:.2f}, compaction {r['off_compaction_s']:.1f}s)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
