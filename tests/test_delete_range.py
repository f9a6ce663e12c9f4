"""db.delete_range: range tombstones from the WAL to the bottom level.

Tiers: the fragmenter against brute force; WriteBatch encoding; the
sstable's range-deletion block (round trip, version 1 kept for tables
without one, corruption); the compaction rule against a visibility oracle
at every snapshot; the DB end to end (edges, snapshots, empty and inverted
ranges, compaction really dropping the covered data, old-format tables,
write cost independent of the keys covered); a power cut keeping a range
deletion atomic; and the Hypothesis model of tests/test_model.py with
range deletions added.

Randomized tests print their seed; ``LSM_RD_SEED`` replays one.
"""

import os
import pathlib
import random
import struct

import hypothesis.strategies as st
import pytest
from hypothesis import settings
from hypothesis.stateful import rule

import lsm
from lsm.base import compression
from lsm.base.coding import ValueKind, pack_trailer
from lsm.base.crashfs import CrashFS
from lsm.base.fs import DEFAULT_FS
from lsm.base.rangedel import RangeDels, inclusive_end, visible_fragments
from lsm.batch import decode_body, encode_put
from lsm.compaction import runner
from lsm.sstable import TableReader, TableWriter
from lsm.sstable.format import FOOTER_SIZE
from tests.conftest import TINY
from tests.test_power_cut import record_written_seq
from tests.test_model import ANY_KEY, VALUES, DBModel

SEED = int(os.environ.get("LSM_RD_SEED", random.randrange(1 << 30)))
PUT, DELETE, RANGE = ValueKind.PUT, ValueKind.DELETE, ValueKind.RANGE_DELETE


def _keyspace(rng, n=12):
    return sorted({bytes([rng.randrange(97, 97 + n)]) * rng.randint(1, 2) for _ in range(3 * n)})


# ---------------------------------------------------------------- fragmenter
def _brute_cover(tombs, key, snap):
    return max((q for s, e, q in tombs if s <= key < e and q <= snap), default=0)


def test_fragments_match_brute_force():
    print("seed", SEED)
    rng = random.Random(SEED)
    for _trial in range(300):
        space = _keyspace(rng)
        tombs = []
        for q in rng.sample(range(1, 60), rng.randint(0, 8)):
            a, b = rng.choice(space), rng.choice(space)
            tombs.append((a, b, q))  # empty / inverted ones included: ignored
        rd = RangeDels.build(tombs)
        rd.check()
        assert RangeDels.build(list(rd)) == rd  # idempotent: a table's block rebuilds to itself
        for key in space + [b"", b"a\x00", b"zz"]:
            for snap in (0, 5, 20, 40, 100):
                assert rd.cover(key, snap) == _brute_cover(tombs, key, snap), (tombs, key, snap)
        lo, hi = rng.choice(space), rng.choice(space + [None])
        clipped = list(rd.clipped(lo, hi))
        for key in space:
            inside = lo <= key and (hi is None or key < hi)
            want = _brute_cover(tombs, key, 100) if inside else 0
            assert _brute_cover(clipped, key, 100) == want
        vf = visible_fragments([rd, RangeDels.build(tombs[:1])], lo, hi, 30)
        got = 0
        for key in space:
            inside = lo <= key and (hi is None or key < hi)
            want = _brute_cover(tombs, key, 30) if inside else 0
            got = 0
            if vf is not None:
                for s, e, q in zip(*vf):
                    if s <= key < e:
                        got = q
            assert got == want


def test_fragment_example_from_the_docs():
    rd = RangeDels.build([(b"c", b"d", 4), (b"g", b"h", 7), (b"a", b"z", 10)])
    assert list(zip(rd.starts, rd.ends, rd.seqs)) == [
        (b"a", b"c", (10,)), (b"c", b"d", (10, 4)), (b"d", b"g", (10,)), (b"g", b"h", (10, 7)), (b"h", b"z", (10,))]
    assert inclusive_end(b"k\x00") == b"k" and inclusive_end(b"k") == b"k"


