"""Names of the files of a database. Part of the on-disk format.

Data directory::

    CURRENT              name of the live manifest (one line, "MANIFEST-000005\\n")
    MANIFEST-NNNNNN      log of version edits
    NNNNNN.sst           an SSTable, numbered from the manifest's file counter
    LOCK                 fcntl lock held while open
    FENCE                present while the database needs recovery
    LOG                  human-readable event log
    *.tmp                temporary files, removed on open

WAL directory (the data directory unless ``wal_dir`` is given)::

    SSSSSSSSSSSSSSSSSSSS.wal   a WAL segment, named by the sequence number of
                               its first record (20 digits, so names sort in
                               replay order)
    archive/                   retained sealed segments (retention options):

        SSSSSSSSSSSSSSSSSSSS-AAAAAAAAAAAAAAAAAAAA.wal
                               a segment moved here after its data was
                               flushed; S: its first sequence number (as
                               in the WAL directory), A: when it was
                               archived, microseconds since the Unix epoch.
                               Not a live segment name (parse_wal refuses
                               it), so replay can never pick it up.
"""

from __future__ import annotations

import os
import re
from typing import Final

CURRENT: Final = "CURRENT"
LOCK: Final = "LOCK"
FENCE: Final = "FENCE"
LOG: Final = "LOG"
ARCHIVE_DIR: Final = "archive"

# ASCII digits only (\d also takes other scripts' digits), at most 20 of them
# (file numbers are u64s), and \Z rather than $ (which also matches before a
# final newline): a name, or a CURRENT file, holding thousands of digits is
# not ours, rather than a ValueError from int() (tests/test_fuzz_decoders.py).
_SST_RE: Final = re.compile(r"^([0-9]{6,20})\.sst\Z")
_WAL_RE: Final = re.compile(r"^([0-9]{20})\.wal\Z")
_MANIFEST_RE: Final = re.compile(r"^MANIFEST-([0-9]{6,20})\Z")
_ARCHIVED_RE: Final = re.compile(r"^([0-9]{20})-([0-9]{20})\.wal\Z")


def sst_name(number: int) -> str:
    return "%06d.sst" % number


def wal_name(first_seq: int) -> str:
    return "%020d.wal" % first_seq


WAL_SPARE = "wal-spare.tmp"
"""The next WAL segment, preallocated (zero-filled and synced) in the WAL
directory before it is needed and renamed into place at rotation
(``WalWriter.prepare_spare``). Not a segment name: replay, archive,
checkpoint and verify never take it for one; open removes a leftover one
(a ``.tmp`` name: also removed with the other temp files when the WAL
directory is the database directory)."""


def archived_wal_name(first_seq: int, archived_us: int) -> str:
    """Name of a segment in the archive directory (see the module docstring)."""
    return f"{first_seq:020d}-{archived_us:020d}.wal"


def manifest_name(number: int) -> str:
    return "MANIFEST-%06d" % number


def parse_sst(name: str) -> int | None:
    m = _SST_RE.match(name)
    return int(m.group(1)) if m else None


def parse_wal(name: str) -> int | None:
    m = _WAL_RE.match(name)
    return int(m.group(1)) if m else None


def parse_archived_wal(name: str) -> tuple[int, int] | None:
    """(first_seq, archived_us) of an archived segment name, else None."""
    m = _ARCHIVED_RE.match(name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def parse_manifest(name: str) -> int | None:
    m = _MANIFEST_RE.match(name)
    return int(m.group(1)) if m else None


def join(directory: str, name: str) -> str:
    return os.path.join(directory, name)
