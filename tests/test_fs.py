"""The real filesystem layer (lsm/base/fs.py): the write contract (a short
write is finished, a write that makes no progress is EIO), descriptors,
locks, preallocation and durable directory creation, on a temp directory.
CrashFS, the in-memory double, is tested in test_crashfs.py."""

import errno
import os
import subprocess
import sys

import pytest

import lsm.base.fs as fs_mod
from lsm.base.fs import FileSystem, makedirs_durable


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")


# ------------------------------------------------------------------ writes
class _ShortFS(FileSystem):
    """The real filesystem whose os.write is cut short as ``plan`` says:
    each entry is the most bytes that write may write (0: it writes
    nothing), then writes are whole."""

    def __init__(self, plan):
        self.plan = list(plan)
        self.calls = 0

    def _write_some(self, f, data):
        self.calls += 1
        if self.plan:
            limit = self.plan.pop(0)
            data = memoryview(data)[:limit]
        return super()._write_some(f, data)


def test_real_fs_loops_over_short_writes(tmp_path):
    fs = _ShortFS([3, 1, 7])
    path = str(tmp_path / "f")
    data = bytes(range(200))
    f = fs.create(path)
    f.write(data)  # 3 bytes, 1, 7, then the rest
    f.write(b"")  # nothing to write: one call, no loop
    f.fsync()
    f.close()
    assert fs.calls == 5 and f.size == len(data)
    with open(path, "rb") as fh:
        assert fh.read() == data  # byte-identical to one full write


def test_real_fs_write_that_makes_no_progress_is_eio(tmp_path):
    fs = _ShortFS([4, 0])
    path = str(tmp_path / "f")
    f = fs.create(path)
    with pytest.raises(OSError) as ei:
        f.write(b"0123456789")
    assert ei.value.errno == errno.EIO and "4 of 10" in str(ei.value)
    assert f.size == 4  # the prefix that is in the file
    f.close()
    assert FileSystem().read_file(path) == b"0123"


def test_files_and_namespace_round_trip(tmp_path):
    fs = FileSystem()
    d = str(tmp_path)
    a, b, c = (os.path.join(d, n) for n in "abc")
    fs.write_file(a, b"hello", sync=False)
    f = fs.open_append(a)
    assert f.size == 5
    f.write(bytearray(b" world"))
    f.datasync()
    f.close()
    f.close()  # closing twice is a no-op, not a second os.close
    assert f.fd == -1
    r = fs.open_read(a)
    assert r.size == 11 and r.pread(6, 100) == b"world"
    r.close()
    r.close()
    fs.rename(a, b)
    fs.link(b, c)
    fs.truncate(c, 5)
    assert fs.read_file(b) == b"hello" and fs.file_size(c) == 5
    fs.remove(b)
    fs.makedirs(os.path.join(d, "sub", "dir"))
    fs.sync_dir(d)
    assert fs.listdir(d) == ["c", "sub"] and fs.is_dir(os.path.join(d, "sub")) and not fs.is_dir(c)
    assert fs.exists(c) and not fs.exists(b)


@needs_proc
def test_open_read_closes_the_descriptor_when_fstat_fails(tmp_path, monkeypatch):
    fs = FileSystem()
    path = str(tmp_path / "f")
    fs.write_file(path, b"x")

    def failing_fstat(fd):
        raise OSError(errno.EIO, "injected")

    before = _open_fds()
    monkeypatch.setattr(fs_mod.os, "fstat", failing_fstat)
    with pytest.raises(OSError):
        fs.open_read(path)
    monkeypatch.undo()
    assert _open_fds() == before


# ------------------------------------------------------------------ locks
@needs_proc
def test_lock_excludes_this_process_and_another(tmp_path):
    fs = FileSystem()
    d = str(tmp_path)
    lk = fs.lock(d)
    with pytest.raises(BlockingIOError):
        fs.lock(d)  # the in-process registry (fcntl would let us in)
    lk.release()
    lk.release()  # a second release is a no-op
    child = subprocess.Popen(
        [sys.executable, "-c",
         ("import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
          "fcntl.lockf(fd, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()"),
         os.path.join(d, "LOCK")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        before = _open_fds()
        with pytest.raises(OSError) as ei:
            fs.lock(d)  # fcntl: another process holds it
        assert ei.value.errno in (errno.EAGAIN, errno.EACCES)
        assert _open_fds() == before  # the LOCK descriptor was closed
    finally:
        child.stdin.close()
        child.wait()
    fs.lock(d).release()  # free again once the other process is gone


# ------------------------------------------------------------------ preallocation
def test_preallocate_reserves_space(tmp_path):
    fs = FileSystem()
    f = fs.create(str(tmp_path / "f"))
    f.write(b"abc")
    f.preallocate(4096)
    f.write(b"def")  # writes go at the position, over the reserved zeros
    f.close()
    data = fs.read_file(str(tmp_path / "f"))
    assert data[:6] == b"abcdef" and set(data[6:]) <= {0}


@pytest.mark.parametrize("err,raises", [(errno.EOPNOTSUPP, False), (errno.EINVAL, False), (errno.ENOSPC, True)])
def test_preallocate_errors(tmp_path, monkeypatch, err, raises):
    fs = FileSystem()
    f = fs.create(str(tmp_path / "f"))

    def fallocate(fd, off, n):
        raise OSError(err, "injected")

    monkeypatch.setattr(fs_mod.os, "posix_fallocate", fallocate, raising=False)
    if raises:
        with pytest.raises(OSError) as ei:
            f.preallocate(100)
        assert ei.value.errno == err
    else:
        f.preallocate(100)  # not supported here: best effort, nothing reserved
    f.close()


def test_preallocate_without_posix_fallocate_is_a_no_op(tmp_path, monkeypatch):
    monkeypatch.delattr(fs_mod.os, "posix_fallocate", raising=False)
    fs = FileSystem()
    f = fs.create(str(tmp_path / "f"))
    f.preallocate(100)
    f.close()
    assert fs.file_size(str(tmp_path / "f")) == 0


# ------------------------------------------------------------------ makedirs_durable
class _Recording(FileSystem):
    def __init__(self):
        self.synced = []

    def sync_dir(self, path):
        self.synced.append(path)
        super().sync_dir(path)


def test_makedirs_durable_syncs_the_parent_of_each_new_directory(tmp_path):
    fs = _Recording()
    target = os.path.join(str(tmp_path), "a", "b", "c")
    makedirs_durable(fs, target)
    assert fs.is_dir(target)
    t = str(tmp_path)
    assert fs.synced == [t, os.path.join(t, "a"), os.path.join(t, "a", "b")]
    fs.synced.clear()
    makedirs_durable(fs, target)  # exists: nothing to sync
    assert fs.synced == []


def test_makedirs_durable_stops_at_the_root():
    """A filesystem where nothing exists (not even "/") must not loop forever."""

    class Nothing(FileSystem):
        def __init__(self):
            self.made, self.synced = [], []

        def exists(self, path):
            return False

        def makedirs(self, path):
            self.made.append(path)

        def sync_dir(self, path):
            self.synced.append(path)

    fs = Nothing()
    makedirs_durable(fs, "/x/y")
    assert fs.made == ["/x/y"] and fs.synced == ["/", "/", "/x"]
