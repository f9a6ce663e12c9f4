"""WAL replay of batch records (lsm/recovery.py): a record of several puts
goes into the memtable deferred (``MemTable.add_batch``, ``_pending``),
decoded as columns (``lsm.batch.decode_columns``); every other record is
indexed at once. What the recovered database shows must be what the same
records applied one op at a time show: the memtable's versions, gets at
every snapshot, scans, counts, size and the write counters open derives
from them, the flush's entries; whatever is done first after the open (a
get, a scan, a flush, a write). And ``decode_columns`` accepts and refuses
exactly what an op-by-op parse does.

Randomized tests print their seed; set LSM_TEST_SEED to replay one."""

from __future__ import annotations

import random
import struct

import pytest

import lsm
from lsm.base import filenames
from lsm.base.coding import ValueKind
from lsm.base.crashfs import CrashFS
from lsm.base.errors import CorruptionError
from lsm.batch import OP_HEADER, WriteBatch, decode_columns
from lsm.memtable import ENTRY_OVERHEAD, MemTable
from lsm.wal import format as wf
from lsm.wal.reader import replay, scan_segment_bytes
from tests.memtable_model import add_one_at_a_time, assert_same_memtable
from tests.seeds import seed as _seed

PUT, DELETE, RANGE_DELETE = ValueKind.PUT, ValueKind.DELETE, ValueKind.RANGE_DELETE
D = "/db"
# Nothing flushes (every commit stays in the WAL); small segments, so a
# replay crosses several.
OPTS = {"background": "inline", "sync": lsm.Sync.OFF, "memtable_size": 64 << 20, "wal_segment_size": 4096}


def _reference_ops(body: bytes, count: int, path: str = "?", offset: int = 0) -> list[tuple[int, bytes, bytes]]:
    """The op-by-op parse (decode_body before decode_columns), the oracle:
    ops as (kind, key, value), or the same CorruptionError."""
    ops = []
    pos, end, hsize = 0, len(body), OP_HEADER.size
    try:
        while pos < end:
            kind, klen, vlen = OP_HEADER.unpack_from(body, pos)
            pos += hsize
            kend, vend = pos + klen, pos + klen + vlen
            if vend > end:
                raise CorruptionError("batch op extends past the end of its record", path, offset)
            if kind == DELETE and vlen:
                raise CorruptionError("batch delete op carries a value", path, offset)
            if kind == RANGE_DELETE and not body[pos:kend] < body[kend:vend]:
                raise CorruptionError("batch range deletion op with start >= stop", path, offset)
            if kind not in (PUT, DELETE, RANGE_DELETE):
                raise CorruptionError(f"unknown batch op kind {kind}", path, offset)
            ops.append((kind, body[pos:kend], body[kend:vend]))
            pos = vend
    except struct.error:
        raise CorruptionError("truncated batch op header", path, offset) from None
    if len(ops) != count:
        raise CorruptionError(f"batch holds {len(ops)} ops but its record says {count}", path, offset)
    return ops


def _outcome(f, body: bytes, count: int):
    try:
        return "ok", f(body, count, "/w/1.wal", 77)
    except CorruptionError as e:
        assert (e.path, e.offset) == ("/w/1.wal", 77)
        return "error", str(e)


def _columns_as_ops(cols) -> list[tuple[int, bytes, bytes]]:
    keys, values, kinds, _nbytes = cols
    return list(zip([PUT] * len(keys) if kinds is None else kinds, keys, values))


def _random_batch(rng: random.Random, shape: str, nkeys: int = 40) -> WriteBatch:
    """``uniform``: puts of one key and one value length (decode_columns'
    strided path); ``varied``: puts of any length, empty values, keys
    repeated within the batch; ``mixed``: with deletes and a range
    deletion."""
    b = WriteBatch()
    vlen = rng.choice((0, 1, 7, 100))
    for _ in range(rng.randrange(2, 30)):
        k = b"k%03d" % rng.randrange(nkeys)
        if shape == "uniform":
            b.put(k, rng.randbytes(vlen))
        elif shape == "varied" or rng.random() < 0.6:
            b.put(k if rng.random() < 0.8 else k + b"-long", rng.randbytes(rng.choice((0, 0, 3, 20))))
        elif rng.random() < 0.8:
            b.delete(k)
        else:
            lo, hi = sorted(rng.sample(range(nkeys), 2))
            b.delete_range(b"k%03d" % lo, b"k%03d" % hi)
    return b


# ---------------------------------------------------------------- decode_columns
def _batch(ops: list[tuple[int, bytes, bytes]]) -> WriteBatch:
    b = WriteBatch()
    for kind, k, v in ops:
        if kind == PUT:
            b.put(k, v)
        elif kind == DELETE:
            b.delete(k)
        else:
            b.delete_range(k, v)
    return b


