"""The version set: the one place the live file set changes.

It owns the manifest (a log of version edits, ``docs/format/manifest.md``)
and the CURRENT file naming the live manifest, the current
:class:`~lsm.manifest.version.Version`, and the counters that are persisted
with it (next file number, last sequence number, flushed sequence number).

Durability contract: when :meth:`VersionSet.log_and_apply` returns, the edit
is durable (fdatasync'd, or in a new manifest that was fsync'd and made
live by a durable CURRENT switch). When it raises, the edit may or may not
be durable: the VersionSet is then broken (every later call raises
NeedsRecoveryError) and only reopening tells which.

Thread-safety: every mutating method (``create``, ``recover``,
``new_file_number``, ``log_and_apply``, ``close``) REQUIRES: caller
serialises (the DB calls them with its mutex held). ``current`` is replaced
by a single attribute assignment, so any thread may read it without a lock
and gets a whole Version.
"""

from __future__ import annotations

import errno
from typing import Final

from lsm.base import filenames
from lsm.base.checksum import crc, mask
from lsm.base.coding import U32, U32U32
from lsm.base.errors import CorruptionError, InvalidDatabaseError, NeedsRecoveryError
from lsm.base.fs import FileSystem, WritableFile, io_site
from lsm.manifest.edit import VersionEdit
from lsm.manifest.version import Version, VersionBuilder

# ---- on-disk constants (part of the format; see docs/format/manifest.md) ----
MAGIC: Final = b"lsmMANIF"
FORMAT_VERSION: Final = 1
HEADER_SIZE: Final = 16  # magic(8) | format_version u32 | masked_crc32c u32 of the first 12 bytes
RECORD_HEADER_SIZE: Final = 8  # masked_crc32c u32 (of length+payload) | length u32
MAX_RECORD_SIZE: Final = 1 << 28
"""A longer length field is corruption, not a torn tail (see the doc)."""

DEFAULT_MANIFEST_MAX_SIZE: Final = 4 * 1024 * 1024


def encode_header() -> bytes:
    head = MAGIC + U32.pack(FORMAT_VERSION)
    return head + U32.pack(mask(crc(head)))


def encode_record(payload: bytes) -> bytes:
    """``masked_crc32c(length | payload) | length | payload``."""
    if len(payload) > MAX_RECORD_SIZE:
        raise ValueError(f"version edit of {len(payload)} bytes exceeds the record limit {MAX_RECORD_SIZE}")
    length = U32.pack(len(payload))
    return U32.pack(mask(crc(payload, crc(length)))) + length + payload


def current_tmp_name(manifest_number: int) -> str:
    """Temporary name CURRENT is written under before the rename."""
    return f"CURRENT.{manifest_number:06d}.tmp"


