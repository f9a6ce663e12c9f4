"""Bulk ingestion: building SSTables directly and adding them to the tree
with one version edit, bypassing the WAL and the memtable.

* ``db.ingest(items, sorted=False, memory_budget=...)``
  (:func:`~lsm.ingest.job.ingest_items`): from an iterable of ``(key,
  value)`` pairs in any order, sorted in bounded memory
  (:mod:`lsm.ingest.sort`).
* ``lsm.TableWriter`` (:class:`~lsm.ingest.external.TableWriter`) builds a
  table anywhere (in parallel processes, say), and ``db.ingest_files(paths,
  move=False)`` (:func:`~lsm.ingest.job.ingest_tables`) adds such tables.

Semantics, design and crash safety: :mod:`lsm.ingest.job`; files:
docs/format/ingest.md.
"""

from lsm.ingest.external import TableInfo, TableWriter
from lsm.ingest.job import DEFAULT_MEMORY_BUDGET, ingest_items, ingest_tables

__all__ = ["DEFAULT_MEMORY_BUDGET", "TableInfo", "TableWriter", "ingest_items", "ingest_tables"]
