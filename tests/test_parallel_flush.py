"""Flushes in parallel (``max_background_flushes``, process mode): each
immutable memtable's table is built in a worker of its own, in any order;
tables are installed in commit order (a later flush that finishes first
waits its turn), and a flush that fails fences the DB without the later
one being installed over the gap."""

from __future__ import annotations

import threading
import time

import pytest

import lsm
from lsm.background import Background
from lsm.compaction.runner import FlushJob
from lsm.compaction.worker import WorkerPool

OPTS = {"memtable_size": 64 << 10, "max_immutable_memtables": 2, "max_background_flushes": 2, "sync": lsm.Sync.OFF}


def wait_for(pred, timeout=60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not pred() and time.monotonic() < deadline:
        time.sleep(0.005)
    return pred()


class _Hold:
    """Patches ``Background._execute``: the first flush job waits for
    ``release``; ``built`` is set when the second one's table is built."""

    def __init__(self, monkeypatch, fail_first: BaseException | None = None):
        self.release = threading.Event()
        self.built = threading.Event()
        self.started: list[int] = []
        self.installed: list[int] = []
        mu = threading.Lock()
        execute = Background._execute
        install = Background._install

        def held(bg, job):
            if not isinstance(job, FlushJob):
                return execute(bg, job)
            with mu:
                n = len(self.started)
                self.started.append(job.end_seq)
            if n == 0:
                assert self.release.wait(60)
                if fail_first is not None:
                    raise fail_first
            r = execute(bg, job)
            if n == 1:
                self.built.set()
            return r

        def recorded(bg, edit, added, **kw):
            if edit.flushed_seq is not None and kw.get("remove_mem") is not None:
                self.installed.append(edit.flushed_seq)
            return install(bg, edit, added, **kw)

        monkeypatch.setattr(Background, "_execute", held)
        monkeypatch.setattr(Background, "_install", recorded)


def _fill_two_imms(db) -> dict[bytes, bytes]:
    """Puts until two memtables are immutable (both flushes then run)."""
    model = {}
    i = 0
    while db.stats()["immutable_memtables"] < 2:
        k, v = b"k%07d" % i, b"v%d" % i * 20
        db.put(k, v)
        model[k] = v
        i += 1
        assert i < 100_000, "no memtable switch"
    return model


def test_a_later_flush_that_finishes_first_waits_its_turn(tmp_path, monkeypatch):
    hold = _Hold(monkeypatch)
    p = tmp_path / "db"
    db = lsm.open(p, background="process", **OPTS)
    model = _fill_two_imms(db)
    assert hold.built.wait(60), "the second flush did not run beside the held first one"
    time.sleep(0.2)  # time enough for a wrong install of the second
    st = db.stats()
    assert st["flush_count"] == 0 and st["immutable_memtables"] == 2 and hold.installed == []
    assert st["flushes_running"] == 2
    for k in list(model)[:: max(1, len(model) // 200)]:
        assert db.get(k) == model[k]
    hold.release.set()
    assert wait_for(lambda: db.stats()["flush_count"] == 2)
    assert hold.installed == sorted(hold.started) == sorted(hold.installed)
    levels = db._sv.version.levels
    assert [f.max_seq for f in levels[0]] == sorted((f.max_seq for f in levels[0]), reverse=True)
    assert dict(db.items()) == model
    db.close()
    with lsm.open(p, background="process") as db:
        assert dict(db.items()) == model


def test_a_failed_flush_fences_and_the_later_one_is_not_installed(tmp_path, monkeypatch):
    hold = _Hold(monkeypatch, fail_first=OSError(28, "No space left on device (injected)"))
    p = tmp_path / "db"
    db = lsm.open(p, background="process", **OPTS)
    model = _fill_two_imms(db)
    assert hold.built.wait(60)
    hold.release.set()
    assert wait_for(lambda: db.health == "fenced")
    time.sleep(0.2)
    assert hold.installed == []  # not the second over the first's gap
    with pytest.raises(lsm.NeedsRecoveryError):
        db.put(b"after", b"fence")
    db.close()
    monkeypatch.undo()
    with lsm.open(p, background="process") as db:
        assert dict(db.items()) == model  # every acknowledged put, from the WAL
        assert db.stats()["flush_count"] == 0
        db.flush()
        assert dict(db.items()) == model
    sst = sorted(x.name for x in p.iterdir() if x.name.endswith(".sst"))
    with lsm.open(p, background="process") as db:
        live = {f.number for lv in db._sv.version.levels for f in lv}
    assert [int(n[:-4]) for n in sst] == sorted(live), "an orphan table was left behind"


def test_option_range_and_pool_size():
    with pytest.raises(ValueError, match="max_background_flushes"):
        lsm.Options(max_background_flushes=0).validate()
    pool = WorkerPool(1)
    pool.allow(3)
    pool.allow(2)  # shared by every database: never shrinks
    assert pool._size == 3
    pool.close()
