"""The WAL lifecycle of a DB's background work: retiring the segments of a
flushed memtable (unlink, or archive under retention, then prune the
archive), the same at open for segments a crash left behind, and the
live-WAL accounting (``wal_live``). A mixin of :class:`Background`
(lsm/background/scheduler.py), which decides when; see the package
docstring, "WAL lifecycle", and docs/format/wal.md, "Archive".

Locks: ``_wal_mu`` (a leaf) guards ``_live_wal`` and ``_wal_sizes``; the
archive listing has its own leaf lock (``WalArchive._mu``); the two are
never nested."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from lsm.base.fs import io_site
from lsm.wal.archive import WalArchive
from lsm.wal.format import SEGMENT_HEADER_SIZE

if TYPE_CHECKING:
    from lsm.db import DB


def wall_clock() -> float:
    """Seconds since the Unix epoch: the archive's clock (the time recorded
    in an archived segment's name, and "now" for age pruning). Tests
    replace it (monkeypatch ``lsm.background.wal_lifecycle.wall_clock``)."""
    return time.time()


class WalLifecycle:
    """Retire and account WAL segments. The attributes are set by
    ``Background.__init__``."""

    db: DB
    fs: Any
    opts: Any
    archive: WalArchive
    wal_files_deleted: int
    _wal_mu: threading.Lock
    _live_wal: set[str]
    _wal_sizes: dict[str, int]

    def _delete_wal(self, paths: list[str]) -> None:
        """Retire the WAL segments of a flushed memtable. REQUIRES: the
        version edit holding their commits is synced in the manifest."""
        with io_site("wal"):
            if self._retire_wal(paths):
                self._prune_archive()
        self.db._wal_released()

    def retire_at_open(self, paths: list[str]) -> None:
        """Open (before background work starts): load the archive listing,
        retire ``paths`` (segments whose commits are all in tables, left by
        a crash before their retirement) as after a flush, prune the
        archive. I/O is labelled with the caller's site."""
        self.archive.load()
        self._retire_wal(paths, at_open=True)
        if self.opts.wal_archive:
            self._prune_archive()
        self.db._wal_released()

    def _retire_wal(self, paths: list[str], *, at_open: bool = False) -> bool:
        """Archive (retention on) or unlink each segment of ``paths``; under
        EXTRA make that durable (archive directory first: the segment never
        lacks a durable name). A segment no longer than its header holds no
        commit and is unlinked; so is one that open finds already archived
        (a power cut kept both names of a rename). True if any was archived."""
        fs = self.fs
        archive = self.opts.wal_archive
        moved = False
        for p in paths:
            try:
                size = fs.file_size(p)
                if archive and size > SEGMENT_HEADER_SIZE and not (at_open and self.archive.holds(p, size)):
                    self.archive.archive(p, size, max(0, int(wall_clock() * 1e6)))
                    moved = True
                else:
                    fs.remove(p)
                    self.wal_files_deleted += 1
            except FileNotFoundError:
                pass
            with self._wal_mu:
                self._live_wal.discard(p)
                self._wal_sizes.pop(p, None)
        if paths and self.db._sync_dirs_extra():
            if moved:
                self._sync_archive_dir()
            self.db._wal.sync_dir_extra()
        return moved

    def _prune_archive(self) -> None:
        """Delete the archived segments no retention rule keeps."""
        opts = self.opts
        pruned = self.archive.prune(opts.wal_retention_segments, opts.wal_retention_seconds,
                                    int(wall_clock() * 1e6))
        if pruned and self.db._sync_dirs_extra():
            self._sync_archive_dir()

    def _sync_archive_dir(self) -> None:
        try:
            self.archive.sync_dir()
        except BaseException as e:
            self.db._on_fence(e)
            raise

    @property
    def wal_files_archived(self) -> int:
        return self.archive.files

    @property
    def wal_bytes_archived(self) -> int:
        return self.archive.bytes

    @property
    def wal_files_pruned(self) -> int:
        """Deleted from the archive by the retention rule."""
        return self.archive.pruned

    def wal_live(self, mem_paths: list[str], current: str | None, current_bytes: int, *,
                 remember: bool = False) -> tuple[int, int, bool]:
        """(files, bytes, flushing) of the live WAL: the segments recovery
        still needs, those of the immutable memtables and ``mem_paths`` (the
        live memtable's; ``current``, ``current_bytes`` long, is the one
        being written). ``flushing``: some live segment belongs to an
        immutable memtable whose flush is queued or running. Sealed
        segments are sized with ``fs.file_size``; ``remember`` caches
        those sizes (only a caller holding the DB write lock, for which
        ``mem_paths`` is exact, may ask)."""
        mem = set(mem_paths)
        with self._wal_mu:
            paths = self._live_wal | mem
            flushing = not self._live_wal <= mem
            sizes = {p: self._wal_sizes.get(p) for p in paths}
        files, total = 0, 0
        if current is not None:
            paths.discard(current)
            files, total = 1, current_bytes
        learnt = {}
        for p in paths:
            n = sizes[p]
            if n is None:
                try:
                    n = learnt[p] = self.fs.file_size(p)
                except FileNotFoundError:
                    continue  # retired meanwhile
            files += 1
            total += n
        if remember and learnt:
            with self._wal_mu:
                for p, n in learnt.items():
                    if p in self._live_wal or p in mem:
                        self._wal_sizes[p] = n
        return files, total, flushing
