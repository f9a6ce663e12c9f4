"""A closed, fenced or failed database raises one stored error instance on
every call (DB._raise_blocked, the background error in the write path and
in compact_range). Raising an instance again extends its traceback, so
without ``with_traceback(None)`` the error kept the frames of every call
that ever raised it: memory that grew with each retry of a fenced
database, and the locals of those frames (iterators, table readers with
their descriptors, and the replaced tables they keep from being unlinked)
alive as long as the DB object (found checking docs/architecture.md's
account of when a replaced table is unlinked: an iterator used after
close() kept its tables)."""

from __future__ import annotations

import errno
import gc
import traceback
import weakref

import pytest

import lsm
from lsm.base.crashfs import CrashFS
from lsm.base.errors import CorruptionError


class _Marker:
    """A local of the calling frame: alive while the error keeps the frame."""


def _call(fn, exc: type[BaseException]):
    """Call ``fn`` with a marker in this frame; return a weak reference to
    the marker and the number of frames in the raised error's traceback."""
    marker = _Marker()
    ref = weakref.ref(marker)
    with pytest.raises(exc) as e:
        fn()
    return ref, len(traceback.extract_tb(e.value.__traceback__))


def _check_no_growth(fn, exc: type[BaseException]) -> None:
    first_ref, depth = _call(fn, exc)
    for _ in range(20):
        _ref, d = _call(fn, exc)
        assert d == depth, f"the stored error's traceback grew from {depth} to {d} frames"
    gc.collect()
    assert first_ref() is None, "the stored error still holds the frame of an earlier call"


def _opened(**kw):
    fs = CrashFS()
    return fs, lsm.open("/db", fs=fs, background="inline", **kw)


def test_closed_database_does_not_keep_the_frames_of_failed_calls():
    _fs, db = _opened()
    db.put(b"k", b"v")
    db.close()
    _check_no_growth(lambda: db.get(b"k"), lsm.ClosedError)
    _check_no_growth(lambda: db.put(b"k", b"v"), lsm.ClosedError)
    _check_no_growth(lambda: list(db.items()), lsm.ClosedError)


def test_fenced_database_does_not_keep_the_frames_of_failed_calls():
    fs, db = _opened()
    db.put(b"k", b"v")
    fs.fail("sync", path=r"\.wal$", err=errno.EIO)
    with pytest.raises(lsm.NeedsRecoveryError):
        db.put(b"k2", b"v2", sync=lsm.Sync.FULL)
    assert db.health == "fenced"
    _check_no_growth(lambda: db.get(b"k"), lsm.NeedsRecoveryError)
    _check_no_growth(lambda: db.put(b"k3", b"v3"), lsm.NeedsRecoveryError)
    db.close()


def test_background_error_in_compact_range_does_not_keep_the_frames():
    _fs, db = _opened()
    db.put(b"k", b"v")
    db._bg.error = CorruptionError("a compaction input is damaged (made up by the test)", "/db/000009.sst", 0)
    _check_no_growth(db.compact_range, CorruptionError)
    db._bg.error = None
    db.close()
