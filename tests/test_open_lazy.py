"""What an open leaves running (issue 7 target 1, fillsync right after
open): the worker processes start lazily (lsm/background/scheduler.py,
``Background._lazy_prestart``) and the spare WAL segment is prepared when
the live segment will need it soon (lsm/wal/spare.py, "When"), in every
background mode, with every commit kept."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

import lsm
from lsm.background import scheduler
from lsm.background.scheduler import flush_due
from lsm.base import filenames
from lsm.base.crashfs import CrashFS
from lsm.wal import spare as spare_mod
from lsm.wal.spare import SpareSegment, due

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _eventually(cond, what: str, timeout: float = 60.0) -> None:
    """Wait for ``cond`` (a liveness check, not a timing one: the bound
    only keeps a broken build from hanging)."""
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.01)


# ---- the spare segment: when it is prepared ---------------------------------------------------------


def test_due_rule() -> None:
    size = 10 << 20
    assert not due(size, 24, 0.0)  # nothing written since the rotation
    assert not due(size, 1 << 20, 800_000.0)  # a FULL stream: ~12 s to full
    assert due(size, size // 2, 0.0)  # half full
    assert due(size, size // 2 - 1, (size // 2 + 1) / spare_mod.LEAD_SECONDS)  # full within the lead
    assert not due(size, 1 << 20, (size - (1 << 20)) / spare_mod.LEAD_SECONDS * 0.99)
    assert due(size, 1 << 20, 25e6)  # an OFF fill: at once


def _spare(fs: CrashFS, size: int = 64 << 10) -> SpareSegment:
    fs.makedirs("/w")
    return SpareSegment(fs, "/w", size, inline=False, stopped=lambda: False, deferred=True)


def test_spare_waits_until_half_full() -> None:
    """A rotation's want() only marks the spare pending (no thread, no
    file); the write path's looks (SpareSegment.look) kick the thread once
    the segment is due."""
    fs = CrashFS()
    sp = _spare(fs)
    try:
        sp.want()
        assert sp.pending and sp._thread is None
        for _ in range(5):
            sp.look(24, 0.0)  # nothing written, no rate
        sp.look(sp.size // 2 - 1, 1.0)
        assert sp.pending and sp._thread is None and not fs.exists(sp.path) and not sp.take()
        sp.look(sp.size // 2, 0.0)
        assert not sp.pending
        _eventually(lambda: sp._ready, "the spare prepared at half full")
        assert fs.file_size(sp.path) == sp.size and sp.take()
    finally:
        sp.close()


def test_spare_starts_at_once_for_a_fast_fill() -> None:
    fs = CrashFS()
    sp = _spare(fs)
    try:
        sp.want()
        sp.look(sp.size // 10, sp.size / 10 / 0.01)  # a tenth in 10 ms: full within the lead
        assert not sp.pending
        _eventually(lambda: sp._ready, "the spare prepared for a fast fill")
    finally:
        sp.close()


def test_rotation_while_pending_prepares_at_once() -> None:
    """A rotation that found no spare because no look found the last
    segment due (the fill rate jumped): the thread prepares now, whatever
    the rate."""
    fs = CrashFS()
    sp = _spare(fs)
    try:
        sp.want()
        sp.look(24, 0.0)
        assert not sp.take()  # the rotation finds none (and creates its segment)
        sp.want()
        _eventually(lambda: sp._ready, "the spare prepared after the rotation's kick")
        assert sp.take()
        sp.want()  # it had one: the next waits for its looks again
        assert sp.pending
    finally:
        sp.close()


def test_close_while_pending() -> None:
    fs = CrashFS()
    sp = _spare(fs)
    sp.want()
    sp.close()
    sp.look(sp.size, 0.0)  # a look after close starts nothing
    assert sp._thread is None
    assert not fs.exists(sp.path)


@pytest.mark.parametrize("background", ["thread", "inline"])
def test_db_first_segment_preallocated_spare_deferred(background: str) -> None:
    """The first segment takes the spare prepared at open; in thread mode
    the next one waits for the segment to fill (inline prepares it at the
    rotation, deterministically); either way rotations use spares and
    nothing is lost."""
    fs = CrashFS()
    opts = {"background": background, "memtable_size": 64 << 10, "wal_segment_size": 1 << 20, "sync": "full"}
    db = lsm.open("/db", fs=fs, **opts)
    spare = "/db/" + filenames.WAL_SPARE
    size = db._opts.wal_preallocate_bytes
    assert fs.file_size(db._wal.segment_path) == size
    assert fs.exists(spare) == (background == "inline")
    n = 0
    while db._wal.spares_used < 3:
        db.put(b"k%06d" % n, b"v" * 100)
        n += 1
        assert n < 20000, "rotations never used a spare"
    db.close()
    db = lsm.open("/db", fs=fs, **opts)
    assert sum(1 for _ in db.items()) == n
    db.close()


# ---- the worker processes: started lazily -----------------------------------------------------------

_CHILD = r"""
import os, sys, time
import lsm
from lsm.compaction.worker import shared_pool