# ---------------------------------------------------------------- batch
def test_batch_encoding_and_validation():
    b = lsm.WriteBatch()
    b.put(b"a", b"1")
    b.delete_range(b"b", b"d")
    b.delete_range(b"x", b"x")  # empty: dropped
    b.delete(b"c")
    assert len(b) == 3 and b.has_range_dels
    body = b.body()
    assert body[len(encode_put(b"a", b"1")):][:9] == struct.pack("<BII", 2, 1, 1)
    assert decode_body(body, 3) == [(PUT, b"a", b"1"), (RANGE, b"b", b"d"), (DELETE, b"c", b"")]
    with pytest.raises(ValueError, match=r"start b'z' is after stop b'a'"):
        b.delete_range(b"z", b"a")
    with pytest.raises(TypeError, match="stop must be bytes"):
        b.delete_range(b"a", "z")
    bad = struct.pack("<BII", 2, 1, 1) + b"dd"  # start == stop on disk: corruption
    with pytest.raises(lsm.CorruptionError, match="start >= stop"):
        decode_body(bad, 1)


# ---------------------------------------------------------------- sstable block
def _write(path, entries, tombs, **kw):
    w = TableWriter(DEFAULT_FS, path, **kw)
    for e in entries:
        w.add(*e)
    for t in tombs:
        w.add_range_del(*t)
    return w.finish()


def test_table_round_trip_with_range_dels(tmp_path):
    print("seed", SEED)
    rng = random.Random(SEED)
    for trial in range(40):
        space = _keyspace(rng)
        keys = sorted(rng.sample(space, rng.randint(0, len(space))))
        entries = [(k, pack_trailer(rng.randint(1, 99), rng.choice([PUT, DELETE])), b"v") for k in keys]
        tombs = [(rng.choice(space), rng.choice(space) + b"\x00" * rng.randint(0, 1), rng.randint(1, 99))
                 for _ in range(rng.randint(0, 5))]
        path = str(tmp_path / f"{trial}.sst")
        props = _write(path, entries, tombs, block_size=rng.choice([1, 64, 4096]),
                       bloom_bits_per_key=rng.choice([0, 10]))
        rd = RangeDels.build(tombs)
        r = TableReader.open(DEFAULT_FS, path, file_number=trial + 1)
        try:
            r.check()
            assert r.properties == props
            assert list(r.iter_entries()) == entries
            if rd:
                assert r.format_version == 2 and r.range_dels == rd and props.num_range_dels == len(rd)
                lo = min([rd.smallest] + [e[0] for e in entries[:1]])
                hi = max([rd.largest] + [e[0] for e in entries[-1:]])
                assert (props.smallest, props.largest) == (lo, hi)
                qs = [q for _s, _e, q in rd] + [e[1] >> 8 for e in entries]
                assert (props.min_seq, props.max_seq) == (min(qs), max(qs))
            else:
                assert r.format_version == 1 and r.range_dels is None and props.num_range_dels == 0
            for k, t, v in entries:
                assert r.get_entry(k, 100) == (k, t, v)
        finally:
            r.close()


def test_table_without_range_dels_is_version_1_and_unchanged(tmp_path):
    """Tables with no range deletion keep format version 1 byte for byte
    (tests/test_sstable.py's golden file pins the bytes), so an older
    reader still opens them; only tables holding the new block say 2."""
    p1, p2 = str(tmp_path / "1.sst"), str(tmp_path / "2.sst")
    entries = [(b"a", pack_trailer(1, PUT), b"x")]
    _write(p1, entries, [], compression=compression.NONE, bloom_bits_per_key=0)
    _write(p2, entries, [(b"b", b"c", 2)], compression=compression.NONE, bloom_bits_per_key=0)
    for p, version in ((p1, 1), (p2, 2)):
        data = pathlib.Path(p).read_bytes()
        assert struct.unpack_from("<I", data, len(data) - FOOTER_SIZE + 48)[0] == version


