"""The fast paths of the unsynced write path and the flush, each checked
against the plain path it replaces: the single-op WAL record encoder, the
batch body encoded at commit, the memtable's bulk batch insert, the frozen
memtable a flush receives, and the table writer's bulk ``add_columns``
(byte-identical tables). Also the memory accounting of the memtable
(docs/architecture.md, "Memory"): no timing anywhere.

Randomized tests print their seed; set LSM_TEST_SEED to replay one."""

from __future__ import annotations

import gc
import pickle
import random
import struct
import tracemalloc

import pytest

import lsm
from lsm.base import compression
from lsm.base.coding import MAX_SEQ, ValueKind
from lsm.base.crashfs import CrashFS
from lsm.batch import OP_HEADER, WriteBatch, decode_body
from lsm.memtable import ENTRY_OVERHEAD, ENTRY_PY_OVERHEAD, MemTable
from lsm.sstable import TableWriter
from lsm.wal.format import encode_op_record, encode_record
from tests.memtable_model import add_one_at_a_time, assert_same_memtable
from tests.seeds import seed as _seed

PUT, DELETE, RANGE_DELETE = ValueKind.PUT, ValueKind.DELETE, ValueKind.RANGE_DELETE


# ---------------------------------------------------------------- WAL record
def test_encode_op_record_is_encode_record_of_a_one_op_body():
    rng = random.Random(_seed())
    cases = [(1, 0, PUT, b"", b""), (MAX_SEQ, (1 << 64) - 1, DELETE, b"k" * 300, b""),
             (77, 1_700_000_000_000_000, PUT, b"abc", b"x" * 5000)]
    cases += [(rng.randrange(1, MAX_SEQ), rng.randrange(1 << 64), rng.choice((PUT, DELETE)),
               rng.randbytes(rng.randrange(40)), rng.randbytes(rng.randrange(300))) for _ in range(200)]
    for seq, ts, kind, key, value in cases:
        body = OP_HEADER.pack(kind, len(key), len(value)) + key + value
        synced = rng.choice((0, 24, rng.randrange(1 << 64)))
        assert encode_op_record(seq, ts, kind, key, value, synced) == encode_record(seq, 1, ts, body, synced)


def test_encode_op_record_rejects_out_of_range_fields():
    with pytest.raises(ValueError, match="sequence number"):
        encode_op_record(MAX_SEQ + 1, 0, PUT, b"k", b"v", 0)
    with pytest.raises(ValueError, match="out of range"):
        encode_op_record(-1, 0, PUT, b"k", b"v", 0)
    with pytest.raises(ValueError, match="out of range"):
        encode_op_record(1, 1 << 64, PUT, b"k", b"v", 0)
    with pytest.raises(ValueError, match="out of range"):
        encode_op_record(1, 0, PUT, b"k", b"v", 1 << 64)


# ---------------------------------------------------------------- batch body
def test_batch_body_is_the_op_by_op_encoding():
    rng = random.Random(_seed())
    for _ in range(50):
        b = WriteBatch()
        expected = b""
        ops = []
        size = 0
        for _ in range(rng.randrange(1, 30)):
            r = rng.random()
            k = rng.randbytes(rng.randrange(20))
            if r < 0.6:
                v = rng.randbytes(rng.randrange(50))
                b.put(bytearray(k) if r < 0.1 else k, memoryview(v) if r < 0.2 else v)
                expected += OP_HEADER.pack(PUT, len(k), len(v)) + k + v
                ops.append((PUT, k, v))
                size += len(k) + len(v)
            elif r < 0.9:
                b.delete(k)
                expected += OP_HEADER.pack(DELETE, len(k), 0) + k
                ops.append((DELETE, k, b""))
                size += len(k)
            else:
                stop = k + b"\x00"
                b.delete_range(k, stop)
                expected += OP_HEADER.pack(RANGE_DELETE, len(k), len(stop)) + k + stop
                ops.append((RANGE_DELETE, k, stop))
                size += len(k) + len(stop)
        assert b.body() == expected
        assert b.encode() == (expected, size)
        assert b.byte_size == size
        assert decode_body(b.body(), len(ops)) == ops == b.ops()
    empty = WriteBatch()
    assert (empty.body(), empty.byte_size, empty.encode()) == (b"", 0, (b"", 0))
    with pytest.raises(TypeError, match="key must be bytes"):
        empty.put("text", b"v")
    with pytest.raises(TypeError, match="value must be bytes"):
        empty.put(b"k", 5)


