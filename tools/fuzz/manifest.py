"""Fuzz targets ``manifest`` (replay of a manifest file, and
``VersionSet.recover`` through a directory), ``current`` (the CURRENT
file) and ``version_edit``, with seeds written by a VersionSet and the fix
that recomputes the manifest's crcs."""

from __future__ import annotations

import struct
from typing import Any

from fuzz.core import L, Target, check


def _seed_manifests() -> tuple[list[bytes], list[bytes]]:
    """Manifest files and version-edit payloads written by a VersionSet."""
    fs = L.CrashFS()
    vs = L.version_set.VersionSet(fs, "/m")
    vs.create()
    FileMeta, VersionEdit = L.version.FileMeta, L.edit.VersionEdit
    edits = []
    nums = []
    for i in range(3):
        n = vs.new_file_number()
        nums.append(n)
        e = VersionEdit(
            added=[(0, FileMeta(n, 1000 + i, b"a%d" % i, b"z%d" % i, 1 + 10 * i, 10 + 10 * i, 5, 1))],
            last_seq=10 + 10 * i,
            flushed_seq=10 + 10 * i,
        )
        vs.log_and_apply(e)
        edits.append(e.encode())
    n = vs.new_file_number()
    e = VersionEdit(
        removed=[(0, nums[0]), (0, nums[1])], added=[(1, FileMeta(n, 5000, b"a0", b"z1", 1, 20, 10, 0))]
    )
    vs.log_and_apply(e)
    edits.append(e.encode())
    path = L.filenames.join("/m", L.filenames.manifest_name(vs.manifest_number))
    vs.close()
    return [fs.read_file(path)], edits


def fix_manifest(data: bytes) -> bytes:
    b = bytearray(data)
    if len(b) >= 16:
        struct.pack_into("<I", b, 12, L.checksum.mask(L.checksum.crc(b[:12])))
    off = 16
    while off + 8 <= len(b):
        (length,) = struct.unpack_from("<I", b, off + 4)
        end = off + 8 + length
        if end > len(b):
            break
        struct.pack_into(
            "<I",
            b,
            off,
            L.checksum.mask(L.checksum.crc(b[off + 8 : end], L.checksum.crc(b[off + 4 : off + 8]))),
        )
        off = end
    return bytes(b)


def run_manifest(data: bytes) -> str:
    path = "/m/MANIFEST-000001"
    try:
        version, nfn, last, flushed, torn = L.version_set._replay(data, path, 7)
    except (L.CorruptionError, L.InvalidDatabaseError) as e:
        check(getattr(e, "path", path) in (path, None) or path in str(e), f"error names {e}")
        result = "rejected"
    except ValueError as e:  # documented: a manifest needing more levels than the database has
        check(str(e).startswith("num_levels"), f"ValueError {e}")
        result = "rejected"
    else:
        version.check()  # AssertionError (a violation) if the replayed version breaks an invariant
        check(
            all(f.number < nfn for _l, f in version.all_files()), "a file number not below next_file_number"
        )
        check(flushed <= last, "flushed_seq above last_seq")
        check(torn is None or 16 <= torn <= len(data), f"torn tail at {torn}")
        result = "accepted"
    # The same bytes through VersionSet.recover (CURRENT, then the manifest, then the tables,
    # which do not exist here: an accepted replay naming files fails on them).
    fs = L.CrashFS()
    fs.makedirs("/m")
    fs.write_file(path, data, sync=False)
    fs.write_file("/m/CURRENT", b"MANIFEST-000001\n", sync=False)
    try:
        L.version_set.VersionSet(fs, "/m").recover()
    except (L.CorruptionError, L.InvalidDatabaseError):
        pass
    except ValueError as e:
        check(str(e).startswith("num_levels"), f"ValueError {e}")
    return result


def run_current(data: bytes) -> str:
    fs = L.CrashFS()
    fs.makedirs("/c")
    fs.write_file("/c/CURRENT", data, sync=False)
    vs = L.version_set.VersionSet(fs, "/c")
    try:
        number = vs._read_current()
    except L.CorruptionError as e:
        check(e.path == "/c/CURRENT", f"error names {e.path}")
        return "rejected"
    check(data == b"MANIFEST-%06d\n" % number, f"accepted {data!r} as manifest {number}")
    return "accepted"


def run_version_edit(data: bytes) -> str:
    L.edit.is_edit_prefix(data)  # a bool, never an exception
    try:
        e = L.edit.VersionEdit.decode(data, "fuzz", 100)
    except L.CorruptionError as err:
        check(
            err.path == "fuzz" and err.offset is not None and 100 <= err.offset <= 100 + len(data),
            f"error at {err.path}:{err.offset}",
        )
        return "rejected"
    check(L.edit.VersionEdit.decode(e.encode()) == e, "a decoded edit does not round-trip")
    return "accepted"


def targets() -> list[Target]:
    manifests: list[Any] = []

    def manifest_seeds() -> tuple[list[bytes], list[bytes]]:
        if not manifests:
            manifests.extend(_seed_manifests())
        return manifests[0], manifests[1]

    return [
        Target(
            "manifest",
            run_manifest,
            lambda: manifest_seeds()[0],
            fix_manifest,
            "manifest replay and VersionSet.recover",
        ),
        Target(
            "current",
            run_current,
            lambda: [b"MANIFEST-000001\n", b"MANIFEST-123456789\n", b"MANIFEST-18446744073709551615\n"],
            None,
            "the CURRENT file",
        ),
        Target("version_edit", run_version_edit, lambda: manifest_seeds()[1], None, "VersionEdit.decode"),
    ]
