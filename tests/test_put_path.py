"""The single-put fast path (issue 7, target 3): what DB.put inlines must
stay what it replaces.

* ``DB.put`` inlines ``MemTable.add``: the same random op list through both
  leaves the same memtable (latest versions, older versions, size).
* The WAL encoders compute the crc mask with a multiply
  (``lsm.wal.format._ROTATE_MUL``): equal to ``lsm.base.checksum.mask`` on
  edge and random crcs, and every encoded record's stored crc is the masked
  crc32c of its bytes.
* The write lock is taken with acquire/release instead of ``with``: it is
  released when a put, a delete or a batch fails inside it.
* The WAL record goes out through ``WritableFile.raw_write`` (os.write bound
  to the live segment's descriptor) only on the plain filesystem; it
  follows the live segment, is dropped at close, and a short write still
  leaves whole records.
* put/delete check one figure (``_room_at``) for both the memtable and the
  WAL limits: ``_make_room_locked`` runs whenever the old two-part check
  would have called it.
* ``stats()``'s keys_written / user_bytes_written come from the memtables
  (not per-put counters): equal to a per-op count, this open only.
* A flush's memtable pickles without a memo: the same entries arrive.

Randomized tests print their seed; ``LSM_PUT_SEED`` replays one.
"""

from __future__ import annotations

import os
import random
import struct
import threading

import pytest

import lsm
import lsm.db_room
from lsm.base import checksum
from lsm.base.coding import MAX_SEQ, ValueKind
from lsm.base.crashfs import CrashFS
from lsm.base.errors import NeedsRecoveryError
from lsm.memtable import MemTable
from lsm.wal import format as wf

SEED = int(os.environ.get("LSM_PUT_SEED") or random.SystemRandom().randrange(1 << 32))


def _rng(name: str) -> random.Random:
    print(f"{name}: LSM_PUT_SEED={SEED}")
    return random.Random(f"{SEED}-{name}")


def _assert_reopens_with(path, model: dict[bytes, bytes]) -> None:
    """Reopening the database at ``path`` replays exactly ``model``."""
    db = lsm.open(path, background="inline")
    try:
        assert {k: db.get(k) for k in model} == model
    finally:
        db.close()


def test_mask_multiply_equals_checksum_mask() -> None:
    rng = _rng("mask")
    edges = [0, 1, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 0xFFFFFFFF,
             0x8A942EBE, 0x8A942EBD, 0xDEADBEEF]  # 0x8A942EBE: its rotation plus _MASK_DELTA is exactly 2**32
    for c in edges + [rng.getrandbits(32) for _ in range(20000)]:
        got = ((c * wf._ROTATE_MUL >> 15) + wf._MASK_DELTA) & 0xFFFFFFFF
        assert got == checksum.mask(c), hex(c)


def test_encoders_store_the_masked_crc() -> None:
    rng = _rng("encoders")
    for _ in range(3000):
        key = rng.randbytes(rng.randrange(0, 40))
        value = rng.randbytes(rng.randrange(0, 300))
        seq = rng.randrange(0, MAX_SEQ)
        ts, synced, kind = rng.getrandbits(64), rng.getrandbits(64), rng.choice((0, 1))
        rec = wf.encode_op_record(seq, ts, kind, key, value, synced)
        assert struct.unpack_from("<I", rec)[0] == checksum.masked_crc(rec[4:])
        body = struct.pack("<BII", kind, len(key), len(value)) + key + value
        assert rec == wf.encode_record(seq, 1, ts, body, synced)


def _mem_state(m: MemTable) -> tuple:
    return dict(m._latest), {k: list(v) for k, v in m._older.items()}, m._n_older, m.size, m.count


