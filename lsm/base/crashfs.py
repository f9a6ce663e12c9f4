"""CrashFS: an in-memory filesystem that knows what a power cut would keep,
and can fail any operation on demand.

It is the test double behind the durability proofs (leveldb's
fault_injection_test and pebble's crash-clone MemFS are the models). Every
file keeps two contents: what a reader sees now (the page cache) and what is
on the platter (as of its last fsync/fdatasync). Every directory keeps two
entry tables: the current one and the one as of its last directory fsync,
plus the ordered log of unsynced changes between them (a create, an unlink,
a rename: a rename inside one directory is one atomic change).

:meth:`CrashFS.power_cut` returns a new CrashFS holding a state the disk
could be in after power is lost now: each unsynced directory change applied
or reverted, each file's unsynced bytes dropped, kept, torn or holed
(``HOLE_BLOCK`` blocks kept, zeroed or garbage), per ``mode`` (``"random"``,
``"drop"``, ``"keep"``, ``"holes"``); :mod:`lsm.base.powercut` decides those
outcomes and documents them. The image counts the outcomes it chose in
``cut_outcomes`` (``"holes"``: a tail with a lost block before a kept one,
that is, an intact block after damage; ``"holes_wal"``: those in files
named ``*.wal``).

Crash points and faults. Every mutating operation (create, write, sync,
sync_dir, rename, remove, link, truncate, mkdir, preallocate) gets an index
(``ops``). A crash point makes its operation not happen: the image is taken
just before it (:attr:`image`) and from then on every mutating operation
raises EIO, as a dead disk would (so no later commit can be acknowledged).
:meth:`arm_crash` chooses the point: the nth operation from now, or the nth
matching a kind, a path pattern or a call site (mid-flush: ``site="flush"``).
:meth:`fail` adds a rule that fails the nth operation of a kind (optionally
matching a path pattern and an :func:`~lsm.base.fs.io_site`), once or
persistently; for a write the failure can be a short write (``short=True``:
only a prefix is written and the short count returned, as ``os.write``
may; the fs layer's write loop then writes the rest, or meets the next
failure). Each ``os.write`` the fs layer makes is one "write" operation, so
the rest of a short write is the next one. ``trace`` (when enabled) records
``(index, kind, path, site)``; ``trace_hook`` (when set) also sees what each
operation carries (the destination of a rename, the bytes of a write, ...),
and each rule's ``fired_at`` lists the operation indices it failed.

Thread-safety: one lock (``_mu``) guards the whole tree, the descriptor
table and the counters; each operation is atomic with respect to the others
and to :meth:`power_cut`. Only ``background="thread"`` or ``"inline"`` can
use it (a worker process does its file I/O on the real filesystem).
"""

from __future__ import annotations

import errno
import posixpath
import random
import re
import threading
import time
from dataclasses import dataclass, field

from lsm.base.fs import FileSystem, ReadableFile, WritableFile, current_site
from lsm.base.powercut import HOLE_BLOCK, MODES, cut_content, cut_entries  # noqa: F401 (HOLE_BLOCK: re-exported)
from lsm.base.powercut import cut_holes as _holes  # noqa: F401 (re-exported: tools/power_cut_fs.py)

_MUTATING = frozenset(
    ("create", "write", "sync", "sync_dir", "rename", "remove", "link", "truncate", "mkdir", "preallocate")
)


class _Inode:
    __slots__ = ("data", "durable", "late_error", "lo", "tail_only")

    def __init__(self) -> None:
        self.late_error: Fault | None = None  # a write-back error the next sync reports
        self.data = bytearray()  # what reads see
        self.durable = bytearray()  # on the platter as of the last sync
        # True while data[:len(durable)] == durable (only appends since the
        # last sync), so a power cut can keep any prefix of the tail; or,
        # with ``lo`` set, while only in-place writes (open_overwrite) at or
        # after ``lo`` changed it: data[:lo] == durable[:lo].
        self.tail_only = True
        self.lo: int | None = None  # lowest offset overwritten in place since the last sync

    def is_dirty(self) -> bool:
        return not self.tail_only or len(self.data) != len(self.durable) or self.lo is not None


