"""Background work of a DB (a package split by concept): flushes of immutable memtables and compactions,
and the installs that follow them (the only callers of
``VersionSet.log_and_apply`` after open).

Modules: ``scheduler`` (:class:`Background`: the flush and compaction
threads, job execution, the install, write pacing), ``state``
(:class:`SuperVersion`, :class:`ImmJob`, table readers), ``wal_lifecycle``
(retiring and archiving WAL segments, the live-WAL accounting), ``ingest``
(the entry points lsm/ingest uses). Import the public names from here.

Modes (``Options.background``):

* ``process``: jobs run in the shared worker process pool
  (lsm/compaction/worker.py), started lazily (``Background._lazy_prestart``);
  orchestrating threads here (``max_background_flushes`` flush threads,
  one compaction thread) only wait on pipes and install results. Flushes
  install in queue order whatever order their tables are built in
  (``Background._await_turn``).
* ``thread``: jobs run in those threads (needed for an in-memory fs).
* ``inline``: everything runs synchronously in the writer's thread, under
  the DB write lock (deterministic; tests).

Order of an install (crash safety): output tables are fsynced by the job;
the data directory is fsynced (their names are durable); the version edit
is appended to the manifest and synced; only then are obsolete WAL
segments unlinked; a replaced table is unlinked when its reader is
collected (no super version or iterator reads it any more), and a failed
table unlink leaves an orphan that the next open removes
(docs/architecture.md, "The read path").

WAL lifecycle: a flushed memtable's segments are *retired* once its edit
is synced: unlinked, or, with ``wal_retention_segments`` /
``wal_retention_seconds``, moved into ``<wal_dir>/archive/`` under a name
that records when (docs/format/wal.md, "Archive"); then the archive is
pruned (the archive itself: lsm/wal/archive.py, :class:`WalArchive`; this
module decides when, and supplies the clock). Open retires the segments a
crash left behind the same way and prunes too. Nothing else deletes from
the archive.

Locks: ``_cv`` guards the flush queue and the wake-up flags; ``_install_mu``
(the DB's) guards ``readers`` and the version set; ``_compact_mu``
serialises compactions (one at a time); ``_wal_mu`` (a leaf: no I/O, no
other lock taken under it) guards the live-segment set and their sizes
(the archive listing has its own leaf lock, ``WalArchive._mu``; the two
are never nested). Lock order: DB write lock is never taken while
holding ``_cv``; ``_install_mu`` may be held while briefly taking the
write lock to swap the super version.
"""

from lsm.background.scheduler import MAX_JOB_RETRIES, Background
from lsm.background.state import ImmJob, SuperVersion, open_reader
from lsm.background.state import meta as _meta
from lsm.background.wal_lifecycle import wall_clock
from lsm.wal.archive import ArchivedSegment, WalArchive, archive_victims

__all__ = [
    "MAX_JOB_RETRIES",
    "ArchivedSegment",
    "Background",
    "ImmJob",
    "SuperVersion",
    "WalArchive",
    "_meta",
    "archive_victims",
    "open_reader",
    "wall_clock",
]
