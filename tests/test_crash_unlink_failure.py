"""A table that compaction replaced, whose unlink fails (EIO from a CrashFS
fault rule), is not an error: the running database goes on (the failure is
swallowed in lsm/background/state.py, remove_table) and the file stays,
unreferenced, until the next open, which removes every table file the
manifest does not name (lsm/recovery.py, _remove_garbage), and only those:
files without the table naming are left alone. Contrast: a failed WAL
unlink fences (tests/test_wal_retention.py).

The same holds when the replaced table is still read by an open iterator
(the unlink waits for the iterator, then fails)."""

from __future__ import annotations

import errno
import gc

import pytest

import lsm
from lsm.base import filenames
from lsm.base.crashfs import CrashFS

OPTS = {"background": "inline", "memtable_size": 1 << 20, "l0_compaction_trigger": 8, "wal_segment_size": 1 << 20,
        "min_level_to_compress": 0}  # compact_range rewrites the level-0 tables once, then moves them by edits
FOREIGN = ("notes.txt", "12345.sst", "000007.sst.bak", "x000008.sst")  # not our table naming


def _tables(fs: CrashFS) -> set[int]:
    return {n for n in map(filenames.parse_sst, fs.listdir("/db")) if n is not None}


def _fill(db, rounds: int) -> dict[bytes, bytes]:
    model = {}
    for r in range(rounds):
        for i in range(60):
            k, v = b"k%04d" % (i * 7 % 53), b"r%d-%d-" % (r, i) + b"v" * 80
            db.put(k, v)
            model[k] = v
        db.flush()
    return model


@pytest.mark.parametrize("iterator_open", [False, True], ids=["plain", "iterator-open"])
def test_failed_table_unlink_is_swallowed_then_purged_at_open(iterator_open):
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, **OPTS)
    for name in FOREIGN:  # put there by someone else, once the database exists
        f = fs.create("/db/" + name)
        f.write(b"not ours")
        f.fsync()
        f.close()
    model = _fill(db, 4)
    before = _tables(fs)
    assert len(before) >= 4  # several level-0 tables for the compaction to replace
    rule = fs.fail("remove", path=r"/[0-9]{6}\.sst$", err=errno.EIO, persistent=True)
    it = iter(db.items()) if iterator_open else None
    if it is not None:
        first = next(it)
    db.compact_range()
    live = set(db._bg.vs.current.all_numbers())
    assert live and not live & before  # every old table was replaced
    if it is not None:
        assert rule.fired == 0  # an open iterator still reads the replaced tables: no unlink yet
        rest = list(it)
        assert [first] + rest == sorted(model.items())  # read through the replaced tables
        del it, rest, first
    gc.collect()
    assert rule.fired == len(before), (rule.fired, before)  # each unlink was tried once, and failed
    leaked = _tables(fs) - live
    assert leaked == before  # the replaced tables are still there, unreferenced
    assert db.health == "ok"
    db.put(b"after", b"x")
    assert dict(db.items()) == {**model, b"after": b"x"}
    db.close()
    fs.faults.remove(rule)  # the disk recovers
    with lsm.open("/db", fs=fs, **OPTS) as db:
        assert _tables(fs) == set(db._bg.vs.current.all_numbers()) == live  # the leaked tables are gone
        assert dict(db.items()) == {**model, b"after": b"x"}
    names = set(fs.listdir("/db"))
    assert set(FOREIGN) <= names  # foreign files are never touched
    for n in before:
        assert filenames.sst_name(n) not in names