def test_tombstone_only_table(tmp_path):
    p = str(tmp_path / "1.sst")
    props = _write(p, [], [(b"m", b"p", 7), (b"a", b"c", 3)])
    assert (props.num_entries, props.num_range_dels, props.smallest, props.largest) == (0, 2, b"a", b"p")
    assert (props.min_seq, props.max_seq) == (3, 7)
    r = TableReader.open(DEFAULT_FS, p, file_number=1)
    r.check()
    assert list(r.iter_entries()) == [] and r.range_dels.cover(b"n", 10) == 7
    r.close()


def test_damaged_range_del_block_is_corruption(tmp_path, monkeypatch):
    p = str(tmp_path / "1.sst")
    _write(p, [(b"a", pack_trailer(1, PUT), b"x")], [(b"b", b"c", 2)], compression=compression.NONE,
           bloom_bits_per_key=0)
    data = bytearray(pathlib.Path(p).read_bytes())
    off = data.find(b"bc", 20)  # the block after the data block: start "b", stop "c"
    assert off > 0
    data[off] ^= 1
    q = str(tmp_path / "2.sst")
    pathlib.Path(q).write_bytes(bytes(data))
    with pytest.raises(lsm.CorruptionError, match="range-deletion block"):
        TableReader.open(DEFAULT_FS, q, file_number=2)
    # A block with a valid checksum but overlapping fragments is refused too.
    import lsm.sstable.writer as writer_mod

    class Overlapping:
        @staticmethod
        def build(_ts):
            return RangeDels([b"a", b"b"], [b"c", b"d"], [(5,), (4,)])

    monkeypatch.setattr(writer_mod, "RangeDels", Overlapping)
    s = str(tmp_path / "3.sst")
    _write(s, [], [(b"a", b"d", 5)])
    with pytest.raises(lsm.CorruptionError, match="overlaps the previous one"):
        TableReader.open(DEFAULT_FS, s, file_number=3)


# ---------------------------------------------------------------- compaction rule
def _visible(entries, tombs, key, snap):
    best = None
    for k, t, v in entries:
        if k == key and t >> 8 <= snap and (best is None or t > best[0]):
            best = (t, v)
    if best is None or best[0] & 0xFF != PUT:
        return None
    if _brute_cover(tombs, key, snap) > best[0] >> 8:
        return None
    return best[1]


def test_compaction_rule_keeps_every_snapshots_view():
    """What :func:`runner._surviving` and :func:`runner.dedup_range_dels`
    keep must read the same as the input at every live snapshot and at the
    newest seq, together with older data below the compaction (none when
    bottommost); and a covered version in the same snapshot stripe as its
    tombstone must be gone."""
    print("seed", SEED)
    rng = random.Random(SEED)
    for _trial in range(400):
        space = _keyspace(rng, 6)
        bottommost = rng.random() < 0.5
        seqs = list(range(20, 80))
        rng.shuffle(seqs)
        entries, tombs = [], []
        for q in seqs[: rng.randint(1, 40)]:
            if rng.random() < 0.15:
                tombs.append((rng.choice(space), rng.choice(space) + b"\x00" * rng.randint(0, 1), q))
            else:
                entries.append((rng.choice(space), pack_trailer(q, rng.choice([PUT, PUT, DELETE])), b"v%d" % q))
        entries.sort(key=lambda e: (e[0], -e[1]))
        below = [] if bottommost else [(k, pack_trailer(rng.randint(1, 19), PUT), b"old") for k in space]
        snaps = sorted(rng.sample(range(1, 90), rng.randint(0, 4)))
        rd = RangeDels.build(tombs)
        out = list(runner._surviving(entries, rd if rd else None, snaps, bottommost))
        out_rd = list(runner.dedup_range_dels(rd, snaps, bottommost)) if rd else []
        assert out == sorted(out, key=lambda e: (e[0], -e[1]))
        for snap in snaps + [100]:
            for key in space:
                want = _visible(entries + below, tombs, key, snap)
                got = _visible(out + below, out_rd, key, snap)
                assert got == want, (key, snap, entries, tombs, snaps, bottommost, out, out_rd)
        for k, t, _v in out:
            q = _brute_cover(tombs, k, 1 << 40)
            newer = [x for _s, _e, x in tombs if x > t >> 8 and _brute_cover([(_s, _e, x)], k, 1 << 40)]
            if newer:
                lowest = min(newer)
                assert any(t >> 8 <= s < lowest for s in snaps), ("covered version kept", k, t, q, snaps)
        if bottommost and not snaps:
            assert out_rd == [] and all(t & 0xFF == PUT for _k, t, _v in out)


