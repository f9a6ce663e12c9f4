"""The mapped live WAL segment (option ``wal_mmap_writes``): a preallocated
segment is written by stores into a shared map of it, and by write(2)
past the map (lsm/base/fs.py, "Mapped writes").

* A mapped file and a plain one given the same writes hold the same bytes,
  also across the map's end (where write(2) takes over at ``size``).
* Layers that hook writes (CrashFS, a fault injector) and empty files get
  a plain file: every write still goes through the hooks.
* A DB writing through maps leaves WAL segments byte-identical to one
  writing with write(2), across OFF and FULL commits, batches, rotations
  and a record that passes the map's end inside ``DB.put``'s inlined path.
* A store survives a kill -9 (it is in the page cache, like a write(2)).
* A failed fdatasync of a mapped segment fences; a failed write(2) after
  the map filled fences too; what was acknowledged survives the reopen.

Randomized tests print their seed; ``LSM_WAL_MAPPED_SEED`` replays one.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import lsm
import lsm.base.fs as fsmod
from lsm.base.crashfs import CrashFS
from lsm.base.errors import NeedsRecoveryError
from lsm.base.fs import FileSystem

SEED = int(os.environ.get("LSM_WAL_MAPPED_SEED", random.randrange(1 << 30)))


def _zeros(path: str, n: int) -> None:
    with open(path, "wb") as f:
        f.write(bytes(n))


def test_mapped_writes_match_write2(tmp_path):
    """The same random writes (sizes 1 byte to past the map) through a
    mapped file and a plain one: equal sizes after every write, equal
    bytes at the end; the map is dropped exactly when a write would pass
    its end, and a datasync while mapped succeeds."""
    print(f"LSM_WAL_MAPPED_SEED={SEED}")
    rng = random.Random(SEED)
    fs = FileSystem()
    n = 4096 * rng.randint(1, 4)
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    _zeros(a, n)
    _zeros(b, n)
    fa, fb = fs.open_overwrite_mapped(a), fs.open_overwrite(b)
    assert fa.mapped and not fb.mapped
    while fa.size < 2 * n:
        data = rng.randbytes(rng.choice([1, 7, 100, 161, 1000, 5000]))
        end = fa.size + len(data)
        fa.write(data)
        fb.write(data)
        assert fa.size == fb.size == end
        assert fa.mapped == (end <= n), f"mapped after a write ending at {end} of a {n}-byte map"
        if rng.random() < 0.2:
            fa.datasync()
    fa.close()
    fb.close()
    assert fs.read_file(a) == fs.read_file(b)


def test_map_ends_at_the_file_length(tmp_path):
    """A write that would end exactly at the map's end is stored; one byte
    more goes through write(2) at ``size`` (the descriptor's offset was
    never moved by the stores)."""
    fs = FileSystem()
    p = str(tmp_path / "a")
    _zeros(p, 4096)
    f = fs.open_overwrite_mapped(p)
    f.write(b"x" * 4000)
    f.write(b"y" * 96)
    assert f.mapped and f.size == 4096
    f.write(b"z")
    assert not f.mapped and f.size == 4097
    f.close()
    assert fs.read_file(p) == b"x" * 4000 + b"y" * 96 + b"z"


class _Hooked(FileSystem):
    def _write_some(self, f, data):
        return super()._write_some(f, data)


def test_hooked_layers_and_empty_files_are_not_mapped(tmp_path):
    p = str(tmp_path / "a")
    _zeros(p, 4096)
    for fs in (_Hooked(), CrashFS()):
        if isinstance(fs, CrashFS):
            fs.makedirs(str(tmp_path))
            fs.write_file(p, bytes(4096))
        f = fs.open_overwrite_mapped(p)
        assert not f.mapped and f.raw_write is None, type(fs).__name__
        f.close()
    e = str(tmp_path / "empty")
    _zeros(e, 0)
    f = FileSystem().open_overwrite_mapped(e)
    assert not f.mapped
    f.write(b"abc")
    f.close()
    assert FileSystem().read_file(e) == b"abc"


def _workload(db: lsm.DB, rng: random.Random) -> dict[bytes, bytes]:
    """OFF and FULL puts, deletes and batches, one value larger than a
    whole preallocated segment; the expected contents."""
    want: dict[bytes, bytes] = {}
    for i in range(3000):
        r = rng.random()
        k = b"k%05d" % rng.randrange(2000)
        if r < 0.05:
            b = lsm.WriteBatch()
            for j in range(rng.randint(1, 20)):
                kk, v = b"b%05d" % rng.randrange(2000), rng.randbytes(rng.randint(0, 300))
                b.put(kk, v)
                want[kk] = v
            db.write(b, sync=rng.choice(["OFF", "FULL"]))
        elif r < 0.1:
            db.delete(k, sync="OFF")
            want.pop(k, None)
        else:
            v = rng.randbytes(rng.choice([10, 100, 100, 1000]))
            db.put(k, v, sync="FULL" if r < 0.2 else "OFF")
            want[k] = v
        if i == 1500:
            v = rng.randbytes(200_000)  # past the map's end: put's inlined path falls back to write(2)
            db.put(b"big", v, sync="OFF")
            want[b"big"] = v
    return want


def test_db_wal_bytes_identical_mapped_or_not(tmp_path, monkeypatch):
    """The same workload (seeded) into two databases, one writing its WAL
    through maps and one with write(2) (``background="inline"``, a fixed
    clock, so that the record bytes are deterministic): at close both hold
    the same WAL segments, byte for byte, and reopen to the same data."""
    print(f"LSM_WAL_MAPPED_SEED={SEED}")
    monkeypatch.setattr(time, "time_ns", lambda: 1_800_000_000_000_000_000)
    opts = {"memtable_size": 64 << 10, "background": "inline", "sync": "OFF",
            "wal_retention_segments": 1000}  # every segment kept (archive/), not deleted after its flush
    wals, wants = [], []
    for mapped in (True, False):
        d = str(tmp_path / f"db-{mapped}")
        db = lsm.open(d, wal_mmap_writes=mapped, **opts)
        try:
            assert db._wal._file.mapped == mapped
            wants.append(_workload(db, random.Random(SEED)))
            assert db._wal.segments_created > 5 and db._wal.spares_used > 3
            assert db._wal.fenced is None
        finally:
            db.close()
        segs = {}
        for sub in (d, os.path.join(d, "archive")):
            # (an archived name is <first seq>-<archive time>.wal: keyed by the first seq)
            segs.update({n[:20]: FileSystem().read_file(os.path.join(sub, n)) for n in os.listdir(sub) if n.endswith(".wal")})
        wals.append(segs)
    assert wals[0].keys() == wals[1].keys() and len(wals[0]) > 5
    for name in wals[0]:
        assert wals[0][name] == wals[1][name], f"{name} differs"
    db = lsm.open(str(tmp_path / "db-True"))
    try:
        for k, v in wants[0].items():
            assert db.get(k) == v
    finally:
        db.close()


def test_mapped_store_survives_kill9(tmp_path):
    """OFF puts through the map, then SIGKILL: every put that returned is
    there after the reopen (a private map, or stores kept in the process,
    would lose them)."""
    d = str(tmp_path / "db")
    code = textwrap.dedent(f"""
        import os, signal, lsm
        db = lsm.open({d!r}, sync="OFF", memtable_size=1 << 20)
        assert db._wal._file.mapped
        for i in range(5000):
            db.put(b"k%05d" % i, b"v%05d" % i * 10)
        print("mapped", db._wal._file.mapped, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    p = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert "mapped True" in p.stdout, (p.stdout, p.stderr)
    db = lsm.open(d)
    try:
        for i in range(5000):
            assert db.get(b"k%05d" % i) == b"v%05d" % i * 10, i
    finally:
        db.close()


def _close_fenced(db: lsm.DB) -> None:
    """Close a database that the test fenced (its close raises then)."""
    try:
        db.close()
    except NeedsRecoveryError:
        pass


def test_failed_sync_of_a_mapped_segment_fences(tmp_path, monkeypatch):
    """fdatasync fails (EIO) on a mapped segment: the FULL commit raises
    NeedsRecoveryError, the database stays fenced, and after a reopen
    every commit acknowledged before the failure is there."""
    d = str(tmp_path / "db")
    db = lsm.open(d)
    try:
        assert db._wal._file.mapped
        for i in range(100):
            db.put(b"a%03d" % i, b"x", sync="FULL")
        real = fsmod._os_fdatasync

        def failing(fd):
            raise OSError(errno.EIO, "injected fdatasync failure")

        monkeypatch.setattr(fsmod, "_os_fdatasync", failing)
        with pytest.raises(NeedsRecoveryError):
            db.put(b"b", b"y", sync="FULL")
        with pytest.raises(NeedsRecoveryError):
            db.put(b"c", b"z", sync="OFF")
        monkeypatch.setattr(fsmod, "_os_fdatasync", real)
    finally:
        _close_fenced(db)
    with lsm.open(d) as db:
        assert all(db.get(b"a%03d" % i) == b"x" for i in range(100))
        assert db.get(b"c") is None


def test_failed_write_past_the_map_fences(tmp_path, monkeypatch):
    """A put whose record passes the map's end goes on with write(2); when
    that write fails (ENOSPC), the put raises NeedsRecoveryError and the
    database is fenced, not left writing behind a missing record."""
    d = str(tmp_path / "db")
    db = lsm.open(d, sync="OFF", memtable_size=64 << 10)
    try:
        f = db._wal._file
        assert f.mapped
        db.put(b"a", b"x")

        def failing(fd, data):
            raise OSError(errno.ENOSPC, "injected: no space")

        monkeypatch.setattr(fsmod, "_os_write", failing)
        with pytest.raises(NeedsRecoveryError, match="no space"):
            db.put(b"big", b"y" * 200_000)
        assert not f.mapped and db._wal.fenced is not None
        with pytest.raises(NeedsRecoveryError):
            db.put(b"c", b"z")
        monkeypatch.undo()
    finally:
        _close_fenced(db)
    with lsm.open(d) as db:
        assert db.get(b"a") == b"x" and db.get(b"big") is None
