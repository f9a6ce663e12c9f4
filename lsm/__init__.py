"""lsm: an LSM-tree key-value storage engine for write-heavy ingestion.

    import lsm
    with lsm.open("data") as db:
        db.put(b"key", b"value")            # durable when it returns (Sync.FULL)
        db.put(b"k2", b"v", sync=lsm.Sync.OFF)
        print(db.get(b"key"))

The public surface is this module: :func:`open`, :class:`DB`,
:class:`Options`, :class:`Sync`, :class:`WriteBatch`, :class:`Snapshot`,
:func:`restore` (point-in-time restore), :class:`TableWriter` (SSTables
built outside a database, for ``db.ingest_files``) and the errors.
"""

from __future__ import annotations

import os
from typing import Any

from lsm.base.errors import (
    ClosedError,
    CorruptionError,
    Error,
    InvalidDatabaseError,
    LockedError,
    NeedsRecoveryError,
    RestoreError,
    RestoreGapError,
    TargetNotEmptyError,
)
from lsm.batch import WriteBatch
from lsm.db import DB
from lsm.ingest import TableInfo, TableWriter
from lsm.options import Options, Sync
from lsm.restore import RestoreResult, restore
from lsm.snapshot import Snapshot

__version__ = "0.1.0"

__all__ = [
    "DB",
    "ClosedError",
    "CorruptionError",
    "Error",
    "InvalidDatabaseError",
    "LockedError",
    "NeedsRecoveryError",
    "Options",
    "RestoreError",
    "RestoreGapError",
    "RestoreResult",
    "Snapshot",
    "Sync",
    "TableInfo",
    "TableWriter",
    "TargetNotEmptyError",
    "WriteBatch",
    "open",
    "restore",
]


def open(
    path: str | os.PathLike[str],
    *,
    options: Options | None = None,
    wal_dir: str | os.PathLike[str] | None = None,
    sync: Sync | int | str | None = None,
    **kwargs: Any,
) -> DB:
    """Open (creating if needed) the database in directory ``path``.

    ``options`` gives every tunable at once; keyword arguments (any field of
    :class:`Options`) override it. Unknown or absurd options raise
    ValueError naming the option; wrong types raise TypeError.
    """
    from lsm.recovery import open_db

    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
    if options is not None and not isinstance(options, Options):
        raise TypeError(f"options must be an lsm.Options, not {type(options).__name__}")
    if wal_dir is not None:
        kwargs["wal_dir"] = os.fspath(wal_dir)
    if sync is not None:
        kwargs["sync"] = Sync.coerce(sync)
    opts = Options.from_kwargs(options, **kwargs) if (kwargs or options is None) else options.validate()
    return open_db(os.fspath(path), opts)