# ---------------------------------------------------------------- the DB
def _open(path, **kw):
    opts = dict(TINY, background="inline", sync=lsm.Sync.OFF)
    opts.update(kw)
    return lsm.open(path, **opts)


def _table_entries(db):
    """(point entries, range tombstone pieces) over the live tables."""
    sv = db._sv
    n = m = 0
    for _lv, f in sv.version.all_files():
        r = sv.readers[f.number]
        n += r.properties.num_entries
        m += r.properties.num_range_dels
    return n, m


def test_edges_snapshots_and_scans(tmp_path):
    db = _open(tmp_path / "db")
    keys = [b"k%03d" % i for i in range(200)]
    for k in keys:
        db.put(k, k)
    snap = db.snapshot()
    seq = db.delete_range(b"k050", b"k100")
    assert seq == db.last_seq
    db.put(b"k075", b"back")  # written after the tombstone: visible
    want = {k: k for k in keys if not b"k050" <= k < b"k100"}
    want[b"k075"] = b"back"
    for step in ("memtable", "flushed", "compacted"):
        assert db.get(b"k049") == b"k049" and db.get(b"k050") is None and db.get(b"k099") is None
        assert db.get(b"k100") == b"k100" and db.get(b"k075") == b"back", step
        assert dict(db.items()) == want, step
        assert list(db.keys(reverse=True)) == sorted(want, reverse=True), step
        assert list(db.items(b"k040", b"k080")) == sorted((k, v) for k, v in want.items() if b"k040" <= k < b"k080")
        assert list(db.keys(b"k050", b"k075")) == []
        assert list(db.keys(prefix=b"k09", reverse=True)) == []
        assert list(db.keys(prefix=b"k07")) == [b"k075"]
        assert list(db.keys(prefix=b"k10")) == [b"k%03d" % i for i in range(100, 110)]
        # The snapshot taken before still sees everything.
        assert snap.get(b"k050") == b"k050" and dict(snap.items()) == {k: k for k in keys}, step
        assert list(snap.keys(b"k095", b"k105", reverse=True)) == keys[95:105][::-1]
        if step == "memtable":
            db.flush()
        elif step == "flushed":
            db.compact_range()
    snap.close()
    db.close()


def test_empty_and_inverted_ranges(tmp_path):
    db = _open(tmp_path / "db")
    db.put(b"a", b"1")
    last = db.last_seq
    assert db.delete_range(b"a", b"a") == last  # empty: nothing written
    assert db.last_seq == last and db.get(b"a") == b"1"
    with pytest.raises(ValueError, match="is after stop"):
        db.delete_range(b"b", b"a")
    assert db.last_seq == last
    with pytest.raises(TypeError):
        db.delete_range(b"a", None)
    db.delete_range(b"", b"\x00")  # deletes exactly the empty key
    db.put(b"", b"e")
    db.delete_range(b"", b"\x00")
    assert db.get(b"") is None and db.get(b"a") == b"1"
    db.delete_range(b"a", b"a\x00")  # exactly one key
    assert db.get(b"a") is None
    db.close()


def _rewrite_last_level(db):
    """Compact the last level in place (compact_range stops above it)."""
    from lsm.compaction.picker import pick_manual

    last = db._sv.version.num_levels - 1
    comp = pick_manual(db._sv.version, db._opts, last, None, None)
    with db._bg._compact_mu:
        db._bg._run_compaction(comp)


