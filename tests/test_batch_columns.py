"""WriteBatch kept as columns (keys, values, kinds only once a non-PUT op is
added) and MemTable.add_batch: the body is the op-by-op encoding whatever
the mix and lengths, the memtable ends as if each op were added one by one,
and a batch committed through the DB reads back (and recovers) the same.
Randomized tests print their seed; LSM_TEST_SEED replays one."""

from __future__ import annotations

import random

import pytest

import lsm
from lsm.base.coding import ValueKind
from lsm.base.crashfs import CrashFS
from lsm.base.errors import ClosedError
from lsm.batch import OP_HEADER, WriteBatch, decode_body
from lsm.memtable import MemTable
from tests.memtable_model import add_one_at_a_time, assert_same_memtable
from tests.seeds import seed as _seed

PUT, DELETE, RANGE_DELETE = ValueKind.PUT, ValueKind.DELETE, ValueKind.RANGE_DELETE


def _expected_body(ops: list[tuple[int, bytes, bytes]]) -> bytes:
    return b"".join(OP_HEADER.pack(kind, len(k), len(v)) + k + v for kind, k, v in ops)


def test_uniform_puts_share_one_header_and_encode_op_by_op():
    b = WriteBatch()
    ops = [(PUT, b"%016d" % i, bytes([i % 251]) * 100) for i in range(1000)]
    for _kind, k, v in ops:
        b.put(k, v)
    body, nbytes = b.encode()
    assert body == _expected_body(ops) and nbytes == 116 * 1000
    assert b.columns() == ([k for _, k, _ in ops], [v for _, _, v in ops], None)  # no kinds column for puts
    assert decode_body(body, 1000) == ops == b.ops() == list(b)


def test_mixed_lengths_and_kinds_added_midway():
    # Puts first (no kinds column), then a delete creates it with a PUT per
    # earlier op, then more puts append PUT kinds; one key length differs.
    b = WriteBatch()
    b.put(b"a", b"1")
    b.put(b"b", b"22")
    b.delete(b"a")
    b.put(b"ccc", b"3")
    b.delete_range(b"d", b"f")
    b.put(b"d", b"4")
    ops = [(PUT, b"a", b"1"), (PUT, b"b", b"22"), (DELETE, b"a", b""), (PUT, b"ccc", b"3"),
           (RANGE_DELETE, b"d", b"f"), (PUT, b"d", b"4")]
    assert b.ops() == ops and len(b) == 6 and b.has_range_dels
    assert b.columns()[2] == bytes([PUT, PUT, DELETE, PUT, RANGE_DELETE, PUT])
    assert b.encode() == (_expected_body(ops), 1 + 1 + 1 + 2 + 1 + 3 + 1 + 1 + 1 + 1 + 1)
    assert b.byte_size == 14
    # A single delete, and one-byte keys all equal in length with a delete
    # among them (the kinds column forbids the shared header).
    d = WriteBatch()
    d.delete(b"x")
    assert d.encode() == (_expected_body([(DELETE, b"x", b"")]), 1)
    b.clear()
    assert (len(b), b.columns(), b.body(), b.has_range_dels) == (0, ([], [], None), b"", False)
    b.put(b"k", b"v")
    assert b.ops() == [(PUT, b"k", b"v")]