def test_put_equals_memtable_add(tmp_path) -> None:
    """Puts (new keys and overwrites) and deletes through the DB, and the
    same ops through MemTable.add: one state."""
    rng = _rng("put_vs_add")
    db = lsm.open(str(tmp_path / "db"), background="inline", memtable_size=1 << 30)
    try:
        ref = MemTable()
        keys = [rng.randbytes(rng.randrange(1, 12)) for _ in range(300)]
        for _ in range(3000):
            key = rng.choice(keys)
            if rng.random() < 0.15:
                seq = db.delete(key)
                ref.add(seq, ValueKind.DELETE, key, b"")
            else:
                value = rng.randbytes(rng.randrange(0, 50))
                seq = db.put(key, value)
                ref.add(seq, ValueKind.PUT, key, value)
        mem = db._mem
        assert _mem_state(mem) == _mem_state(ref)
        assert mem._n_older > 0  # the overwrite branch ran
        mem.check()
        for k in keys:
            assert mem.get(k, db._last_seq) == ref.get(k, db._last_seq)
    finally:
        db.close()


def _lock_is_free(db) -> bool:
    """True when another thread can take the write lock now."""
    got = []

    def probe() -> None:
        ok = db._write_mu.acquire(blocking=False)
        got.append(ok)
        if ok:
            db._write_mu.release()

    t = threading.Thread(target=probe)
    t.start()
    t.join()
    return got == [True]


@pytest.mark.parametrize("op", ["put", "delete", "write"])
def test_write_lock_released_when_the_commit_fails(op) -> None:
    fs = CrashFS()
    db = lsm.open("/db", fs=fs, background="thread", wal_preallocate=False)
    try:
        db.put(b"a", b"1")
        fs.fail("write", site="wal", persistent=True)
        with pytest.raises(NeedsRecoveryError):
            if op == "put":
                db.put(b"b", b"2")
            elif op == "delete":
                db.delete(b"a")
            else:
                b = lsm.WriteBatch()
                b.put(b"b", b"2")
                b.put(b"c", b"3")
                db.write(b)
        assert _lock_is_free(db)
        with pytest.raises(NeedsRecoveryError):  # fenced: later commits raise, and still release the lock
            db.put(b"d", b"4")
        assert _lock_is_free(db)
    finally:
        try:
            db.close()
        except NeedsRecoveryError:
            pass


# ---- session 5: the WAL write without Python frames, one room check, counters from the memtables


def test_raw_write_only_for_the_plain_filesystem(tmp_path) -> None:
    """WritableFile.raw_write is os.write bound to the descriptor only
    when no write hook is overridden: CrashFS and fault injectors must see
    every write."""
    from lsm.base.fs import FileSystem

    class Counting(FileSystem):
        def _write_some(self, f, data):
            return super()._write_some(f, data)

    plain = FileSystem()
    f = plain.create(str(tmp_path / "a"))
    try:
        raw = f.raw_write
        assert raw is not None
        assert raw(b"abc") == 3
        assert plain.read_file(str(tmp_path / "a")) == b"abc"
    finally:
        f.close()
    g = Counting().create(str(tmp_path / "b"))
    try:
        assert g.raw_write is None
    finally:
        g.close()
    fs = CrashFS()
    fs.makedirs("/d")
    h = fs.create("/d/c")
    assert h.raw_write is None


def test_wal_raw_write_follows_the_live_segment(tmp_path) -> None:
    """The bound write is the live segment's at every put (rotation swaps
    the file), and dropped when the file closes (its descriptor number may
    be reused)."""
    db = lsm.open(str(tmp_path / "db"), background="inline", sync=lsm.Sync.OFF, wal_segment_size=4096,
                  wal_preallocate=False)
    wal = db._wal
    files = []
    for i in range(200):
        db.put(b"k%05d" % i, b"v" * 60)
        assert wal._file.raw_write is not None and wal._file.raw_write.args == (wal._file.fd,)
        assert wal.segment_bytes <= 4096 + 200  # rotated once past the segment size: over by one record at most
        if not files or files[-1] is not wal._file:
            files.append(wal._file)
    assert wal.segments_created > 3 and len(files) == wal.segments_created
    assert all(f.raw_write is None for f in files[:-1])  # sealed and closed
    db.close()
    assert files[-1].raw_write is None


