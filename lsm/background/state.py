"""What reads and flushes share with the background work: the super
version (replaced as a whole), an immutable memtable waiting for its flush,
opening table readers, and the file metadata of a job's output tables."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lsm.base import filenames
from lsm.base.fs import io_site
from lsm.manifest.version import FileMeta
from lsm.memtable import MemTable
from lsm.sstable.get_plan import probe_plan
from lsm.sstable.reader import TableReader

if TYPE_CHECKING:
    from lsm.db import DB


class SuperVersion:
    """What a read needs, replaced atomically: the live memtable, the
    immutable memtables (newest first), the version and its open readers.

    ``range_dels``: some memtable or table holds a range tombstone (reads
    take their range-tombstone path only then). The live memtable's first
    tombstone replaces the super version (``DB.write``), so the flag never
    lags a published commit.

    ``plan``: the tables' read plan with their filters resolved
    (lsm/sstable/get_plan.py), what ``DB._get`` walks after the memtables."""

    __slots__ = ("imms", "mem", "plan", "range_dels", "readers", "version")

    def __init__(self, mem: MemTable, imms: tuple[MemTable, ...], version: Any, readers: dict[int, Any]):
        self.mem = mem
        self.imms = imms
        self.version = version
        self.readers = readers
        self.plan = probe_plan(version.read_plan, readers)
        self.range_dels = (
            mem.range_del_count > 0
            or any(m.range_del_count for m in imms)
            or any(r.range_dels is not None for r in readers.values())
        )


@dataclass
class ImmJob:
    """An immutable memtable waiting for its flush, with the WAL segments
    that hold exactly its commits (start_seq < seq <= end_seq)."""

    mem: MemTable
    wal_paths: list[str]
    start_seq: int
    end_seq: int
    claimed: bool = False  # a flush thread took it (Background._cv)


def open_reader(db: DB, number: int) -> TableReader:
    """Open a table reader whose descriptor closes when it is collected."""
    r = TableReader.open(
        db._fs,
        filenames.join(db.path, filenames.sst_name(number)),
        file_number=number,
        cache=db._cache,
        verify_checksums=db._opts.paranoid_checks,
        mapped=db._opts.mmap_reads,
    )
    weakref.finalize(r, r.file.close)  # closes the descriptor when no super version holds r
    return r


def remove_table(fs: Any, path: str) -> None:
    with io_site("compaction"):
        try:
            fs.remove(path)
        except OSError:
            pass  # an orphan now; removed at the next open


def meta(number: int, p: Any) -> FileMeta:
    return FileMeta(
        number=number,
        file_size=p.file_size,
        smallest=p.smallest,
        largest=p.largest,
        min_seq=p.min_seq,
        max_seq=p.max_seq,
        num_entries=p.num_entries,
        num_deletes=p.num_deletes,
    )