class VersionSet:
    """The one place the live file set changes. Thread-safety: every
    mutating method REQUIRES: caller serialises (log_and_apply is called
    with the DB's lock held); ``current`` is replaced atomically (a single
    attribute assignment).

    Public state (read freely; written only by this class, except that the
    DB may raise ``last_seq`` before ``log_and_apply``):

    * ``current``: the live Version;
    * ``next_file_number``: every file number in use is below it;
    * ``last_seq``: the last sequence number persisted by an edit;
    * ``flushed_seq``: every commit with seq <= it is in SSTables;
    * ``manifest_number``: number of the live manifest (0 before create/recover);
    * ``recovered_torn_tail``: offset of the torn final record dropped by
      ``recover()`` (None when the manifest ended cleanly), for the DB's LOG.
    """

    def __init__(
        self,
        fs: FileSystem,
        dbname: str,
        *,
        num_levels: int = 7,
        manifest_max_size: int = DEFAULT_MANIFEST_MAX_SIZE,
        sync_dirs: bool = True,
    ):
        self.fs = fs
        self.dbname = dbname
        self.num_levels = num_levels
        self.manifest_max_size = manifest_max_size
        self.sync_dirs = sync_dirs
        self.current: Version = Version.empty(num_levels)
        self.next_file_number = 2
        self.last_seq = 0
        self.flushed_seq = 0
        self.manifest_number = 0
        self.recovered_torn_tail: int | None = None
        self._log: WritableFile | None = None  # the live manifest, open for appending; None: roll over next
        self._broken: BaseException | None = None  # the I/O error that broke this VersionSet

    # ------------------------------------------------------------ open
    def create(self) -> None:
        """Start a new, empty database in ``dbname``: MANIFEST-000001 holding
        a full snapshot edit, then CURRENT switched to it. Raises
        FileExistsError when ``dbname`` already has a CURRENT file."""
        with io_site("manifest"):
            self.fs.makedirs(self.dbname)
            current = filenames.join(self.dbname, filenames.CURRENT)
            if self.fs.exists(current):
                raise FileExistsError(errno.EEXIST, "database already exists", current)
            self.current = Version.empty(self.num_levels)
            self.next_file_number = 1
            self.last_seq = 0
            self.flushed_seq = 0
            number = self.new_file_number()
            try:
                self._log = self._write_manifest(number, self._snapshot(self.current, self.flushed_seq))
            except BaseException as e:
                self._broken = e
                raise
            self.manifest_number = number

    def recover(self) -> None:
        """Load the state named by CURRENT: replay every manifest record into
        a Version, then check that every table it names exists with the
        recorded size. Raises CorruptionError naming the file (and offset)
        for a missing or garbled CURRENT, a missing manifest, any damaged
        record except a torn final one, or a missing table file;
        InvalidDatabaseError for a manifest of a newer format; ValueError
        when the manifest uses more levels than ``num_levels``.

        The next log_and_apply starts a new manifest, so the old one (and a
        torn tail in it) is never appended to."""
        with io_site("recovery"):
            number = self._read_current()
            path = filenames.join(self.dbname, filenames.manifest_name(number))
            try:
                data = self.fs.read_file(path)
            except FileNotFoundError:
                raise CorruptionError("CURRENT names a missing manifest", path) from None
            version, nfn, last, flushed, torn = _replay(data, path, self.num_levels)
            if nfn <= number:
                raise CorruptionError(f"next file number {nfn} is not above the manifest's own number", path)
            self._check_tables(version)
        if self._log is not None:
            self._close_quietly(self._log)
        self.current = version
        self.next_file_number = nfn
        self.last_seq = last
        self.flushed_seq = flushed
        self.manifest_number = number
        self.recovered_torn_tail = torn
        self._log = None
        self._broken = None

    def _read_current(self) -> int:
        path = filenames.join(self.dbname, filenames.CURRENT)
        try:
            data = self.fs.read_file(path)
        except FileNotFoundError:
            raise CorruptionError("CURRENT file is missing", path) from None
        name = data[:-1].decode("ascii", "replace") if data.endswith(b"\n") else ""
        number = filenames.parse_manifest(name)
        if number is None or filenames.manifest_name(number) != name:
            raise CorruptionError(f"garbled CURRENT file {data[:64]!r}", path)
        return number

    def _check_tables(self, version: Version) -> None:
        names = set(self.fs.listdir(self.dbname))
        for _level, f in version.all_files():
            name = filenames.sst_name(f.number)
            path = filenames.join(self.dbname, name)
            if name not in names:
                raise CorruptionError("missing table file referenced by the manifest", path)
            size = self.fs.file_size(path)
            if size != f.file_size:
                raise CorruptionError(
                    f"table file is {size} bytes but the manifest records {f.file_size}", path
                )

    # ------------------------------------------------------------ changes
    def new_file_number(self) -> int:
        """Hand out a fresh file number (persisted by the next edit).
        REQUIRES: caller serialises."""
        n = self.next_file_number
        self.next_file_number = n + 1
        return n

    def log_and_apply(self, edit: VersionEdit) -> Version:
        """Make ``edit`` durable in the manifest, install and return the new
        Version. Fills ``edit.next_file_number`` and ``edit.last_seq`` when
        None. Appends one record and fdatasyncs it, or, on the first edit
        after recover() or once the manifest reached ``manifest_max_size``,
        writes a new manifest holding a full snapshot and switches CURRENT.

        Raises ValueError (nothing written, still usable) when the edit is
        inconsistent with the state: counters going backwards, a file number
        not below next_file_number, flushed_seq > last_seq; CorruptionError
        (nothing written) when it does not apply to ``current`` (removes an
        absent file, adds a live number, overlaps in a level >= 1). On an
        I/O error: re-raises it, ``current`` stays unchanged, the edit may or
        may not be durable, and every later call raises NeedsRecoveryError.
        So a caller must not delete the inputs of a failed edit, nor its
        outputs: reopening decides which files are live.

        REQUIRES: caller serialises.
        """
        if self._broken is not None:
            raise NeedsRecoveryError("the manifest failed earlier; reopen the database", self._broken)
        if self.manifest_number == 0:
            raise RuntimeError("VersionSet used before create() or recover()")
        roll = self._log is None or self._log.size >= self.manifest_max_size
        new_manifest = self.new_file_number() if roll else 0
        if edit.next_file_number is None:
            edit.next_file_number = self.next_file_number
        if edit.last_seq is None:
            edit.last_seq = self.last_seq
        flushed = self.flushed_seq if edit.flushed_seq is None else edit.flushed_seq
        self._validate(edit, flushed)
        version = self.current.apply(edit)
        try:
            with io_site("manifest"):
                if roll:
                    snap = self._snapshot(version, flushed, edit.next_file_number, edit.last_seq)
                    log = self._write_manifest(new_manifest, snap)
                    old, self._log = self._log, log
                    self.manifest_number = new_manifest
                    if old is not None:
                        self._close_quietly(old)
                else:
                    assert self._log is not None
                    self._log.write(encode_record(edit.encode()))
                    self._log.datasync()
        except BaseException as e:
            self._broken = e
            if self._log is not None:
                self._close_quietly(self._log)
                self._log = None
            raise
        self.next_file_number = max(self.next_file_number, edit.next_file_number)
        self.last_seq = edit.last_seq
        self.flushed_seq = flushed
        self.current = version
        return version

    def _validate(self, edit: VersionEdit, flushed: int) -> None:
        assert edit.next_file_number is not None and edit.last_seq is not None
        if edit.next_file_number < self.next_file_number:
            raise ValueError(
                f"edit.next_file_number {edit.next_file_number} is below the counter {self.next_file_number}"
            )
        if edit.last_seq < self.last_seq:
            raise ValueError(f"edit.last_seq {edit.last_seq} is below the persisted {self.last_seq}")
        if flushed < self.flushed_seq:
            raise ValueError(f"edit.flushed_seq {flushed} is below the persisted {self.flushed_seq}")
        if flushed > edit.last_seq:
            raise ValueError(f"flushed_seq {flushed} is above last_seq {edit.last_seq}")
        for level, f in edit.added:
            if f.number >= edit.next_file_number:
                raise ValueError(
                    f"added file {f.number} (level {level}) was not handed out by new_file_number()"
                )

    def _snapshot(
        self, version: Version, flushed: int, next_file_number: int | None = None, last_seq: int | None = None
    ) -> VersionEdit:
        return VersionEdit(
            added=version.all_files(),
            next_file_number=self.next_file_number
            if next_file_number is None
            else max(next_file_number, self.next_file_number),
            last_seq=self.last_seq if last_seq is None else last_seq,
            flushed_seq=flushed,
        )

    def _write_manifest(self, number: int, snapshot: VersionEdit) -> WritableFile:
        """Create MANIFEST-<number> holding the header and ``snapshot``,
        fsync it and the directory, then switch CURRENT to it. Returns the
        manifest open for appending."""
        path = filenames.join(self.dbname, filenames.manifest_name(number))
        f = self.fs.create(path)
        try:
            f.write(encode_header() + encode_record(snapshot.encode()))
            f.fsync()
            if self.sync_dirs:
                self.fs.sync_dir(self.dbname)
            self._set_current(number)
        except BaseException:
            self._close_quietly(f)
            raise
        return f

    def _set_current(self, number: int) -> None:
        """Write temp, fsync it, rename over CURRENT, fsync the directory."""
        tmp = filenames.join(self.dbname, current_tmp_name(number))
        self.fs.write_file(tmp, (filenames.manifest_name(number) + "\n").encode("ascii"), sync=True)
        self.fs.rename(tmp, filenames.join(self.dbname, filenames.CURRENT))
        if self.sync_dirs:
            self.fs.sync_dir(self.dbname)

    # ------------------------------------------------------------ housekeeping
    @property
    def broken(self) -> BaseException | None:
        """The I/O error that broke this VersionSet, or None."""
        return self._broken

    def obsolete_manifests(self) -> list[str]:
        """Names of MANIFEST-* files in ``dbname`` other than the live one
        (the DB deletes them); [] while broken, because a failed roll-over
        may have switched CURRENT already, so which manifest is live is
        unknown until reopen. REQUIRES: caller serialises with log_and_apply
        (a roll-over changes which one is live)."""
        if self._broken is not None:
            return []
        out = []
        for name in self.fs.listdir(self.dbname):
            n = filenames.parse_manifest(name)
            if n is not None and n != self.manifest_number:
                out.append(name)
        return out

    def close(self) -> None:
        """Close the manifest file. REQUIRES: caller serialises."""
        log, self._log = self._log, None
        if log is not None:
            log.close()

    @staticmethod
    def _close_quietly(f: WritableFile) -> None:
        try:
            f.close()
        except OSError:
            pass