def test_compaction_drops_covered_data(tmp_path):
    db = _open(tmp_path / "db", memtable_size=64 << 10, target_file_size=64 << 10)
    for i in range(5000):
        db.put(b"key%05d" % i, b"v" * 50)
    db.compact_range()
    full_bytes = db.stats()["sst_bytes"]
    assert _table_entries(db) == (5000, 0)
    wal_before = db.stats()["wal_bytes_written"]
    db.delete_range(b"key00100", b"key04900")
    # One small WAL record for 4800 keys: the cost does not grow with them.
    assert db.stats()["wal_bytes_written"] - wal_before < 100
    db.flush()
    assert _table_entries(db) == (5000, 1)  # the flush wrote the tombstone, nothing per key
    db.compact_range()
    assert _table_entries(db) == (200, 0)  # covered entries and the tombstone itself are gone
    assert db.stats()["sst_bytes"] < full_bytes / 10
    assert len(list(db.keys())) == 200

    # With a snapshot taken before the deletion, compaction keeps what it reads.
    for i in range(5000):
        db.put(b"key%05d" % i, b"w" * 50)
    db.compact_range()
    snap = db.snapshot()
    db.delete_range(b"key00100", b"key04900")
    db.compact_range()
    n, m = _table_entries(db)  # the tombstone is cut into one piece per output table it spans
    assert n == 5000 and 1 <= m <= len(db._sv.version.all_files())
    assert snap.get(b"key00100") == b"w" * 50 and db.get(b"key00100") is None
    assert len(list(snap.keys())) == 5000 and len(list(db.keys())) == 200
    snap.close()
    _rewrite_last_level(db)
    assert _table_entries(db) == (200, 0)
    assert len(list(db.keys())) == 200 and db.get(b"key00099") == b"w" * 50
    db.close()


def test_tombstone_carried_above_older_data(tmp_path):
    """A tombstone compacted into a middle level keeps hiding the older
    data below it, across a reopen, until both meet at the bottom."""
    from lsm.compaction.picker import pick_manual

    db = _open(tmp_path / "db")
    for i in range(300):
        db.put(b"k%04d" % i, b"old")
    db.compact_range()  # the old data goes to the last level
    assert [bool(lv) for lv in db._sv.version.levels] == [False, False, False, True]
    db.delete_range(b"k0000", b"k0250")
    db.flush()
    comp = pick_manual(db._sv.version, db._opts, 0, None, None)  # level 0 -> 1 only
    assert comp is not None and not comp.is_bottommost
    with db._bg._compact_mu:
        db._bg._run_compaction(comp)
    l1 = db._sv.version.levels[1]
    assert len(l1) == 1 and db._sv.readers[l1[0].number].range_dels is not None
    assert (l1[0].smallest, l1[0].largest, l1[0].num_entries) == (b"k0000", b"k0250", 0)
    want = [b"k%04d" % i for i in range(250, 300)]
    assert db.get(b"k0100") is None and db.get(b"k0260") == b"old" and list(db.keys()) == want
    db.close()
    db = _open(tmp_path / "db")
    assert db.get(b"k0100") is None and list(db.keys()) == want
    assert list(db.keys(reverse=True)) == want[::-1]
    db.compact_range()
    assert _table_entries(db) == (50, 0)
    db.close()


def test_old_format_tables_still_read(tmp_path):
    """A database whose tables all predate range deletions (format version
    1) opens, takes range deletions, and compacts old and new tables
    together."""
    p = tmp_path / "db"
    db = _open(p)
    for i in range(400):
        db.put(b"k%04d" % i, b"v%d" % i)
    db.flush()
    db.close()
    db = _open(p)
    sv = db._sv
    assert sv.readers and all(r.format_version == 1 for r in sv.readers.values())
    assert not sv.range_dels  # the fast read path
    db.delete_range(b"k0100", b"k0300")
    db.flush()
    assert {r.format_version for r in db._sv.readers.values()} == {1, 2}
    want = [b"k%04d" % i for i in range(400) if not 100 <= i < 300]
    assert list(db.keys()) == want and db.get(b"k0200") is None and db.get(b"k0300") == b"v300"
    db.compact_range()
    assert list(db.keys()) == want and _table_entries(db) == (200, 0)
    assert all(r.format_version == 1 for r in db._sv.readers.values())
    db.close()