def test_wal_short_raw_write_completes_the_record(tmp_path) -> None:
    """A short os.write on the put path: the rest is written at once, the
    segment's size counts every byte, and every commit replays."""
    rng = _rng("short_write")
    path = str(tmp_path / "db")
    db = lsm.open(path, background="inline", sync=lsm.Sync.OFF, wal_preallocate=False)
    wal = db._wal
    f = wal._file
    raw = f.raw_write
    cuts = []

    def short(data):
        cut = rng.randrange(0, len(data))  # 0 too: no progress on the first call is retried by WritableFile.write
        cuts.append(cut)
        return raw(data[:cut])

    f.raw_write = short
    model = {}
    for i in range(300):
        k, v = rng.randbytes(rng.randrange(1, 20)), rng.randbytes(rng.randrange(0, 150))
        db.put(k, v)
        model[k] = v
        assert wal._file is f  # (a rotation would start a new file; none here)
    assert len(cuts) == 300
    size = wal._file.size
    assert size == db._fs.file_size(wal.segment_path)
    f.raw_write = raw
    db.close()
    _assert_reopens_with(path, model)


def test_put_calls_make_room_no_later_than_before(tmp_path) -> None:
    """put/delete check one figure (_room_at) where they checked the
    memtable size and the live segment's size: _make_room_locked runs
    whenever the old check would have called it (early calls only
    re-arm). Small memtable, segments and WAL limit, random sizes."""
    rng = _rng("room")
    db = lsm.open(str(tmp_path / "db"), background="inline", sync=lsm.Sync.OFF, memtable_size=16384,
                  wal_segment_size=8192, max_total_wal_size=20480, wal_preallocate=False)
    calls = []
    real = db._make_room_locked

    def spy():
        calls.append(1)
        real()

    db._make_room_locked = spy
    try:
        due = 0
        for i in range(3000):
            old_due = db._mem.size >= db._memtable_size or db._wal.segment_bytes >= db._room_check_at
            before = len(calls)
            key = rng.randbytes(rng.randrange(0, 24))
            if rng.random() < 0.1:
                db.delete(key)
            else:
                db.put(key, rng.randbytes(rng.choice((0, 1, 30, 400))))
            if old_due:
                due += 1
                assert len(calls) > before, f"op {i}: the old check was due and _make_room_locked did not run"
        assert due > 50 and len(calls) < 3000  # both limits were reached, and put does not check every time
        st = db.stats()
        assert st["flush_count"] > 5
    finally:
        db.close()


def test_write_counters_from_the_memtables(tmp_path) -> None:
    """stats()'s keys_written / user_bytes_written, now derived from the
    memtables at stats time: equal to a per-op count over puts, deletes,
    batches (range deletions included), memtable switches and an ingest,
    and only this open's writes after a reopen that replays the WAL."""
    rng = _rng("counters")
    path = str(tmp_path / "db")
    db = lsm.open(path, background="inline", sync=lsm.Sync.OFF, memtable_size=8192)
    keys = nbytes = 0
    try:
        for i in range(1500):
            r = rng.random()
            k = rng.randbytes(rng.randrange(1, 16))
            if r < 0.6:
                v = rng.randbytes(rng.randrange(0, 100))
                db.put(k, v)
                keys, nbytes = keys + 1, nbytes + len(k) + len(v)
            elif r < 0.75:
                db.delete(k)
                keys, nbytes = keys + 1, nbytes + len(k)
            elif r < 0.97:
                b = lsm.WriteBatch()
                for _ in range(rng.randrange(1, 6)):
                    k2, v2 = rng.randbytes(rng.randrange(1, 16)), rng.randbytes(rng.randrange(0, 50))
                    b.put(k2, v2)
                    keys, nbytes = keys + 1, nbytes + len(k2) + len(v2)
                if rng.random() < 0.3:
                    b.delete_range(b"\x10", b"\x20")
                    keys, nbytes = keys + 1, nbytes + 2
                db.write(b)
            else:
                st = db.stats()
                assert (st["keys_written"], st["user_bytes_written"]) == (keys, nbytes), i
        before = db.stats()
        assert before["flush_count"] > 3  # memtables were switched (their counts retired)
        assert (before["keys_written"], before["user_bytes_written"]) == (keys, nbytes)
        db.ingest([(b"\xffing%03d" % j, b"x" * 10) for j in range(50)])
        after = db.stats()
        assert after["keys_written"] == keys + 50 and after["user_bytes_written"] == nbytes + 50 * 17
        db.put(b"tail", b"12345")  # left in the WAL: replayed at the next open
    finally:
        db.close()
    db = lsm.open(path, background="inline", sync=lsm.Sync.OFF)
    try:
        assert db._mem.count > 0  # the replayed entries are in the live memtable ...
        st = db.stats()
        assert (st["keys_written"], st["user_bytes_written"]) == (0, 0)  # ... but not written by this open
        db.put(b"a", b"bc")
        db.delete(b"zz")
        st = db.stats()
        assert (st["keys_written"], st["user_bytes_written"]) == (2, 5)
    finally:
        db.close()


