"""The flush hand-off to a worker process (lsm/compaction/worker.py) and
what the worker trusts in it: a frozen memtable's columns pickled as an
out-of-band buffer (protocol 5) and sent after the job's pickle; the one
order check of the columns (``FrozenEntries``), after which the table
writer's ``add_columns(ascending=True)`` compares only the first key; a
damaged job (a key twice) refused before a table is written.

Randomized tests print their seed; set LSM_TEST_SEED to replay one."""

from __future__ import annotations

import pickle
import random

import pytest

from lsm.base import compression
from lsm.base.coding import ValueKind
from lsm.base.crashfs import CrashFS
from lsm.base.fs import FileSystem
from lsm.compaction.runner import FlushJob, TableOptions, run_job
from lsm.compaction.worker import WorkerPool
from lsm.memtable import FrozenEntries, MemTable
from lsm.sstable import TableWriter
from lsm.sstable.reader import TableReader
from tests.seeds import seed as _seed

PUT, DELETE = ValueKind.PUT, ValueKind.DELETE


def _memtable(keys: list[bytes], values: list[bytes]) -> MemTable:
    m = MemTable()
    for s in range(0, len(keys), 100):
        k, v = keys[s : s + 100], values[s : s + 100]
        m.add_batch(s + 1, k, v, None, sum(map(len, k)) + sum(map(len, v)))
    return m


def _damaged(keys: list[bytes]) -> FrozenEntries:
    """A frozen memtable unpickled from columns naming a key twice (no
    memtable sends that: its keys are a dict's)."""
    f = FrozenEntries.__new__(FrozenEntries)
    f.__setstate__(("c", pickle.dumps((keys, [b"v"] * len(keys))), 1, bytes([PUT]) * len(keys)))
    return f


# ---------------------------------------------------------------- the order check
def test_add_columns_ascending_writes_the_same_table_as_add():
    # ascending=True skips the writer's own pass over the keys: fixed-size
    # entries (whole blocks sliced from the joined keys and values,
    # _emit_fixed) and mixed sizes, in chunks (a chunk's tail stays pending
    # and the next tops it up).
    rng = random.Random(_seed())
    fs = CrashFS()
    fixed_blocks = 0
    for trial in range(16):
        block_size = rng.choice((1, 64, 700, 4096))
        kl, vl = rng.randrange(1, 20), rng.choice((0, 1, 100))
        keys = sorted({rng.randbytes(kl if trial % 2 else rng.randrange(1, 20)) for _ in range(rng.randrange(1, 500))})
        entries = [(k, ((i + 1) << 8) | rng.choice((PUT, DELETE)),
                    rng.randbytes(vl if trial % 2 else rng.randrange(0, 200))) for i, k in enumerate(keys)]
        comp = rng.choice((compression.NONE, compression.LZ4, compression.ZSTD))
        w = TableWriter(fs, f"a{trial}.sst", block_size=block_size, compression=comp)
        emit = w._emit_fixed
        calls = []
        w._emit_fixed = lambda *a, emit=emit, calls=calls: (calls.append(a), emit(*a))  # type: ignore[method-assign]
        i = 0
        while i < len(entries):
            chunk = entries[i : i + rng.randrange(1, 300)]
            w.add_columns([e[0] for e in chunk], [e[1] for e in chunk], [e[2] for e in chunk], ascending=True)
            i += len(chunk)
        w.finish()
        fixed_blocks += len(calls)
        ref = TableWriter(fs, f"b{trial}.sst", block_size=block_size, compression=comp)
        ref.add_many(entries)
        ref.finish()
        assert fs.read_file(f"a{trial}.sst") == fs.read_file(f"b{trial}.sst"), (trial, block_size, kl, vl)
    assert fixed_blocks, "no chunk took the fixed-size path"


def test_add_columns_ascending_still_checks_the_first_key():
    fs = CrashFS()
    w = TableWriter(fs, "bad.sst")
    w.add(b"m", (1 << 8) | PUT, b"")
    with pytest.raises(ValueError, match="keys must be ascending"):
        w.add_columns([b"a", b"z"], [(2 << 8) | PUT, (3 << 8) | PUT], [b"", b""], ascending=True)
    w.abandon()
    w = TableWriter(fs, "same.sst")
    w.add(b"m", (5 << 8) | PUT, b"")
    with pytest.raises(ValueError, match="versions must be newest first"):
        w.add_columns([b"m"], [(6 << 8) | PUT], [b""], ascending=True)
    w.abandon()


