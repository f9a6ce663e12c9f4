"""The filesystem layer: every byte lsm reads or writes goes through a
:class:`FileSystem`. Tests substitute a subclass that injects faults (fail the
Nth operation, short writes) or simulates power loss (drop what was never
synced); nothing else in lsm may call ``open``, ``os.write``, ``os.fsync``,
``os.replace`` or ``os.unlink`` itself (``tests/test_layers.py`` checks).

Call sites. Higher layers name what they are doing with
``with io_site("flush"): ...`` (a context variable, so per thread); fault
injectors filter on :func:`current_site`. Sites used: ``wal``, ``flush``,
``compaction``, ``manifest``, ``recovery``, ``open``, ``other``.

Thread-safety: a :class:`FileSystem` is stateless apart from the in-process
lock registry (guarded by ``_LOCKS_MU``). A :class:`WritableFile` is used by
one thread at a time (its owner serialises); a :class:`ReadableFile` may be
shared (``pread`` has no file position).
"""

from __future__ import annotations

import contextvars
import errno
import fcntl
import functools
import mmap
import os
import threading
from collections.abc import Callable

_site: contextvars.ContextVar[str] = contextvars.ContextVar("lsm_io_site", default="other")


class io_site:  # noqa: N801 - used like a function: ``with io_site("flush"):``
    """Label the file operations in the ``with`` body with call site ``name``.

    A class rather than a ``contextlib`` generator: entering and leaving
    costs about half as much, and the WAL's commit path enters one per sync
    (hot loops use :func:`enter_site` / :func:`exit_site` directly)."""

    __slots__ = ("_name", "_token")

    def __init__(self, name: str):
        self._name = name

    def __enter__(self) -> None:
        self._token = _site.set(self._name)

    def __exit__(self, *exc: object) -> None:
        _site.reset(self._token)


enter_site = _site.set
"""``token = enter_site(name)``: label the following file operations of this
thread with call site ``name`` until ``exit_site(token)``."""

exit_site = _site.reset


def current_site() -> str:
    return _site.get()


