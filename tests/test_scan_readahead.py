"""A long scan's block reads (``TableReader._scan_blocks``): after the first
few blocks (a seek's, read one at a time through the cache) runs of
neighbouring blocks are read in one ``pread``, checked and decompressed
together, and not cached. Checked here: the columns equal the model both
ways with bounds, mixed raw and zstd blocks, blocks already cached in the
middle of a run, the cache left holding only a seek's blocks, and a
damaged block deep in a read-ahead run named by its own offset.

Randomized: each test prints its seed; ``LSM_SCAN_SEED=N`` replays one.
"""

from __future__ import annotations

import random

import pytest

from lsm.base import compression
from lsm.base.coding import MAX_SEQ, ValueKind, pack_trailer
from lsm.base.errors import CorruptionError
from lsm.base.fs import FileSystem
from lsm.sstable.cache import BlockCache
from lsm.sstable.format import BLOCK_TRAILER_SIZE, frame_block, unframe_block, unframe_blocks
from lsm.sstable.reader import TableReader
from lsm.sstable.scan import _SEEK_BLOCKS
from lsm.sstable.writer import TableWriter
from tests.seeds import seed_list

FS = FileSystem()


def make_table(path: str, rng: random.Random, n: int, comp: int) -> list[tuple[bytes, int, bytes]]:
    entries = []
    for i in range(n):
        # Runs of compressible and random values: some blocks zstd, some raw.
        v = b"v" * 40 if (i // 50) % 2 else rng.randbytes(40)
        entries.append((b"key%06d" % i, pack_trailer(i + 1, ValueKind.PUT), v))
    w = TableWriter(FS, path, block_size=256, compression=comp)
    for e in entries:
        w.add(*e)
    w.finish(sync=False)
    return entries


def columns(r: TableReader, start=None, stop=None, reverse=False) -> list[tuple[bytes, int, bytes]]:
    out = []
    chunks = list(r.iter_columns(start, stop, reverse=reverse))
    for k, t, v in (chunks[::-1] if reverse else chunks):
        assert list(k) == sorted(k) and len(k) == len(t) == len(v) > 0
        out += zip(k, t, v)
    return out


@pytest.mark.parametrize("comp", [compression.NONE, compression.ZSTD, compression.LZ4])
@pytest.mark.parametrize("seed", seed_list("LSM_SCAN_SEED", 50, 3))
def test_long_scans_equal_model_and_cache_only_a_seeks_blocks(tmp_path, comp, seed):
    print("seed", seed)
    rng = random.Random(seed)
    path = str(tmp_path / "1.sst")
    entries = make_table(path, rng, 1500, comp)
    cache = BlockCache(1 << 24)
    r = TableReader.open(FS, path, file_number=1, cache=cache)
    nb = len(r._boffs)
    assert nb > 60
    assert columns(r) == entries
    assert len(cache) == _SEEK_BLOCKS  # the long scan's later blocks were not cached
    assert columns(r, reverse=True) == entries
    assert len(cache) == 2 * _SEEK_BLOCKS
    # Blocks cached in the middle of what is read ahead (point reads).
    for e in rng.sample(entries, 30):
        assert r.get(e[0], MAX_SEQ) == (ValueKind.PUT, e[2])
    keys = [e[0] for e in entries]
    for _ in range(30):
        a, b = sorted((rng.choice([None, *keys]), rng.choice([None, *keys])), key=lambda x: (x is not None, x))
        if a is not None and b is not None and a > b:
            a, b = b, a
        want = [e for e in entries if (a is None or e[0] >= a) and (b is None or e[0] < b)]
        hits = cache.hits
        assert columns(r, a, b) == want, (a, b)
        assert columns(r, a, b, reverse=True) == want, (a, b)
        assert cache.hits >= hits
    r.close()


@pytest.mark.parametrize("comp", [compression.NONE, compression.ZSTD, compression.LZ4])
@pytest.mark.parametrize("reverse", [False, True])
def test_damage_deep_in_a_readahead_run_names_the_block(tmp_path, comp, reverse):
    rng = random.Random(7)
    path = str(tmp_path / "1.sst")
    make_table(path, rng, 1500, comp)
    r = TableReader.open(FS, path, file_number=1)
    boffs, bsizes = list(r._boffs), list(r._bsizes)
    r.close()
    k = len(boffs) // 2  # well past the first _SEEK_BLOCKS either way
    with open(path, "rb") as f:
        data = bytearray(f.read())
    data[boffs[k] + bsizes[k] // 2] ^= 0x40
    with open(path, "wb") as f:
        f.write(data)
    r = TableReader.open(FS, path, file_number=1, cache=BlockCache(1 << 24))
    with pytest.raises(CorruptionError) as ei:
        list(r.iter_columns(reverse=reverse))
    assert ei.value.path == path and ei.value.offset == boffs[k]
    r.close()


def test_unframe_blocks_equals_one_by_one():
    rng = random.Random(3)
    payloads = [rng.randbytes(rng.randint(0, 300)) if i % 3 else b"ab" * rng.randint(1, 900) for i in range(20)]
    framed = [b"".join(frame_block(p, compression.ZSTD)) for p in payloads]
    data = b"".join(framed)
    sizes = [len(f) for f in framed]
    assert unframe_blocks(data, sizes, True) == payloads == [unframe_block(f, True) for f in framed]
    bad = bytearray(data)
    bad[sizes[0] + 1] ^= 1  # inside block 1
    with pytest.raises(ValueError):
        unframe_blocks(bytes(bad), sizes, True)
    with pytest.raises(ValueError):
        unframe_blocks(data, sizes[:-1], True)  # the sizes do not cover the read
    assert BLOCK_TRAILER_SIZE == 9


def test_decompress_many_checks_sizes():
    frames = [memoryview(compression.compress(compression.ZSTD, b"x" * n)) for n in (100, 5000, 7)]
    assert compression.decompress_many(compression.ZSTD, frames, [100, 5000, 7]) == [b"x" * 100, b"x" * 5000, b"x" * 7]
    for sizes in ([100, 4999, 7], [100, 5001, 7], [100, 5000, 10**9]):
        with pytest.raises(ValueError):
            compression.decompress_many(compression.ZSTD, frames, sizes)
