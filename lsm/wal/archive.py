"""The WAL archive: retired segments kept for audit and point-in-time
restore under ``wal_retention_segments`` / ``wal_retention_seconds``.

A retired segment (its commits all in synced tables) is moved into
``<wal_dir>/archive/`` under a name that records its first sequence number
and when it was archived (docs/format/wal.md, "Archive";
``filenames.archived_wal_name``); pruning deletes the archived segments no
retention rule keeps (:func:`archive_victims` decides, without I/O).
Nothing else deletes from the archive; names in it that are not archived
segments are ignored and never deleted.

The caller (``lsm.background.Background``) decides when to archive, supplies
the clock (``now_us``, microseconds since the Unix epoch) and makes the
directory syncs it owes durable (:meth:`WalArchive.sync_dir`), fencing the
DB when one fails.

Thread-safety: ``_mu`` (a leaf: no I/O, no other lock taken under it)
guards the listing and ``bytes``; ``pruned`` is written by the one thread
that retires segments at a time (flush, or open).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from lsm.base import filenames
from lsm.base.fs import FileSystem


@dataclass(frozen=True)
class ArchivedSegment:
    """One file of the WAL archive (``filenames.archived_wal_name``)."""

    first_seq: int
    archived_us: int
    """When it was archived, microseconds since the Unix epoch."""
    name: str
    size: int


def archive_victims(archived: list[ArchivedSegment], keep_segments: int, keep_seconds: float,
                    now_us: int) -> list[ArchivedSegment]:
    """The archived segments pruning deletes, oldest first: those that no
    retention rule keeps. ``keep_segments`` keeps the newest that many (by
    first sequence number, i.e. log order); ``keep_seconds`` keeps those
    archived at most that long before ``now_us``. A rule that is 0 keeps
    nothing; with both 0 retention is off and nothing is deleted (an archive
    left by an earlier configuration is the user's to remove). Pure."""
    if not keep_segments and not keep_seconds:
        return []
    ordered = sorted(archived, key=lambda a: (a.first_seq, a.archived_us))
    by_count = len(ordered) - keep_segments  # index of the first one the count keeps
    victims = []
    for i, a in enumerate(ordered):
        if i >= by_count:
            break
        if keep_seconds and now_us - a.archived_us <= keep_seconds * 1e6:
            continue
        victims.append(a)
    return victims


class WalArchive:
    """The archive directory of ``wal_dir`` and its listing (see the module
    docstring)."""

    def __init__(self, fs: FileSystem, wal_dir: str):
        self.fs = fs
        self.wal_dir = wal_dir
        self.dir = filenames.join(wal_dir, filenames.ARCHIVE_DIR)
        self._mu = threading.Lock()
        self._archived: dict[str, ArchivedSegment] = {}  # by file name; guarded by _mu
        self.bytes = 0  # total size of the archived segments; guarded by _mu
        self.pruned = 0  # archived segments deleted by the retention rule
        self._ready = False  # dir exists and its entry is durable

    @property
    def files(self) -> int:
        return len(self._archived)

    def load(self) -> None:
        """Read the archive listing (names that are not archived segments
        are ignored, and never deleted)."""
        d = self.dir
        if not self.fs.is_dir(d):
            return
        found = {}
        for name in self.fs.listdir(d):
            parsed = filenames.parse_archived_wal(name)
            if parsed is not None:
                found[name] = ArchivedSegment(parsed[0], parsed[1], name, self.fs.file_size(filenames.join(d, name)))
        with self._mu:
            self._archived = found
            self.bytes = sum(a.size for a in found.values())
        self._ready = True

    def archive(self, path: str, size: int, now_us: int) -> None:
        """Move the segment at ``path`` (``size`` bytes) into the archive,
        as archived at ``now_us``; the archive directory is created (and its
        name made durable) first if need be."""
        first_seq = filenames.parse_wal(os.path.basename(path))
        assert first_seq is not None, path
        if not self._ready:
            if not self.fs.is_dir(self.dir):
                self.fs.makedirs(self.dir)
                self.fs.sync_dir(self.wal_dir)  # the directory's own name is durable before it is used
            self._ready = True
        name = filenames.archived_wal_name(first_seq, now_us)
        self.fs.rename(path, filenames.join(self.dir, name))
        with self._mu:
            self._archived[name] = ArchivedSegment(first_seq, now_us, name, size)
            self.bytes += size

    def holds(self, path: str, size: int) -> bool:
        """Whether the archive already holds the segment at ``path``, as
        ``size`` bytes (a power cut kept both names of a rename)."""
        first_seq = filenames.parse_wal(os.path.basename(path))
        with self._mu:
            return any(a.first_seq == first_seq and a.size == size for a in self._archived.values())

    def prune(self, keep_segments: int, keep_seconds: float, now_us: int) -> int:
        """Delete the archived segments no retention rule keeps (see
        :func:`archive_victims`); the number deleted (their directory
        entries are not synced: :meth:`sync_dir`)."""
        with self._mu:
            listing = list(self._archived.values())
        victims = archive_victims(listing, keep_segments, keep_seconds, now_us)
        for a in victims:
            try:
                self.fs.remove(filenames.join(self.dir, a.name))
            except FileNotFoundError:
                pass
            with self._mu:
                del self._archived[a.name]
                self.bytes -= a.size
            self.pruned += 1
        return len(victims)

    def sync_dir(self) -> None:
        """Make the archive directory's entries durable."""
        self.fs.sync_dir(self.dir)
