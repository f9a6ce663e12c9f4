import random

import pytest

from lsm.base.coding import ValueKind
from lsm.base.errors import CorruptionError
from lsm.batch import WriteBatch, decode_body, encode_put
from lsm.memtable import MemTable


def test_batch_roundtrip_and_types():
    b = WriteBatch()
    b.put(b"a", b"1")
    b.delete(bytearray(b"b"))
    b.put(memoryview(b"c"), b"")
    assert len(b) == 3 and b.byte_size == 4
    assert decode_body(b.body(), 3) == [(1, b"a", b"1"), (0, b"b", b""), (1, b"c", b"")]
    with pytest.raises(TypeError, match="key must be bytes.*str"):
        b.put("x", b"1")
    with pytest.raises(TypeError, match="value must be bytes.*int"):
        b.put(b"x", 5)


def test_decode_body_rejects_damage():
    body = encode_put(b"key", b"value")
    with pytest.raises(CorruptionError, match="2 ops|holds 1"):
        decode_body(body, 2)
    with pytest.raises(CorruptionError):
        decode_body(body[:-1], 1)
    with pytest.raises(CorruptionError, match="kind"):
        decode_body(b"\x07" + body[1:], 1)
    with pytest.raises(CorruptionError):
        decode_body(body[:5], 1)


def test_memtable_mvcc_and_order():
    m = MemTable()
    m.add(1, ValueKind.PUT, b"b", b"b1")
    m.add(2, ValueKind.PUT, b"a", b"a2")
    m.add(3, ValueKind.PUT, b"b", b"b3")
    m.add(4, ValueKind.DELETE, b"a", b"")
    assert m.get(b"b", 2) == (1, ValueKind.PUT, b"b1")
    assert m.get(b"b", 9) == (3, ValueKind.PUT, b"b3")
    assert m.get(b"a", 1) is None
    assert m.get(b"a", 4)[1] == ValueKind.DELETE
    fwd = list(m.iter_entries())
    assert [(k, t >> 8) for k, t, _ in fwd] == [(b"a", 4), (b"a", 2), (b"b", 3), (b"b", 1)]
    assert list(m.iter_entries(reverse=True)) == fwd[::-1]
    assert [k for k, _, _ in m.iter_entries(b"b", None)] == [b"b", b"b"]
    m.check()


def test_memtable_random_against_model():
    seed = random.randrange(1 << 30)
    print("seed", seed)
    rnd = random.Random(seed)
    m = MemTable()
    history = {}
    for seq in range(1, 3000):
        k = b"%03d" % rnd.randrange(200)
        m.add(seq, ValueKind.PUT, k, b"%d" % seq)
        history.setdefault(k, []).append(seq)
        if seq % 500 == 0:
            m.check()
    for k, seqs in history.items():
        for snap in (1, 700, 1500, 2999):
            vis = [s for s in seqs if s <= snap]
            got = m.get(k, snap)
            assert (got[0] if got else None) == (vis[-1] if vis else None)
    keys = [k for k, _, _ in m.iter_entries(b"050", b"100")]
    assert keys == sorted(keys) and all(b"050" <= k < b"100" for k in keys)
