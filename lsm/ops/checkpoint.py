"""Checkpoints: a consistent, openable copy of a live database in another
directory, taken while the database keeps serving writes
(``DB.checkpoint``). The helpers it shares with verify and restore are in
lsm/ops/files.py.

What a checkpoint holds. ``dest_dir`` becomes a database directory whose
WAL lives in itself (whatever the source's ``wal_dir``):

* every table of the source's current version under its own name,
  hard-linked (``fs.link``) or, where the filesystem refuses links (EXDEV
  across devices, EPERM, EMLINK, ENOTSUP, ENOSYS), copied through the fs
  layer. Tables are immutable, so a link shares nothing that either
  database will ever change; each side unlinks its own name when its
  compactions replace the table;
* a fresh manifest (``MANIFEST-N``, N the source's next file number,
  holding one snapshot record: those tables, the flushed sequence number F,
  the counters) and ``CURRENT``;
* copies of the WAL segments that hold the commits after F, the live one
  cut where the last commit S taken into the checkpoint ends. The WAL
  archive is not copied (a restore reads it where it is).

Opening the checkpoint replays F+1..S: it equals the source as of sequence
number S (a prefix of the commit order), and S includes every commit
acknowledged before ``checkpoint()`` was called.

Consistency (:func:`pin`). One moment under the install lock and then the
write lock fixes the version and F (installs change both under the install
lock), S and the set of WAL segments that can hold F+1..S (commits and
segment switches happen under the write lock). Nothing is copied under a
lock:

* tables: the captured super version's readers are held until the copy is
  done; a table that compaction replaces is unlinked only when its last
  reader is collected (lsm/background/), so every name stays linkable;
* WAL: each segment is opened (pinned by its descriptor) while the install
  lock is still held, i.e. before a flush can install and then retire it
  (unlink, or rename into the archive); reading through the descriptor
  works after either. A segment already gone by then belonged to a flush
  installed before the pin: its commits are all <= F. The live segment is
  read only up to its size at the pin, which ends exactly at S (a commit's
  record is appended whole under the write lock).

Before CURRENT is written the copied WAL is replayed (``mode="absolute"``)
and must end exactly at S, so a checkpoint that opens is never silently
short.

Durability: each file written is fsynced (linked tables were fsynced by the
job that wrote them), the directory is fsynced, and only then is CURRENT
written (temp, fsync, rename, directory fsync); a created destination's
parent is fsynced when it is made. An interrupted checkpoint has no
CURRENT: what was created is removed on an error (the directory itself
stays, empty), and after a crash the directory is not a database (delete
it).

Thread-safety: any thread, concurrently with writes, flushes and
compactions. Lock order as in lsm/db.py: install lock, then write lock,
then the WAL-set lock. Under ``background="inline"`` flushes run in the
writer's thread holding the write lock, so use one thread there.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lsm.base import filenames
from lsm.base.errors import Error
from lsm.base.fs import io_site
from lsm.manifest.edit import VersionEdit
from lsm.ops.files import (
    TableCopier,
    check_empty_target,
    copy_from,
    make_dir_durable,
    pin,
    refuse_inside,
    remove_created,
    write_manifest_and_current,
)
from lsm.wal.reader import replay

if TYPE_CHECKING:
    from lsm.db import DB


# --------------------------------------------------------------- checkpoint
@dataclass(frozen=True)
class CheckpointInfo:
    """What ``DB.checkpoint`` made."""

    path: str
    seq: int
    """S: the checkpoint holds exactly the commits with sequence numbers <= S."""
    flushed_seq: int
    """F: commits up to here are in its tables, F+1..S in its WAL."""
    tables: int
    tables_linked: int
    tables_copied: int
    table_bytes: int
    wal_segments: int
    wal_bytes: int


def checkpoint(db: DB, dest_dir: str | os.PathLike[str]) -> CheckpointInfo:
    """The implementation of ``DB.checkpoint`` (see the module docstring)."""
    if isinstance(dest_dir, bytes) or not isinstance(dest_dir, (str, os.PathLike)):
        raise TypeError(f"dest_dir must be a str or os.PathLike, not {type(dest_dir).__name__}")
    dest = os.fspath(dest_dir)
    db._check_usable()
    fs = db._fs
    refuse_inside(dest, [db.path, db.wal_dir], "checkpoint destination")
    check_empty_target(fs, dest, "checkpoint destination")
    pinned = pin(db)
    created: list[str] = []
    try:
        with io_site("checkpoint"):
            make_dir_durable(fs, dest)
            copier = TableCopier(fs)
            files = pinned.version.all_files()
            for _level, f in files:
                name = filenames.sst_name(f.number)
                copier.table(filenames.join(db.path, name), filenames.join(dest, name), f.file_size, created)
            flushed = pinned.flushed_seq
            segs = pinned.segments
            first = 0
            while first + 1 < len(segs) and segs[first + 1].first_seq <= flushed + 1:
                first += 1  # every commit of segs[first] is in the tables (replay's rule)
            wal_bytes = 0
            for s in segs[first:]:
                wal_bytes += copy_from(fs, s.file, s.size, filenames.join(dest, os.path.basename(s.path)), created)
            result = replay(fs, dest, start_seq=flushed, mode="absolute")
            end = max(result.last_seq, pinned.manifest_last_seq)
            if end != pinned.last_seq:
                raise Error(
                    f"checkpoint of {db.path}: the copied WAL ends at sequence number {end}, "
                    f"not at {pinned.last_seq}, the newest commit when the checkpoint began"
                )
            number = pinned.next_file_number
            edit = VersionEdit(added=list(files), next_file_number=number + 1,
                               last_seq=pinned.manifest_last_seq, flushed_seq=flushed)
            write_manifest_and_current(fs, dest, number, edit, created)
    except BaseException:
        remove_created(fs, created)
        raise
    finally:
        pinned.close()
    return CheckpointInfo(
        path=dest,
        seq=pinned.last_seq,
        flushed_seq=pinned.flushed_seq,
        tables=len(files),
        tables_linked=copier.linked,
        tables_copied=copier.copied,
        table_bytes=copier.bytes,
        wal_segments=len(segs) - first,
        wal_bytes=wal_bytes,
    )