_PROBE_BYTES: Final = 256 << 20
"""Bytes the search for an intact record after damage may checksum before it
gives up and assumes one may follow (fails closed): every offset whose length
field is in bounds costs a crc over that length, so bytes that read as
lengths everywhere (a repeated 4-byte pattern) would make the search
quadratic in the tail (tests/test_fuzz_decoders.py)."""
_GAVE_UP: Final = -2


def _intact_record_after(data: bytes, mv: memoryview, start: int) -> int:
    """Offset of the first intact record (length in bounds, checksum
    matches, payload decodes as a version edit) starting at or after
    ``start``; -1 when there is none; ``_GAVE_UP`` when more than
    ``_PROBE_BYTES`` would have to be checksummed to tell. Only damage pays
    for this scan."""
    size = len(data)
    unpack_from = U32U32.unpack_from
    budget = _PROBE_BYTES
    for off in range(start, size - RECORD_HEADER_SIZE + 1):
        stored, length = unpack_from(data, off)
        end = off + RECORD_HEADER_SIZE + length
        if length == 0 or end > size:
            continue
        budget -= length
        if budget < 0:
            return _GAVE_UP
        if mask(crc(mv[off + 8 : end], crc(mv[off + 4 : off + 8]))) == stored:
            try:
                VersionEdit.decode(mv[off + 8 : end], "", 0)
            except CorruptionError:
                continue
            return off
    return -1


