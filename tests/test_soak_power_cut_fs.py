"""The power-cut layer of tools/crash_kill.py (tools/power_cut_fs.py) on a
file written in place over synced zeros: the preallocated WAL segment (the
spare renamed into place, then ``open_overwrite``). Its writes before the
first sync are an unsynced tail over durable zeros, so a cut must be able
to keep part of them (torn, holed), not only all or none of them (which is
all a rewrite of a file's synced content gets). Without that, power mode
never showed recovery a preallocated segment whose first records (or its
header) were torn, the state a real power cut leaves most often.
"""

from __future__ import annotations

import os
import random
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(os.path.join(ROOT, "tools"))
from power_cut_fs import DurableModel, SyncTrackingFS

SIZE = 8192
WRITTEN = b"H" * 100 + bytes(range(1, 251)) * 20  # no zero byte: a kept prefix is visible


def _fresh(root: str, seed: int) -> tuple[str, DurableModel, SyncTrackingFS]:
    """An empty directory ``root/seed/d``, its durable model, and the
    journalled layer that feeds the model."""
    d = os.path.join(root, str(seed), "d")
    os.makedirs(d)
    model = DurableModel([d], d + ".shadow")
    model.start_process()
    return d, model, SyncTrackingFS(model.apply, model.shadow)


def _cut_states(root: str, *, sync_first: int = 0, seeds: int = 80) -> list[bytes]:
    """For each seed: a fresh directory with a synced spare of SIZE zeros,
    renamed into place (durably), written in place from offset 0 with
    WRITTEN (its first ``sync_first`` bytes synced), then a power cut; the
    segment's content after the cut."""
    out = []
    for seed in range(seeds):
        d, model, fs = _fresh(root, seed)
        spare, seg = os.path.join(d, "spare"), os.path.join(d, "000001.wal")
        f = fs.create(spare)
        f.write_zeros(SIZE)
        f.datasync()
        f.close()
        fs.rename(spare, seg)
        fs.sync_dir(d)
        f = fs.open_overwrite(seg)
        if sync_first:
            f.write(WRITTEN[:sync_first])
            f.datasync()
        f.write(WRITTEN[sync_first:])
        f.close()
        model.cut(random.Random(seed))
        assert sorted(os.listdir(d)) == ["000001.wal"]
        with open(seg, "rb") as fh:
            out.append(fh.read())
    return out


def _kept(content: bytes) -> int:
    """Bytes of WRITTEN at the start of ``content`` (its longest common prefix)."""
    n = 0
    while n < min(len(WRITTEN), len(content)) and content[n] == WRITTEN[n]:
        n += 1
    return n


def test_first_writes_over_synced_zeros_can_be_torn(tmp_path):
    states = _cut_states(str(tmp_path))
    assert all(len(s) == SIZE for s in states)  # the synced length stays
    assert all(not s[len(WRITTEN):].strip(b"\0") for s in states)  # past the writes: the durable zeros
    kept = {_kept(s) for s in states}
    assert 0 in kept and len(WRITTEN) in kept  # all lost, all kept
    assert any(0 < k < len(WRITTEN) for k in kept), kept  # and torn in between (before: only all or none)
    assert bytes(SIZE) in states  # nothing written reached the disk


def test_synced_prefix_of_an_in_place_write_survives(tmp_path):
    states = _cut_states(str(tmp_path), sync_first=1000)
    assert all(len(s) == SIZE and s.startswith(WRITTEN[:1000]) for s in states)
    assert {_kept(s) for s in states} >= {1000, len(WRITTEN)}


def test_in_place_write_over_nonzero_content_is_still_old_or_new(tmp_path):
    """Over synced content that is not zeros the layer keeps its rule for
    rewrites: the old durable content or the new one, whole."""
    states = set()
    for seed in range(40):
        d, model, fs = _fresh(str(tmp_path), seed)
        p = os.path.join(d, "f")
        f = fs.create(p)
        f.write(b"old-content!")
        f.datasync()
        f.close()
        fs.sync_dir(d)
        f = fs.open_overwrite(p)
        f.write(b"NEW")
        f.close()
        model.cut(random.Random(seed))
        with open(p, "rb") as fh:
            states.add(fh.read())
    assert states == {b"old-content!", b"NEW-content!"}


def _synced(fs, d: str, path: str, fill) -> None:
    """Create ``path``, ``fill(file)``, and make the file and its entry durable."""
    f = fs.create(path)
    fill(f)
    f.datasync()
    f.close()
    fs.sync_dir(d)