EDGES = [
    [(PUT, b"", b"")] * 3,  # empty keys and values: every op is a bare header
    [(PUT, b"k", b"")] * 2 + [(PUT, b"j", b"")],  # empty values: the last value starts at the body's end
    [(PUT, b"", b"v"), (PUT, b"", b"w")],
    [(PUT, b"a", b"1")],  # one op
    [(PUT, b"a", b"1"), (DELETE, b"a", b"")],  # same lengths, another kind
    [(DELETE, b"a", b""), (DELETE, b"b", b"")],
    [(RANGE_DELETE, b"a", b"b"), (PUT, b"a", b"1")],
]


def test_decode_columns_gives_the_batch_columns():
    rng = random.Random(_seed())
    batches = [_batch(ops) for ops in EDGES]
    batches += [_random_batch(rng, shape) for shape in ("uniform", "varied", "mixed") * 100]
    for b in batches:
        keys, values, kinds = b.columns()
        body, nbytes = b.encode()
        got = decode_columns(body, len(b), "p", 0)
        assert got == (keys, values, None if kinds is None or kinds.count(PUT) == len(kinds) else kinds, nbytes)
        assert _columns_as_ops(got) == _reference_ops(body, len(b)) == b.ops()


def test_decode_columns_accepts_and_refuses_like_an_op_by_op_parse():
    # Damaged bodies, uniform ones mostly (the strided path must notice one
    # header that differs), against the oracle: the same ops, or the same
    # error naming the record's path and offset.
    rng = random.Random(_seed())
    hsize = OP_HEADER.size
    seen = {"ok": 0, "error": 0}
    for _ in range(3000):
        b = _random_batch(rng, rng.choice(("uniform", "uniform", "varied", "mixed")))
        body = bytearray(b.body())
        count = len(b)
        r = rng.random()
        if r < 0.4:  # one byte of one op header
            op = rng.randrange(count)
            pos = sum(hsize + len(k) + len(v) for k, v in zip(b._keys[:op], b._values[:op]))
            body[pos + rng.randrange(hsize)] = rng.choice((0, 1, 2, 3, 9, 100, 255, body[pos] ^ 1))
        elif r < 0.6:
            body = body[: rng.randrange(len(body) + 1)]
        elif r < 0.75:
            body += bytes(OP_HEADER.pack(PUT, 4, len(b._values[0]))) + b"k999" + bytes(len(b._values[0]))
            count += rng.choice((0, 1))
        elif r < 0.9:
            count += rng.choice((-1, 1))
        else:
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        body = bytes(body)
        want = _outcome(_reference_ops, body, count)
        got = _outcome(decode_columns, body, count)
        if got[0] == "ok":
            _keys, _values, kinds, nbytes = got[1]
            assert kinds is None or kinds.count(PUT) < len(kinds)
            assert nbytes == sum(len(k) + len(v) for _kind, k, v in want[1])
            got = ("ok", _columns_as_ops(got[1]))
        assert got == want, (body.hex(), count)
        seen[got[0]] += 1
    assert seen["ok"] > 100 and seen["error"] > 100, seen


# ---------------------------------------------------------------- replay through lsm.open
def _write_random(rng: random.Random) -> tuple[CrashFS, list[dict[bytes, bytes]], list[str]]:
    """A database on CrashFS filled with random commits and left as a kill
    leaves it; the user-visible state after each commit (``states[i]``:
    after the first i commits) and each commit's shape (``"puts"``: a
    batch of several puts, the records replay defers)."""
    fs = CrashFS()
    db = lsm.open(D, fs=fs, **OPTS)
    model: dict[bytes, bytes] = {}
    states = [{}]
    shapes = []
    for _ in range(rng.randrange(5, 60)):
        r = rng.random()
        if r < 0.6:
            b = _random_batch(rng, rng.choice(("uniform", "varied", "mixed")))
            shape = "puts" if b.columns()[2] is None else "mixed"
            db.write(b)
            for kind, k, v in b.ops():
                if kind == PUT:
                    model[k] = v
                elif kind == DELETE:
                    model.pop(k, None)
                else:
                    for x in [x for x in model if k <= x < v]:
                        del model[x]
        elif r < 0.7:
            shape = "one put"
            b = WriteBatch()
            k, v = b"k%03d" % rng.randrange(40), rng.randbytes(rng.randrange(3))
            b.put(k, v)
            db.write(b)
            model[k] = v
        elif r < 0.8:
            shape = "put"
            k, v = b"k%03d" % rng.randrange(40), rng.randbytes(5)
            db.put(k, v)
            model[k] = v
        elif r < 0.9:
            shape = "delete"
            k = b"k%03d" % rng.randrange(40)
            db.delete(k)
            model.pop(k, None)
        else:
            shape = "delete_range"
            lo, hi = sorted(rng.sample(range(40), 2))
            db.delete_range(b"k%03d" % lo, b"k%03d" % hi)
            for x in [x for x in model if b"k%03d" % lo <= x < b"k%03d" % hi]:
                del model[x]
        states.append(dict(model))
        shapes.append(shape)
    assert db.stats()["flush_count"] == 0
    db._simulate_crash()
    return fs, states, shapes


