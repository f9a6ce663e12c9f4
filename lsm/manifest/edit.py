"""Version edits: the records of the manifest. Part of the on-disk format,
specified in ``docs/format/manifest.md``.

A :class:`VersionEdit` is the difference between two versions (files added
and removed, per level) plus the counters that change with it. Its payload
is a sequence of tagged fields, each a :class:`Tag` byte followed by
fixed-width little-endian integers and u32-length-prefixed byte strings.

:meth:`VersionEdit.decode` trusts nothing: any malformed input raises
:class:`~lsm.base.errors.CorruptionError` naming the path and the absolute
offset of the bad field, no length field can make it allocate more than the
input's size, and no other exception type escapes it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from lsm.base.coding import MAX_SEQ, U32, U64
from lsm.base.errors import CorruptionError
from lsm.manifest.version import FileMeta


class Tag(IntEnum):
    """Field tags of a version edit. Part of the on-disk format: never
    renumber; a retired tag stays as a commented gap. 0 is never a tag (a
    zero-filled payload is not a valid edit)."""

    NEXT_FILE_NUMBER = 1  # u64
    LAST_SEQ = 2  # u64
    FLUSHED_SEQ = 3  # u64
    ADD_FILE = 4  # level u8, 6 x u64, 2 x (u32 length, bytes)
    REMOVE_FILE = 5  # level u8, number u64


# ADD_FILE fixed part: level, number, file_size, min_seq, max_seq, num_entries, num_deletes.
_ADD_FIXED: Final = struct.Struct("<BQQQQQQ")
_REMOVE: Final = struct.Struct("<BQ")
_U8_MAX: Final = 0xFF
_U64_MAX: Final = (1 << 64) - 1
_U32_MAX: Final = (1 << 32) - 1

_TAG_NEXT_FILE_NUMBER: Final = int(Tag.NEXT_FILE_NUMBER)
_TAG_LAST_SEQ: Final = int(Tag.LAST_SEQ)
_TAG_FLUSHED_SEQ: Final = int(Tag.FLUSHED_SEQ)
_TAG_ADD_FILE: Final = int(Tag.ADD_FILE)
_TAG_REMOVE_FILE: Final = int(Tag.REMOVE_FILE)


@dataclass
class VersionEdit:
    """One manifest record: files added and removed plus counters.

    ``flushed_seq``: every commit with seq <= flushed_seq is in SSTables; WAL
    replay starts after it; WAL segments wholly <= it may be deleted. A None
    counter means "unchanged".
    """

    added: list[tuple[int, FileMeta]] = field(default_factory=list)  # (level, file)
    removed: list[tuple[int, int]] = field(default_factory=list)  # (level, number)
    next_file_number: int | None = None
    last_seq: int | None = None
    flushed_seq: int | None = None

    def add_file(self, level: int, f: FileMeta) -> None:
        self.added.append((level, f))

    def remove_file(self, level: int, number: int) -> None:
        self.removed.append((level, number))

    # ------------------------------------------------------------ encoding
    def encode(self) -> bytes:
        """The payload bytes. Field order: counters, removals, additions
        (decode accepts any order). Raises ValueError when a value does not
        fit its field or a file is inconsistent (smallest > largest, ...)."""
        out = bytearray()
        for tag, value in (
            (_TAG_NEXT_FILE_NUMBER, self.next_file_number),
            (_TAG_LAST_SEQ, self.last_seq),
            (_TAG_FLUSHED_SEQ, self.flushed_seq),
        ):
            if value is not None:
                limit = _U64_MAX if tag == _TAG_NEXT_FILE_NUMBER else MAX_SEQ
                _range(Tag(tag).name, value, limit)
                out.append(tag)
                out += U64.pack(value)
        for level, number in self.removed:
            _range("level", level, _U8_MAX)
            _range("file number", number, _U64_MAX)
            out.append(_TAG_REMOVE_FILE)
            out += _REMOVE.pack(level, number)
        for level, f in self.added:
            _range("level", level, _U8_MAX)
            for name in ("number", "file_size", "num_entries", "num_deletes"):
                _range(name, getattr(f, name), _U64_MAX)
            _range("min_seq", f.min_seq, MAX_SEQ)
            _range("max_seq", f.max_seq, MAX_SEQ)
            problem = _file_problem(f)
            if problem:
                raise ValueError(f"file {f.number}: {problem}")
            for key in (f.smallest, f.largest):
                if not isinstance(key, bytes):
                    raise TypeError(f"file {f.number}: keys must be bytes, got {type(key).__name__}")
                if len(key) > _U32_MAX:
                    raise ValueError(f"file {f.number}: key longer than 2**32-1 bytes")
            out.append(_TAG_ADD_FILE)
            out += _ADD_FIXED.pack(
                level, f.number, f.file_size, f.min_seq, f.max_seq, f.num_entries, f.num_deletes
            )
            out += U32.pack(len(f.smallest))
            out += f.smallest
            out += U32.pack(len(f.largest))
            out += f.largest
        return bytes(out)

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview, path: str = "?", offset: int = 0) -> VersionEdit:
        """Parse a payload made by :meth:`encode`. ``path`` and ``offset``
        (of the payload's first byte in that file) locate errors: any
        malformed input raises CorruptionError(reason, path, offset of the
        bad field) and nothing else."""
        mv = memoryview(data).cast("B")
        n = len(mv)
        edit = cls()
        seen: set[int] = set()
        pos = 0
        try:
            while pos < n:
                at = pos
                tag = mv[pos]
                pos += 1
                if tag in (_TAG_NEXT_FILE_NUMBER, _TAG_LAST_SEQ, _TAG_FLUSHED_SEQ):
                    if tag in seen:
                        raise _bad(f"duplicate {Tag(tag).name} field", path, offset + at)
                    seen.add(tag)
                    if pos + 8 > n:
                        raise _Truncated(f"truncated {Tag(tag).name} field", path, offset + at)
                    (value,) = U64.unpack_from(mv, pos)
                    pos += 8
                    if tag == _TAG_NEXT_FILE_NUMBER:
                        edit.next_file_number = value
                    else:
                        if value > MAX_SEQ:
                            raise _bad(f"{Tag(tag).name} {value} exceeds 2**56-1", path, offset + at)
                        if tag == _TAG_LAST_SEQ:
                            edit.last_seq = value
                        else:
                            edit.flushed_seq = value
                elif tag == _TAG_REMOVE_FILE:
                    if pos + _REMOVE.size > n:
                        raise _Truncated("truncated REMOVE_FILE field", path, offset + at)
                    edit.removed.append(_REMOVE.unpack_from(mv, pos))
                    pos += _REMOVE.size
                elif tag == _TAG_ADD_FILE:
                    if pos + _ADD_FIXED.size > n:
                        raise _Truncated("truncated ADD_FILE field", path, offset + at)
                    level, number, size, min_seq, max_seq, entries, deletes = _ADD_FIXED.unpack_from(mv, pos)
                    pos += _ADD_FIXED.size
                    keys = []
                    for _ in range(2):
                        if pos + 4 > n:
                            raise _Truncated("truncated ADD_FILE key length", path, offset + at)
                        (klen,) = U32.unpack_from(mv, pos)
                        pos += 4
                        if klen > n - pos:  # checked before slicing: no allocation from a bad length
                            raise _Truncated(
                                f"ADD_FILE key length {klen} runs past the record", path, offset + pos - 4
                            )
                        keys.append(bytes(mv[pos : pos + klen]))
                        pos += klen
                    f = FileMeta(number, size, keys[0], keys[1], min_seq, max_seq, entries, deletes)
                    if max_seq > MAX_SEQ:
                        raise _bad(f"file {number}: max_seq {max_seq} exceeds 2**56-1", path, offset + at)
                    problem = _file_problem(f)
                    if problem:
                        raise _bad(f"file {number}: {problem}", path, offset + at)
                    edit.added.append((level, f))
                else:
                    raise _bad(f"unknown version edit tag {tag}", path, offset + at)
        except CorruptionError:
            raise
        except Exception as e:  # defensive: decode promises CorruptionError only
            raise CorruptionError(
                f"malformed version edit ({type(e).__name__}: {e})", path, offset + pos
            ) from e
        return edit


class _Truncated(CorruptionError):
    """The payload ends inside a field: it may be a prefix of a valid edit."""


def is_edit_prefix(data: bytes | bytearray | memoryview) -> bool:
    """True when ``data`` is a prefix of some valid encoded edit: every
    complete field is valid and only the last may be cut short. Recovery
    uses it to tell a torn final record from a damaged length field."""
    try:
        VersionEdit.decode(data)
    except _Truncated:
        return True
    except CorruptionError:
        return False
    return True


def _bad(reason: str, path: str, offset: int) -> CorruptionError:
    return CorruptionError(reason, path, offset)


def _range(name: str, value: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not (0 <= value <= hi):
        raise ValueError(f"{name}: {value} does not fit (0..{hi})")


def _file_problem(f: FileMeta) -> str:
    """Why ``f`` is inconsistent in itself, or '' when it is not."""
    if f.smallest > f.largest:
        return "smallest key > largest key"
    if f.min_seq > f.max_seq:
        return "min_seq > max_seq"
    if f.num_deletes > f.num_entries:
        return "num_deletes > num_entries"
    return ""