class WritableFile:
    """A file opened for appending.

    The write contract. ``write(data)`` either writes all of ``data`` at
    the end of the file and returns, or raises ``OSError``. A short write
    (``os.write`` returning fewer bytes than asked, as it may when the disk
    is nearly full, under ``RLIMIT_FSIZE`` or on some network and FUSE
    filesystems) is not an error: the rest is written at once, at the
    offset where the short write stopped, so a short write followed by
    success leaves the file byte-identical to one full write. Only an
    ``os.write`` that raises (ENOSPC, EIO, ...) or writes nothing is an
    error. ``size`` counts the bytes actually in the file, also when
    ``write`` raises after a short write: then the file ends with a prefix
    of ``data`` and is failed; the caller must not append to it as if the
    write had not happened (the WAL and the manifest fence, a table or run
    being built is abandoned, the LOG reopens at the real end).

    Why loop rather than fail on a short write: each caller writes whole
    records, so a failure after a prefix must be handled anyway (the
    callers above do); looping keeps the one case that is not a failure
    from fencing a healthy database.
    """

    __slots__ = ("_direct", "_map", "fd", "fs", "path", "raw_write", "size")

    def __init__(self, fs: FileSystem, path: str, fd: int, size: int):
        self.fs = fs
        self.path = path
        self.fd = fd
        self.size = size
        self._map: mmap.mmap | None = None  # a mapped file's map (attach_map), until unmap or close
        self._direct = direct = _is_direct(fs)
        self.raw_write: Callable[[bytes | bytearray | memoryview], int] | None = (
            functools.partial(_os_write, fd) if direct else None)
        """``os.write`` bound to the descriptor when the file is direct (below),
        else None; None again once the file is closed (the descriptor number
        may be reused). The one way to write a direct file without a Python
        frame (the WAL's put path). A caller that uses it keeps the write
        contract the way :meth:`write` does: it adds what ``raw_write``
        returned to ``size`` and, when that is short, calls
        :meth:`write_rest`. For a mapped file (:meth:`attach_map`) it is the
        map's ``write`` (a store at ``size``, never short), which raises
        ``ValueError`` and writes nothing once the data would pass the
        map's end: the caller then calls :meth:`write`, which goes on
        through write(2) (:meth:`unmap`)."""

    # Mapped writes (``_map``: FileSystem.open_overwrite_mapped, the live
    # WAL segment over a preallocated spare). A store into a shared map of
    # the file is in the page cache when it returns, like a write(2): it
    # survives a kill -9, and fdatasync/fsync on the descriptor make it
    # durable (Linux writes back the file's pages dirtied through any
    # mapping). It costs ~0.2 us against ~0.95 us for a write(2) of a WAL
    # record, and it does not release the GIL: a write(2) does, and a
    # writer beside threads busy in Python then waits up to the switch
    # interval to take it back (tools/wal_write_lab.py; docs/benchmarks.md,
    # "Mapped WAL segment"). The descriptor's own offset is not moved by
    # stores: unmap() moves it to ``size`` before write(2) takes over.
    # REQUIRES: the file is not truncated below the map's end while mapped
    # (a store there is SIGBUS): the WAL writer unmaps before its
    # truncations.
    def attach_map(self, m: mmap.mmap) -> None:
        """Write through ``m`` (a writable shared map of this file from
        offset 0) from ``size`` on. Direct files only."""
        m.seek(self.size)
        self._map = m
        self.raw_write = m.write

    @property
    def mapped(self) -> bool:
        """True while writes go through a map (:meth:`attach_map`)."""
        return self._map is not None

    def unmap(self) -> None:
        """Stop writing through the map (a no-op when there is none): later
        writes are write(2)s at ``size``."""
        m = self._map
        if m is not None:
            self._map = None
            self.raw_write = None  # until the offset is right (a failed lseek raises: the WAL writer fences)
            try:
                if self.fd >= 0:
                    os.lseek(self.fd, self.size, os.SEEK_SET)
                    if self._direct:  # (a layer with its own write hooks that mapped: through them)
                        self.raw_write = functools.partial(_os_write, self.fd)
            finally:
                m.close()

    # Direct I/O (``_direct``): when ``fs`` is a FileSystem whose write and
    # sync hooks are the plain ones (no subclass or instance overrides
    # them), write/datasync/fsync call os.write/os.fdatasync/os.fsync here
    # instead of through two hook calls: the same system calls and the same
    # write contract, about 2,000 instructions less per call (a FULL
    # commit makes one of each; docs/durability.md, "Group commit"). Any
    # other filesystem (CrashFS, fault injectors, patched hooks) sees every
    # write: ``raw_write`` is None for its files.
    def write(self, data: bytes | bytearray | memoryview) -> None:
        raw = self.raw_write
        if raw is not None:
            try:
                n = raw(data)
            except ValueError:
                if self._map is None:
                    raise
                self.unmap()  # the map is full (nothing was stored): write(2) from here on
                if self.raw_write is None:  # (a layer with its own write hooks mapped it: on through them)
                    self.fs._write(self, data)
                    return
                n = self.raw_write(data)
            self.size += n
            if n != len(data):
                self.write_rest(data, n)
        else:
            self.fs._write(self, data)

    def write_rest(self, data: bytes | bytearray | memoryview, n: int) -> None:
        """The short-write rule: after a write of ``data`` that wrote only
        ``n`` bytes (already counted in ``size``), write the rest at once
        or raise ``OSError`` (a write that makes no progress is ``EIO``)."""
        self.fs._write_rest(self, data, n)

    def datasync(self) -> None:
        """fdatasync: the file's data (and the size, if it grew) is durable."""
        if self._direct:
            _os_fdatasync(self.fd)
        else:
            self.fs._sync(self, True)

    def fsync(self) -> None:
        """fsync: data and all metadata durable."""
        if self._direct:
            _os_fsync(self.fd)
        else:
            self.fs._sync(self, False)

    def preallocate(self, length: int) -> None:
        """Reserve ``length`` bytes of disk space beyond ``size`` without
        changing the visible file size (best effort; ENOSPC raises)."""
        self.fs._preallocate(self, length)

    def write_zeros(self, n: int) -> None:
        """Append ``n`` zero bytes (the write contract of :meth:`write`),
        in writes of one page (``ZERO_CHUNK``) on the real filesystem: the
        page cache then holds them as 4 KiB pages, so a later small write
        over them dirties one page. One write of 1 MiB becomes one 1 MiB
        folio (Linux 6.x), and every fdatasync after a record written into
        it writes back the whole folio (the spare WAL segment,
        lsm/wal/spare.py)."""
        self.fs._write_zeros(self, n)

    def close(self) -> None:
        if self.fd >= 0:
            self.raw_write = None  # before the close: the descriptor number may be reused
            m, self._map = self._map, None
            if m is not None:
                m.close()
            fd, self.fd = self.fd, -1
            self.fs._close(self, fd)