class _Dir:
    __slots__ = ("durable", "entries", "log")

    def __init__(self) -> None:
        self.entries: dict[str, _Inode | _Dir] = {}
        self.durable: dict[str, _Inode | _Dir] = {}
        # Unsynced changes in order; each group is applied or reverted whole.
        self.log: list[list[tuple[str, _Inode | _Dir | None]]] = []

    def change(self, *group: tuple[str, _Inode | _Dir | None]) -> None:
        for name, node in group:
            if node is None:
                self.entries.pop(name, None)
            else:
                self.entries[name] = node
        self.log.append(list(group))


@dataclass
class Fault:
    """Fail the ``nth`` (1-based) operation of ``kind`` whose path matches
    ``path`` (a regex searched in the path) at call site ``site``, with
    ``err`` (an errno); every later match too when ``persistent``."""

    kind: str
    nth: int = 1
    err: int = errno.EIO
    path: str | None = None
    site: str | None = None
    persistent: bool = False
    late: bool = False
    """For kind "sync": the matching sync returns success but keeps nothing
    durable, and the NEXT sync of that file raises (a write-back error the
    kernel reports late, on a later fsync)."""
    short: bool = False
    """For kind "write": the first time the rule fires, the write writes
    only a prefix of its bytes (``keep`` of them, default half) and returns
    that count instead of raising; when ``persistent``, every later firing
    raises ``err`` (a disk that fills in the middle of a write: a short
    write, then ENOSPC). A write of fewer than 2 bytes cannot be short: it
    is written whole (the rule still counts it as fired)."""
    keep: int | None = None
    """Bytes a short write keeps, clamped to 1 .. len - 1 (None: half)."""
    hits: int = 0
    fired: int = 0
    fired_at: list[int] = field(default_factory=list)
    """Operation indices (``CrashFS.ops``) at which this rule fired."""

    def matches(self, kind: str, path: str, site: str) -> bool:
        if self.kind != "any" and self.kind != kind:
            return False
        if self.site is not None and self.site != site:
            return False
        return self.path is None or re.search(self.path, path) is not None


@dataclass
class _Lock:
    fs: CrashFS
    key: str
    path: str
    released: bool = field(default=False)

    def release(self) -> None:
        if not self.released:
            self.released = True
            with self.fs._mu:
                self.fs._locks.discard(self.key)


