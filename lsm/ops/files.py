"""What checkpoint, verify and restore share: pinning the state of a live
DB at one moment (:func:`pin`; the argument is in lsm/ops/checkpoint.py's
docstring), vetting a destination directory, linking or copying tables,
writing a fresh manifest and CURRENT.

Thread-safety: :func:`pin` takes the DB's install lock, then its write
lock, then the WAL-set lock (the order of lsm/db.py); the other helpers
are plain functions of their arguments.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lsm.base import filenames
from lsm.base.errors import CorruptionError, TargetNotEmptyError
from lsm.base.fs import FileSystem, ReadableFile, makedirs_durable
from lsm.manifest.edit import VersionEdit
from lsm.manifest.version import Version
from lsm.manifest.version_set import current_tmp_name, encode_header, encode_record

if TYPE_CHECKING:
    from lsm.db import DB
    from lsm.memtable import MemTable

COPY_CHUNK = 1 << 20
"""Bytes per read/write when a file is copied (bounded memory)."""

LINK_FALLBACK_ERRNOS = frozenset(
    e for e in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", None),
                errno.ENOSYS) if e is not None
)
"""Errors of ``link`` that mean "this filesystem will not link here": the
table is copied instead (and so are the rest)."""


# ----------------------------------------------------------------- pinning
@dataclass(frozen=True)
class PinnedSegment:
    """A WAL segment held open by a pin."""

    path: str
    first_seq: int
    file: ReadableFile
    size: int
    """Bytes to read: the live segment's size at the pin (ends at the pin's
    ``last_seq``), else the whole file."""


@dataclass
class Pinned:
    """The state of a live DB at one moment, with what keeps its files
    readable (see the module docstring). Release with :meth:`close`."""

    version: Version
    readers: dict[int, Any]
    """The super version's table readers: holding them keeps every table of
    ``version`` on disk (a replaced table is unlinked when its reader is
    collected)."""
    flushed_seq: int
    manifest_last_seq: int
    next_file_number: int
    manifest_number: int
    last_seq: int
    """S: the newest commit at the pin."""
    mems: tuple[MemTable, ...]
    segments: list[PinnedSegment] = field(default_factory=list)
    """Sorted by first sequence number."""
    extra: Any = None
    """What ``while_locked`` returned."""

    def close(self) -> None:
        for s in self.segments:
            try:
                s.file.close()
            except OSError:
                pass
        self.segments = []
        self.readers = {}


def pin(db: DB, *, while_locked: Callable[[], Any] | None = None) -> Pinned:
    """Capture the DB's state at one moment and pin its files (module
    docstring). ``while_locked`` runs while the install lock is still held
    (no version can be installed meanwhile); its result is ``extra``."""
    fs = db._fs
    bg = db._bg
    with db._install_mu:
        vs = db._vs
        with db._write_mu:
            sv = db._sv
            last = db._last_seq
            wal = db._wal
            wal.flush_locked()  # staged FULL records into the file: it must hold every commit up to last
            live_path, live_size = wal.segment_path, wal.segment_bytes
            paths = set(db._mem_wal_paths)
            with bg._wal_mu:
                paths |= bg._live_wal
        # Still under the install lock: no segment holding a commit after
        # vs.flushed_seq can be retired before it is opened here.
        segments: list[PinnedSegment] = []
        try:
            for p in sorted(paths):
                first = filenames.parse_wal(os.path.basename(p))
                if first is None:
                    continue
                try:
                    f = fs.open_read(p)
                except FileNotFoundError:
                    continue  # retired after an install the pin covers: all its commits are in tables
                segments.append(PinnedSegment(p, first, f, live_size if p == live_path else f.size))
            extra = while_locked() if while_locked is not None else None
        except BaseException:
            for s in segments:
                s.file.close()
            raise
        segments.sort(key=lambda s: s.first_seq)
        return Pinned(
            version=vs.current,
            readers=sv.readers,
            flushed_seq=vs.flushed_seq,
            manifest_last_seq=vs.last_seq,
            next_file_number=vs.next_file_number,
            manifest_number=vs.manifest_number,
            last_seq=last,
            mems=(sv.mem, *sv.imms),
            segments=segments,
            extra=extra,
        )


# ------------------------------------------------------ destination helpers
def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def refuse_inside(dest: str, dirs: list[str], what: str) -> None:
    """TargetNotEmptyError when ``dest`` is one of ``dirs`` or inside one."""
    d = _real(dest)
    for src in dirs:
        s = _real(src)
        if d == s or d.startswith(s.rstrip(os.sep) + os.sep):
            raise TargetNotEmptyError(
                f"{what} {dest} is inside the database directory {src}; give a directory outside it"
            )


def check_empty_target(fs: FileSystem, path: str, what: str) -> None:
    """TargetNotEmptyError unless ``path`` is absent or an empty directory."""
    if not fs.exists(path):
        return
    if not fs.is_dir(path):
        raise TargetNotEmptyError(f"{what} {path} exists and is not a directory")
    names = fs.listdir(path)
    if names:
        shown = ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")
        raise TargetNotEmptyError(f"{what} {path} is not empty (it holds {shown}); give a new or empty directory")


make_dir_durable = makedirs_durable
"""Create a directory and its parents durably (shared with lsm.recovery)."""

def remove_created(fs: FileSystem, created: list[str]) -> None:
    """Best-effort removal of the files an interrupted copy made, newest
    first (CURRENT before anything it names)."""
    for p in reversed(created):
        try:
            fs.remove(p)
        except OSError:
            pass
    created.clear()


def copy_from(fs: FileSystem, src: ReadableFile, n: int, dst: str, created: list[str]) -> int:
    """Copy the first ``n`` bytes of ``src`` into a new file ``dst`` (fsynced)."""
    w = fs.create(dst)
    created.append(dst)
    try:
        off = 0
        while off < n:
            chunk = src.pread(off, min(COPY_CHUNK, n - off))
            if not chunk:
                raise CorruptionError(f"file ended after {off} bytes, {n} expected", src.path, off)
            w.write(chunk)
            off += len(chunk)
        w.fsync()
    finally:
        w.close()
    return n


class TableCopier:
    """Links tables into another directory, or copies them once linking
    fails with one of :data:`LINK_FALLBACK_ERRNOS` (then every later table
    is copied without trying)."""

    def __init__(self, fs: FileSystem):
        self.fs = fs
        self.can_link = True
        self.linked = 0
        self.copied = 0
        self.bytes = 0

    def table(self, src: str, dst: str, size: int, created: list[str]) -> None:
        """Put table ``src`` (``size`` bytes, as the manifest records) at ``dst``."""
        fs = self.fs
        if self.can_link:
            try:
                fs.link(src, dst)
            except FileNotFoundError:
                raise CorruptionError("missing table file referenced by the manifest", src) from None
            except OSError as e:
                if e.errno not in LINK_FALLBACK_ERRNOS:
                    raise
                self.can_link = False
            else:
                created.append(dst)
                got = fs.file_size(dst)
                if got != size:
                    raise CorruptionError(f"table file is {got} bytes but the manifest records {size}", src)
                self.linked += 1
                self.bytes += size
                return
        try:
            r = fs.open_read(src)
        except FileNotFoundError:
            raise CorruptionError("missing table file referenced by the manifest", src) from None
        try:
            if r.size != size:
                raise CorruptionError(f"table file is {r.size} bytes but the manifest records {size}", src)
            copy_from(fs, r, size, dst, created)
        finally:
            r.close()
        self.copied += 1
        self.bytes += size


def write_manifest_and_current(fs: FileSystem, dbdir: str, number: int, edit: VersionEdit,
                               created: list[str]) -> None:
    """Make ``dbdir`` a database: ``MANIFEST-<number>`` holding ``edit``
    (a full snapshot: every table, all three counters) fsynced, the
    directory fsynced (every name written so far is durable), then CURRENT
    switched to it (temp, fsync, rename, directory fsync) as
    docs/format/manifest.md prescribes. REQUIRES: every other file of the
    database is written and fsynced."""
    path = filenames.join(dbdir, filenames.manifest_name(number))
    w = fs.create(path)
    created.append(path)
    try:
        w.write(encode_header() + encode_record(edit.encode()))
        w.fsync()
    finally:
        w.close()
    fs.sync_dir(dbdir)
    tmp = filenames.join(dbdir, current_tmp_name(number))
    created.append(tmp)
    fs.write_file(tmp, (filenames.manifest_name(number) + "\n").encode("ascii"), sync=True)
    current = filenames.join(dbdir, filenames.CURRENT)
    fs.rename(tmp, current)
    created[-1] = current
    fs.sync_dir(dbdir)