d = sys.argv[1]
db = lsm.open(d, background="process", l0_compaction_trigger=2, sync="off")  # 8 MiB memtable
flush, comp = shared_pool("flush"), shared_pool("compaction")
time.sleep(0.2)
print("after open", flush._started, comp._started, flush=True)
for i in range(200):  # ~26 KB: under a quarter of the memtable, and at no rate that fills it within 2 s
    db.put(b"a%06d" % i, b"v" * 100)
time.sleep(0.2)
print("few puts", flush._started, comp._started, flush=True)
n = 200
while db._mem.size < (8 << 20) * 0.3:  # past a quarter, short of full: no flush can start it
    db.put(b"a%06d" % n, b"v" * 100)
    n += 1
t = time.monotonic()
while flush._started == 0 and time.monotonic() - t < 60:  # a fill checkpoint (the write path) started it
    time.sleep(0.01)
print("filling", flush._started, db.stats()["flush_count"], flush=True)
while db.stats()["compaction_count"] == 0:
    for _ in range(100):
        db.put(b"a%06d" % n, b"v" * 100)
        n += 1
    db.flush()
print("compacted", flush._started, comp._started, flush=True)
db.close()
db = lsm.open(d, background="process")
assert sum(1 for _ in db.items()) == n, "lost keys"
db.close()
print("ok", n, flush=True)
"""


def test_process_workers_start_lazily(tmp_path) -> None:
    """A fresh process (the pools are per process): no worker after open
    nor after a few puts; the flush worker once the memtable is a quarter
    full (a second one only if two flushes run at once), the compaction
    worker at the first flush; flushes and compactions then run in them
    and lose nothing."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "db")], capture_output=True, text=True,
                         env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "after open 0 0"
    assert lines[1] == "few puts 0 0"
    assert lines[2] == "filling 1 0"  # with no flush to run
    # Two flushes may have run at once (max_background_flushes, default 2),
    # each in its own worker: the flush pool then grew to two.
    assert lines[3] in ("compacted 1 1", "compacted 2 1")
    assert lines[4].startswith("ok ")


def test_flush_due_rule() -> None:
    limit = 8 << 20
    assert not flush_due(limit, 0, 0.0)
    assert not flush_due(limit, 1 << 20, 700_000.0)  # a FULL fill (~12 s to full): at a quarter
    assert flush_due(limit, limit // 4, 0.0)
    assert flush_due(limit, 1 << 20, 7e6)  # an OFF fill: ~1 s to full
    assert not flush_due(limit, 1 << 20, (limit - (1 << 20)) / scheduler.PRESTART_LEAD_SECONDS * 0.99)


@pytest.mark.parametrize("background", ["thread", "inline"])
def test_other_modes_flush_and_compact(background: str, tmp_path) -> None:
    db = lsm.open(str(tmp_path / "db"), background=background, memtable_size=64 << 10, l0_compaction_trigger=2)
    assert all(db._bg._prestarted.values())  # no pools: nothing to start
    n = 0
    while db.stats()["compaction_count"] == 0:
        for _ in range(300):
            db.put(b"k%06d" % n, b"v" * 100)
            n += 1
        db.flush()
        assert n < 200_000, "no compaction ran"
    db.close()
    db = lsm.open(str(tmp_path / "db"), background=background)
    assert sum(1 for _ in db.items()) == n
    db.close()


def test_worker_boot_skips_the_package_init():
    """The worker's start-up (_CHILD_BOOT) reaches lsm.compaction.child
    without running lsm/__init__.py, so it does not import the engine
    (lsm.db and the rest: ~0.27 s of CPU per worker)."""
    from lsm.compaction.worker import _CHILD_BOOT

    assert _CHILD_BOOT.endswith("serve()")
    probe = _CHILD_BOOT[: -len("serve()")] + (
        "import lsm.compaction.runner; print(sorted(m for m in ('lsm.db', 'lsm.background', 'lsm.recovery', "
        "'lsm.compaction.runner') if m in sys.modules), hasattr(sys.modules['lsm'], 'open'))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(lsm.__file__))))
    assert out.stdout.split() == ["['lsm.compaction.runner']", "False"], out
