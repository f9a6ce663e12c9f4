"""lsm/base/fs.py's direct I/O (``WritableFile._direct``: a plain
FileSystem's files make os.write / os.fdatasync / os.fsync themselves,
without the hook calls) : which filesystems
are direct, that a direct write keeps the write contract (short writes
looped, no progress is EIO), that every subclass or patch of a hook turns
it off; and ``WritableFile.write_zeros`` (page-sized writes, one write in
CrashFS)."""

from __future__ import annotations

import errno
import os

import pytest

import lsm.base.fs as fsmod
from lsm.base.crashfs import CrashFS
from lsm.base.fs import ZERO_CHUNK, FileSystem


class _Overrides(FileSystem):
    def _sync(self, f, data_only):
        super()._sync(f, data_only)


class _OnlyCreate(FileSystem):  # like compaction/worker.py's _OrphanGuardFS: no I/O hook overridden
    def create(self, path):
        return super().create(path)


def test_which_filesystems_are_direct(tmp_path, monkeypatch):
    path = str(tmp_path / "f")
    assert fsmod.DEFAULT_FS.create(path)._direct
    assert _OnlyCreate().create(path)._direct
    assert not _Overrides().create(path)._direct
    assert not CrashFS().create("/f")._direct
    patched = FileSystem()
    patched._write_some = lambda f, data: 0  # an instance patch (tools/crashkill/child.py does this)
    assert not patched.create(path)._direct
    monkeypatch.setattr(FileSystem, "_sync_fd", lambda self, p, fd, data_only: None)  # a class patch
    assert not FileSystem().create(path)._direct


def test_direct_write_and_syncs_make_the_system_calls(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(fsmod, "_os_fdatasync", lambda fd: calls.append(("fdatasync", fd)))
    monkeypatch.setattr(fsmod, "_os_fsync", lambda fd: calls.append(("fsync", fd)))
    fs = FileSystem()
    path = str(tmp_path / "f")
    f = fs.create(path)
    f.write(b"abc")
    f.write(memoryview(b"defg"))
    f.datasync()
    f.fsync()
    assert calls == [("fdatasync", f.fd), ("fsync", f.fd)]
    assert f.size == 7
    f.close()
    assert fs.read_file(path) == b"abcdefg"


def test_direct_write_loops_over_a_short_write(tmp_path, monkeypatch):
    real = os.write
    short = [5]

    def write(fd, data):
        if short:
            return real(fd, memoryview(data)[: short.pop()])
        return real(fd, data)

    monkeypatch.setattr(fsmod, "_os_write", write)
    fs = FileSystem()
    path = str(tmp_path / "f")
    f = fs.create(path)
    data = bytes(range(100))
    f.write(data)  # 5 bytes directly, the rest by _write_rest
    assert f.size == 100
    f.close()
    assert fs.read_file(path) == data  # byte-identical to one full write


def test_direct_write_with_no_progress_after_a_short_one_is_eio(tmp_path, monkeypatch):
    fs = FileSystem()
    path = str(tmp_path / "f")
    real = os.write
    monkeypatch.setattr(fsmod, "_os_write", lambda fd, data: real(fd, memoryview(data)[:4]))
    f = fs.create(path)  # (binds raw_write to the patched os.write)
    monkeypatch.setattr(FileSystem, "_write_some", lambda self, f, data: 0)  # the rest makes no progress
    with pytest.raises(OSError) as ei:
        f.write(b"0123456789")
    assert ei.value.errno == errno.EIO and "4 of 10" in str(ei.value)
    assert f.size == 4
    f.close()
    assert FileSystem().read_file(path) == b"0123"


def test_direct_write_error_leaves_size_alone(tmp_path, monkeypatch):
    def fail(fd, data):
        raise OSError(errno.ENOSPC, "no space")

    monkeypatch.setattr(fsmod, "_os_write", fail)
    f = FileSystem().create(str(tmp_path / "f"))
    with pytest.raises(OSError) as ei:
        f.write(b"x")
    assert ei.value.errno == errno.ENOSPC and f.size == 0
    f.close()


# ------------------------------------------------------------ write_zeros
class _Sizes(FileSystem):
    def __init__(self):
        self.sizes = []

    def _write_some(self, f, data):
        self.sizes.append(len(data))
        return super()._write_some(f, data)


def test_write_zeros_writes_pages(tmp_path):
    """A page per write (the page cache keeps 4 KiB pages, not one big
    folio: lsm/wal/spare.py, "Page cache"), then the remainder."""
    fs = _Sizes()
    path = str(tmp_path / "f")
    f = fs.create(path)
    f.write(b"head")
    f.write_zeros(3 * ZERO_CHUNK + 100)
    f.write_zeros(0)
    assert fs.sizes == [4, ZERO_CHUNK, ZERO_CHUNK, ZERO_CHUNK, 100]
    assert f.size == 4 + 3 * ZERO_CHUNK + 100
    f.close()
    assert fs.read_file(path) == b"head" + bytes(3 * ZERO_CHUNK + 100)


def test_write_zeros_in_crashfs_is_one_write():
    """One operation (one crash point, one fault-rule count), whatever
    the size, and a power cut treats it like any unsynced write."""
    fs = CrashFS()
    f = fs.create("/f")
    fs.sync_dir("/")
    f.write(b"synced")
    f.datasync()
    fs.fail("write", nth=2, err=errno.EIO)
    f.write_zeros(5 * ZERO_CHUNK + 3)  # write 1
    with pytest.raises(OSError):
        f.write(b"!")  # write 2: the rule fires here
    f.close()
    assert fs.read_file("/f") == b"synced" + bytes(5 * ZERO_CHUNK + 3)
    assert fs.power_cut(mode="drop").read_file("/f") == b"synced"


# ------------------------------------------------------------ raw_write
def test_raw_write_is_the_direct_files_bound_write_and_dies_with_the_file(tmp_path):
    """``WritableFile.raw_write``: os.write bound to the descriptor for a
    direct file (what ``write`` itself calls), None for every other file
    (CrashFS, overridden or patched hooks: they must see every write), and
    None once the file is closed (the descriptor number may be reused)."""
    path = str(tmp_path / "f")
    f = FileSystem().create(path)
    assert f.raw_write is not None and f.raw_write.args == (f.fd,)
    assert f.raw_write(b"ab") == 2
    f.size += 2
    f.write(b"cd")
    f.close()
    assert f.raw_write is None
    assert FileSystem().read_file(path) == b"abcd"
    assert _OnlyCreate().create(path).raw_write is not None
    assert _Overrides().create(path).raw_write is None
    assert CrashFS().create("/f").raw_write is None
    patched = FileSystem()
    patched._write_some = lambda f, data: 0
    assert patched.create(path).raw_write is None


def test_write_rest_completes_a_short_raw_write(tmp_path, monkeypatch):
    """The WAL's put path: ``raw_write``, count it, ``write_rest`` when
    short; the file is byte-identical to one full write, and a rest that
    makes no progress is EIO with the prefix counted."""
    fs = FileSystem()
    path = str(tmp_path / "f")
    f = fs.create(path)
    data = bytes(range(50))
    n = f.raw_write(data[:7])  # a short write of data, as the kernel may make
    f.size += n
    f.write_rest(data, n)
    assert f.size == 50
    f.close()
    assert fs.read_file(path) == data
    g = fs.create(path)
    g.size += g.raw_write(data[:3])
    monkeypatch.setattr(FileSystem, "_write_some", lambda self, f, data: 0)
    with pytest.raises(OSError) as ei:
        g.write_rest(data, 3)
    assert ei.value.errno == errno.EIO and g.size == 3
    g.close()