class ReadableFile:
    """A file opened for positional reads."""

    __slots__ = ("fd", "fs", "path", "size")

    def __init__(self, fs: FileSystem, path: str, fd: int, size: int):
        self.fs = fs
        self.path = path
        self.fd = fd
        self.size = size

    def pread(self, offset: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``offset`` (fewer only at end of file)."""
        return self.fs._pread(self, offset, n)

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            self.fs._close(self, fd)


class MappedFile(ReadableFile):
    """A :class:`ReadableFile` of an immutable file (an sstable) whose reads
    are slices of a read-only ``mmap`` of it: no system call per read (a
    4 KiB read ~0.26 us against ~2.2 us through ``os.pread``;
    docs/benchmarks.md, "Point reads"). Made by
    :meth:`FileSystem.open_read_mapped` only.

    ``map`` is the mapping, for callers that slice it themselves. A slice is
    a copy (``bytes``) and no buffer is ever exported, so :meth:`close`
    unmaps at once; a read after ``close`` raises ``ValueError`` (callers
    check ``fd < 0`` first, as for a closed ReadableFile). An unlinked file
    stays readable while mapped, as it does while open. REQUIRES: the file
    is not truncated while mapped (a read of a page past the new end would
    be SIGBUS): lsm never truncates a table."""

    __slots__ = ("map",)

    def __init__(self, fs: FileSystem, path: str, fd: int, size: int, m: mmap.mmap):
        super().__init__(fs, path, fd, size)
        self.map = m

    def pread(self, offset: int, n: int) -> bytes:
        return self.map[offset : offset + n]

    def close(self) -> None:
        if self.fd >= 0:
            self.map.close()
            super().close()


class FileLock:
    """An exclusive lock on a database directory: an fcntl lock on its LOCK
    file plus an entry in the in-process registry (fcntl locks do not
    exclude a second open from the same process)."""

    def __init__(self, path: str, fd: int, key: str):
        self.path = path
        self._fd = fd
        self._key = key

    def release(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            with _LOCKS_MU:
                _LOCKED.discard(self._key)
            try:
                fcntl.lockf(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)


_LOCKS_MU = threading.Lock()
_LOCKED: set[str] = set()  # guarded by _LOCKS_MU: realpaths locked in this process


class FileSystem:
    """The real filesystem, through raw file descriptors.

    Subclasses override the underscore hooks (``_write``, ``_sync``, ...)
    or the public methods to inject faults or record operations.
    """

    in_memory = False
    """True for a layer whose files exist only in this process's memory
    (CrashFS): a worker process (``background="process"``) cannot see them,
    so ``lsm.open`` refuses that combination (``Options.validate_open``)."""

    # ---- files -----------------------------------------------------------
    def create(self, path: str) -> WritableFile:
        """Create ``path`` (truncating an existing file) for appending."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        return WritableFile(self, path, fd, 0)

    def open_append(self, path: str) -> WritableFile:
        """Open an existing file to append at its end."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        size = os.lseek(fd, 0, os.SEEK_END)
        return WritableFile(self, path, fd, size)

    def open_overwrite(self, path: str) -> WritableFile:
        """Open an existing file for writing from offset 0 without truncating
        it: bytes past what is written keep their content (a preallocated
        WAL segment's synced zeros); ``size`` counts the bytes written."""
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        return WritableFile(self, path, fd, 0)

    def open_overwrite_mapped(self, path: str) -> WritableFile:
        """:meth:`open_overwrite` for a preallocated file (the live WAL
        segment), whose writes are stores into a shared map of its current
        length (:meth:`WritableFile.attach_map`), and write(2)s past it.
        Exactly :meth:`open_overwrite` (every write through the hooks) when
        this layer's write hooks or ``open_overwrite`` are not the plain
        ones (CrashFS, fault injectors), when the file is empty, or when
        the map cannot be made."""
        if not _plain(self, _MAPPED_WRITE_HOOKS):
            return self.open_overwrite(path)
        return self._map_overwrite(path)

    def _map_overwrite(self, path: str) -> WritableFile:
        """The mapped half of :meth:`open_overwrite_mapped` (a layer that
        journals around the open, tools/power_cut_fs.py, calls it too)."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)  # (a shared writable map needs a readable descriptor)
        f = WritableFile(self, path, fd, 0)
        try:
            length = os.fstat(fd).st_size
            if length:
                f.attach_map(mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE))
        except OSError:
            pass  # no map (ENOMEM, a filesystem without shared maps): write(2), as open_overwrite
        except BaseException:
            f.close()
            raise
        return f

    def open_read(self, path: str) -> ReadableFile:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        return ReadableFile(self, path, fd, size)

    def open_read_mapped(self, path: str) -> ReadableFile:
        """:meth:`open_read` for an immutable file read at random (sstables):
        a :class:`MappedFile` when this layer's reads are the plain system
        call's; otherwise (a subclass hooks ``_pread`` or ``open_read``:
        CrashFS, fault injectors; or an empty file, which cannot be mapped)
        exactly :meth:`open_read`, so every read still goes through the
        hooks."""
        if not _plain(self, _READ_HOOKS):
            return self.open_read(path)
        f = self.open_read(path)
        if not f.size:
            return f
        try:
            m = mmap.mmap(f.fd, f.size, prot=mmap.PROT_READ)
        except BaseException:
            f.close()
            raise
        return MappedFile(self, path, f.fd, f.size, m)

    def read_file(self, path: str) -> bytes:
        """The whole content of ``path``."""
        f = self.open_read(path)
        try:
            return f.pread(0, f.size)
        finally:
            f.close()

    def write_file(self, path: str, data: bytes, sync: bool = True) -> None:
        """Create ``path`` holding ``data``; fsync it when ``sync``."""
        f = self.create(path)
        try:
            f.write(data)
            if sync:
                f.fsync()
        finally:
            f.close()

    # ---- namespace -------------------------------------------------------
    def rename(self, src: str, dst: str) -> None:
        """Atomically replace ``dst`` with ``src`` (same directory)."""
        os.replace(src, dst)

    def remove(self, path: str) -> None:
        os.unlink(path)

    def link(self, src: str, dst: str) -> None:
        """Hard-link ``src`` as ``dst`` (OSError EXDEV across devices)."""
        os.link(src, dst)

    def truncate(self, path: str, size: int) -> None:
        os.truncate(path, size)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(path))

    def makedirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def file_size(self, path: str) -> int:
        return os.stat(path).st_size

    def sync_dir(self, path: str) -> None:
        """fsync a directory, making its entries (creates, renames, unlinks)
        durable."""
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._sync_fd(path, fd, False)
        finally:
            os.close(fd)

    def lock(self, directory: str) -> FileLock:
        """Lock the database in ``directory``; raises ``BlockingIOError``
        when another process or this one holds it."""
        path = os.path.join(directory, "LOCK")
        key = os.path.realpath(directory)
        with _LOCKS_MU:
            if key in _LOCKED:
                raise BlockingIOError(errno.EAGAIN, "locked by this process", path)
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise
            _LOCKED.add(key)
        return FileLock(path, fd, key)

    # ---- hooks (override in fault-injecting / crash-simulating subclasses) --
    def _write(self, f: WritableFile, data: bytes | bytearray | memoryview) -> None:
        """The write contract of :class:`WritableFile`, over ``_write_some``
        (subclasses inject faults there, so this loop is what they test)."""
        n = self._write_some(f, data)
        f.size += n
        if n != len(data):  # a short write: write the rest
            self._write_rest(f, data, n)

    def _write_rest(self, f: WritableFile, data: bytes | bytearray | memoryview, n: int) -> None:
        """After a short write of ``n`` bytes of ``data`` (already counted
        in ``f.size``): write the rest, or raise."""
        total = len(data)
        mv = memoryview(data)
        while n < total:
            w = self._write_some(f, mv[n:])
            if w <= 0:  # no progress: an error, not a reason to spin
                raise OSError(errno.EIO, f"write wrote nothing ({n} of {total} bytes written)", f.path)
            f.size += w
            n += w

    def _write_some(self, f: WritableFile, data: bytes | bytearray | memoryview) -> int:
        """One ``os.write`` at the end of ``f``: the number of bytes written
        (maybe fewer than ``len(data)``), or ``OSError``."""
        return os.write(f.fd, data)

    def _sync(self, f: WritableFile, data_only: bool) -> None:
        self._sync_fd(f.path, f.fd, data_only)

    def _sync_fd(self, path: str, fd: int, data_only: bool) -> None:
        if data_only:
            os.fdatasync(fd)
        else:
            os.fsync(fd)

    def _preallocate(self, f: WritableFile, length: int) -> None:
        try:
            fallocate = getattr(os, "posix_fallocate", None)
            if fallocate is None:
                return
            # FALLOC_FL_KEEP_SIZE is not exposed by os; posix_fallocate grows
            # the size, so lsm only calls this on files whose readers stop at
            # a zero header (the WAL).
            fallocate(f.fd, f.size, length)
        except OSError as e:
            if e.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                return
            raise

    def _write_zeros(self, f: WritableFile, n: int) -> None:
        zeros = _ZEROS
        while n >= ZERO_CHUNK:
            f.write(zeros)
            n -= ZERO_CHUNK
        if n:
            f.write(zeros[:n])

    def _pread(self, f: ReadableFile, offset: int, n: int) -> bytes:
        return os.pread(f.fd, n, offset)

    def _close(self, f: WritableFile | ReadableFile, fd: int) -> None:
        os.close(fd)


ZERO_CHUNK = 4096
"""Bytes per write of :meth:`WritableFile.write_zeros` (a page)."""
_ZEROS = bytes(ZERO_CHUNK)
_os_write = os.write
_os_fdatasync = os.fdatasync
_os_fsync = os.fsync
_DIRECT_HOOKS = ("_write", "_write_some", "_sync", "_sync_fd")
"""Write and sync hooks: a file of a layer with FileSystem's own makes the
system calls itself (``WritableFile._direct``)."""
_READ_HOOKS = ("_pread", "open_read")
"""``open_read_mapped`` maps only with FileSystem's own."""
_MAPPED_WRITE_HOOKS = (*_DIRECT_HOOKS, "open_overwrite")
"""``open_overwrite_mapped`` maps only with FileSystem's own."""
_ORIGINAL = {h: getattr(FileSystem, h) for h in (*_MAPPED_WRITE_HOOKS, *_READ_HOOKS)}


def _plain(fs: FileSystem, hooks: tuple[str, ...]) -> bool:
    """True when ``fs``'s ``hooks`` are FileSystem's own: not overridden by
    its class, patched on the class, or set on the instance."""
    cls = type(fs)
    if any(getattr(cls, h, None) is not _ORIGINAL[h] for h in hooks):
        return False
    d = getattr(fs, "__dict__", None)
    return not d or not any(h in d for h in hooks)


def _is_direct(fs: FileSystem) -> bool:
    """True when ``fs``'s write and sync hooks are FileSystem's own: its
    WritableFiles may then make the system calls themselves."""
    return _plain(fs, _DIRECT_HOOKS)


DEFAULT_FS = FileSystem()


def makedirs_durable(fs: FileSystem, path: str) -> None:
    """Create ``path`` and its missing parents, and fsync the parent of each
    directory created so that its entry survives a power cut (a fsync of
    the new directory alone does not make its name durable)."""
    missing = []
    p = os.path.abspath(path)
    while not fs.exists(p):
        missing.append(p)
        parent = os.path.dirname(p)
        if parent == p:
            break
        p = parent
    fs.makedirs(path)
    for d in reversed(missing):
        fs.sync_dir(os.path.dirname(d))
