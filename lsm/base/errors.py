"""The exception hierarchy of lsm. Every error lsm raises on purpose is a
subclass of :class:`Error`; wrong argument types raise ``TypeError`` and
absurd option values raise ``ValueError`` (both name the argument)."""

from __future__ import annotations


class Error(Exception):
    """Base class of every lsm-specific error."""


class CorruptionError(Error):
    """Stored bytes failed a check (magic, version, length or checksum).

    ``path`` and ``offset`` name where the damage was found (either may be
    None when not applicable). Corrupt data is never returned as valid.
    """

    def __init__(self, message: str, path: str | None = None, offset: int | None = None):
        where = ""
        if path is not None:
            where = f" in {path}"
            if offset is not None:
                where += f" at offset {offset}"
        super().__init__(message + where)
        self.path = path
        self.offset = offset
        self.reason = message


class NeedsRecoveryError(Error):
    """The database fenced itself after an I/O failure that may have lost
    promised data (a failed fsync or WAL write). Close and reopen it: recovery
    brings it back to its last durable state. ``cause`` is the original error."""

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(message)
        self.cause = cause


class ClosedError(Error):
    """The database (or snapshot, iterator, batch) was used after close."""


class LockedError(Error):
    """The database directory is already open, in this process or another."""


class InvalidDatabaseError(Error):
    """The directory holds something that is not an lsm database (or a newer
    format than this version reads)."""


class TargetNotEmptyError(Error):
    """The destination of a checkpoint or a restore exists and is not an
    empty directory (or lies inside the database it would copy). Nothing
    was written."""


class RestoreError(Error):
    """A point-in-time restore cannot produce the state asked for: the base
    (checkpoint or database) already holds commits after the restore point,
    the point lies beyond the newest commit in the available log, or the
    available segments disagree. Nothing was written to the target."""


class RestoreGapError(RestoreError):
    """The WAL segments available (live and archived) do not chain from the
    base's flushed sequence number to the restore point: some were pruned
    from the archive (or never archived). ``missing`` is the first sequence
    number no available segment holds, ``resumes`` the name (first sequence
    number) of the next segment available after the gap."""

    def __init__(self, message: str, missing: int, resumes: int | None):
        super().__init__(message)
        self.missing = missing
        self.resumes = resumes