def test_mapped_overwrite_is_journalled_and_cut_like_a_written_one(tmp_path):
    """The WAL's live preallocated segment is written through a shared map
    (option wal_mmap_writes, FileSystem.open_overwrite_mapped). The layer
    maps it too (the plain method would fall back to write(2) under any
    layer with its own hooks, so power mode never ran the mapped path):
    the stores reach the file, a write past the map's end goes on by
    write(2), the journal treats the file as rewritten in place over its
    synced zeros, and the cut keeps a synced prefix and tears the rest."""
    kept = set()
    for seed in range(60):
        d, model, fs = _fresh(str(tmp_path), seed)
        seg = os.path.join(d, "000001.wal")
        _synced(fs, d, seg, lambda f: f.write_zeros(SIZE))
        f = fs.open_overwrite_mapped(seg)
        assert f.mapped
        f.write(WRITTEN[:1000])
        f.datasync()
        f.write(WRITTEN[1000:])
        f.write(b"\x07" * (SIZE - len(WRITTEN) + 100))  # past the map: unmapped, then write(2)
        assert not f.mapped and f.size == SIZE + 100
        f.close()
        with open(seg, "rb") as fh:
            assert fh.read() == WRITTEN + b"\x07" * (SIZE - len(WRITTEN) + 100)
        model.cut(random.Random(seed))
        with open(seg, "rb") as fh:
            content = fh.read()
        assert content.startswith(WRITTEN[:1000]), seed  # synced through the map: durable
        kept.add(_kept(content))
    assert 1000 in kept and any(1000 < k < len(WRITTEN) for k in kept), kept


def _truncating_rewrite_states(root: str, rewrite, seeds: int = 120) -> set[bytes]:
    """For each seed: a synced file OLD (its entry synced), ``rewrite(fs,
    path)`` (a truncating rewrite and unsynced writes), a power cut; the
    set of contents left."""
    states = set()
    for seed in range(seeds):
        d, model, fs = _fresh(root, seed)
        p = os.path.join(d, "f")
        _synced(fs, d, p, lambda f: f.write(OLD))
        rewrite(fs, p)
        model.cut(random.Random(seed))
        with open(p, "rb") as fh:
            states.add(fh.read())
    return states


OLD = b"o" * 3000


def test_create_over_a_synced_file_can_leave_the_new_content_torn(tmp_path):
    """An O_TRUNC create over a synced file, then unsynced writes: a cut
    leaves the old content (the truncation lost), or the truncation and any
    part of the writes (a torn prefix of the new content, nothing of it,
    or all of it); before, only the old content or the new one whole
    (recovery re-creates the segment named last + 1 that a cut left)."""
    def rewrite(fs, p):
        f = fs.create(p)
        f.write(WRITTEN)
        f.close()

    states = _truncating_rewrite_states(str(tmp_path), rewrite)
    assert OLD in states and WRITTEN in states and b"" in states
    torn = [s for s in states if s not in (OLD, WRITTEN, b"")]
    assert any(0 < _kept(s) < len(WRITTEN) and len(s) <= len(WRITTEN) for s in torn), sorted(map(len, states))
    assert all(s == OLD or len(s) <= len(WRITTEN) for s in states)


def test_truncate_below_the_synced_length_then_append_keeps_the_prefix(tmp_path):
    def rewrite(fs, p):
        fs.truncate(p, 1000)
        f = fs.open_append(p)
        f.write(WRITTEN)
        f.close()

    states = _truncating_rewrite_states(str(tmp_path), rewrite)
    assert OLD in states and OLD[:1000] in states and OLD[:1000] + WRITTEN in states
    assert all(s == OLD or s.startswith(OLD[:1000]) for s in states)
    assert any(s.startswith(OLD[:1000]) and 0 < _kept(s[1000:] + bytes(1)) < len(WRITTEN) for s in states)


def test_a_sync_after_the_truncating_create_makes_its_prefix_durable(tmp_path):
    def rewrite(fs, p):
        f = fs.create(p)
        f.write(WRITTEN[:500])
        f.datasync()
        f.write(WRITTEN[500:])
        f.close()

    states = _truncating_rewrite_states(str(tmp_path), rewrite, seeds=60)
    assert all(s.startswith(WRITTEN[:500]) for s in states)
    assert WRITTEN in states and WRITTEN[:500] in states