def test_random_batches_encode_and_apply_like_op_by_op():
    rng = random.Random(_seed())
    for _ in range(150):
        b = WriteBatch()
        ops = []
        uniform = rng.random() < 0.5  # fixed key/value lengths: the shared-header path
        for _ in range(rng.randrange(1, 60)):
            r = rng.random()
            k = b"%04d" % rng.randrange(80) if uniform else b"%d" % rng.randrange(80)
            if r < 0.8:
                v = rng.randbytes(8 if uniform else rng.randrange(12))
                b.put(k, v)
                ops.append((PUT, k, v))
            elif r < 0.95:
                b.delete(k)
                ops.append((DELETE, k, b""))
            else:
                b.delete_range(k, k + b"\xff")
                ops.append((RANGE_DELETE, k, k + b"\xff"))
        body, nbytes = b.encode()
        assert body == _expected_body(ops)
        assert nbytes == sum(len(k) + len(v) for _kind, k, v in ops)
        assert decode_body(body, len(ops)) == ops == b.ops()
        # The memtable: columns in, the same state as one op at a time.
        a, c = MemTable(), MemTable()
        pre = [(PUT, b"%04d" % i, b"old") for i in range(0, 80, 7)]  # some keys already present
        for i, (kind, k, v) in enumerate(pre, 1):
            a.add(i, kind, k, v)
            c.add(i, kind, k, v)
        seq = len(pre) + 1
        a.add_batch(seq, *b.columns(), nbytes)
        seq = add_one_at_a_time(c, seq, ops)
        assert_same_memtable(a, c, {k for _kind, k, _v in ops + pre}, range(0, seq + 1, 5))
        # Into an empty memtable (every key new: the bulk path whenever the
        # batch holds no range deletion, keys written twice included).
        f, g = MemTable(), MemTable()
        f.add_batch(1, *b.columns(), nbytes)
        end = add_one_at_a_time(g, 1, ops)
        assert_same_memtable(f, g, {k for _kind, k, _v in ops}, range(end + 1))
        f.check()


def test_fresh_batch_takes_the_bulk_path_duplicates_included():
    m = MemTable()
    keys = [b"%03d" % i for i in range(100)]
    vals = [b"v%d" % i for i in range(100)]
    m.add_batch(1, keys, vals, None, sum(map(len, keys)) + sum(map(len, vals)))
    assert m.count == 100 and m.get(b"050", 51) == (51, PUT, b"v50") and m.get(b"050", 50) is None
    # A batch writing one key twice (or three times) keeps every version
    # (not only the last), oldest first in _older, its kinds included.
    m.add_batch(101, [b"x", b"y", b"x", b"x"], [b"1", b"2", b"3", b""], bytes([PUT, PUT, PUT, DELETE]), 7)
    assert m.get(b"x", 101) == (101, PUT, b"1") and m.get(b"x", 103) == (103, PUT, b"3")
    assert m.get(b"x", 104) == (104, DELETE, b"") and m.get(b"y", 104) == (102, PUT, b"2")
    assert m.count == 104 and m.size == (300 + 290 + 100 * 16) + (7 + 4 * 16)
    assert [e[1] >> 8 for e in m.iter_entries(b"x", b"y")] == [104, 103, 101]
    m.check()


def test_db_write_batch_reads_back_and_recovers():
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="inline", sync=lsm.Sync.OFF)
    with db.batch() as b:
        for i in range(300):
            b.put(b"%05d" % i, b"v%d" % i)
        b.delete(b"00007")
        b.delete_range(b"00100", b"00110")
        b.put(b"00105", b"back")
    with pytest.raises(ClosedError):
        b.put(b"k", b"v")
    seq = db.write(WriteBatch())  # empty: nothing written
    assert seq == db.last_seq == 303
    expected = {b"%05d" % i: b"v%d" % i for i in range(300) if i != 7 and not 100 <= i < 110}
    expected[b"00105"] = b"back"
    assert dict(db.items()) == expected
    db.close()
    db = lsm.open("/db", fs=fs, background="inline", sync=lsm.Sync.OFF)
    assert dict(db.items()) == expected and db.last_seq == 303
    db.close()


def test_committed_batch_refuses_every_op_until_cleared():
    db = lsm.open("/db", fs=CrashFS(), background="inline", sync=lsm.Sync.OFF)
    with db.batch() as b:
        b.put(b"a", b"1")
        put = b.put  # bound before the commit, as a caller's loop holds it
    for op in (lambda: put(b"k", b"v"), lambda: b.put(b"k", b"v"), lambda: b.delete(b"a"),
               lambda: b.delete_range(b"a", b"b")):
        with pytest.raises(ClosedError):
            op()
    assert len(b) == 1 and b.ops() == [(PUT, b"a", b"1")]  # nothing half-added
    b.clear()
    b.put(b"b", b"2")
    b.delete(b"a")
    assert db.write(b) == 3 and db.get(b"b") == b"2" and db.get(b"a") is None
    db.close()