class CrashFS(FileSystem):
    """See the module docstring. Paths are POSIX paths; relative ones are
    taken from the root."""

    in_memory = True

    def __init__(self, *, trace: bool = False, sync_latency: float = 0.0):
        self.sync_latency = sync_latency  # seconds each file sync sleeps (outside the lock), as a disk would
        self._mu = threading.RLock()
        self._root = _Dir()
        self._fds: dict[int, _Inode] = {}
        self._next_fd = 1_000_000  # never a real descriptor number in tests' eyes
        self._locks: set[str] = set()
        self.ops = 0
        self.counts: dict[str, int] = {}
        self._crash: Fault | None = None  # the armed crash point
        self.crash_index: int | None = None  # op index where power was lost
        self.image: CrashFS | None = None
        self.crash_hook = None  # called (under _mu) when the crash image is taken
        self.dead = False
        self.faults: list[Fault] = []
        self.trace: list[tuple[int, str, str, str]] | None = [] if trace else None
        # Called (under _mu) as trace_hook(index, kind, path, site, info) for
        # every mutating operation, before its crash or fault check (so also
        # for one that then fails; see Fault.fired_at). ``info``: the
        # destination of a rename, the source of a link, the bytes of a write
        # (the caller's buffer: copy it to keep it; for a write cut short by a
        # rule, only a prefix of it was written: see Fault.fired_at, and the
        # rest is the next write), the size of a truncate,
        # the length of a preallocate; else None. ``path`` is as in ``trace``
        # (a rename's source, a link's destination).
        self.trace_hook = None
        # In an image made by power_cut: how often each unsynced-tail outcome
        # was chosen ("holes": a lost block before a kept one).
        self.cut_outcomes: dict[str, int] = {}

    # ------------------------------------------------------------ plumbing
    @staticmethod
    def _parts(path: str) -> list[str]:
        p = posixpath.normpath("/" + str(path))
        return [x for x in p.split("/") if x]

    def _walk(self, parts: list[str]) -> _Inode | _Dir | None:
        node: _Inode | _Dir | None = self._root
        for name in parts:
            if not isinstance(node, _Dir):
                return None
            node = node.entries.get(name)
        return node

    def _parent(self, path: str) -> tuple[_Dir, str]:
        parts = self._parts(path)
        if not parts:
            raise OSError(errno.EINVAL, "not a file path", path)
        d = self._walk(parts[:-1])
        if d is None:
            raise FileNotFoundError(errno.ENOENT, "no such directory", path)
        if not isinstance(d, _Dir):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
        return d, parts[-1]

    def _file(self, path: str) -> _Inode:
        node = self._walk(self._parts(path))
        if node is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", path)
        if isinstance(node, _Dir):
            raise IsADirectoryError(errno.EISDIR, "is a directory", path)
        return node

    def _op(self, kind: str, path: str, info: object = None) -> Fault | None:
        """Account one mutating operation; REQUIRES _mu. Raises for a dead
        disk, the crash point or a matching fault rule; returns a firing
        rule that does not raise (late, short) for the caller to apply."""
        self.ops += 1
        self.counts[kind] = self.counts.get(kind, 0) + 1
        site = current_site()
        if self.trace is not None:
            self.trace.append((self.ops, kind, path, site))
        if self.trace_hook is not None:
            self.trace_hook(self.ops, kind, path, site, info)
        if self.dead:
            raise OSError(errno.EIO, "simulated power loss: the disk is gone", path)
        crash = self._crash
        if crash is not None and crash.matches(kind, path, site):
            crash.hits += 1
            if crash.hits >= crash.nth:
                self._crash = None
                self.crash_index = self.ops
                self.image = self.power_cut(self._crash_rng, mode=self._crash_mode)
                self.dead = True
                if self.crash_hook is not None:
                    self.crash_hook()
                raise OSError(errno.EIO, "simulated power loss: the disk is gone", path)
        for f in self.faults:
            if f.matches(kind, path, site):
                f.hits += 1
                if f.hits == f.nth or (f.persistent and f.hits > f.nth):
                    f.fired += 1
                    f.fired_at.append(self.ops)
                    if f.late or (f.short and f.fired == 1):
                        return f  # the caller carries it out
                    raise OSError(f.err, f"injected fault in {kind} (match {f.hits})", path)
        return None

    _crash_rng: random.Random | None = None
    _crash_mode = "random"

    def arm_crash(self, nth: int, *, kind: str = "any", site: str | None = None, path: str | None = None,
                  rng: random.Random | None = None, mode: str = "random") -> None:
        """Lose power just before the ``nth`` (1-based, counted from now)
        mutating operation matching ``kind``/``site``/``path``: the state
        before it becomes :attr:`image` (a power cut in ``mode``) and the
        disk dies."""
        with self._mu:
            self._crash = Fault(kind, nth, errno.EIO, path, site)
            self._crash_rng = rng
            self._crash_mode = mode
            self.image = None
            self.crash_index = None

    def fail(self, kind: str, nth: int = 1, err: int = errno.EIO, *, path: str | None = None,
             site: str | None = None, persistent: bool = False, late: bool = False, short: bool = False,
             keep: int | None = None) -> Fault:
        """Add a fault rule (see :class:`Fault`); ``kind`` is one of the
        mutating operation kinds or ``"any"``."""
        if kind != "any" and kind not in _MUTATING:
            raise ValueError(f"unknown operation kind {kind!r}")
        if late and kind != "sync":
            raise ValueError("a late fault applies to kind 'sync' only")
        if short and kind != "write":
            raise ValueError("a short fault applies to kind 'write' only")
        if keep is not None and (not short or keep < 1):
            raise ValueError("keep is the (positive) byte count of a short write")
        rule = Fault(kind, nth, err, path, site, persistent, late, short, keep)
        with self._mu:
            self.faults.append(rule)
        return rule

    # --------------------------------------------------------------- files
    def create(self, path: str) -> WritableFile:
        with self._mu:
            self._op("create", path)
            d, name = self._parent(path)
            node = d.entries.get(name)
            if isinstance(node, _Dir):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            if node is None:
                node = _Inode()
                d.change((name, node))
            else:  # O_TRUNC of an existing file
                node.data = bytearray()
                if node.durable:
                    node.tail_only = False
                    node.lo = None
            return self._new_writable(path, node, 0)

    def open_append(self, path: str) -> WritableFile:
        with self._mu:
            node = self._file(path)
            return self._new_writable(path, node, len(node.data))

    def open_overwrite(self, path: str) -> WritableFile:
        with self._mu:
            node = self._file(path)
            return self._new_writable(path, node, 0)

    def _new_writable(self, path: str, node: _Inode, size: int) -> WritableFile:
        fd = self._next_fd
        self._next_fd += 1
        self._fds[fd] = node
        return WritableFile(self, path, fd, size)

    def open_read(self, path: str) -> ReadableFile:
        with self._mu:
            node = self._file(path)
            fd = self._next_fd
            self._next_fd += 1
            self._fds[fd] = node
            return ReadableFile(self, path, fd, len(node.data))

    def _node_of(self, fd: int, path: str) -> _Inode:
        node = self._fds.get(fd)
        if node is None:
            raise OSError(errno.EBADF, "bad file descriptor", path)
        return node

    def _write_some(self, f: WritableFile, data: bytes | bytearray | memoryview) -> int:
        with self._mu:
            short = self._op("write", f.path, data)
            node = self._node_of(f.fd, f.path)
            n = len(data)
            if short is not None and n >= 2:
                n = min(max(short.keep or n // 2, 1), n - 1)
                data = memoryview(data)[:n]
            pos = f.size
            end = len(node.data)
            if pos == end:
                node.data += data
            elif pos > end:  # at the descriptor's position, past a hole: zeros between
                node.data += bytes(pos - end)
                node.data += data
            else:  # in place (open_overwrite): over a preallocated segment's zeros
                if pos < len(node.durable) and node.tail_only:
                    node.lo = pos if node.lo is None else min(node.lo, pos)
                node.data[pos:pos + n] = data
            return n

    def _sync(self, f: WritableFile, data_only: bool) -> None:
        with self._mu:
            pending = self._op("sync", f.path)
            node = self._node_of(f.fd, f.path)
            late = node.late_error
            if late is not None:
                node.late_error = None
                raise OSError(late.err, "injected write-back error, reported late", f.path)
            if pending is not None:
                # Pretend success: nothing becomes durable, and the data
                # written so far is what a power cut drops.
                node.late_error = pending
                return
            if node.tail_only and node.lo is not None:
                node.durable[node.lo:] = node.data[node.lo:]
            elif node.tail_only and len(node.data) >= len(node.durable):
                node.durable += node.data[len(node.durable):]
            else:
                node.durable = bytearray(node.data)
            node.tail_only = True
            node.lo = None
        if self.sync_latency:
            time.sleep(self.sync_latency)

    def _preallocate(self, f: WritableFile, length: int) -> None:
        with self._mu:
            self._op("preallocate", f.path, length)
            node = self._node_of(f.fd, f.path)
            if len(node.data) < f.size + length:
                node.data += bytes(f.size + length - len(node.data))

    def _write_zeros(self, f: WritableFile, n: int) -> None:
        f.write(bytes(n))  # one write operation (one crash point), whatever n: no page cache to shape

    def _pread(self, f: ReadableFile, offset: int, n: int) -> bytes:
        with self._mu:
            node = self._node_of(f.fd, f.path)
            return bytes(node.data[offset:offset + n])

    def _close(self, f: WritableFile | ReadableFile, fd: int) -> None:
        with self._mu:
            self._fds.pop(fd, None)

    # ----------------------------------------------------------- namespace
    def rename(self, src: str, dst: str) -> None:
        with self._mu:
            self._op("rename", src, dst)
            sd, sname = self._parent(src)
            dd, dname = self._parent(dst)
            node = sd.entries.get(sname)
            if node is None:
                raise FileNotFoundError(errno.ENOENT, "no such file", src)
            if isinstance(dd.entries.get(dname), _Dir):
                raise IsADirectoryError(errno.EISDIR, "is a directory", dst)
            if sd is dd:
                if sname != dname:
                    sd.change((dname, node), (sname, None))
            else:
                dd.change((dname, node))
                sd.change((sname, None))

    def remove(self, path: str) -> None:
        with self._mu:
            self._op("remove", path)
            d, name = self._parent(path)
            node = d.entries.get(name)
            if node is None:
                raise FileNotFoundError(errno.ENOENT, "no such file", path)
            if isinstance(node, _Dir):
                raise IsADirectoryError(errno.EISDIR, "is a directory", path)
            d.change((name, None))

    def link(self, src: str, dst: str) -> None:
        with self._mu:
            self._op("link", dst, src)
            node = self._file(src)
            d, name = self._parent(dst)
            if name in d.entries:
                raise FileExistsError(errno.EEXIST, "file exists", dst)
            d.change((name, node))

    def truncate(self, path: str, size: int) -> None:
        with self._mu:
            self._op("truncate", path, size)
            node = self._file(path)
            if size < len(node.data):
                del node.data[size:]
            else:
                node.data += bytes(size - len(node.data))
            if size < len(node.durable):
                node.tail_only = False
                node.lo = None

    def exists(self, path: str) -> bool:
        with self._mu:
            return self._walk(self._parts(path)) is not None

    def is_dir(self, path: str) -> bool:
        with self._mu:
            return isinstance(self._walk(self._parts(path)), _Dir)

    def listdir(self, path: str) -> list[str]:
        with self._mu:
            node = self._walk(self._parts(path))
            if node is None:
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            if not isinstance(node, _Dir):
                raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
            return sorted(node.entries)

    def makedirs(self, path: str) -> None:
        with self._mu:
            d = self._root
            for name in self._parts(path):
                node = d.entries.get(name)
                if node is None:
                    self._op("mkdir", path)
                    node = _Dir()
                    d.change((name, node))
                elif not isinstance(node, _Dir):
                    raise FileExistsError(errno.EEXIST, "a file is in the way", path)
                d = node

    def file_size(self, path: str) -> int:
        with self._mu:
            return len(self._file(path).data)

    def sync_dir(self, path: str) -> None:
        with self._mu:
            self._op("sync_dir", path)
            node = self._walk(self._parts(path))
            if not isinstance(node, _Dir):
                raise FileNotFoundError(errno.ENOENT, "no such directory", path)
            node.durable = dict(node.entries)
            node.log.clear()

    def lock(self, directory: str):  # type: ignore[override]
        path = posixpath.join(directory, "LOCK")
        key = "/" + "/".join(self._parts(directory))
        with self._mu:
            if key in self._locks:
                raise BlockingIOError(errno.EAGAIN, "locked", path)
            if not self.exists(path):
                self.create(path).close()
            self._locks.add(key)
        return _Lock(self, key, path)

    # ----------------------------------------------------------- power cut
    def power_cut(self, rng: random.Random | None = None, *, mode: str = "random") -> CrashFS:
        """A new CrashFS holding what the disk could hold if power were
        lost now (see the module docstring for ``mode``). Everything in it
        is durable. This filesystem is not changed."""
        if mode not in MODES:
            raise ValueError(f"unknown power-cut mode {mode!r}")
        rng = rng or random.Random(0)
        with self._mu:
            out = CrashFS()
            memo: dict[int, _Inode] = {}
            out._root = self._cut_dir(self._root, rng, mode, memo, out.cut_outcomes)
            return out

    def _cut_dir(
        self, d: _Dir, rng: random.Random, mode: str, memo: dict[int, _Inode], outcomes: dict[str, int]
    ) -> _Dir:
        entries = cut_entries(d.durable, d.log, rng, mode)
        new = _Dir()
        for name in sorted(entries):
            node = entries[name]
            if isinstance(node, _Dir):
                new.entries[name] = self._cut_dir(node, rng, mode, memo, outcomes)
            else:
                got = memo.get(id(node))
                if got is None:
                    n = outcomes.get("holes", 0)
                    got = memo[id(node)] = _cut_file(node, rng, mode, outcomes)
                    if name.endswith(".wal") and outcomes.get("holes", 0) > n:
                        outcomes["holes_wal"] = outcomes.get("holes_wal", 0) + 1
                new.entries[name] = got
        new.durable = dict(new.entries)
        return new

    def clone(self) -> CrashFS:
        """A copy of the current state (what a killed process leaves)."""
        return self.power_cut(mode="keep")

    def tree(self) -> dict[str, int]:
        """{path: size} of every file (current view), for debugging."""
        out: dict[str, int] = {}

        def walk(d: _Dir, prefix: str) -> None:
            for name, node in sorted(d.entries.items()):
                p = prefix + "/" + name
                if isinstance(node, _Dir):
                    walk(node, p)
                else:
                    out[p] = len(node.data)

        with self._mu:
            walk(self._root, "")
        return out


def _cut_file(node: _Inode, rng: random.Random, mode: str, outcomes: dict[str, int]) -> _Inode:
    out = _Inode()
    content = cut_content(node, rng, mode, outcomes)
    out.data = bytearray(content)
    out.durable = bytearray(content)
    return out
