"""Reading a database's files for people: what ``lsm dump-wal``,
``lsm dump-sst`` and ``lsm dump-manifest`` print.

Each function reads through the filesystem layer, changes nothing on disk,
takes no lock (it works on a database that is open elsewhere, or on a
copy), and returns plain data: dicts, lists, ints, and keys and values as
``bytes`` (the caller chooses how to show them). Damage does not raise: it
is reported in the result (``damage``) after everything intact before it,
because these are the tools one reaches for when something is damaged.
Only a file that cannot be read at all raises (``OSError``, or
``CorruptionError`` for an sstable whose footer or metadata blocks fail
their checks: nothing in it can be trusted).

Formats: docs/format/wal.md, docs/format/sstable.md, docs/format/manifest.md.

Thread-safety: pure functions of the files they read.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from lsm.base import filenames
from lsm.base.checksum import crc, mask
from lsm.base.coding import U32, U32U32, ValueKind
from lsm.base.errors import CorruptionError, InvalidDatabaseError
from lsm.base.fs import FileSystem
from lsm.batch import decode_body
from lsm.manifest.edit import VersionEdit
from lsm.manifest.version import Version, VersionBuilder
from lsm.manifest.version_set import FORMAT_VERSION, HEADER_SIZE, MAGIC, MAX_RECORD_SIZE, RECORD_HEADER_SIZE
from lsm.sstable.reader import TableReader
from lsm.wal.reader import scan_segment

KIND_NAMES = {ValueKind.PUT: "PUT", ValueKind.DELETE: "DELETE", ValueKind.RANGE_DELETE: "RANGE_DELETE"}


# ---------------------------------------------------------------------- WAL
def wal_files(fs: FileSystem, path: str) -> list[tuple[str, int | None]]:
    """The segment files at ``path`` with the first sequence number their
    names promise: ``path`` itself when it is a file (any name), else the
    live segments (``SSSS.wal``) and archived ones (``SSSS-AAAA.wal``) in
    the directory, in log order. Raises FileNotFoundError when there is no
    such path, ValueError when a directory holds no segment."""
    if not fs.exists(path):
        raise FileNotFoundError(2, "no such file or directory", path)
    if not fs.is_dir(path):
        name = os.path.basename(path)
        seq = filenames.parse_wal(name)
        if seq is None:
            archived = filenames.parse_archived_wal(name)
            seq = archived[0] if archived else None
        return [(path, seq)]
    found = []
    for name in fs.listdir(path):
        seq = filenames.parse_wal(name)
        key = (seq, 0) if seq is not None else None
        if seq is None:
            archived = filenames.parse_archived_wal(name)
            if archived is not None:
                seq, key = archived[0], archived
        if seq is not None and key is not None:
            found.append((key, filenames.join(path, name), seq))
    if not found:
        raise ValueError(f"{path}: no WAL segments here (names like 00000000000000000001.wal)")
    found.sort()
    return [(p, seq) for _key, p, seq in found]


def dump_wal(fs: FileSystem, path: str) -> list[dict[str, Any]]:
    """Every segment at ``path`` (:func:`wal_files`), checked as recovery
    checks it (:func:`lsm.wal.reader.scan_segment`): per segment its
    ``path``, ``first_seq``, ``file_size``, ``valid_end``, ``records``
    (``seq``, ``count``, ``timestamp_us``, ``offset``, ``ops`` as ``(kind
    name, key, value)``, or ``error`` when a body that passed its checksum
    does not decode) and ``damage`` (None, or ``offset``, ``reason``,
    ``is_tail``, ``detail``: the first damage, where reading stopped)."""
    out = []
    for p, seq in wal_files(fs, path):
        scan = scan_segment(fs, p, expected_first_seq=seq)
        records = []
        for r in scan.records:
            rec: dict[str, Any] = {"seq": r.seq, "count": r.count, "timestamp_us": r.timestamp_us,
                                   "offset": r.offset}
            try:
                rec["ops"] = [(KIND_NAMES.get(k, str(k)), key, value)
                              for k, key, value in decode_body(r.body, r.count, r.path, r.offset)]
            except CorruptionError as e:
                rec["ops"] = []
                rec["error"] = str(e)
            records.append(rec)
        d = scan.damage
        out.append({
            "path": p,
            "first_seq": scan.first_seq,
            "file_size": scan.file_size,
            "valid_end": scan.valid_end,
            "records": records,
            "damage": None if d is None else {"offset": d.offset, "reason": d.reason, "is_tail": d.is_tail,
                                              "detail": d.detail},
        })
    return out


# ------------------------------------------------------------------ SSTable
def dump_sst(fs: FileSystem, path: str, *, entries: bool = True, limit: int | None = None) -> dict[str, Any]:
    """An sstable's ``properties`` (its properties block), ``index`` (per
    data block: ``last_key``, ``last_seq``, ``last_kind``, ``offset``,
    ``size`` with trailer) and, when ``entries``, its ``entries`` in order
    (``key``, ``seq``, ``kind``, ``value``; at most ``limit``). Every block
    read is checksum-verified; a damaged data block stops the listing and is
    reported in ``damage``."""
    number = filenames.parse_sst(os.path.basename(path)) or 0
    r = TableReader.open(fs, path, file_number=number, cache=None, verify_checksums=True)
    try:
        props = dataclasses.asdict(r.properties) if dataclasses.is_dataclass(r.properties) else {}
        # The reader keeps the decoded index in these attributes (lsm/sstable/reader.py _load_meta).
        index = [
            {"last_key": k, "last_seq": t >> 8, "last_kind": KIND_NAMES.get(t & 0xFF, str(t & 0xFF)),
             "offset": off, "size": size}
            for k, t, off, size in zip(r._ikeys, r._itrailers, r._boffs, r._bsizes)
        ]
        out: dict[str, Any] = {"path": path, "file_size": r.file.size, "properties": props, "index": index,
                               "damage": None}
        if entries:
            listed: list[dict[str, Any]] = []
            try:
                for key, trailer, value in r.iter_entries(fill_cache=False):
                    if limit is not None and len(listed) >= limit:
                        break
                    listed.append({"key": key, "seq": trailer >> 8,
                                   "kind": KIND_NAMES.get(trailer & 0xFF, str(trailer & 0xFF)), "value": value})
            except CorruptionError as e:
                out["damage"] = {"offset": e.offset, "reason": str(e)}
            out["entries"] = listed
        return out
    finally:
        r.close()


# ----------------------------------------------------------------- manifest
def manifest_path(fs: FileSystem, path: str) -> str:
    """The manifest to read: ``path`` itself when it is a file, else the
    one CURRENT names in the database directory ``path``."""
    if not fs.exists(path):
        raise FileNotFoundError(2, "no such file or directory", path)
    if not fs.is_dir(path):
        return path
    current = filenames.join(path, filenames.CURRENT)
    if not fs.exists(current):
        raise InvalidDatabaseError(f"{path}: no CURRENT file (not an lsm database?)")
    data = fs.read_file(current)
    name = data[:-1].decode("ascii", "replace") if data.endswith(b"\n") else ""
    if filenames.parse_manifest(name) is None:
        raise CorruptionError(f"garbled CURRENT file {data[:64]!r}", current)
    return filenames.join(path, name)


def _file_dict(level: int, f: Any) -> dict[str, Any]:
    return {"level": level, "number": f.number, "file_size": f.file_size, "smallest": f.smallest,
            "largest": f.largest, "min_seq": f.min_seq, "max_seq": f.max_seq, "num_entries": f.num_entries,
            "num_deletes": f.num_deletes}


def dump_manifest(fs: FileSystem, path: str) -> dict[str, Any]:
    """The version edits of a manifest (``path``: a database directory,
    read through CURRENT, or a manifest file) in order, each with its
    ``offset``, counters and ``added`` / ``removed`` files, then the
    ``version`` they build (counters and the files of each level). The
    first damaged record (bad checksum, length or payload) ends the listing
    and is reported in ``damage``; whether it is a torn tail (nothing intact
    after it) is recovery's call (docs/format/manifest.md)."""
    mpath = manifest_path(fs, path)
    data = fs.read_file(mpath)
    out: dict[str, Any] = {"manifest": mpath, "file_size": len(data), "edits": [], "damage": None}
    if len(data) < HEADER_SIZE or data[:8] != MAGIC:
        raise CorruptionError("not a manifest (bad magic or truncated header)", mpath, 0)
    if mask(crc(data[:12])) != U32.unpack_from(data, 12)[0]:
        raise CorruptionError("manifest header checksum mismatch", mpath, 0)
    fmt = U32.unpack_from(data, 8)[0]
    if fmt != FORMAT_VERSION:
        raise InvalidDatabaseError(f"{mpath}: manifest format version {fmt} (this lsm reads {FORMAT_VERSION})")
    edits = []
    mv = memoryview(data)
    off = HEADER_SIZE
    size = len(data)
    while off < size:
        if size - off < RECORD_HEADER_SIZE:
            out["damage"] = {"offset": off, "reason": f"record header cut short ({size - off} bytes)"}
            break
        stored, length = U32U32.unpack_from(data, off)
        end = off + RECORD_HEADER_SIZE + length
        if length > MAX_RECORD_SIZE or end > size:
            out["damage"] = {"offset": off, "reason": f"record length {length} runs past the end of the file"}
            break
        if mask(crc(mv[off + 8 : end], crc(mv[off + 4 : off + 8]))) != stored:
            out["damage"] = {"offset": off, "reason": "record checksum mismatch"}
            break
        try:
            edit = VersionEdit.decode(mv[off + 8 : end], mpath, off + 8)
        except CorruptionError as e:
            out["damage"] = {"offset": off, "reason": str(e)}
            break
        edits.append(edit)
        out["edits"].append({
            "offset": off,
            "next_file_number": edit.next_file_number,
            "last_seq": edit.last_seq,
            "flushed_seq": edit.flushed_seq,
            "added": [_file_dict(lv, f) for lv, f in edit.added],
            "removed": [{"level": lv, "number": n} for lv, n in edit.removed],
        })
        off = end
    levels = 1 + max([lv for e in edits for lv, _f in e.added] + [6])
    builder = VersionBuilder(Version.empty(levels))
    counters: dict[str, int | None] = {"next_file_number": None, "last_seq": None, "flushed_seq": None}
    try:
        for ed in edits:
            builder.apply(ed)
            for name in counters:
                if getattr(ed, name) is not None:
                    counters[name] = getattr(ed, name)
        version = builder.build()
    except CorruptionError as err:
        out["damage"] = out["damage"] or {"offset": None, "reason": f"edits do not apply: {err}"}
        out["version"] = None
        return out
    out["version"] = dict(counters, levels=[[_file_dict(lv, f) for f in files]
                                            for lv, files in enumerate(version.levels)])
    return out