def test_frozen_columns_are_checked_once_and_a_key_twice_is_refused():
    rng = random.Random(_seed())
    keys = [b"%08d" % i for i in range(500)]
    rng.shuffle(keys)
    m = _memtable(keys, [rng.randbytes(rng.randrange(0, 30)) for _ in keys])
    f = pickle.loads(pickle.dumps(m.frozen(), protocol=pickle.HIGHEST_PROTOCOL))
    ks, _ts, _vs = f.columns()
    assert ks == sorted(keys)
    assert list(f) == list(m.iter_entries())
    # Unsorted columns holding a key twice: sorted, then refused.
    with pytest.raises(ValueError, match="hold a key twice"):
        _damaged([b"b", b"a", b"b"]).columns()
    # Sorted columns holding a key twice: the first check fails, so they are
    # sorted (no change) and checked again.
    with pytest.raises(ValueError, match="hold a key twice"):
        _damaged([b"a", b"b", b"b"]).columns()
    assert _damaged([b"c", b"a", b"b"]).columns()[0] == [b"a", b"b", b"c"]


def test_a_damaged_flush_job_writes_no_table():
    fs = CrashFS()
    fs.makedirs("/db")
    job = FlushJob(dbdir="/db", file_number=7, table=TableOptions(4096, 10, compression.LZ4, 1, 4 << 20),
                   snapshots=[], start_seq=0, end_seq=3)
    job.entries = _damaged([b"b", b"a", b"b"])  # type: ignore[assignment]
    job.range_dels = []
    with pytest.raises(ValueError, match="hold a key twice"):
        run_job(job, fs)
    assert fs.listdir("/db") == []


# ---------------------------------------------------------------- the pickle and the pipe
def test_frozen_columns_pickle_out_of_band_with_protocol_5():
    rng = random.Random(_seed())
    keys = [b"%016d" % i for i in range(2000)]
    values = [rng.randbytes(100) for _ in keys]
    m = _memtable(keys, values)
    bufs: list[pickle.PickleBuffer] = []
    data = pickle.dumps(m.frozen(), protocol=5, buffer_callback=bufs.append)
    assert len(bufs) == 1 and len(data) < 2000 + 200  # the kinds (a byte a key), not the columns
    assert bufs[0].raw().nbytes > 2000 * 116
    out = pickle.loads(data, buffers=[bytes(b.raw()) for b in bufs])
    want = (keys, [((i + 1) << 8) | PUT for i in range(2000)], values)
    assert out.columns() == want
    # In-band (no buffer_callback) and older protocols: the same columns.
    for proto in (2, 4, 5):
        assert pickle.loads(pickle.dumps(m.frozen(), protocol=proto)).columns() == want


def test_worker_process_flushes_a_memtable_sent_with_buffers(tmp_path):
    # The request frame (header, pickle, out-of-band buffers) through a real
    # worker process, and the table it writes read back.
    rng = random.Random(_seed())
    keys = [b"%016d" % i for i in range(3000)]
    rng.shuffle(keys)
    values = [rng.randbytes(rng.randrange(0, 120)) for _ in keys]
    m = _memtable(keys, values)
    job = FlushJob(dbdir=str(tmp_path), file_number=3, table=TableOptions(4096, 10, compression.LZ4, 1, 4 << 20),
                   snapshots=[], start_seq=0, end_seq=len(keys))
    job.entries = m.frozen()  # type: ignore[assignment]
    job.range_dels = []
    pool = WorkerPool(1)
    try:
        result = pool.run(job)
        # A second job on the same worker: the stream stays in step.
        job.file_number = 4
        result2 = pool.run(job)
    finally:
        pool.close()
    assert [o[0] for o in result.outputs] == [3] and [o[0] for o in result2.outputs] == [4]
    fs = FileSystem()
    for num in (3, 4):
        r = TableReader.open(fs, str(tmp_path / f"{num:06d}.sst"), file_number=num)
        try:
            assert list(r.iter_entries()) == list(m.iter_entries())
        finally:
            r.close()
