"""The spare WAL segment: the next segment, preallocated ahead of rotation.

With ``size`` > 0 (option ``wal_preallocate``), the next segment is
prepared ahead as a *spare* (``filenames.WAL_SPARE``): ``size`` bytes of
zeros written a page at a time and fdatasync'd, by :meth:`SpareSegment.prepare`
on the ``lsm-wal-spare`` thread (or, with ``inline``, right after each
rotation, so that inline databases stay deterministic), never on the
commit path and never under the DB write lock in thread mode. The WAL
writer's rotation :meth:`take`\\ s it, renames it into place and writes it
from offset 0 (``fs.open_overwrite``): an fdatasync of a record then writes
data blocks only, no file-size metadata (issue 7: ~5.0k vs ~3.6k syncs/s on
the dev box). A failed preparation only counts (``failures``): rotation
then creates the segment as without preallocation. Its I/O is labelled
``io_site("wal_spare")``, so fault rules and crash points aimed at commits
miss it.

Page cache: the zeros are written by :meth:`WritableFile.write_zeros`,
one 4 KiB page per write(2) on the real filesystem (one write in CrashFS).
Written in 1 MiB chunks (before), they sat in the page cache as 1 MiB
folios (Linux 6.x sizes a folio by the write that creates it), each later
record dirtied its whole folio, and every FULL commit's fdatasync was
accounted 1 MiB of write-back (``/proc/self/io`` write_bytes per 161-byte
put: 1 MiB, now 4 KiB). Dropping the pages instead
(``POSIX_FADV_DONTNEED`` after the sync) also cut the write-back, but the
first record in each page then read it back from disk, under the DB write
lock for an OFF commit: 40,000 OFF puts read 6.4 MB and ran 23-31k/s
instead of 37-39k/s. Page-sized writes cost the spare thread ~2,500 more
write(2) calls per 10 MiB, off the commit path.

When (thread mode): not at once after a rotation but when the live
segment will need its successor soon (:func:`due`): once it is
``START_FRACTION`` full, or when at its fill rate it would be full within
``LEAD_SECONDS``. Nothing polls: the DB's write path looks at fill
checkpoints (every 1/16 of a memtable of data,
lsm/background/fill_checkpoints.py) and calls :meth:`SpareSegment.look` with the bytes
written and the rate since its previous checkpoint; the thread sleeps on
its event, with no timeout, until a look finds the segment due (or a
rotation, or close, kicks it). An idle or read-only DB never wakes it. An
OFF fill (~20 MB/s) starts it at the first checkpoint after the
rotation; a FULL commit stream (~1 MB/s) half-way through the segment.
Writing and syncing 10 MiB right after open or a rotation competed with
the first FULL commits' fdatasyncs for the disk (issue 7 target 1:
fillsync, 10,000 puts, ~1.6 MB of WAL, is the first workload after
open). A rotation that finds no ready spare creates its segment as
without preallocation (as after a failed preparation); a rotation while
the spare still waits for its checkpoint (``pending``) prepares it at
once. ``deferred`` False (or ``inline``): prepared at once, as before.

Thread-safety: ``_mu`` guards ``_ready`` and ``_busy`` (set while a
preparation runs, and while a rotation holds the spare it took, from
:meth:`SpareSegment.take` to :meth:`SpareSegment.taken`); ``failures`` is
written by the one preparing thread at a time (the ``_busy`` flag);
``pending`` and ``_thread`` by the caller of :meth:`want` and
:meth:`look` (the WAL writer's rotation and the DB's write path, both
under the DB write lock).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from lsm.base import filenames
from lsm.base.fs import FileSystem, io_site

START_FRACTION = 0.5
"""Prepare the spare once the live segment holds this fraction of ``size``."""
LEAD_SECONDS = 2.0
"""... or once, at its fill rate since the last look, it would be full this soon."""


def due(size: int, written: int, rate: float, fraction: float = START_FRACTION,
        lead_seconds: float = LEAD_SECONDS) -> bool:
    """True when a live segment of ``written`` bytes (of ``size``), filling
    at ``rate`` bytes per second, needs its successor prepared now: it is
    ``fraction`` full, or would be full within ``lead_seconds`` (module
    docstring, "When"). The flush worker's lazy start asks the same of the
    memtable (lsm.background.scheduler.flush_due)."""
    if written >= size * fraction:
        return True
    return rate > 0 and (size - written) / rate <= lead_seconds


class SpareSegment:
    """The spare segment file of one WAL directory (module docstring)."""

    def __init__(self, fs: FileSystem, wal_dir: str, size: int, *, inline: bool,
                 stopped: Callable[[], bool], deferred: bool = False):
        self.fs = fs
        self.size = size
        self.path = filenames.join(wal_dir, filenames.WAL_SPARE)
        self._inline = inline
        self._stopped = stopped  # the writer is fenced: the thread stops preparing
        self._deferred = deferred and not inline  # wait for a look that finds the segment due
        self._mu = threading.Lock()
        self._ready = False  # guarded by _mu
        self._busy = False  # guarded by _mu
        self._closed = False
        self._thread: threading.Thread | None = None
        self._kick = threading.Event()
        self.failures = 0
        self.pending = False
        """Deferred: a rotation wants the next spare and no look found the
        live segment due yet (the DB's write path keeps looking while set)."""

    def prepare(self) -> bool:
        """Prepare the spare segment file now (``size`` zero bytes, written
        a page at a time, fdatasync'd) unless one is ready or being prepared;
        True when one is ready. Errors are counted, not raised."""
        if not self.size:
            return False
        with self._mu:
            if self._ready or self._busy or self._closed:
                return self._ready
            self._busy = True
        ok = False
        try:
            with io_site("wal_spare"):
                f = self.fs.create(self.path)
                try:
                    f.write_zeros(self.size)  # page by page (module docstring, "Page cache")
                    f.datasync()
                finally:
                    f.close()
            ok = True
        except OSError:
            self.failures += 1
        finally:
            with self._mu:
                self._busy = False
                self._ready = ok and not self._closed
        return ok

    def take(self) -> bool:
        """Claim the ready spare for a rotation: True when there was one.
        The caller then renames ``path`` into place and MUST call
        :meth:`taken` afterwards (in a ``finally``): until then the claim
        keeps ``_busy`` set, so no :meth:`prepare` (a kick left over from
        an earlier look or rotation) creates a file at ``path`` meanwhile.
        Such a create would truncate the claimed file before its rename,
        or write its zeros through its own descriptor over the records the
        rotation writes after it (the crash_kill power-cut run of seed
        429180525 caught the create racing the rename)."""
        with self._mu:
            take, self._ready = self._ready, False
            if take:
                self._busy = True
        return take

    def taken(self) -> None:
        """The rotation that :meth:`take` claimed the spare for has renamed
        it away (or failed to): ``path`` is free for the next spare."""
        with self._mu:
            self._busy = False

    def want(self) -> None:
        """After a rotation used (or lacked) the spare: prepare the next,
        at once or (deferred) once a :meth:`look` finds the new segment due;
        at once too when the last segment's look never did (the rotation
        came first)."""
        if not self.size or self._closed:
            return
        if self._inline:
            self.prepare()
        elif self._deferred and not self.pending:
            self.pending = True
        else:
            self._start()

    def look(self, written: int, rate: float) -> None:
        """A fill checkpoint of the live segment (``written`` bytes, filling
        at ``rate`` bytes per second since the previous one): while
        ``pending``, kick the thread once :func:`due` (module docstring,
        "When")."""
        if self.pending and due(self.size, written, rate):
            self.pending = False
            self._start()

    def _start(self) -> None:
        if self._closed:
            return
        if self._thread is None:
            t = threading.Thread(target=self._loop, name="lsm-wal-spare", daemon=True)
            self._thread = t
            t.start()
        self._kick.set()

    def _loop(self) -> None:
        while not self._closed:
            self._kick.wait()  # no timeout: only a kick (due, a rotation, close) wakes the thread
            self._kick.clear()
            if self._closed or self._stopped():
                return
            if self._ready:  # prepared since the rotation that kicked (it was busy then): nothing to do
                continue
            self.prepare()

    def close(self) -> None:
        """Stop preparing; wait (at most 5 s) for the thread."""
        self._closed = True
        self._kick.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)
