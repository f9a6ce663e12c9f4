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

Randomized tests print their seed; ``LSM_PUT_SEED`` replays one.
"""

from __future__ import annotations

import os
import random
import struct
import threading

import pytest

import lsm
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