def _replay(data: bytes, path: str, num_levels: int) -> tuple[Version, int, int, int, int | None]:
    """Parse a whole manifest file. Returns (version, next_file_number,
    last_seq, flushed_seq, offset of a dropped torn tail or None)."""
    if len(data) < HEADER_SIZE:
        raise CorruptionError("manifest header truncated", path, 0)
    if data[:8] != MAGIC:
        raise CorruptionError("bad manifest magic", path, 0)
    (stored,) = U32.unpack_from(data, 12)
    if mask(crc(data[:12])) != stored:
        raise CorruptionError("manifest header checksum mismatch", path, 0)
    (fmt,) = U32.unpack_from(data, 8)
    if fmt != FORMAT_VERSION:
        raise InvalidDatabaseError(
            f"manifest format version {fmt} is not supported (this lsm reads {FORMAT_VERSION}): {path}"
        )
    builder = VersionBuilder(Version.empty(num_levels))
    counters: list[int | None] = [None, None, None]  # next_file_number, last_seq, flushed_seq
    mv = memoryview(data)
    size = len(data)
    off = HEADER_SIZE
    records = 0
    torn: int | None = None
    while off < size:
        if size - off < RECORD_HEADER_SIZE:
            torn = off  # header cut by EOF: a torn final record
            break
        stored, length = U32U32.unpack_from(data, off)
        end = off + RECORD_HEADER_SIZE + length
        if (length > MAX_RECORD_SIZE or end > size
                or mask(crc(mv[off + 8 : end], crc(mv[off + 4 : off + 8]))) != stored):
            # A damaged record is the torn final write of an edit that was
            # never acknowledged iff no intact record follows it; otherwise
            # the damage is in the middle and later edits would be lost.
            found = _intact_record_after(data, mv, off + 1)
            if found != -1:
                if length > MAX_RECORD_SIZE:
                    what = f"manifest record length {length} exceeds the limit"
                elif end > size:
                    what = f"manifest record length {length} runs past the end of the file"
                else:
                    what = "manifest record checksum mismatch"
                after = (
                    f"before an intact record at offset {found}"
                    if found >= 0
                    else "and too many candidate records follow to rule out an intact one"
                )
                raise CorruptionError(f"{what}, {after}", path, off)
            torn = off
            break
        edit = VersionEdit.decode(mv[off + 8 : end], path, off + 8)
        for level, f in edit.added:
            if level >= num_levels:
                raise ValueError(
                    f"num_levels: {path} has file {f.number} at level {level}; open with num_levels >= {level + 1}"
                )
        try:
            builder.apply(edit)
        except CorruptionError as e:
            raise CorruptionError(e.reason, path, off) from None
        for i, v in enumerate((edit.next_file_number, edit.last_seq, edit.flushed_seq)):
            if v is not None:
                counters[i] = v
        records += 1
        off = end
    if records == 0:
        raise CorruptionError("manifest holds no complete record", path, HEADER_SIZE)
    nfn, last, flushed = counters
    if nfn is None or last is None or flushed is None:
        raise CorruptionError("manifest lacks next file number, last sequence or flushed sequence", path)
    try:
        version = builder.build()
    except CorruptionError as e:
        raise CorruptionError(e.reason, path) from None
    for _level, f in version.all_files():
        if f.number >= nfn:
            raise CorruptionError(f"file {f.number} is not below the next file number {nfn}", path)
    if flushed > last:
        raise CorruptionError(f"flushed sequence {flushed} is above the last sequence {last}", path)
    return version, nfn, last, flushed, torn
