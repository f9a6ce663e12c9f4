"""VersionSet edge cases the reliability families do not reach by chance
(branch coverage of lsm/manifest/version_set.py, issue 5): manifests that
decode but say impossible things, the search for an intact record after
damage, failures while the manifest is closed or rolled over, and
``sync_dirs=False``. On CrashFS (in memory)."""

from __future__ import annotations

import errno

import pytest

import lsm.manifest.version_set as vs_mod
from lsm.base import filenames
from lsm.base.crashfs import CrashFS
from lsm.base.errors import CorruptionError, NeedsRecoveryError
from lsm.base.fs import WritableFile
from lsm.manifest import FileMeta, VersionEdit, VersionSet
from lsm.manifest.version_set import HEADER_SIZE, RECORD_HEADER_SIZE, encode_header, encode_record

D = "/db"


def fm(number: int, smallest: bytes, largest: bytes, size: int = 10) -> FileMeta:
    return FileMeta(number, size, smallest, largest, 1, 1, 1, 0)


def write_manifest(fs: CrashFS, number: int, *edits: VersionEdit, tail: bytes = b"") -> bytes:
    """MANIFEST-<number> holding ``edits`` (then ``tail``), CURRENT naming
    it, and a table file of the recorded size for each file added."""
    fs.makedirs(D)
    data = encode_header() + b"".join(encode_record(e.encode()) for e in edits) + tail
    fs.write_file(f"{D}/{filenames.manifest_name(number)}", data)
    fs.write_file(f"{D}/CURRENT", (filenames.manifest_name(number) + "\n").encode())
    for e in edits:
        for _level, f in e.added:
            fs.write_file(f"{D}/{filenames.sst_name(f.number)}", bytes(f.file_size))
    return data


def recover(fs: CrashFS, **kw) -> VersionSet:
    vs = VersionSet(fs, D, num_levels=4, **kw)
    vs.recover()
    return vs


def snap(*added, nfn: int = 100, last: int = 5, flushed: int = 5) -> VersionEdit:
    return VersionEdit(added=list(added), next_file_number=nfn, last_seq=last, flushed_seq=flushed)


# ------------------------------------------------------------------ impossible manifests
@pytest.mark.parametrize("edits,reason", [
    ([VersionEdit(added=[(1, fm(7, b"a", b"b"))])], "lacks next file number"),
    ([snap(nfn=3)], "is not above the manifest's own number"),
    ([snap((1, fm(150, b"a", b"b")), nfn=100)], "file 150 is not below the next file number 100"),
    ([snap(last=5, flushed=9)], "flushed sequence 9 is above the last sequence 5"),
    ([snap((1, fm(7, b"a", b"m"))), VersionEdit(added=[(1, fm(8, b"k", b"z"))])], "overlapping files 7"),
])
def test_impossible_manifest_is_corruption(edits, reason):
    fs = CrashFS()
    write_manifest(fs, 5, *edits)
    with pytest.raises(CorruptionError, match=reason) as ei:
        recover(fs)
    assert ei.value.path == f"{D}/MANIFEST-000005"


def test_edit_that_does_not_apply_names_its_record_offset():
    fs = CrashFS()
    first = encode_record(snap((1, fm(7, b"a", b"b"))).encode())
    write_manifest(fs, 5, snap((1, fm(7, b"a", b"b"))), VersionEdit(removed=[(2, 7)]))
    with pytest.raises(CorruptionError, match="removes file 7 which is not in level 2") as ei:
        recover(fs)
    assert ei.value.offset == HEADER_SIZE + len(first)


def test_current_naming_a_missing_manifest():
    fs = CrashFS()
    write_manifest(fs, 5, snap())
    fs.write_file(f"{D}/CURRENT", b"MANIFEST-000009\n")
    with pytest.raises(CorruptionError, match="missing manifest"):
        recover(fs)


# ------------------------------------------------------------------ damage, then what follows
def test_checksummed_garbage_after_damage_is_still_a_torn_tail():
    """After a damaged record, a later span whose checksum matches but whose
    payload is not a version edit is not an intact record: the damage is
    the torn tail (dropped), not mid-file corruption."""
    fs = CrashFS()
    damaged = bytearray(encode_record(VersionEdit(last_seq=9).encode()))
    damaged[0] ^= 0xFF
    garbage = encode_record(b"\xfe\xfe\xfe not an edit")
    data = write_manifest(fs, 5, snap(), tail=bytes(damaged) + garbage)
    vs = recover(fs)
    assert vs.recovered_torn_tail == len(data) - len(damaged) - len(garbage)
    assert vs.last_seq == 5  # the damaged edit (last_seq 9) was not applied