def test_frozen_entries_pickle_without_memo() -> None:
    """A flush's memtable goes to the worker process pickled without a memo
    (FrozenEntries.__getstate__): the same entries arrive, older versions,
    deletions and values shared by several entries included."""
    import pickle

    rng = _rng("frozen_pickle")
    m = MemTable()
    shared = rng.randbytes(100)
    keys = [rng.randbytes(rng.randrange(1, 10)) for _ in range(400)]
    for seq in range(1, 3000):
        k = rng.choice(keys)
        if rng.random() < 0.1:
            m.add(seq, ValueKind.DELETE, k, b"")
        else:
            m.add(seq, ValueKind.PUT, k, shared if rng.random() < 0.5 else rng.randbytes(rng.randrange(0, 40)))
    fe = m.frozen()
    back = pickle.loads(pickle.dumps(fe, protocol=pickle.HIGHEST_PROTOCOL))
    assert list(back) == list(fe) and len(back) == len(fe) == m.count
    assert back.columns() == fe.columns()
    empty = pickle.loads(pickle.dumps(MemTable().frozen(), protocol=pickle.HIGHEST_PROTOCOL))
    assert list(empty) == [] and len(empty) == 0


# ---- session 6: the record encoder inlined into DB.put


def test_put_writes_the_encoders_bytes(tmp_path, monkeypatch) -> None:
    """DB.put encodes its WAL record itself (encode_op_record inlined): the
    segment holds, record for record, what encode_op_record makes of the
    same seq, clock, key, value and synced field, and the memtable is
    charged as MemTable.add charges. Keys and values of every size class,
    empty values and non-bytes input included; all replay after reopen."""
    import types

    import lsm.db

    rng = _rng("put_bytes")
    clock = [1_700_000_000_123_456_789]
    monkeypatch.setattr(lsm.db, "time", types.SimpleNamespace(time_ns=lambda: clock[0], perf_counter=lsm.db.time.perf_counter,
                                                              sleep=lsm.db.time.sleep))
    path = str(tmp_path / "db")
    db = lsm.open(path, background="inline", sync=lsm.Sync.OFF, wal_preallocate=False, memtable_size=1 << 30)
    wal = db._wal
    start = wal.segment_bytes
    expected, model = [], {}
    size0 = db._mem.size
    for i in range(400):
        key = rng.randbytes(rng.choice((1, 16, rng.randrange(1, 300))))
        value = rng.randbytes(rng.choice((0, 100, rng.randrange(0, 5000))))
        clock[0] += rng.randrange(0, 10**9)
        arg_k = bytearray(key) if i % 7 == 0 else key
        arg_v = memoryview(value) if i % 11 == 0 else value
        seq = db.put(arg_k, arg_v)
        expected.append((seq, clock[0] // 1000, key, value))
        model[key] = value
    assert db._mem.size - size0 == sum(len(k) + len(v) + 16 for _, _, k, v in expected)
    data = db._fs.read_file(wal.segment_path)[start : wal.segment_bytes]
    off = 0
    for seq, ts, key, value in expected:
        synced = wf.RECORD_HEADER.unpack_from(data, off)[5]
        assert 0 <= synced <= start + off
        rec = wf.encode_op_record(seq, ts, ValueKind.PUT, key, value, synced)
        assert data[off : off + len(rec)] == rec, seq
        off += len(rec)
    assert off == len(data)
    db.close()
    _assert_reopens_with(path, model)


def test_put_refuses_a_sequence_number_past_max_seq(tmp_path) -> None:
    """The inlined encoder keeps encode_op_record's check: a put whose seq
    would pass MAX_SEQ raises its ValueError, writes nothing, leaves the
    memtable and last_seq as they were and releases the write lock."""
    db = lsm.open(str(tmp_path / "db"), background="inline", sync=lsm.Sync.OFF, wal_preallocate=False)
    try:
        db.put(b"a", b"1")
        db._last_seq = MAX_SEQ
        wal = db._wal
        before = (wal.segment_bytes, db._mem.size, dict(db._mem._latest))
        with pytest.raises(ValueError, match="bad sequence number"):
            db.put(b"b", b"2")
        assert (wal.segment_bytes, db._mem.size, dict(db._mem._latest)) == before
        assert db._last_seq == MAX_SEQ and _lock_is_free(db)
    finally:
        db._last_seq = 1
        db.close()


# ---- session 9: WalWriter.append_locked's direct write inlined into DB.put; the WAL write-behind


def _wal_state(wal) -> tuple:
    return (wal.written_seq, wal._written_commits, wal.segment_records, wal.bytes_written, wal._file.size,
            wal.durable_seq, wal.unsynced_since > 0)


def test_put_inlined_wal_write_equals_append_locked(tmp_path, monkeypatch) -> None:
    """DB.put writes an unsynced record itself (append_locked's direct
    branch, inlined); the same ops through _commit_one (which calls
    append_locked) leave the same segment bytes and the same writer
    counters. FULL puts (which stage their record: append_locked's other
    branch) are mixed in; not NORMAL, whose background syncer would sync
    the two logs at different moments."""
    import types

    import lsm.db

    rng = _rng("inline_append")
    clock = [1_700_000_000_000_000_000]
    monkeypatch.setattr(lsm.db, "time", types.SimpleNamespace(time_ns=lambda: clock[0], perf_counter=lsm.db.time.perf_counter,
                                                              sleep=lsm.db.time.sleep))
    dbs = [lsm.open(str(tmp_path / name), background="inline", sync=lsm.Sync.OFF, wal_preallocate=False,
                    memtable_size=1 << 30) for name in ("put", "commit_one")]
    try:
        for i in range(600):
            key, value = rng.randbytes(rng.randrange(1, 40)), rng.randbytes(rng.randrange(0, 300))
            level = lsm.Sync.FULL if rng.random() < 0.1 else lsm.Sync.OFF
            clock[0] += rng.randrange(0, 10**7)
            a = dbs[0].put(key, value, sync=level)
            b = dbs[1]._commit_one(ValueKind.PUT, key, value, level)
            assert a == b
            if i % 50 == 0:
                assert _wal_state(dbs[0]._wal) == _wal_state(dbs[1]._wal), i
        states = [_wal_state(db._wal) for db in dbs]
        assert states[0] == states[1]
        segs = [db._fs.read_file(db._wal.segment_path) for db in dbs]
        assert segs[0] == segs[1] and len(segs[0]) == dbs[0]._wal.segment_bytes
        assert _mem_state(dbs[0]._mem) == _mem_state(dbs[1]._mem)
    finally:
        for db in dbs:
            db.close()


def test_put_inlined_wal_write_failure_fences(tmp_path) -> None:
    """A failed os.write on put's inlined path fences the WAL as
    append_locked does: NeedsRecoveryError, nothing added to the memtable,
    the lock free, and every later commit refused."""
    db = lsm.open(str(tmp_path / "db"), background="inline", sync=lsm.Sync.OFF, wal_preallocate=False)
    try:
        db.put(b"a", b"1")
        f = db._wal._file

        def broken(data):
            raise OSError(5, "Input/output error")

        f.raw_write = broken
        size, seq = db._mem.size, db._last_seq
        with pytest.raises(NeedsRecoveryError, match="WAL write to .* failed"):
            db.put(b"b", b"2")
        assert db._wal.fenced is not None and _lock_is_free(db)
        assert db._mem.size == size and db._last_seq == seq and db._mem.get(b"b", 1 << 40) is None
        with pytest.raises(NeedsRecoveryError):
            db.put(b"c", b"3")
    finally:
        try:
            db.close()
        except NeedsRecoveryError:
            pass


def _write_behind_calls(monkeypatch, db) -> list:
    import lsm.db

    calls = []
    monkeypatch.setattr(lsm.db_room, "_write_behind", lambda f: calls.append((f, db._mem, db._mem.size, db._wal.durable_seq)))
    return calls


def test_write_behind_once_per_memtable_at_three_quarters(tmp_path, monkeypatch) -> None:
    """At no-sync levels, each memtable starts one write-behind of its WAL
    segment (DB._preseal_locked), once it is 3/4 full and before it is
    switched, on the live segment's file; the write-behind claims nothing
    (durable_seq stays where the seals put it)."""
    db = lsm.open(str(tmp_path / "db"), background="thread", sync=lsm.Sync.OFF, wal_preallocate=False,
                  memtable_size=64 << 10)
    try:
        calls = _write_behind_calls(monkeypatch, db)
        mems, files = [], {}
        for i in range(4000):
            if not mems or mems[-1] is not db._mem:
                mems.append(db._mem)
            files.setdefault(id(db._mem), db._wal._file)
            db.put(b"%016d" % (i * 7919 % 4000), b"v" * 100)
        switched = mems[:-1]
        assert len(switched) >= 5
        assert [c[1] for c in calls[: len(switched)]] == switched  # one each, in order, before its switch
        assert len(calls) in (len(switched), len(switched) + 1)  # the live one too, if 3/4 full already
        for f, _mem, size, _durable in calls:
            assert size >= db._memtable_size * 3 // 4 and size < db._memtable_size
            assert f is files[id(_mem)]
        db.put(b"x", b"y")
        assert db._wal.durable_seq < db._last_seq  # OFF commits after the last seal: nothing claimed them
    finally:
        db.close()


@pytest.mark.parametrize("case", ["inline", "crashfs", "full"])
def test_no_write_behind_without_threads_a_plain_file_or_unsynced_commits(tmp_path, monkeypatch, case) -> None:
    """No write-behind thread with background="inline" (deterministic
    runs), under CrashFS (its crash points stay deterministic), or when
    every commit is already durable (FULL puts)."""
    kw = {"sync": lsm.Sync.FULL if case == "full" else lsm.Sync.OFF, "wal_preallocate": False, "memtable_size": 64 << 10}
    if case == "crashfs":
        db = lsm.open("/db", fs=CrashFS(), background="thread", **kw)
    else:
        db = lsm.open(str(tmp_path / "db"), background="inline" if case == "inline" else "thread", **kw)
    try:
        calls = _write_behind_calls(monkeypatch, db)
        n = 1200 if case == "full" else 3000
        for i in range(n):
            db.put(b"%016d" % i, b"v" * 100)
        assert db.stats()["flush_count"] + len(db._sv.imms) >= 2  # memtables filled past 3/4
        assert calls == []
    finally:
        db.close()