def _tear_tail(fs: CrashFS, rng: random.Random) -> None:
    """Cut the newest segment holding a record inside its last record."""
    segs = sorted(n for n in fs.listdir(D) if filenames.parse_wal(n) is not None)
    for name in reversed(segs):
        p = f"{D}/{name}"
        scan = scan_segment_bytes(fs.read_file(p), p)
        if scan.records:
            last = scan.records[-1]
            fs.truncate(p, last.offset + rng.randrange(1, wf.RECORD_HEADER_SIZE + len(last.body)))
            return
    raise AssertionError("no record to tear")


def _model_of(fs: CrashFS) -> tuple[MemTable, int]:
    """The memtable the WAL's intact records make applied one op at a time
    (the oracle's parse), and the number of those records."""
    model = MemTable()
    result = replay(fs, D, start_seq=0)
    for r in result.records:
        add_one_at_a_time(model, r.seq, _reference_ops(r.body, r.count))
    return model, len(result.records)


def _visible(model: MemTable) -> dict[bytes, bytes]:
    out = {}
    snap = 1 << 60
    for k in model.keys_in_range(None, None):
        seq, kind, value = model.get(k, snap)
        if kind == PUT and model.range_del_cover(k, snap) < seq:
            out[k] = value
    return out


@pytest.mark.parametrize("first", ["frozen", "get", "scan", "flush", "write"])
def test_replayed_batches_read_as_ops_one_at_a_time(first):
    rng = random.Random(_seed())
    deferred = torn = 0
    for trial in range(25):
        fs, states, shapes = _write_random(rng)
        if rng.random() < 0.4:
            _tear_tail(fs, rng)
        model, kept = _model_of(fs)
        torn += kept < len(shapes)
        assert kept >= len(shapes) - 1  # a torn tail costs the last commit only
        want = states[kept]
        assert _visible(model) == want, trial  # the oracle agrees with the user-level model
        db = lsm.open(D, fs=fs.clone(), **OPTS)
        mem = db._sv.mem
        puts_batches = shapes[:kept].count("puts")
        deferred += len(mem._pending)
        if shapes[kept - 1:kept] == ["puts"]:
            assert mem._pending, "the last record, a batch of puts, was not deferred"
        assert len(mem._pending) <= puts_batches
        # Counts and size before anything indexes, and what open derived from them.
        assert (mem.count, mem.size) == (model.count, model.size)
        assert db._keys_written == -model.count
        assert db._user_bytes == -(model.size - ENTRY_OVERHEAD * model.count)
        keys = sorted({k for k, _t, _v in model.iter_entries()} | {b"k000", b"none"})
        top = db.last_seq
        if first == "frozen":  # the flush's entries (the pending batches as runs when only they are there)
            assert list(mem.frozen()) == list(model.iter_entries())
        elif first == "get":
            assert {k: db.get(k) for k in keys} == {k: want.get(k) for k in keys}
        elif first == "scan":
            lo, hi = sorted(rng.sample(keys, 2))
            assert list(db.items(lo, hi)) == sorted((k, v) for k, v in want.items() if lo <= k < hi)
            assert list(db.items(reverse=True)) == sorted(want.items(), reverse=True)
        elif first == "flush":
            db.flush()
            assert dict(db.items()) == want
            assert [db.get(k) for k in keys] == [want.get(k) for k in keys]
            db.close()
            continue
        else:
            db.put(b"k001", b"after")
            add_one_at_a_time(model, top + 1, [(PUT, b"k001", b"after")])
            want = {**want, b"k001": b"after"}
            top += 1
        assert_same_memtable(mem, model, keys, range(0, top + 2, max(1, top // 20)))
        assert dict(db.items()) == want
        db.close()
    assert deferred, "no batch of puts was replayed deferred"
    assert torn, "no trial tore the tail"


def test_a_damaged_batch_body_is_refused_naming_its_record():
    # A record whose checksum matches but whose body does not parse: a
    # uniform batch of puts with one op's kind changed in the middle (the
    # strided path must not take it). Open refuses, naming the segment and
    # the record's offset.
    fs = CrashFS()
    db = lsm.open(D, fs=fs, **OPTS)
    b = WriteBatch()
    for i in range(50):
        b.put(b"k%03d" % i, b"v" * 10)
    db.write(b)
    db._simulate_crash()
    name = next(n for n in sorted(fs.listdir(D)) if filenames.parse_wal(n) is not None)
    p = f"{D}/{name}"
    data = bytearray(fs.read_file(p))
    rec = scan_segment_bytes(bytes(data), p).records[0]
    body = bytearray(rec.body)
    body[25 * (OP_HEADER.size + 4 + 10)] = DELETE  # op 25: a delete carrying a value
    framed = wf.encode_record(rec.seq, rec.count, rec.timestamp_us, bytes(body), rec.synced)
    data[rec.offset : rec.offset + len(framed)] = framed
    fs.write_file(p, bytes(data))
    with pytest.raises(CorruptionError, match="batch delete op carries a value") as ei:
        lsm.open(D, fs=fs, **OPTS)
    assert (ei.value.path, ei.value.offset) == (p, rec.offset)