@pytest.mark.parametrize("background", ["thread", "process"])
def test_background_modes_and_reopen(tmp_path, background):
    """Flush in a thread (memtable tombstones handed over) and in the
    worker process (tombstones re-read from the WAL)."""
    p = tmp_path / "db"
    db = _open(p, background=background)
    for i in range(500):
        db.put(b"k%04d" % i, b"v")
        if i % 100 == 99:
            db.delete_range(b"k%04d" % (i - 50), b"k%04d" % (i - 25))
    want = [b"k%04d" % i for i in range(500) if not (i % 100 >= 49 and i % 100 < 74 and i >= 49)]
    db.compact_range()
    assert list(db.keys()) == want
    db.delete_range(b"k0000", b"k0010")
    db.close()
    db = _open(p, background=background)  # the last one is replayed from the WAL
    assert list(db.keys()) == [k for k in want if k >= b"k0010"]
    db.close()


# ---------------------------------------------------------------- power cut
def test_power_cut_keeps_delete_range_atomic():
    """Commits (puts, range deletions, batches mixing both) at FULL on a
    CrashFS with a background thread; power is cut at a random operation,
    anywhere or inside a flush, compaction or manifest write. After reopen
    the state must be exactly the model after a prefix of the commits that
    holds every acknowledged one: a range deletion is all there or not at
    all, and no flush or compaction can resurrect what it covered."""
    print("seed", SEED)
    rng = random.Random(SEED)
    keys = [b"key%02d" % i for i in range(40)]
    fs = CrashFS()
    opts = {"memtable_size": 2000, "wal_segment_size": 4096, "target_file_size": 1200, "block_size": 256,
            "l0_compaction_trigger": 2, "max_bytes_for_level_base": 4000, "level_multiplier": 2, "num_levels": 4}

    def open_db():
        return lsm.open("/db", fs=fs, background="thread", sync=lsm.Sync.FULL, **opts)

    db = open_db()
    model: dict[bytes, bytes] = {}
    base = 0
    for rnd in range(int(os.environ.get("LSM_CRASH_ROUNDS", "8"))):
        written: dict[int, list] = {}
        current: list = []
        # seq -> op, whenever a record is appended (DB.put inlines its
        # FULL append: a setter on written_seq sees every path).
        record_written_seq(db._wal, lambda seq, written=written, current=current: written.__setitem__(seq, current[0]))
        acked: list[int] = []
        if rng.random() < 0.5:
            fs.arm_crash(rng.randint(1, 10), site=rng.choice(["flush", "compaction", "manifest"]),
                         rng=random.Random(rng.random()))
        else:
            fs.arm_crash(rng.randint(1, 300), rng=random.Random(rng.random()))
        try:
            for i in range(150):
                r = rng.random()
                tag = b"r%d.%d" % (rnd, i)
                if r < 0.6:
                    ops = [("put", rng.choice(keys), tag)]
                    current[:] = [ops]
                    seq = db.put(ops[0][1], tag)
                elif r < 0.8:
                    a, b = sorted(rng.sample(keys, 2))
                    ops = [("range", a, b)]
                    current[:] = [ops]
                    seq = db.delete_range(a, b)
                else:
                    wb = lsm.WriteBatch()
                    ops = []
                    for j in range(rng.randint(1, 4)):
                        if rng.random() < 0.5:
                            a, b = sorted(rng.sample(keys, 2))
                            wb.delete_range(a, b)
                            ops.append(("range", a, b))
                        else:
                            k = rng.choice(keys)
                            wb.put(k, tag + b".%d" % j)
                            ops.append(("put", k, tag + b".%d" % j))
                    current[:] = [ops]
                    seq = db.write(wb)
                acked.append(seq)
        except (lsm.NeedsRecoveryError, lsm.ClosedError, OSError):
            pass
        if fs.image is None:
            fs._crash = None
            image = fs.power_cut(random.Random(rng.random()))
        else:
            image = fs.image
        db._simulate_crash()
        fs = image
        db = open_db()
        last = db.last_seq
        where = f"seed {SEED}, round {rnd}"
        assert last == base or last in written, f"{where}: last_seq {last} is not a commit boundary"
        assert all(s <= last for s in acked), f"{where}: acknowledged FULL commits lost"
        for end in sorted(written):
            if end > last:
                break
            for op in written[end]:
                if op[0] == "put":
                    model[op[1]] = op[2]
                else:
                    for k in [k for k in model if op[1] <= k < op[2]]:
                        del model[k]
        assert dict(db.items()) == model, f"{where}: recovered state differs from the model"
        assert {k: db.get(k) for k in keys} == {k: model.get(k) for k in keys}, where
        base = last
    db.close()