# ---------------------------------------------------------------- memtable
def test_add_ops_bulk_path_equals_add_one_by_one():
    rng = random.Random(_seed())
    for _ in range(100):
        a, b = MemTable(), MemTable()
        seq = 1
        for _ in range(rng.randrange(1, 6)):
            ops = []
            for _ in range(rng.randrange(1, 40)):
                k = b"%d" % rng.randrange(60)
                r = rng.random()
                if r < 0.7:
                    ops.append((PUT, k, rng.randbytes(rng.randrange(10))))
                elif r < 0.95:
                    ops.append((DELETE, k, b""))
                else:
                    ops.append((RANGE_DELETE, k, k + b"\xff"))
            nbytes = sum(len(k) + len(v) for _kind, k, v in ops)
            a.add_ops(seq, ops, nbytes)
            seq = add_one_at_a_time(b, seq, ops)
            assert_same_memtable(a, b, [b"%d" % i for i in range(60)], (0, seq // 2, seq))


def test_add_ops_fresh_keys_take_the_bulk_path():
    m = MemTable()
    m.add(1, PUT, b"a", b"1")
    ops = [(PUT, b"c", b"3"), (DELETE, b"b", b""), (PUT, b"d", b"44")]
    m.add_ops(2, ops, 6)
    assert m.get(b"b", 10) == (3, DELETE, b"")
    assert m.get(b"d", 3) is None and m.get(b"d", 4) == (4, PUT, b"44")
    assert m.size == 2 + 6 + 4 * ENTRY_OVERHEAD and m.count == 4
    m.check()


def test_frozen_entries_iterate_in_internal_order_and_pickle():
    rng = random.Random(_seed())
    m = MemTable()
    seq = 1
    for _ in range(300):
        m.add(seq, rng.choice((PUT, DELETE)), b"%03d" % rng.randrange(200), rng.randbytes(3))
        seq += 1
    f = m.frozen()
    expected = list(m.iter_entries())
    assert list(f) == expected and len(f) == len(expected) == m.count
    assert f.columns() is None  # some key has two versions
    g = pickle.loads(pickle.dumps(f, protocol=pickle.HIGHEST_PROTOCOL))
    assert list(g) == expected
    single = MemTable()
    for i, k in enumerate(rng.sample(range(1000), 100)):
        single.add(i + 1, PUT if i % 3 else DELETE, b"%04d" % k, b"v%d" % i)
    keys, trailers, values = single.frozen().columns()  # type: ignore[misc]
    assert list(zip(keys, trailers, values)) == list(single.iter_entries())
    assert MemTable().frozen().columns() == ([], [], [])


def _roundtrip(m: MemTable):
    return pickle.loads(pickle.dumps(m.frozen(), protocol=pickle.HIGHEST_PROTOCOL))


def test_frozen_entries_pickle_as_columns_when_every_key_has_one_version():
    # The columnar hand-off to the flush worker: keys and values lists, the
    # seqs as one int when consecutive (else an array), the kinds; the
    # worker sorts them by key. Every shape must arrive as the memtable's
    # entries in internal order.
    rng = random.Random(_seed())
    for trial in range(60):
        m = MemTable()
        seq = rng.randrange(1, 1 << 40)
        shape = trial % 4  # 0: sorted puts; 1: shuffled; 2: deletes mixed in; 3: seq gaps (range deletions)
        ks = rng.sample(range(10_000), rng.randrange(0, 300))
        if shape == 0:
            ks.sort()
        for k in ks:
            if shape == 3 and rng.random() < 0.1:
                m.add_range_del(seq, b"zz", b"zzz")  # takes a seq: the point seqs are no longer consecutive
                seq += 1
            kind = DELETE if shape == 2 and rng.random() < 0.3 else PUT
            m.add(seq, kind, b"%05d" % k, b"" if kind == DELETE else rng.randbytes(rng.randrange(0, 40)))
            seq += 1
        expected = list(m.iter_entries())
        g = _roundtrip(m)
        assert len(g) == len(expected)
        assert g.columns() == (
            [e[0] for e in expected], [e[1] for e in expected], [e[2] for e in expected]
        ), (trial, shape)
        assert list(g) == expected
    # One version of a key overwritten: the dict form, still in internal order.
    m = MemTable()
    m.add(1, PUT, b"b", b"1")
    m.add(2, PUT, b"a", b"2")
    m.add(3, DELETE, b"b", b"")
    g = _roundtrip(m)
    assert g.columns() is None and list(g) == list(m.iter_entries()) == [
        (b"a", (2 << 8) | PUT, b"2"), (b"b", (3 << 8) | DELETE, b""), (b"b", (1 << 8) | PUT, b"1")]


# ---------------------------------------------------------------- table writer
def _add_in_chunks(w: TableWriter, entries: list, rng: random.Random, most: int) -> None:
    """Feed ``entries`` to ``w.add_columns`` in random chunks of 1 to ``most - 1``."""
    i = 0
    while i < len(entries):
        j = i + rng.randrange(1, most)
        chunk = entries[i:j]
        w.add_columns([e[0] for e in chunk], [e[1] for e in chunk], [e[2] for e in chunk])
        i = j


def _table(fs: CrashFS, name: str, block_size: int, entries: list, split: int, bulk: bool) -> bytes:
    w = TableWriter(fs, name, block_size=block_size, compression=compression.NONE if block_size < 100 else
                    compression.ZSTD)
    for e in entries[:split]:
        w.add(*e)
    rest = entries[split:]
    if bulk:
        w.add_columns([e[0] for e in rest], [e[1] for e in rest], [e[2] for e in rest])
    else:
        w.add_many(rest)
    props = w.finish()
    # finish() drops the buffers a finished writer would otherwise keep
    # until the cycle collector runs (self.add = self._refuse is a cycle).
    assert w._bloom is None and w._ikeys == [] and w._keys == [] and w._parts == []
    assert props.num_entries == len(entries)
    return fs.read_file(name)


@pytest.mark.parametrize("block_size", [1, 64, 700, 4096])
def test_add_columns_writes_the_same_table_as_add(block_size):
    rng = random.Random(_seed())
    fs = CrashFS()
    for trial in range(20):
        keys = sorted({rng.randbytes(rng.randrange(1, 12)) for _ in range(rng.randrange(1, 400))})
        entries = [(k, ((i + 1) << 8) | rng.choice((PUT, DELETE)), rng.randbytes(rng.randrange(0, 300)))
                   for i, k in enumerate(keys)]
        split = rng.randrange(len(entries) + 1)
        assert (_table(fs, f"a{trial}.sst", block_size, entries, split, True)
                == _table(fs, f"b{trial}.sst", block_size, entries, split, False))


@pytest.mark.parametrize("vl", [0, 1, 100])
def test_add_columns_of_fixed_size_entries_writes_the_same_table_as_add(vl):
    # Every key of one length and every value of one length (a fill): the
    # blocks are joined from a cached head (lsm.sstable.block.fixed_block_head)
    # instead of encode_block. Chunks with a pending tail, full and partial
    # blocks, deletions (vl 0), and a chunk whose one odd length sends the
    # whole chunk back to encode_block.
    rng = random.Random(_seed() + vl)
    fs = CrashFS()
    for trial in range(12):
        block_size = rng.choice((1, 64, 700, 4096))
        kl = rng.randrange(1, 20)
        keys = sorted({rng.randbytes(kl) for _ in range(rng.randrange(1, 500))})
        entries = [(k, ((i + 1) << 8) | (DELETE if vl == 0 and rng.random() < 0.5 else PUT), rng.randbytes(vl))
                   for i, k in enumerate(keys)]
        if trial % 3 == 2 and len(entries) > 2:
            k, t, v = entries[1]
            entries[1] = (k, t, v + b"!")  # one value longer
        w = TableWriter(fs, f"f{trial}.sst", block_size=block_size,
                        compression=rng.choice((compression.NONE, compression.LZ4)))
        _add_in_chunks(w, entries, rng, 300)
        w.finish()
        ref = TableWriter(fs, f"g{trial}.sst", block_size=block_size, compression=w._compression)
        ref.add_many(entries)
        ref.finish()
        assert fs.read_file(f"f{trial}.sst") == fs.read_file(f"g{trial}.sst"), (trial, block_size, kl, vl)


def test_fixed_block_head_is_encode_blocks_head():
    from array import array

    from lsm.sstable.block import decode_block, encode_block, fixed_block_head

    for n, kl, vl in [(1, 16, 100), (35, 16, 100), (3, 1, 0), (4, 7, 1), (2, 5, 5), (300, 2, 3)]:
        keys = [bytes([65 + i % 26]) * kl for i in range(n)]
        values = [bytes([97 + i % 26]) * vl for i in range(n)]
        tr = array("Q", [(i << 8) | PUT for i in range(1, n + 1)])
        payload = fixed_block_head(n, kl, vl) + tr.tobytes() + b"".join(keys) + b"".join(values)
        assert payload == encode_block(keys, tr, values), (n, kl, vl)
        assert decode_block(payload, True) == (keys, tr.tolist(), values)
        assert fixed_block_head(n, kl, vl) is fixed_block_head(n, kl, vl)  # cached


def test_add_columns_falls_back_to_add_and_its_errors():
    fs = CrashFS()
    two_versions = [(b"a", (5 << 8) | PUT, b"2"), (b"a", (3 << 8) | PUT, b"1"), (b"b", (4 << 8) | PUT, b"x")]
    assert _table(fs, "v1.sst", 4096, two_versions, 0, True) == _table(fs, "v2.sst", 4096, two_versions, 0, False)
    w = TableWriter(fs, "bad.sst")
    w.add(b"m", (1 << 8) | PUT, b"")
    with pytest.raises(ValueError, match="keys must be ascending"):
        w.add_columns([b"a"], [(2 << 8) | PUT], [b""])
    w.abandon()
    w = TableWriter(fs, "kind.sst", block_size=1)
    with pytest.raises(ValueError, match="unknown value kind"):
        w.add_columns([b"a", b"b"], [(2 << 8) | 7, (3 << 8) | PUT], [b"", b""])
    w.abandon()
    w = TableWriter(fs, "seq.sst", block_size=1)
    with pytest.raises(ValueError, match="trailer out of range"):
        w.add_columns([b"a", b"b"], [1 << 64, (3 << 8) | PUT], [b"", b""])
    w.abandon()


def test_add_columns_in_chunks_writes_the_same_table_as_add():
    # Whole blocks are cut straight from the columns; a chunk's tail stays
    # pending and the next chunk tops it up first.
    rng = random.Random(_seed())
    fs = CrashFS()
    for trial in range(20):
        block_size = rng.choice((1, 64, 700, 4096))
        keys = sorted({rng.randbytes(rng.randrange(1, 12)) for _ in range(rng.randrange(1, 600))})
        entries = [(k, ((i + 1) << 8) | rng.choice((PUT, DELETE)), rng.randbytes(rng.randrange(0, 300)))
                   for i, k in enumerate(keys)]
        w = TableWriter(fs, f"c{trial}.sst", block_size=block_size, compression=compression.ZSTD)
        _add_in_chunks(w, entries, rng, 200)
        props = w.finish()
        assert props.num_entries == len(entries)
        assert fs.read_file(f"c{trial}.sst") == _table(fs, f"d{trial}.sst", block_size, entries, len(entries), False)


# ---------------------------------------------------------------- memory
def test_memtable_python_memory_per_entry_is_within_the_documented_overhead():
    """docs/architecture.md, "Memory": a memtable of ``size`` bytes holds at
    most ``size / (E + ENTRY_OVERHEAD) * (E + ENTRY_PY_OVERHEAD)`` bytes of
    Python heap, for entries of E key+value bytes (fresh bytes objects, the
    worst case: a put keeps the caller's objects)."""
    rng = random.Random(_seed())
    for klen, vlen in ((16, 100), (4, 0), (16, 2000)):
        n = 5000
        items = [(rng.randbytes(klen), rng.randbytes(vlen)) for _ in range(n)]
        del items
        gc.collect()
        tracemalloc.start()
        try:
            m = MemTable()
            before = tracemalloc.get_traced_memory()[0]
            for i in range(n):
                m.add(i + 1, PUT, rng.randbytes(klen), rng.randbytes(vlen))
            m.keys_in_range(None, None)  # the sorted view exists too
            used = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert m.size == n * (klen + vlen + ENTRY_OVERHEAD)
        bound = m.size // (klen + vlen + ENTRY_OVERHEAD) * (klen + vlen + ENTRY_PY_OVERHEAD)
        assert used <= bound, (klen, vlen, used / n)
        assert used >= n * (klen + vlen)  # the measurement saw the data


def test_db_memtable_switches_at_the_configured_size():
    """The live memtable never holds more than memtable_size plus one
    commit: the write path switches it before an insert once it is full."""
    with lsm.open("/db", fs=CrashFS(), background="inline", memtable_size=4096) as db:
        biggest = 0
        for i in range(500):
            db.put(b"%06d" % i, b"v" * 50)
            biggest = max(biggest, db._mem.size)
        b = WriteBatch()
        for i in range(100):
            b.put(b"b%05d" % i, b"w" * 10)
        db.write(b)
        biggest = max(biggest, db._mem.size)
        assert biggest <= 4096 + 100 * (16 + 6 + ENTRY_OVERHEAD)
        assert db.stats()["flush_count"] >= 500 * (6 + 50 + ENTRY_OVERHEAD) // 4096 - 1
        assert db.get(b"000123") == b"v" * 50 and db.get(b"b00099") == b"w" * 10


def test_struct_layout_of_the_combined_header():
    # The combined pack is the record header tail followed by the op header.
    from lsm.wal import format as wf
    assert wf._RECORD_TAIL_OP.size == wf.RECORD_HEADER_SIZE - 4 + OP_HEADER.size
    assert struct.calcsize("<IQIQQ") + OP_HEADER.size == wf._RECORD_TAIL_OP.size  # v2: length, seq, count, timestamp, synced