def test_search_for_an_intact_record_gives_up_and_fails_closed(monkeypatch):
    """Bytes that read as in-bounds lengths at every offset would make the
    search quadratic; past the probe budget it assumes an intact record may
    follow and reports corruption rather than dropping a tail."""
    fs = CrashFS()
    filler = (16).to_bytes(4, "little") * 64  # every offset: a 16-byte candidate record
    damaged = bytearray(encode_record(VersionEdit(last_seq=9).encode()))
    damaged[0] ^= 0xFF
    write_manifest(fs, 5, snap(), tail=bytes(damaged) + filler)
    recover(fs)  # with the real budget: no intact record follows, a torn tail
    monkeypatch.setattr(vs_mod, "_PROBE_BYTES", 100)
    with pytest.raises(CorruptionError, match="too many candidate records"):
        recover(fs)


def test_oversized_edit_is_refused_before_anything_is_written(monkeypatch):
    monkeypatch.setattr(vs_mod, "MAX_RECORD_SIZE", 10)
    with pytest.raises(ValueError, match="exceeds the record limit 10"):
        encode_record(b"x" * 11)
    assert len(encode_record(b"x" * 10)) == RECORD_HEADER_SIZE + 10


# ------------------------------------------------------------------ log_and_apply
def test_log_and_apply_before_create_or_recover():
    vs = VersionSet(CrashFS(), D)
    with pytest.raises(RuntimeError, match="before create"):
        vs.log_and_apply(VersionEdit())


def test_explicit_next_file_number_is_kept_and_never_goes_back():
    fs = CrashFS()
    vs = VersionSet(fs, D, num_levels=4)
    vs.create()
    vs.log_and_apply(VersionEdit(next_file_number=50))
    assert vs.next_file_number == 50
    with pytest.raises(ValueError, match="next_file_number 40 is below the counter 50"):
        vs.log_and_apply(VersionEdit(next_file_number=40))
    vs.close()
    assert recover(fs).next_file_number == 50


def test_failed_first_edit_after_recover_breaks_and_changes_nothing():
    """The first edit after recover() writes a new manifest (no manifest
    is open): when that fails the VersionSet is broken, refuses later
    edits, and a reopen finds the state before the edit."""
    fs = CrashFS()
    write_manifest(fs, 5, snap((1, fm(7, b"a", b"b"))))
    vs = recover(fs)
    fs.fail("create", 1, errno.ENOSPC, path="MANIFEST")
    with pytest.raises(OSError) as ei:
        vs.log_and_apply(VersionEdit(removed=[(1, 7)]))
    assert vs.broken is ei.value and vs.current.all_numbers() == {7}
    with pytest.raises(NeedsRecoveryError):
        vs.log_and_apply(VersionEdit())
    assert vs.obsolete_manifests() == []
    fs.faults.clear()
    assert recover(fs).current.all_numbers() == {7}


class CloseFailsFS(CrashFS):
    """close() of a manifest raises EIO (as close(2) may on NFS) after the
    descriptor is gone."""

    def _close(self, f, fd):
        super()._close(f, fd)
        if isinstance(f, WritableFile) and "MANIFEST" in f.path:
            raise OSError(errno.EIO, "injected close failure", f.path)


def test_close_errors_of_a_manifest_are_not_what_is_reported():
    """A manifest whose close fails is one already made durable (roll-over:
    the old one) or one being abandoned (failure): either way the edit's
    own outcome is what log_and_apply reports."""
    fs = CloseFailsFS()
    vs = VersionSet(fs, D, num_levels=4, manifest_max_size=1)
    vs.create()
    vs.log_and_apply(VersionEdit(last_seq=3))  # rolls over: the old manifest's close fails quietly
    assert vs.manifest_number == 2 and vs.last_seq == 3
    fs.fail("sync", 1, errno.EIO, path="MANIFEST")
    with pytest.raises(OSError) as ei:
        vs.log_and_apply(VersionEdit(last_seq=4))  # the new manifest's sync fails, its close too
    assert ei.value.errno == errno.EIO and "injected fault" in str(ei.value)
    fs.faults.clear()
    assert recover(fs).last_seq == 3


def test_sync_dirs_false_never_syncs_the_directory():
    fs = CrashFS(trace=True)
    vs = VersionSet(fs, D, num_levels=4, manifest_max_size=1, sync_dirs=False)
    vs.create()
    vs.log_and_apply(VersionEdit(last_seq=1))  # a roll-over: new manifest and CURRENT switch
    assert vs.manifest_number == 2
    assert not [t for t in fs.trace if t[1] == "sync_dir"]
    vs.close()
    assert recover(fs).last_seq == 1


def test_recover_again_closes_the_open_manifest():
    """recover() on a VersionSet that has a manifest open (after create)
    closes it and reloads; the next edit starts a new manifest, never
    appending to the one it read."""
    fs = CrashFS()
    vs = VersionSet(fs, D, num_levels=4)
    vs.create()
    vs.log_and_apply(VersionEdit(last_seq=4))
    vs.recover()
    assert vs.last_seq == 4 and vs.manifest_number == 1
    vs.log_and_apply(VersionEdit(last_seq=6))
    assert vs.manifest_number > 1
    assert recover(fs).last_seq == 6