# ---------------------------------------------------------------- the model
RANGE_KEYS = st.one_of(ANY_KEY, st.sampled_from([b"k", b"ka", b"kb", b"kb\x00", b"kz", b"l"]))


class RangeModel(DBModel):
    """tests/test_model.py's machine (puts, deletes, batches, gets, scans,
    prefix scans, snapshots, flush, compact_range, reopen, crash) plus
    range deletions, alone and inside batches."""

    @rule(a=RANGE_KEYS, b=RANGE_KEYS)
    def delete_range(self, a, b):
        if a > b:
            with pytest.raises(ValueError):
                self.db.delete_range(a, b)
            return
        self.db.delete_range(a, b)
        for k in [k for k in self.model if a <= k < b]:
            del self.model[k]

    @rule(data=st.data())
    def delete_range_at_keys(self, data):
        """Bounds exactly at live keys (and just after one): the edges."""
        if not self.model:
            return
        ks = sorted(self.model)
        a = data.draw(st.sampled_from(ks))
        b = data.draw(st.sampled_from([k for k in ks if k >= a] + [a + b"\x00"]))
        self.db.delete_range(a, b)
        for k in [k for k in self.model if a <= k < b]:
            del self.model[k]
        assert self.db.get(a) == self.model.get(a)  # None unless the range was empty (a == b)
        if b in self.model:
            assert self.db.get(b) == self.model[b]

    @rule(ops=st.lists(st.tuples(st.integers(0, 2), RANGE_KEYS, RANGE_KEYS, VALUES), max_size=6))
    def batch_with_ranges(self, ops):
        with self.db.batch() as wb:
            for kind, k, k2, v in ops:
                if kind == 0:
                    wb.put(k, v)
                elif kind == 1:
                    wb.delete(k)
                else:
                    wb.delete_range(min(k, k2), max(k, k2))
        for kind, k, k2, v in ops:
            if kind == 0:
                self.model[k] = v
            elif kind == 1:
                self.model.pop(k, None)
            else:
                lo, hi = min(k, k2), max(k, k2)
                for x in [x for x in self.model if lo <= x < hi]:
                    del self.model[x]

    @rule()
    def every_key(self):
        assert dict(self.db.items()) == self.model
        for k, v in self.model.items():
            assert self.db.get(k) == v

    @rule()
    def check_tables(self):
        sv = self.db._sv
        for _lv, f in sv.version.all_files():
            r = sv.readers[f.number]
            r.check()
            if r.range_dels is not None:
                assert f.smallest <= r.range_dels.smallest and r.range_dels.largest <= f.largest
        sv.mem.check()


TestRangeModelInline = RangeModel.TestCase
TestRangeModelInline.settings = settings(TestRangeModelInline.settings,
                                         max_examples=TestRangeModelInline.settings.max_examples * 2)


class RangeModelThread(RangeModel):
    mode = "thread"


TestRangeModelThread = RangeModelThread.TestCase
TestRangeModelThread.settings = settings(TestRangeModelThread.settings,
                                         max_examples=max(5, TestRangeModelThread.settings.max_examples // 3))
